"""Argument checks shared by every layer: each complaint names the argument and the value given.

This module imports only NumPy and :mod:`bayesmf.errors`, so the data layer can use it as well as
the models, engines and metrics. Integers are Python or NumPy integers, never ``bool`` (a
``True`` that slips in as ``1`` is a bug at the caller); numbers that merely convert to integers
(``2.7``, ``"3"``) are refused instead of being truncated or parsed.
"""

from __future__ import annotations

import numbers

import numpy as np

from bayesmf.errors import ConfigError, DataError

__all__ = [
    "as_indices", "as_std", "as_values", "check_fraction", "check_int", "check_ks", "check_level", "check_nonnegative",
    "check_positive_int", "check_probability", "same_length",
]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _first_non_integer(flat: np.ndarray) -> int:
    """Position of the first entry of a non-integer-dtype array that is not a whole number (0 when
    every entry is one, e.g. ``1.0``), to show the value most likely at fault."""
    if flat.dtype.kind == "f":
        frac = ~(np.isfinite(flat) & (flat == np.round(flat)))
    else:
        frac = np.array([not _is_int(v) for v in flat]) if flat.dtype.kind == "O" else np.ones(flat.size, bool)
    return int(np.argmax(frac)) if frac.any() else 0


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound optional).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : int or numpy integer
        A ``bool`` or a number that merely converts to an integer (``2.7``, ``"3"``) is refused.
    low, high : int, optional
        Inclusive bounds.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        Naming ``name``, the bounds and ``value``.
    """
    if not _is_int(value):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` >= 1: :func:`check_int` with ``low=1``, its own message.

    Parameters
    ----------
    name : str
    value : int or numpy integer

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        "``name`` must be a positive integer, got ``value``".
    """
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a finite ``float`` >= 0 (anything ``float()`` accepts).

    Parameters
    ----------
    name : str
    value : number

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        Naming ``name`` and ``value``.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_ks(ks) -> tuple[int, ...]:
    """Ranking cut-offs ``k``, each a positive integer.

    Parameters
    ----------
    ks : int or iterable of int
        One cut-off or a non-empty collection of them.

    Returns
    -------
    tuple of int

    Raises
    ------
    ConfigError
        On an empty collection or a cut-off that is not a positive integer.
    """
    ks = (ks,) if np.ndim(ks) == 0 else tuple(ks)
    if not ks:
        raise ConfigError("ks is empty: give at least one cut-off k >= 1")
    return tuple(check_positive_int("k", k) for k in ks)


def check_probability(name: str, q) -> np.ndarray:
    """``q`` as a float64 array with every entry strictly inside (0, 1).

    Parameters
    ----------
    name : str
    q : float or array-like of float

    Returns
    -------
    ndarray of float64, the shape of ``q``

    Raises
    ------
    ConfigError
        When ``q`` is empty or an entry is outside (0, 1).
    """
    arr = np.asarray(q, dtype=np.float64)
    if arr.size == 0 or not np.all((arr > 0) & (arr < 1)):
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {q!r}")
    return arr


def check_level(level) -> float:
    """A central-interval level: a scalar strictly inside (0, 1).

    Parameters
    ----------
    level : float

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        When ``level`` is not a scalar or not inside (0, 1).
    """
    if np.ndim(level) != 0:
        raise ConfigError(f"level must be a scalar in (0, 1), got {level!r}")
    return float(check_probability("level", level))


def check_fraction(name: str, value) -> float:
    """``value`` as a ``float`` strictly inside (0, 1).

    Parameters
    ----------
    name : str
    value : real number
        A bool, a string or None is refused.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        Naming ``name`` and ``value``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def as_indices(values, name: str, n: int | None = None, *, allow_integral_floats: bool = False) -> np.ndarray:
    """``values`` as a flat int64 array of indices, each in ``0..n-1`` when ``n`` is given.

    Integer dtypes only: a bool, string or object array is refused, and so is a float array
    (``1.7`` must not become index 1, nor ``"5"`` index 5) unless ``allow_integral_floats``,
    which accepts floats holding whole numbers (arrays read from numeric files). An empty input
    is an empty index array whatever its dtype. The DataError names ``name``, the offending
    value and its position.
    """
    arr = np.asarray(values)
    flat = arr.reshape(-1)
    if flat.size == 0:
        return np.zeros(0, np.int64)
    kind = arr.dtype.kind
    if kind == "f" and allow_integral_floats:
        bad = ~(np.isfinite(flat) & (flat == np.round(flat)))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name} must be integer indices; position {pos} holds {flat[pos].item()!r}")
        if np.abs(flat).max() > 2**53:
            raise DataError(f"{name} holds float indices too large to be exact (max {np.abs(flat).max()!r})")
    elif kind not in "iu":
        pos = _first_non_integer(flat)
        value = flat[pos].item() if isinstance(flat[pos], np.generic) else flat[pos]
        raise DataError(f"{name} must be integer indices, got dtype {arr.dtype} (position {pos} holds {value!r})")
    if kind == "u" and flat.max() > np.iinfo(np.int64).max:
        raise DataError(f"{name} index {flat.max().item()!r} does not fit in int64")
    out = flat.astype(np.int64)
    if n is not None:
        bad = (out < 0) | (out >= n)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{name}: index {int(out[pos])} is out of range 0..{n - 1} "
                f"(position {pos}; {int(bad.sum())} out of range in all)"
            )
    return out


def as_values(name: str, x, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a finite one-dimensional float64 array.

    Parameters
    ----------
    name : str
    x : array-like of numbers (bool, int or float dtype)
    allow_empty : bool
        Accept a zero-length array.

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    DataError
        On a non-numeric dtype, another number of dimensions, an empty input, or a NaN/inf
        (naming its position and the count).
    """
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
    """The common length of the named arrays.

    Parameters
    ----------
    **arrays : sized
        Name -> array.

    Returns
    -------
    int

    Raises
    ------
    DataError
        Listing every length when they differ.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"mismatched lengths: {lengths}")
    return next(iter(lengths.values()))


def as_std(name: str, x) -> np.ndarray:
    """A standard deviation array: :func:`as_values` with every entry >= 0.

    Parameters
    ----------
    name : str
    x : array-like of numbers

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    DataError
        Naming the first negative entry and its position.
    """
    std = as_values(name, x)
    if (std < 0).any():
        pos = int(np.flatnonzero(std < 0)[0])
        raise DataError(f"{name} must be >= 0; {name}[{pos}] = {float(std[pos])}")
    return std
