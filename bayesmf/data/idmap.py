"""Raw-ID <-> contiguous-index maps that only ever grow.

An :class:`IdMap` assigns the indices ``0..n-1`` to ``n`` raw IDs (integers or strings). It is the
mapping table of a production pipeline: :meth:`IdMap.extend` appends IDs seen for the first time
and never renumbers an existing one, so factors trained yesterday stay addressable today.

Lookups are vectorised: the IDs are kept once in index order and once sorted (with the
permutation back), so mapping ``m`` raw IDs costs ``O(m log n)`` in NumPy, not a Python loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bayesmf.errors import DataError

_FORMAT_VERSION = 1


def _as_id_array(ids) -> np.ndarray:
    """Normalise raw IDs to a 1-D int64 or unicode array (the two kinds an IdMap holds)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise DataError("IDs must be integers or strings, got booleans")
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr)):
            raise DataError(f"IDs must be finite; got {arr[~np.isfinite(arr)][0].item()!r}")
        if arr.size and not np.all(arr == np.round(arr)):
            raise DataError(f"float IDs must be whole numbers; got {arr[arr != np.round(arr)][0].item()!r}")
        return arr.astype(np.int64)
    if arr.dtype.kind in "OUS":
        if arr.size and arr.dtype.kind == "O":
            if any(x is None or (isinstance(x, float) and x != x) for x in arr):
                raise DataError("IDs contain a missing value (None/NaN)")
            if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in arr):
                return arr.astype(np.int64)
        return arr.astype(str)
    raise DataError(f"IDs must be integers or strings, got dtype {arr.dtype}")


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` (the sorted distinct values) of a 1-D array, by one sort for integers:
    NumPy 2's ``np.unique`` hashes integers, which is several times slower on millions of IDs."""
    if values.dtype.kind not in "iu":
        return np.unique(values)
    values = np.sort(values)
    if values.size < 2:
        return values
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


class IdMap:
    """An immutable, append-only map from raw IDs to indices ``0..len-1``.

    Build one with :meth:`from_ids` (indices follow the sorted order of the distinct IDs, so the
    result does not depend on row order) or :meth:`from_ordered` (indices in the order given).
    """

    __slots__ = ("_ids", "_sorted", "_order")

    def __init__(self, ids_in_index_order=()):
        ids = _as_id_array(ids_in_index_order)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if sorted_ids.size > 1:
            dup = sorted_ids[1:] == sorted_ids[:-1]
            if dup.any():
                raise DataError(f"IdMap IDs must be distinct; {sorted_ids[1:][dup][0].item()!r} repeats")
        ids.setflags(write=False)
        self._ids = ids
        self._sorted = sorted_ids
        self._order = order.astype(np.int64)

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_ids(cls, raw_ids) -> IdMap:
        """Map the distinct values of ``raw_ids`` to indices in sorted-ID order."""
        return cls(sorted_distinct(_as_id_array(raw_ids)))

    @classmethod
    def from_ordered(cls, ids_in_index_order) -> IdMap:
        """Map ``ids_in_index_order[k]`` to index ``k`` (IDs must be distinct)."""
        return cls(ids_in_index_order)

    @classmethod
    def range(cls, n: int) -> IdMap:
        """The identity map ``k -> k`` for ``k < n`` (used when data arrive as indices)."""
        return cls(np.arange(int(n), dtype=np.int64))

    def extend(self, raw_ids) -> IdMap:
        """Return a new map that also holds the unseen IDs of ``raw_ids``.

        Existing IDs keep their indices; new IDs get ``len(self), len(self)+1, ...`` in order of
        first appearance in ``raw_ids``.
        """
        ids = self._coerce(raw_ids)
        new = ids[self.lookup(ids, missing=-1) < 0]
        if new.size == 0:
            return self
        _, first = np.unique(new, return_index=True)
        fresh = new[np.sort(first)]
        if self._ids.size == 0:
            return IdMap(fresh)
        return IdMap(np.concatenate([self._ids, fresh]))

    # lookups ------------------------------------------------------------------------------
    def lookup(self, raw_ids, missing: str | int = "error") -> np.ndarray:
        """Indices (int32) of ``raw_ids``; unknown IDs raise, or map to ``missing`` if it is -1."""
        ids = self._coerce(raw_ids)
        if self._sorted.size == 0:
            pos = np.zeros(ids.shape, dtype=np.int64)
            found = np.zeros(ids.shape, dtype=bool)
        else:
            pos = np.searchsorted(self._sorted, ids)
            pos_c = np.minimum(pos, self._sorted.size - 1)
            found = self._sorted[pos_c] == ids
            pos = pos_c
        out = np.where(found, self._order[pos] if self._order.size else 0, -1).astype(np.int32)
        if not found.all():
            if missing == "error":
                raise DataError(f"unknown ID {ids[~found][0].item()!r} ({int((~found).sum())} unknown in all)")
            if missing != -1:
                raise DataError(f"missing must be 'error' or -1, got {missing!r}")
        return out

    def ids(self, indices=None) -> np.ndarray:
        """Raw IDs of ``indices`` (all of them, in index order, when ``indices`` is None)."""
        if indices is None:
            return self._ids
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))].reshape(-1)[0]
            raise DataError(f"index {int(bad)} out of range for an IdMap of {len(self)} IDs")
        return self._ids[idx]

    def _coerce(self, raw_ids) -> np.ndarray:
        ids = _as_id_array(raw_ids)
        if self._ids.size and ids.size and (ids.dtype.kind == "U") != (self._ids.dtype.kind == "U"):
            kind = "string" if self._ids.dtype.kind == "U" else "integer"
            raise DataError(f"this IdMap holds {kind} IDs; got {ids[0].item()!r} of dtype {ids.dtype}")
        return ids

    @property
    def is_identity(self) -> bool:
        """True when raw ID ``k`` is index ``k`` for every ``k``."""
        return self._ids.dtype.kind == "i" and bool(np.array_equal(self._ids, np.arange(len(self))))

    def __len__(self) -> int:
        return int(self._ids.size)

    def __contains__(self, raw_id) -> bool:
        return bool(self.lookup([raw_id], missing=-1)[0] >= 0)

    def __eq__(self, other) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self._ids, other._ids)

    def __hash__(self):
        return hash((len(self), self._ids[:8].tobytes()))

    def __repr__(self) -> str:
        head = ", ".join(repr(x.item()) for x in self._ids[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap({len(self)} IDs: [{head}{more}])"

    # persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        kind = "str" if self._ids.dtype.kind == "U" else "int"
        return {"format_version": _FORMAT_VERSION, "kind": kind, "ids": self._ids.tolist()}

    @classmethod
    def from_dict(cls, payload: dict) -> IdMap:
        version = payload.get("format_version")
        if version != _FORMAT_VERSION:
            raise DataError(f"IdMap format version {version!r} is not supported (expected {_FORMAT_VERSION})")
        dtype = str if payload["kind"] == "str" else np.int64
        return cls(np.asarray(payload["ids"], dtype=dtype))

    def save(self, path) -> None:
        """Write the map as JSON (IDs in index order), readable by :meth:`load`."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> IdMap:
        try:
            payload = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not an IdMap JSON file ({exc})") from None
        return cls.from_dict(payload)
