"""What the classical estimators share around their engines: hyperparameter checks, running a
kernel through the driver (:mod:`bayesmf.engines.driver`), and copying a fitted engine state to
NumPy."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.engines.als import solve_nonnegative
from bayesmf.engines.chunks import build_gram_chunks, gram_rhs
from bayesmf.engines.driver import CholeskyRetryWarning, iterate  # noqa: F401  (re-exported)
from bayesmf.engines.sparse import check_ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.models.base import FactorModel, check_nonnegative, check_positive_int


class ClassicalModel(FactorModel):
    """A :class:`FactorModel` that checks its hyperparameters (``_check_params``) and the
    training indices before any work, so bad input fails with a clear error up front."""

    def fit(self, train):
        self._check_params()
        if isinstance(train, Ratings):
            check_ratings(train)
        return super().fit(train)

    def _check_params(self) -> None:  # pragma: no cover - overridden
        pass


def check_common(model, **nonnegative) -> None:
    """Validate ``rank`` (when the model has one) and every named nonnegative hyperparameter."""
    if hasattr(model, "rank"):
        check_positive_int("rank", model.rank)
    for name, value in nonnegative.items():
        check_nonnegative(name, value)


def run(model, kernel, state, n_iter: int, key=None, hint: str = ""):
    """Drive ``kernel`` (a :class:`~bayesmf.engines.driver.Kernel`) for ``n_iter`` iterations
    with :func:`~bayesmf.engines.driver.iterate`, recording ``model.history_``; a failed
    Cholesky factorisation is solved again with jitter there, with a
    :class:`CholeskyRetryWarning`."""
    state, _ = iterate(kernel, state, n_iter, key, progress=model.progress, desc=type(model).__name__,
                       diverged_hint=hint, retry_hint="Consider a larger regularization.", history=model.history_)
    return state


def to_numpy(x):
    """A device array as a NumPy array (None stays None)."""
    return None if x is None else np.asarray(jax.device_get(x))


def seed_key(seed):
    """The PRNG key of an estimator's ``seed``, a non-negative int (it also seeds NumPy's
    generators, which refuse negative seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return jax.random.PRNGKey(int(seed))


def store_state(model, state, mu, biases: bool) -> None:
    """Copy a fitted :class:`~bayesmf.engines.als.FactorState` into the model's ``*_`` attributes."""
    model.global_mean_ = float(mu)
    model.user_factors_, model.item_factors_ = to_numpy(state.user_factors), to_numpy(state.item_factors)
    model.user_bias_ = to_numpy(state.user_bias) if biases else None
    model.item_bias_ = to_numpy(state.item_bias) if biases else None


def check_nonnegative_values(train, why: str) -> None:
    """DataError naming the first negative rating when a model needs values >= 0 (``why`` says which)."""
    negative = train.values < 0
    if negative.any():
        row = int(np.flatnonzero(negative)[0])
        raise DataError(f"{why} needs values >= 0; value {train.values[row]} at row {row}")


# -- fold-in of new users for the classical models (hooks of bayesmf.models.recommend) ----------
@partial(jax.jit, static_argnames=("steps", "free_bias"))
def _nonnegative_rows(chunks, features, penalty, steps: int, free_bias: bool):
    gram, rhs, _ = gram_rhs(chunks, features)
    precision = gram + penalty[:, :, None] * jnp.eye(features.shape[1], dtype=features.dtype)
    x0 = jnp.zeros((penalty.shape[0], features.shape[1] - free_bias), features.dtype)
    return solve_nonnegative(precision, rhs, x0, steps, free_bias)


def nonnegative_fold_in(model, new, lam_factors, lam_bias, steps: int) -> dict:
    """Fold-in for ``r_hat = mu + b_u + c_i + p_u . q_i`` with ``p_u >= 0`` (``b_u`` free when the
    model has biases): per new user, ``argmin sum_{i in N(u)} (r_ui - mu - c_i - p.q_i - b)^2
    + lam_factors |p|^2 + lam_bias b^2`` subject to ``p >= 0``, by projected coordinate descent
    (``steps`` passes from zero) on the normal equations. ``lam_*`` (n_new,)."""
    dtype = np.asarray(model.item_factors_).dtype
    biased = model.user_bias_ is not None
    targets = new.values.astype(dtype) - dtype.type(model.global_mean_)
    if biased:
        targets -= np.asarray(model.item_bias_, dtype)[new.items]
    features = np.asarray(model.item_factors_, dtype)
    if biased:
        features = np.concatenate([features, np.ones((features.shape[0], 1), dtype)], axis=1)
    rank = model.item_factors_.shape[1]
    penalty = np.repeat(np.asarray(lam_factors, dtype)[:, None], rank, 1)
    if biased:
        penalty = np.concatenate([penalty, np.asarray(lam_bias, dtype)[:, None]], axis=1)
    chunks = build_gram_chunks(new.users, new.items, targets, new.n_users, *features.shape, dtype=dtype)
    x = np.asarray(_nonnegative_rows(chunks, features, penalty, steps, biased))
    return {"user_factors_": x[:, :rank], "user_bias_": x[:, rank] if biased else None}
