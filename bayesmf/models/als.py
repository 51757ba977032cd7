"""Alternating least squares estimators: explicit ``ALS`` (optionally nonnegative) and
``ImplicitALS`` (Hu, Koren & Volinsky 2008)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines import als as engine
from bayesmf.engines import implicit_als as implicit_engine
from bayesmf.engines.chunks import build_chunks, cache_chunk_slots, chunks_for, gram_chunks_for
from bayesmf.engines.sharding import device_mesh
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


class ALS(ClassicalModel):
    """Explicit-feedback ALS with weighted-lambda regularisation (Zhou et al. 2008).

    ``r_hat = mu + b_u + c_i + p_u . q_i``; each sweep solves every user's (k+1)-dimensional
    normal equations exactly (one batched Cholesky), then every item's. The penalty on a row is
    ``regularization * n_r |p_r|^2`` (and ``bias_regularization * n_r b_r^2``; default: the
    same value), ``n_r`` its number of ratings. ``mu`` is the training mean, except for
    ``nonnegative=True, biases=False`` (Spark's nonnegative ALS), which fits ``p_u . q_i`` alone.
    ``nonnegative=True`` constrains the factors (not the biases) to be >= 0 via per-row NNLS
    with ``nnls_steps`` coordinate-descent passes. See :mod:`bayesmf.engines.als`.

    ``devices`` (None, a list of JAX devices or a one-axis :class:`jax.sharding.Mesh`): run the
    sweeps over these devices, rows and their ratings split by chunk, factors all-gathered every
    half step (:mod:`bayesmf.engines.sharding`); the factors equal the one-device fit's bit for
    bit, on any number of devices. A setting of the fit only (not saved).
    """

    def __init__(self, rank: int = 10, regularization: float = 0.05, bias_regularization: float | None = None,
                 biases: bool = True, nonnegative: bool = False, n_iter: int = 15, nnls_steps: int = 20,
                 init_scale: float = 0.1, seed: int = 0, progress: bool = False, dtype: str = "float32",
                 devices=None):
        self.rank = rank
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.biases = biases
        self.nonnegative = nonnegative
        self.n_iter = n_iter
        self.nnls_steps = nnls_steps
        self.init_scale = init_scale
        self.seed = seed
        self.progress = progress
        self.dtype = dtype
        self.devices = devices

    def _bias_reg(self) -> float:
        return self.regularization if self.bias_regularization is None else self.bias_regularization

    def _check_params(self) -> None:
        check_common(self, regularization=self.regularization, bias_regularization=self._bias_reg(),
                     init_scale=self.init_scale)
        check_positive_int("n_iter", self.n_iter)
        check_positive_int("nnls_steps", self.nnls_steps)
        check_dtype(self.dtype)
        seed_key(self.seed)
        device_mesh(self.devices)

    def _fit(self, train) -> None:
        dtype = check_dtype(self.dtype)
        ratings = rating_arrays(train, dtype)
        centred = self.biases or not self.nonnegative
        mu = jnp.mean(ratings.values) if centred else jnp.zeros((), dtype)
        data = engine.ALSData(
            *(gram_chunks_for(train, side, self.rank + 1, dtype=dtype) for side in ("user", "item")),
            jnp.asarray(train.user_counts, dtype), jnp.asarray(train.item_counts, dtype), ratings, mu,
        )
        mesh = device_mesh(self.devices)
        if mesh is not None:
            data = engine.shard(data, mesh)
        config = engine.ALSConfig(float(self.regularization), float(self._bias_reg()), bool(self.biases),
                                  bool(self.nonnegative), int(self.nnls_steps))
        scale = self.init_scale
        if not centred:  # nonnegative p.q alone: start where E[p.q] equals the mean rating
            scale = float(np.sqrt(max(float(np.mean(train.values)), 1e-3) / self.rank * np.pi / 2))
        state = engine.init_factors(self.seed, train.n_users, train.n_items, self.rank, scale, dtype,
                                    nonnegative=self.nonnegative)
        state = run(self, engine.build_kernel(data, config), state, self.n_iter)
        store_state(self, state, mu, self.biases)

    def fold_in_penalty(self, counts: np.ndarray):
        """Weighted lambda, as in the fit: a user with ``n`` ratings is penalised by
        ``regularization * n |p|^2 + bias_regularization * n b^2``."""
        counts = np.asarray(counts, np.float64)
        return float(self.regularization) * counts, float(self._bias_reg()) * counts

    def _fold_in_solve(self, new) -> dict:
        """The user half step of the fit given the item side: the ridge solution (default path with
        :meth:`fold_in_penalty`), or for ``nonnegative=True`` the NNLS solution with the bias free,
        by ``10 * nnls_steps`` coordinate-descent passes (the fit warm-starts every sweep from the
        previous factors; a new user starts from zero)."""
        if not self.nonnegative:
            return super()._fold_in_solve(new)
        lam_f, lam_b = self.fold_in_penalty(new.user_counts)
        return nonnegative_fold_in(self, new, lam_f, lam_b, steps=10 * int(self.nnls_steps))


class ImplicitALS(ClassicalModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008): confidence ``1 + alpha r``, preference 1
    for every observed pair and 0 for all others; ``reg (|x_u|^2 + |y_i|^2)`` unweighted.

    ``solver="cg"`` (default) runs ``cg_steps`` conjugate-gradient steps per half sweep,
    warm-started (Takacs et al. 2011, as the ``implicit`` library); ``solver="cholesky"`` solves
    exactly. Scores ``x_u . y_i`` are preferences (about 0..1), so ``predict`` never clips to a
    rating scale. Values must be >= 0 (they are confidences). See :mod:`bayesmf.engines.implicit_als`.
    ``devices``: as for :class:`ALS` (the sharded fit equals the one-device fit bit for bit).
    """

    def __init__(self, rank: int = 64, regularization: float = 0.01, alpha: float = 1.0, n_iter: int = 15,
                 solver: str = "cg", cg_steps: int = 3, init_scale: float = 0.01, seed: int = 0,
                 progress: bool = False, dtype: str = "float32", devices=None):
        self.rank = rank
        self.regularization = regularization
        self.alpha = alpha
        self.n_iter = n_iter
        self.solver = solver
        self.cg_steps = cg_steps
        self.init_scale = init_scale
        self.seed = seed
        self.progress = progress
        self.dtype = dtype
        self.devices = devices

    def _check_params(self) -> None:
        check_common(self, regularization=self.regularization, alpha=self.alpha, init_scale=self.init_scale)
        check_positive_int("n_iter", self.n_iter)
        check_positive_int("cg_steps", self.cg_steps)
        if self.solver not in ("cg", "cholesky"):
            raise ConfigError(f"solver must be 'cg' or 'cholesky', got {self.solver!r}")
        check_dtype(self.dtype)
        seed_key(self.seed)
        device_mesh(self.devices)

    def _fit(self, train) -> None:
        check_nonnegative_values(train, "ImplicitALS (values are confidences)")
        dtype = check_dtype(self.dtype)
        slots = cache_chunk_slots(self.rank, itemsize=np.dtype(dtype).itemsize)
        data = implicit_engine.ImplicitData(chunks_for(train, "user", chunk_slots=slots, dtype=dtype),
                                            chunks_for(train, "item", chunk_slots=slots, dtype=dtype),
                                            rating_arrays(train, dtype))
        mesh = device_mesh(self.devices)
        if mesh is not None:
            data = implicit_engine.shard(data, mesh)
        config = implicit_engine.ImplicitConfig(float(self.regularization), float(self.alpha),
                                                int(self.cg_steps), self.solver == "cholesky")
        state = engine.init_factors(self.seed, train.n_users, train.n_items, self.rank,
                                    self.init_scale, dtype)
        state = run(self, implicit_engine.build_kernel(data, config), state, self.n_iter)
        self.rating_scale_ = None
        store_state(self, state, 0.0, biases=False)

    def _fold_in_solve(self, new) -> dict:
        """New users' factors from the fit's exact user half step given the item factors ``Y``:
        ``x_u = (Y^T Y + reg I + sum_{i in N(u)} alpha r_ui y_i y_i^T)^-1 sum_{i in N(u)} (1 + alpha r_ui) y_i``
        (confidence-weighted, every unrated item a zero preference with confidence 1)."""
        check_nonnegative_values(new, "ImplicitALS fold-in (values are confidences)")
        dtype = np.asarray(self.item_factors_).dtype
        config = implicit_engine.ImplicitConfig(float(self.regularization), float(self.alpha), exact=True)
        chunks = build_chunks(new.users, new.items, new.values, new.n_users, self.item_factors_.shape[0],
                              dtype=dtype)
        own = jnp.zeros((new.n_users, self.item_factors_.shape[1]), dtype)
        x, _, _ = _implicit_half_step(chunks, own, jnp.asarray(self.item_factors_), config)
        return {"user_factors_": np.asarray(x)}


_implicit_half_step = jax.jit(implicit_engine.update_side)
