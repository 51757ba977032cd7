"""Rating levels of an ordinal scale: the categories of the ordered-probit likelihood
(:mod:`bayesmf.posterior.ordinal`) and of the categorical metrics (:mod:`bayesmf.metrics.categorical`).

A scale's levels are the regular grid (step 1, else 0.5: integer or half-star ratings) from its
smallest to its largest value; :func:`encode_levels` maps values to category indices. NumPy only.
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import DataError

# half-star and integer scales: the grid steps an ordinal rating scale may have
LEVEL_STEPS = (1.0, 0.5)
MAX_CATEGORIES = 100


def rating_levels(values) -> np.ndarray:
    """The categories of a training scale: every level of the regular grid (step 1, else 0.5)
    from the smallest to the largest training value, (K,) float64. A level of the grid without
    training ratings is still a category (its gap is then known from the prior alone).

    Raises :class:`~bayesmf.errors.DataError` naming the first value (and its row) that is not
    on a half-star grid, non-finite values, fewer than 2 or more than :data:`MAX_CATEGORIES` levels.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise DataError(f"ordinal ratings must be a non-empty 1-D array, got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"ordinal ratings must be finite; row {row} holds {float(values[row])!r}")
    low, high = float(values.min()), float(values.max())
    for step in LEVEL_STEPS:
        off = _off_grid(values, low, step)
        if not off.any():
            break
    else:
        row = int(np.flatnonzero(off)[0])
        raise DataError(f"ordinal ratings must lie on an integer or half-star scale; row {row} holds "
                        f"{float(values[row])!r} (from {low:g}: not a multiple of {step:g})")
    k = int(round((high - low) / step)) + 1
    if k < 2 or k > MAX_CATEGORIES:
        raise DataError(f"the ordinal likelihood needs 2..{MAX_CATEGORIES} rating levels; the ratings span "
                        f"{k} level(s) ({low:g} to {high:g} by {step:g})")
    return low + step * np.arange(k)


def _off_grid(values, low, step):
    q = (values - low) / step
    return np.abs(q - np.round(q)) > 1e-6 * max(1.0, float(np.abs(q).max(initial=0.0)))


def encode_levels(values, levels, name: str = "ratings") -> np.ndarray:
    """Category index (0..K-1, int32) of each value among ``levels`` (sorted, (K,)).

    Raises :class:`~bayesmf.errors.DataError` naming the first value (and its row) that is not
    one of the levels (outside the training scale, or between its levels)."""
    values = np.asarray(values, np.float64)
    levels = np.asarray(levels, np.float64)
    index = np.clip(np.searchsorted(levels, values), 0, levels.size - 1)
    below = np.clip(index - 1, 0, levels.size - 1)
    nearest = np.where(np.abs(levels[below] - values) < np.abs(levels[index] - values), below, index)
    tol = 1e-6 * max(1.0, float(np.abs(levels).max()))
    bad = ~(np.abs(levels[nearest] - values) <= tol)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: row {row} holds {float(values[row])!r}, not one of the training scale's levels "
                        f"{levels.tolist()} ({int(bad.sum())} such rows)")
    return nearest.astype(np.int32)
