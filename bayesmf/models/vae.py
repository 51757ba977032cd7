r"""``MultVAE`` and ``MultDAE``: autoencoders with a multinomial likelihood for implicit feedback
(Liang, Krishnan, Hoffman & Jebara 2018); the maths in :mod:`bayesmf.engines.vae`, the training
loop in :mod:`bayesmf.engines.optax_loop`.

A user is represented by their history alone (the binary row of the items they interacted with),
so the models have no per-user parameters: :meth:`score_users` encodes the user's training
history, and :meth:`~bayesmf.models.recommend.RecommendMixin.fold_in` of new users only records
their history (every folded-in rating is a positive, whatever its value); their scores then come
from the encoder. This is the strong-generalization protocol of the paper: held-out users, part of
each one's interactions folded in, the rest ranked (``recommend(exclude_seen=True)`` excludes the
folded-in items).

Training data are the users' rows as a dense ``(n_users, n_items)`` uint8 matrix on the device
(one byte per cell); each minibatch is ``batch_size`` users.

References
----------
Liang, Krishnan, Hoffman & Jebara, "Variational Autoencoders for Collaborative Filtering", WWW 2018.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.engines import vae as engine
from bayesmf.errors import ConfigError, DataError
from bayesmf.models.base import check_nonnegative
from bayesmf.models.neural import NeuralModel, carve_validation, layer_widths
from bayesmf.models.recommend import seen_pairs
from bayesmf.validate import as_indices, check_int

SCORE_BLOCK_USERS = 1024
"""Users encoded and decoded together in :meth:`_MultAE.score_users`."""


def history_rows(indptr: np.ndarray, items: np.ndarray, users: np.ndarray, n_items: int) -> np.ndarray:
    """Binary rows (len(users), n_items) uint8 of a user-major CSR (``indptr``, ``items``)."""
    rows, cols = seen_pairs(indptr, items, np.asarray(users, np.int64))
    out = np.zeros((users.size, n_items), np.uint8)
    out[rows, cols] = 1
    return out


@partial(jax.jit, static_argnames="variational")
def _block_logits(params, x, variational: bool):
    return engine.decode(params, engine.code(params, x.astype(jnp.float32), variational))


class _MultAE(NeuralModel):
    """Shared implementation; ``_variational`` selects Mult-VAE or Mult-DAE."""

    _variational = True
    _per_user_arrays: dict = {}  # no per-user parameters: fold-in records the history only

    def __init__(self, hidden=(600, 200), dropout: float = 0.5, anneal_cap: float = 0.2,
                 anneal_steps: int = 200_000, learning_rate: float = 0.001, optimizer: str = "adam",
                 batch_size: int = 500, n_epochs: int = 200, validation: float = 0.0, patience: int | None = None,
                 seed: int = 0, progress: bool = False):
        self.hidden = hidden
        self.dropout = dropout
        self.anneal_cap = anneal_cap
        self.anneal_steps = anneal_steps
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.validation = validation
        self.patience = patience
        self.seed = seed
        self.progress = progress

    def _hidden(self) -> tuple[int, ...]:
        return layer_widths("hidden", self.hidden, 1)

    def _param_keys(self):
        return engine.param_keys(len(self._hidden()))

    def _check_params(self, heldout=None, heldout_k: int = 100) -> None:
        """The settings, and ``heldout_k`` and the choice of one epoch criterion when
        :meth:`fit` has ``heldout`` users."""
        if heldout is not None:
            check_int("heldout_k", heldout_k, low=1)
        self._hidden()
        dropout = check_nonnegative("dropout", self.dropout)
        if dropout >= 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        check_nonnegative("anneal_cap", self.anneal_cap)
        check_int("anneal_steps", self.anneal_steps, low=0)
        if heldout is not None and self.validation != 0:
            raise ConfigError(f"validation={self.validation!r} and heldout users both select the epoch; give one")
        self._check_loop_params(watched=heldout is not None)

    def fit(self, train, heldout=None, heldout_k: int = 100):
        """Fit on ``train`` (every rating a positive).

        ``heldout``: ``(fold_in, target)``, the held-out validation users of the
        strong-generalization protocol (``validation_fold_in`` and ``validation_target`` of
        :func:`bayesmf.data.splits.strong_generalization`, item IDs as ``train``'s). After each
        epoch every such user with a target is encoded from their ``fold_in`` row and their
        ``target`` items are ranked (folded-in items excluded); the parameters of the epoch with
        the best mean NDCG@``heldout_k`` are kept, as the paper selects its model
        (:func:`bayesmf.engines.vae.heldout_ndcg`; ``history_["valid_loss"]`` holds minus that
        mean per epoch). ``patience`` then stops after that many epochs without improvement.
        """
        return self._fit_with(train, heldout=heldout, heldout_k=heldout_k)

    @staticmethod
    def _heldout_rows(train, heldout):
        """Dense (fold-in, target) rows of the ``heldout`` users with a target, or None."""
        if heldout is None:
            return None
        fold_in, target = heldout
        if not isinstance(fold_in, Ratings) or not isinstance(target, Ratings) or not fold_in.same_index_space(target):
            raise DataError("heldout must be (fold_in, target) Ratings sharing ID maps (from strong_generalization)")
        if fold_in.item_map != train.item_map:
            raise DataError("the heldout users' item IDs differ from train's: use the same strong_generalization split")
        users = np.flatnonzero(target.user_counts > 0)
        empty = users[fold_in.user_counts[users] == 0]
        if empty.size:
            raise DataError(f"held-out user {fold_in.user_map.ids(empty[:1])[0].item()!r} has targets but no fold-in "
                            "interactions")
        return [history_rows(r.by_user.indptr, r.items[r.by_user.order], users, train.n_items)
                for r in (fold_in, target)]

    def _fit(self, train, heldout=None, heldout_k: int = 100) -> None:
        self._implicit_fit(train)
        fit_part, valid = carve_validation(train, self.validation, int(self.seed))
        g = fit_part.by_user
        x = history_rows(g.indptr, fit_part.items[g.order], np.arange(train.n_users), train.n_items)
        loss = partial(engine.loss, variational=self._variational, dropout=float(self.dropout),
                       anneal_cap=float(self.anneal_cap), anneal_steps=int(self.anneal_steps))
        valid_loss = None
        heldout = self._heldout_rows(train, heldout)
        if heldout is not None:
            h_in, h_out = (jnp.asarray(r) for r in heldout)
            k = int(heldout_k)  # checked by _check_params
            valid_loss = jax.jit(lambda p: -jnp.mean(engine.heldout_ndcg(p, h_in.astype(jnp.float32), h_out, k,
                                                                         self._variational)))
        if valid is not None:
            vusers = np.flatnonzero(valid.user_counts)
            vg = valid.by_user
            x_in = jnp.asarray(x[vusers])
            x_out = jnp.asarray(history_rows(vg.indptr, valid.items[vg.order], vusers, train.n_items))
            valid_loss = jax.jit(lambda p: jnp.mean(engine.heldout_nll(p, x_in.astype(jnp.float32),
                                                                       x_out.astype(jnp.float32), self._variational)))
        params = engine.init_params([int(self.seed), 0], train.n_items, self._hidden(), self._variational)
        data = (jnp.asarray(x),)
        self._store_params(self._run(loss, params, lambda t: data, valid_loss))
        self.user_factors_ = None
        self.item_factors_ = np.ascontiguousarray(self.params_[f"dec_w{len(self._hidden()) - 1}"].T)

    # -- scoring ----------------------------------------------------------------------------------
    def score_users(self, user_indices, items=None) -> np.ndarray:
        r"""Logits :math:`f(\mu_u)` (VAE) or :math:`f(z_u)` (DAE) of ``items`` (default: the
        catalogue) for known users (training or folded-in), from their recorded history; shape
        (len(user_indices), n_items or len(items)). Ranking by logits equals ranking by
        :math:`\pi(z_u)`."""
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        cols = slice(None) if items is None else as_indices(items, "items", self.n_items_)
        params = {name: jnp.asarray(value) for name, value in self.params_.items()}
        height = min(SCORE_BLOCK_USERS, 1 << int(np.ceil(np.log2(max(users.size, 1)))))
        out = []
        for start in range(0, users.size, height):  # memory-bounded blocks of users
            rows = users[start:start + height]
            padded = np.concatenate([rows, np.full(height - rows.size, rows[-1])])
            x = history_rows(self.seen_indptr_, self.seen_items_, padded, self.n_items_)
            out.append(np.asarray(_block_logits(params, jnp.asarray(x), self._variational))[:rows.size, cols])
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.n_items_), np.float32)

    def _predict_indices(self, users, items, bad_u, bad_i) -> np.ndarray:
        r""":math:`\pi_i(z_u)`, the multinomial probability of item ``i`` for user ``u``; a pair with
        an unknown side gets the item's training popularity (0 for an unknown item)."""
        uniq, row = np.unique(users, return_inverse=True)
        logits = self.score_users(uniq)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        fallback = np.where(bad_i, 0.0, self.item_counts_[items] / max(self.n_users_, 1))
        return np.where(bad_u | bad_i, fallback, probs[row, items]).astype(np.float32)

    def _fold_in_solve(self, new) -> dict:
        """Nothing to solve: a new user is their history, which fold-in records."""
        return {}


class MultVAE(_MultAE):
    r"""Mult-VAE (Liang et al. 2018): a variational autoencoder of the users' interaction rows with a
    multinomial likelihood and an annealed KL term (:mod:`bayesmf.engines.vae`).

    Parameters
    ----------
    hidden : sequence of int
        Encoder widths after the input, the last being the latent size ([600, 200]); the decoder
        mirrors them.
    dropout : float
        Dropout rate on the normalised input (0.5).
    anneal_cap, anneal_steps : float, int
        :math:`\beta = \min(\text{anneal\_cap}, t / \text{anneal\_steps})` after ``t`` updates
        (0.2, 200 000).
    learning_rate, optimizer, batch_size, n_epochs
        Adam at 0.001, 500 users per batch, 200 epochs (the paper's settings).
    validation, patience
        Fraction of each user's interactions held out for early stopping on their multinomial
        negative log-likelihood given the rest (the parameters of the best epoch are kept), and
        the epochs to wait; 0 / None: no validation.
    seed, progress
        Seed (initialisation, dropout, noise, shuffling) and progress bar.
    """

    _variational = True


class MultDAE(_MultAE):
    r"""Mult-DAE (Liang et al. 2018): the denoising autoencoder counterpart of :class:`MultVAE`
    (deterministic code, no KL term; ``anneal_cap``/``anneal_steps`` are unused). Parameters as
    :class:`MultVAE`."""

    _variational = False
