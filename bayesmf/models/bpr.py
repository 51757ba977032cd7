r"""``BPR``: matrix factorization trained with Bayesian personalized ranking (Rendle et al. 2009).

Every training rating is a positive. Each epoch pairs every positive ``(u, i)`` with
``n_negatives`` items ``j`` that ``u`` has not interacted with, drawn by
:func:`bayesmf.data.sample_negatives` uniformly or with probability proportional to
``count_j^popularity_exponent`` (``negatives="popularity"``), and minimises the mean of the
pairwise loss of :mod:`bayesmf.engines.bpr` over minibatches of triples
(:mod:`bayesmf.engines.optax_loop`).

The model scores with the plain dot product :math:`x_{ui} = c_i + p_u^\top q_i`
(``item_bias_``, ``user_factors_``, ``item_factors_``), so ranking, similar items and export are
the shared ones of :class:`~bayesmf.models.base.FactorModel`; ``fold_in`` is refused (see
:meth:`BPR._fold_in_solve`).

References
----------
Rendle, Freudenthaler, Gantner & Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines import bpr as engine
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_nonnegative
from bayesmf.models.neural import NeuralModel, carve_validation, epoch_negatives
from bayesmf.validate import check_positive_int


class BPR(NeuralModel):
    r"""BPR-MF.

    Parameters
    ----------
    rank : int
        Number of factors ``k``.
    regularization : float
        :math:`\lambda`, the L2 weight on the parameters each triple touches.
    biases : bool
        Learn an item bias ``c_i``.
    n_negatives : int
        Negatives per positive per epoch (each makes one triple).
    negatives : {"uniform", "popularity"}
        Negative distribution; ``popularity_exponent`` is the power of the item counts.
    replace_negatives : bool
        Allow repeated negatives for a user; without it a user whose catalogue minus positives is
        smaller than ``n_negatives`` raises :class:`~bayesmf.errors.DataError` naming them.
    learning_rate, optimizer, batch_size, n_epochs
        Optax optimiser (``"adam"``, ``"sgd"``, ``"adagrad"``) and loop settings.
    validation, patience
        Fraction of each user's positives carved from training for early stopping on the BPR
        loss of those positives (fixed negatives), and the epochs to wait (see
        :class:`~bayesmf.models.ncf.GMF`).
    init_std, seed, progress
        Initialisation std of the factors, seed, progress bar.
    """

    def __init__(self, rank: int = 64, regularization: float = 1e-4, biases: bool = True, n_negatives: int = 1,
                 negatives: str = "uniform", popularity_exponent: float = 1.0, replace_negatives: bool = False,
                 learning_rate: float = 0.005, optimizer: str = "adam", batch_size: int = 1024, n_epochs: int = 30,
                 validation: float = 0.0, patience: int | None = None, init_std: float = 0.01, seed: int = 0,
                 progress: bool = False):
        self.rank = rank
        self.regularization = regularization
        self.biases = biases
        self.n_negatives = n_negatives
        self.negatives = negatives
        self.popularity_exponent = popularity_exponent
        self.replace_negatives = replace_negatives
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.validation = validation
        self.patience = patience
        self.init_std = init_std
        self.seed = seed
        self.progress = progress

    def _param_keys(self):
        return ()  # the factors and biases are FactorModel's own arrays

    def _check_params(self) -> None:
        check_positive_int("rank", self.rank)
        check_nonnegative("regularization", self.regularization)
        check_nonnegative("init_std", self.init_std)
        for name in ("biases", "replace_negatives"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self._check_loop_params()
        self._check_negatives(self.n_negatives, self.negatives, self.popularity_exponent)

    def _triples(self, positives, rows, seed):
        n = int(self.n_negatives)
        negs = epoch_negatives(positives, rows.users, n, seed, self.negatives, float(self.popularity_exponent),
                               bool(self.replace_negatives))
        return (jnp.asarray(np.repeat(rows.users, n), jnp.int32), jnp.asarray(np.repeat(rows.items, n), jnp.int32),
                jnp.asarray(negs.reshape(-1), jnp.int32))

    def _fit(self, train) -> None:
        self._implicit_fit(train)
        fit_part, valid = carve_validation(train, self.validation, int(self.seed))
        loss = partial(engine.bpr_loss, regularization=float(self.regularization))
        valid_loss = None
        if valid is not None:
            vdata = self._triples(train, valid, [int(self.seed), 1 << 30])
            valid_loss = jax.jit(lambda p: jnp.mean(engine.bpr_loss(p, vdata)))
        params = engine.init_params([int(self.seed), 0], train.n_users, train.n_items, int(self.rank),
                                    float(self.init_std), bool(self.biases))
        params = self._run(loss, params, lambda t: self._triples(fit_part, fit_part, [int(self.seed), t]), valid_loss)
        self.user_factors_ = np.asarray(params["user"])
        self.item_factors_ = np.asarray(params["item"])
        self.item_bias_ = np.asarray(params["bias"]) if self.biases else None

    def _fold_in_solve(self, new) -> dict:
        """Refused: the default fold-in solves a squared-error ridge problem, not the pairwise BPR
        objective this model was trained with."""
        raise ConfigError("fold_in is not available for BPR: its user factors come from the pairwise BPR objective, "
                          "which has no closed-form fold-in; refit with the new users")
