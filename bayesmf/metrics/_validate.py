"""Argument checks shared by the metric modules: every complaint names the offending argument."""

from __future__ import annotations

import numpy as np

from bayesmf.errors import ConfigError, DataError


def as_values(name: str, x, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a finite 1-D float64 array; DataError naming ``name`` otherwise."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iufb":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise DataError(f"{name} is empty: nothing to evaluate")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} holds {float(arr[pos])} at position {pos} ({int(bad.sum())} non-finite entries)")
    return arr


def same_length(**arrays) -> int:
    """The common length of the named arrays; DataError listing every length otherwise."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"mismatched lengths: {lengths}")
    return next(iter(lengths.values()))


def as_std(name: str, x) -> np.ndarray:
    """A finite, non-negative 1-D standard deviation array."""
    std = as_values(name, x)
    if (std < 0).any():
        pos = int(np.flatnonzero(std < 0)[0])
        raise DataError(f"{name} must be >= 0; {name}[{pos}] = {float(std[pos])}")
    return std


def check_ks(ks) -> tuple[int, ...]:
    """Cut-offs: positive integers (a single int or an iterable)."""
    ks = (ks,) if np.ndim(ks) == 0 else tuple(ks)
    if not ks:
        raise ConfigError("ks is empty: give at least one cut-off k >= 1")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    return tuple(int(k) for k in ks)

