r"""Neural collaborative filtering estimators: ``GMF``, ``MLP`` and ``NeuMF`` (He et al. 2017).

Each is trained on implicit feedback (every training rating is a positive) with the pointwise log
loss on the positives and ``n_negatives`` negatives per positive, drawn anew every epoch by
:func:`bayesmf.data.sample_negatives`. The maths are in :mod:`bayesmf.engines.ncf`, the training
loop in :mod:`bayesmf.engines.optax_loop`.

Defaults are the paper's: 8 predictive factors, MLP layers [64, 32, 16, 8], 4 negatives per
positive, Adam with learning rate 0.001, batch 256, 20 epochs; NeuMF is initialised from a GMF and
an MLP trained first (``pretrain=True``) with output layers weighted by ``alpha = 0.5``, then
fine-tuned with vanilla SGD (the paper's choice, since Adam's moments of the pre-trained models
are not carried over).

``score_users`` returns the logits :math:`z_{ui}` (the prediction is :math:`\sigma(z_{ui})`;
ranking by either is the same, and logits do not saturate to ties); ``predict`` returns
:math:`\sigma(z_{ui})`.

References
----------
He, Liao, Zhang, Nie, Hu & Chua, "Neural Collaborative Filtering", WWW 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines import ncf as engine
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_nonnegative
from bayesmf.models.neural import NeuralModel, carve_validation, epoch_negatives, layer_widths
from bayesmf.validate import as_indices, check_positive_int

SCORE_BLOCK_BYTES = 2**27
"""Memory allowed for one block of hidden activations in :meth:`_NCF.score_users`."""


class _NCF(NeuralModel):
    """Shared implementation of :class:`GMF`, :class:`MLP` and :class:`NeuMF` (``_kind``)."""

    _kind = "GMF"

    def __init__(self, factors: int = 8, layers=(64, 32, 16, 8), n_negatives: int = 4, learning_rate: float = 0.001,
                 optimizer: str = "adam", batch_size: int = 256, n_epochs: int = 20, negatives: str = "uniform",
                 popularity_exponent: float = 1.0, replace_negatives: bool = False, validation: float = 0.0,
                 patience: int | None = None, init_std: float = 0.01, seed: int = 0, progress: bool = False):
        self.factors = factors
        self.layers = layers
        self.n_negatives = n_negatives
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.negatives = negatives
        self.popularity_exponent = popularity_exponent
        self.replace_negatives = replace_negatives
        self.validation = validation
        self.patience = patience
        self.init_std = init_std
        self.seed = seed
        self.progress = progress

    # -- configuration ------------------------------------------------------------------------
    def _layers(self) -> tuple[int, ...]:
        widths = layer_widths("layers", self.layers, 2)
        if widths[0] % 2:
            raise ConfigError(f"layers[0] = {widths[0]} must be even: it is the concatenation of two embeddings")
        return widths

    def _param_keys(self):
        return engine.param_keys(self._kind, len(self._layers()))

    def _check_params(self) -> None:
        check_positive_int("factors", self.factors)
        self._layers()
        self._check_loop_params()
        self._check_negatives(self.n_negatives, self.negatives, self.popularity_exponent)
        check_nonnegative("init_std", self.init_std)
        if not isinstance(self.replace_negatives, (bool, np.bool_)):
            raise ConfigError(f"replace_negatives must be True or False, got {self.replace_negatives!r}")

    # -- training -------------------------------------------------------------------------------
    def _examples(self, positives, rows, seed):
        """Labelled pairs: the ratings of ``rows`` as positives, each followed by ``n_negatives``
        negatives of its user (items outside ``positives``). Returns ``(users, items, labels)``."""
        n = int(self.n_negatives)
        negs = epoch_negatives(positives, rows.users, n, seed, self.negatives, float(self.popularity_exponent),
                               bool(self.replace_negatives))
        users = np.concatenate([rows.users, np.repeat(rows.users, n)]).astype(np.int32)
        items = np.concatenate([rows.items, negs.reshape(-1)]).astype(np.int32)
        labels = np.concatenate([np.ones(rows.nnz, np.float32), np.zeros(rows.nnz * n, np.float32)])
        return jnp.asarray(users), jnp.asarray(items), jnp.asarray(labels)

    def _train_kind(self, kind: str, fit_part, valid, train, params, optimizer=None, history=None, offset=0):
        """Train the ``kind`` parameters ``params`` on ``fit_part``; validation on ``valid``."""
        valid_loss = None
        if valid is not None:
            vdata = self._examples(train, valid, [int(self.seed), offset, 1 << 30])
            valid_loss = jax.jit(lambda p: jnp.mean(engine.log_loss(p, vdata)))

        def epoch_data(t):
            return self._examples(fit_part, fit_part, [int(self.seed), offset, t])

        return self._run(engine.log_loss, params, epoch_data, valid_loss, optimizer=optimizer, desc=kind,
                         history=history, key_offset=offset)

    def _init(self, kind: str, n_users: int, n_items: int, offset: int) -> dict:
        return engine.init_params([int(self.seed), offset], kind, n_users, n_items, int(self.factors),
                                  self._layers(), float(self.init_std))

    def _fit(self, train) -> None:
        self._implicit_fit(train)
        fit_part, valid = carve_validation(train, self.validation, int(self.seed))
        params = self._fit_params(train, fit_part, valid)
        self._store_params(params)
        embed = "mlp" if self._kind == "MLP" else "gmf"
        self.user_factors_ = self.params_[f"{embed}_user"]
        self.item_factors_ = self.params_[f"{embed}_item"]

    def _fit_params(self, train, fit_part, valid) -> dict:
        params = self._init(self._kind, train.n_users, train.n_items, 0)
        return self._train_kind(self._kind, fit_part, valid, train, params)

    # -- scoring ----------------------------------------------------------------------------------
    def _device_params(self) -> dict:
        return {name: jnp.asarray(value) for name, value in self.params_.items()}

    def score_users(self, user_indices, items=None) -> np.ndarray:
        """Logits :math:`z_{ui}` of ``items`` (default: the catalogue) for known users, shape
        (len(user_indices), n_items or len(items)); computed in blocks of users whose hidden
        activations fit :data:`SCORE_BLOCK_BYTES` (heights padded to a power of two)."""
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        cols = np.arange(self.n_items_) if items is None else as_indices(items, "items", self.n_items_)
        params = self._device_params()
        width = max(self._layers()[1:]) if self._kind != "GMF" else 1
        height = max(1, SCORE_BLOCK_BYTES // (4 * width * max(cols.size, 1)))
        height = min(1 << int(np.floor(np.log2(height))), 1 << int(np.ceil(np.log2(max(users.size, 1)))))
        out = np.empty((users.size, cols.size), np.float32)
        item_dev = jnp.asarray(cols, jnp.int32)
        for start in range(0, users.size, height):  # memory-bounded blocks of users
            rows = users[start:start + height]
            padded = np.concatenate([rows, np.full(height - rows.size, rows[-1])])
            out[start:start + rows.size] = np.asarray(engine.block_logits(params, jnp.asarray(padded, jnp.int32),
                                                                          item_dev))[:rows.size]
        return out

    def _predict_indices(self, users, items, bad_u, bad_i) -> np.ndarray:
        r""":math:`\sigma(z_{ui})`; a pair with an unknown side gets the item's training
        popularity (the fraction of training users who interacted with it; 0 for an unknown item)."""
        z = np.asarray(engine.pair_logits(self._device_params(), jnp.asarray(users, jnp.int32),
                                          jnp.asarray(items, jnp.int32)))
        fallback = np.where(bad_i, 0.0, self.item_counts_[items] / max(self.n_users_, 1))
        return np.where(bad_u | bad_i, fallback, 1.0 / (1.0 + np.exp(-z))).astype(np.float32)


class GMF(_NCF):
    r"""Generalized matrix factorization: :math:`\hat y_{ui} = \sigma(h^\top (p_u \odot q_i) + b)`.

    Parameters
    ----------
    factors : int
        Embedding size ``k`` (8).
    layers : sequence of int
        MLP widths; unused by GMF (kept so the three models share one signature).
    n_negatives : int
        Negatives per positive, drawn anew each epoch (4).
    learning_rate, optimizer, batch_size, n_epochs
        Optax optimiser (``"adam"``, ``"sgd"``, ``"adagrad"``) and loop settings (0.001, adam, 256, 20).
    negatives : {"uniform", "popularity"}
        Negative distribution; ``"popularity"`` draws items with probability proportional to
        ``count^popularity_exponent``.
    replace_negatives : bool
        Allow repeated negatives for a user; without it a user whose catalogue minus positives
        is smaller than ``n_negatives`` raises :class:`~bayesmf.errors.DataError` naming them.
    validation : float
        Fraction of each user's positives carved from training for early stopping (0: none).
        The validation loss is the log loss on those positives and ``n_negatives`` fixed
        negatives each; the parameters of the best epoch are kept.
    patience : int or None
        Epochs without a better validation loss before stopping.
    init_std, seed, progress
        Embedding initialisation std, seed (initialisation, negatives, shuffling), progress bar.
    """

    _kind = "GMF"


class MLP(_NCF):
    r"""Multi-layer perceptron NCF: :math:`\hat y_{ui} = \sigma(h^\top a_L + b)` with
    :math:`a_0 = [p_u; q_i]`, :math:`a_{l+1} = \mathrm{ReLU}(W_l^\top a_l + b_l)` and embeddings of
    size ``layers[0] / 2``. Parameters as :class:`GMF` (``layers`` defaults to [64, 32, 16, 8])."""

    _kind = "MLP"


class NeuMF(_NCF):
    r"""Neural matrix factorization: :math:`\hat y_{ui} = \sigma(h^\top [p^G_u \odot q^G_i; a_L] + b)`,
    GMF and MLP with separate embeddings fused in the output layer.

    With ``pretrain=True`` (the paper's setting) a :class:`GMF` and an :class:`MLP` are first
    trained for ``n_epochs`` each with ``optimizer``; NeuMF starts from their parameters with the
    output layer :math:`h = [\alpha h^{GMF}; (1-\alpha) h^{MLP}]` and is fine-tuned with
    ``finetune_optimizer`` (vanilla ``"sgd"`` as the paper) at ``learning_rate``. Without
    pre-training NeuMF is trained from a random initialisation with ``optimizer``. Other
    parameters as :class:`GMF`; the history holds ``gmf_loss``/``mlp_loss`` of the pre-training.
    """

    _kind = "NeuMF"

    def __init__(self, factors: int = 8, layers=(64, 32, 16, 8), n_negatives: int = 4, learning_rate: float = 0.001,
                 optimizer: str = "adam", batch_size: int = 256, n_epochs: int = 20, negatives: str = "uniform",
                 popularity_exponent: float = 1.0, replace_negatives: bool = False, validation: float = 0.0,
                 patience: int | None = None, init_std: float = 0.01, seed: int = 0, progress: bool = False,
                 pretrain: bool = True, alpha: float = 0.5, finetune_optimizer: str = "sgd"):
        super().__init__(factors, layers, n_negatives, learning_rate, optimizer, batch_size, n_epochs, negatives,
                         popularity_exponent, replace_negatives, validation, patience, init_std, seed, progress)
        self.pretrain = pretrain
        self.alpha = alpha
        self.finetune_optimizer = finetune_optimizer

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.pretrain, (bool, np.bool_)):
            raise ConfigError(f"pretrain must be True or False, got {self.pretrain!r}")
        alpha = check_nonnegative("alpha", self.alpha)
        if alpha > 1:
            raise ConfigError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        if self.pretrain:
            from bayesmf.engines.optax_loop import make_optimizer

            make_optimizer(self.finetune_optimizer, float(self.learning_rate))

    def _fit_params(self, train, fit_part, valid) -> dict:
        if not self.pretrain:
            return super()._fit_params(train, fit_part, valid)
        trained = {}
        for offset, kind in ((1, "GMF"), (2, "MLP")):
            part_history: dict = {}
            trained[kind] = self._train_kind(kind, fit_part, valid, train,
                                             self._init(kind, train.n_users, train.n_items, offset),
                                             history=part_history, offset=offset)
            for name, values in part_history.items():
                self.history_[f"{kind.lower()}_{name}"] = values
        params = engine.neumf_from_pretrained(trained["GMF"], trained["MLP"], float(self.alpha))
        return self._train_kind("NeuMF", fit_part, valid, train, params, optimizer=self.finetune_optimizer, offset=3)
