"""What the classical estimators share around their engines: hyperparameter checks, the
driver loop with the Cholesky-retry warning, and copying a fitted engine state to NumPy."""

from __future__ import annotations

import warnings

import jax
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.engines.als import RETRY_JITTER
from bayesmf.engines.driver import iterate
from bayesmf.engines.sparse import check_ratings
from bayesmf.errors import CholeskyRetryWarning, ConfigError, DataError
from bayesmf.models.base import FactorModel, check_nonnegative, check_positive_int
from bayesmf.models.recommend.foldin import nonnegative_fold_in  # noqa: F401 - its former home


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


def run(model, step, state, n_iter: int, key=None, hint: str = ""):
    """Drive ``step(key, state) -> (state, info)`` for ``n_iter`` iterations, recording
    ``model.history_``; warns with :class:`CholeskyRetryWarning` when ``info`` reports retries
    (the count is not kept in the history)."""
    desc = type(model).__name__

    def host_step(k, s):
        s, info = step(k, s)
        retries = info.pop("cholesky_retries", None)
        if retries is not None and int(retries) > 0:
            warnings.warn(
                f"{desc}: a Cholesky factorisation failed (system not positive definite); solved again "
                f"with relative jitter {RETRY_JITTER:g}. Consider a larger regularization.",
                CholeskyRetryWarning,
                stacklevel=4,
            )
        return s, info

    state, _ = iterate(host_step, state, n_iter, key, progress=model.progress, desc=desc,
                       diverged_hint=hint, history=model.history_)
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


