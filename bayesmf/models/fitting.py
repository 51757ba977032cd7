"""What the classical estimators share around their engines: hyperparameter checks, running a
kernel through the driver (:mod:`bayesmf.engines.driver`), and copying a fitted engine state to
NumPy."""

from __future__ import annotations

import jax
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.engines.driver import iterate
from bayesmf.engines.sparse import check_ratings
from bayesmf.errors import CholeskyRetryWarning, ConfigError, DataError  # noqa: F401  (CholeskyRetryWarning: re-exported)
from bayesmf.models.base import FactorModel, check_nonnegative, check_positive_int
from bayesmf.models.recommend.foldin import nonnegative_fold_in  # noqa: F401 - its former home


class ClassicalModel(FactorModel):
    """A :class:`FactorModel` that checks its hyperparameters (``_check_params``) and the
    training indices before any work, so bad input fails with a clear error up front. The
    options of :meth:`~bayesmf.models.base.FactorModel._fit_with` reach ``_check_params`` too,
    so a setting can be checked against them."""

    def _fit_with(self, train, **options):
        self._check_params(**options)
        if isinstance(train, Ratings):
            check_ratings(train)
        return super()._fit_with(train, **options)

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


