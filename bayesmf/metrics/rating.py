r"""Rating-prediction accuracy: RMSE, MAE, bootstrap intervals, per-user errors, posterior RMSE.

Definitions, for observed ratings :math:`y_n` and predictions :math:`\hat y_n`, :math:`n = 1..N`:

.. math::
    \mathrm{RMSE} = \sqrt{\tfrac1N \sum_n (y_n - \hat y_n)^2}, \qquad
    \mathrm{MAE} = \tfrac1N \sum_n |y_n - \hat y_n|.

Bootstrap intervals are percentile intervals of the metric recomputed on ``n_boot`` resamples:
``by="ratings"`` resamples the N test ratings with replacement; ``by="users"`` resamples the test
*users* with replacement and pools all ratings of each drawn user (a cluster bootstrap: ratings of
one user are not independent, so this interval is the honest one when users are the unit a
conclusion is about; it is wider). Both are computed from per-rating or per-user sums, in chunks
of replicates so memory stays below ``memory_budget`` bytes.

For posterior draws of the predictions (``samples`` of shape (S, N)), :func:`posterior_rmse`
gives the posterior distribution of the test RMSE, RMSE_s computed per draw: its mean and a
central interval, so a table can say "RMSE 0.851 [0.849, 0.853]". This is not the RMSE of the
posterior-mean prediction (which is lower, by Jensen's inequality); both are reported by
:func:`bayesmf.metrics.evaluate_ratings`.
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import ConfigError, DataError
from bayesmf.predictive import check_level
from bayesmf.validate import as_values, check_positive_int, same_length

__all__ = ["bootstrap_ci", "mae", "per_user_errors", "posterior_rmse", "rmse", "rmse_per_draw"]

METRICS = {
    # name: (per-rating loss, transform of the mean loss)
    "rmse": (lambda e: e * e, np.sqrt),
    "mae": (np.abs, lambda m: m),
}


def _errors(y, pred) -> np.ndarray:
    y = as_values("y", y)
    pred = as_values("pred", pred)
    same_length(y=y, pred=pred)
    return pred - y


def rmse(y, pred) -> float:
    """Root mean squared error of ``pred`` against ``y`` (both (N,))."""
    err = _errors(y, pred)
    return float(np.sqrt(np.mean(err * err)))


def mae(y, pred) -> float:
    """Mean absolute error of ``pred`` against ``y`` (both (N,))."""
    return float(np.mean(np.abs(_errors(y, pred))))


def _check_metric(metric: str):
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return METRICS[metric]


def _check_users(users, n: int) -> np.ndarray:
    if users is None:
        raise DataError("by='users' needs the user index of every rating (users=...)")
    users = np.asarray(users)
    if users.dtype.kind not in "iu" or users.ndim != 1:
        raise DataError(f"users must be a 1-D integer array, got dtype {users.dtype}, shape {users.shape}")
    same_length(users=users, y=np.empty(n))
    if users.size and users.min() < 0:
        raise DataError(f"users must be >= 0 (indices), got {int(users.min())}")
    return users.astype(np.int64)


def bootstrap_ci(
    y,
    pred,
    metric: str = "rmse",
    by: str = "ratings",
    users=None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    memory_budget: int = 2**27,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of ``metric`` ("rmse" or "mae").

    ``by="ratings"``: resample the N ratings; ``by="users"``: resample users (``users`` gives the
    user index of each rating) and pool their ratings, i.e. replicate ``b`` is
    ``transform(sum_u w_bu L_u / sum_u w_bu n_u)`` with ``L_u`` the user's summed loss, ``n_u``
    their rating count and ``w_bu`` how often user ``u`` was drawn. Deterministic given ``seed``.
    """
    loss, transform = _check_metric(metric)
    level = check_level(level)
    n_boot = check_positive_int("n_boot", n_boot)
    per_rating = loss(_errors(y, pred))
    if by == "ratings":
        sums, counts = per_rating, None
    elif by == "users":
        users = _check_users(users, per_rating.size)
        _, inverse = np.unique(users, return_inverse=True)  # only users with test ratings
        sums = np.bincount(inverse, weights=per_rating)
        counts = np.bincount(inverse).astype(np.float64)
    else:
        raise ConfigError(f"by must be 'ratings' or 'users', got {by!r}")

    rng = np.random.default_rng(seed)
    n_units = sums.size
    chunk = max(1, int(memory_budget) // (8 * n_units))  # one int64 index matrix per chunk
    stats = np.empty(n_boot)
    for start in range(0, n_boot, chunk):  # loop over chunks of replicates, not over data
        draw = rng.integers(0, n_units, size=(min(chunk, n_boot - start), n_units))
        total = sums[draw].sum(axis=1)
        denom = n_units if counts is None else counts[draw].sum(axis=1)
        stats[start:start + draw.shape[0]] = transform(total / denom)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def per_user_errors(users, y, pred) -> dict:
    """Error distribution over users: for each user with at least one rating (ascending index),
    ``users``, ``count``, ``rmse`` and ``mae`` arrays of shape (n_test_users,)."""
    err = _errors(y, pred)
    users = _check_users(users, err.size)
    ids, inverse = np.unique(users, return_inverse=True)
    count = np.bincount(inverse)
    return {
        "users": ids,
        "count": count,
        "rmse": np.sqrt(np.bincount(inverse, weights=err * err) / count),
        "mae": np.bincount(inverse, weights=np.abs(err)) / count,
    }


def rmse_per_draw(y, samples) -> np.ndarray:
    """RMSE of each draw ``samples[s]`` against ``y``: shape (S,) for ``samples`` (S, N)."""
    y = as_values("y", y)
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != y.size:
        raise DataError(f"samples must have shape (S, {y.size}), got {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise DataError(f"samples hold {int((~np.isfinite(samples)).sum())} non-finite entries")
    err = samples - y[None, :]
    return np.sqrt(np.einsum("sn,sn->s", err, err, dtype=np.float64) / y.size)


def posterior_rmse(y, samples, level: float = 0.95) -> dict:
    """Posterior distribution of the test RMSE from per-draw predictions ``samples`` (S, N):
    ``mean`` (average of the per-draw RMSEs), ``lo``/``hi`` (central ``level`` interval of them,
    linear-interpolated quantiles) and ``draws`` (the S values)."""
    level = check_level(level)
    draws = rmse_per_draw(y, samples)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(draws.mean()), "lo": float(lo), "hi": float(hi), "draws": draws}
