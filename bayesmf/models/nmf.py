"""Nonnegative matrix factorisation by multiplicative updates on the observed entries."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bayesmf.engines import nmf as engine
from bayesmf.engines.chunks import cache_chunk_slots, chunks_for
from bayesmf.engines.sparse import rating_arrays
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_dtype, check_positive_int
from bayesmf.models.fitting import (
    ClassicalModel,
    check_common,
    check_nonnegative_values,
    run,
    seed_key,
    store_state,
)
from bayesmf.models.recommend.foldin import nonnegative_fold_in


class NMF(ClassicalModel):
    """NMF (Lee & Seung 2001) restricted to the observed ratings, as Surprise's ``NMF``.

    ``r_hat = p_u . q_i`` with ``p, q >= 0`` (``biases=True``: ``mu + b_u + c_i + p_u . q_i``).
    ``loss="frobenius"`` minimises ``1/2 sum (r - r_hat)^2 + regularization/2 (sum_u n_u |p_u|^2
    + sum_i n_i |q_i|^2) + bias_regularization/2 (sum b_u^2 + sum c_i^2)``; ``loss="kl"``
    the generalised KL divergence with an L1 penalty (no biases). The objective never increases
    (see :mod:`bayesmf.engines.nmf`). Defaults are Surprise's (15 factors, 50 epochs, reg 0.06,
    bias reg 0.02); the initial factors are uniform, scaled so that ``E[p . q]`` matches the mean
    rating (Surprise: uniform on [0, 1]). Without biases the ratings must be >= 0.
    """

    def __init__(self, rank: int = 15, regularization: float = 0.06, bias_regularization: float = 0.02,
                 biases: bool = False, loss: str = "frobenius", n_iter: int = 50, seed: int = 0,
                 progress: bool = False, dtype: str = "float32"):
        self.rank = rank
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.biases = biases
        self.loss = loss
        self.n_iter = n_iter
        self.seed = seed
        self.progress = progress
        self.dtype = dtype

    def _check_params(self) -> None:
        check_common(self, regularization=self.regularization, bias_regularization=self.bias_regularization)
        check_positive_int("n_iter", self.n_iter)
        if self.loss not in ("frobenius", "kl"):
            raise ConfigError(f"loss must be 'frobenius' or 'kl', got {self.loss!r}")
        if self.loss == "kl" and self.biases:
            raise ConfigError("loss='kl' does not support biases=True (use loss='frobenius')")
        check_dtype(self.dtype)
        seed_key(self.seed)

    def _fit(self, train) -> None:
        if not self.biases:
            check_nonnegative_values(train, "NMF without biases (use biases=True otherwise)")
        dtype = check_dtype(self.dtype)
        ratings = rating_arrays(train, dtype)
        mu = jnp.mean(ratings.values) if self.biases else jnp.zeros((), dtype)
        data = engine.NMFData(
            *(chunks_for(train, side, width=engine.NMF_WIDTH, chunk_slots=cache_chunk_slots(self.rank), dtype=dtype)
              for side in ("user", "item")),
            jnp.asarray(train.user_counts, dtype), jnp.asarray(train.item_counts, dtype), ratings, mu,
        )
        config = engine.NMFConfig(float(self.regularization), float(self.bias_regularization), bool(self.biases),
                                  self.loss)
        # start at the scale of the targets: |r - mu| with biases, r without
        target = float(jnp.mean(jnp.abs(ratings.values - mu)))
        state = engine.init_factors(self.seed, train.n_users, train.n_items, self.rank, target, dtype)
        state = run(self, lambda _, s: engine.step(s, data, config), state, self.n_iter)
        store_state(self, state, mu, self.biases)

    def fold_in_penalty(self, counts: np.ndarray):
        """Ridge weights of ``2 F`` for one user: ``regularization * n`` on the factors (weighted,
        as in the fit) and ``bias_regularization`` on the bias (unweighted, as in the fit)."""
        counts = np.asarray(counts, np.float64)
        return float(self.regularization) * counts, np.full(counts.shape, float(self.bias_regularization))

    def _fold_in_solve(self, new) -> dict:
        """New users' ``p_u >= 0`` (and free ``b_u``) minimising the fit's Frobenius objective with the
        item side fixed — what the multiplicative updates converge to — solved directly as NNLS (200
        coordinate-descent passes). The KL objective has no such solve: ConfigError."""
        if self.loss != "frobenius":
            raise ConfigError(f"fold_in needs loss='frobenius'; this NMF was fitted with loss={self.loss!r}")
        if not self.biases:
            check_nonnegative_values(new, "NMF fold-in without biases")
        lam_f, lam_b = self.fold_in_penalty(new.user_counts)
        return nonnegative_fold_in(self, new, lam_f, lam_b, steps=200)
