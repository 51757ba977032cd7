"""The sparse ratings container every part of bayesmf shares.

A :class:`Ratings` holds ``nnz`` observed (user, item, value) triples as three parallel arrays in
coordinate (COO) form, plus optional timestamps, the matrix shape, the rating scale and the two
:class:`~bayesmf.data.idmap.IdMap` objects that translate indices back to raw IDs. It never
materialises the dense ``n_users x n_items`` matrix: everything downstream (segment sums, batched
solves, metrics) works on these arrays or on the sorted CSR/CSC orderings :meth:`Ratings.by_user`
and :meth:`Ratings.by_item` provide.

Invariants (checked once, at construction from outside data):

* ``users``/``items`` are int32 in ``[0, n_users)`` / ``[0, n_items)``; ``values`` float32 and
  finite; ``timestamps`` int64 or None, with :data:`MISSING_TIMESTAMP` marking unknown times.
* no (user, item) pair occurs twice (duplicates are an error unless the caller merges them);
* values lie inside ``rating_scale`` when one is declared;
* row order is the caller's: nothing is sorted, dropped or clipped silently.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import NamedTuple

import numpy as np

from bayesmf.data.idmap import IdMap
from bayesmf.errors import DataError
from bayesmf.validate import as_indices

MISSING_TIMESTAMP = -1
"""Timestamp value meaning "unknown" (as in the shared MovieLens-1M ``.npz``)."""

DUPLICATE_POLICIES = ("error", "last", "mean")


class Grouping(NamedTuple):
    """A CSR-style view of ratings grouped by user (or by item).

    ``order`` permutes rating rows so that group ``g`` occupies ``order[indptr[g]:indptr[g+1]]``;
    ``segment_ids`` is the group of each permuted row (sorted, as ``jax.ops.segment_sum`` with
    ``indices_are_sorted=True`` wants); ``counts`` is ``diff(indptr)``. Shapes: ``order`` and
    ``segment_ids`` (nnz,), ``indptr`` (n_groups + 1,), ``counts`` (n_groups,).
    """

    order: np.ndarray
    indptr: np.ndarray
    segment_ids: np.ndarray
    counts: np.ndarray


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def group_order(keys: np.ndarray, n_groups: int) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` (int64) for integer keys in ``[0, n_groups)``, by
    least-significant-digit radix sort on 16-bit digits: NumPy's stable sort is a linear-time
    radix sort for 16-bit integers (and a merge sort for wider ones), so one pass per digit
    gives the same permutation in O(nnz) per digit. Two passes cover ``n_groups < 2**32``."""
    keys = np.asarray(keys)
    if n_groups <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable").astype(np.int64, copy=False)
    if n_groups > 1 << 32:
        return np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = (keys >> 16).astype(np.uint16)[order]
    return order[np.argsort(high, kind="stable")].astype(np.int64, copy=False)


def group_rows(keys: np.ndarray, n_groups: int) -> Grouping:
    """The :class:`Grouping` of rows by integer ``keys`` in ``[0, n_groups)`` (stable)."""
    keys = np.asarray(keys)
    order = group_order(keys, n_groups)
    counts = np.bincount(keys, minlength=n_groups).astype(np.int64)
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    # keys[order] written sequentially from the counts (a gather through ``order`` reads at random)
    segment_ids = np.repeat(np.arange(n_groups, dtype=keys.dtype), counts)
    return Grouping(*(_readonly(a) for a in (order, indptr, segment_ids, counts)))


PAIR_TABLE_BYTES = 2**26
"""Largest ``n_users * n_items`` for which :meth:`Ratings.contains` keeps a boolean pair table."""


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Unique int64 key ``user * n_items + item`` of each (user, item) pair."""
    return users.astype(np.int64, copy=False) * np.int64(n_items) + items.astype(np.int64, copy=False)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Ratings:
    """Immutable sparse ratings: parallel arrays ``users``, ``items``, ``values`` (+ ``timestamps``).

    Build from outside data with :meth:`from_arrays` (indices), :meth:`from_ids` (raw IDs) or
    :meth:`from_pandas`; the dataclass constructor itself trusts its arguments and is meant for
    code that derives a new ``Ratings`` from a valid one (subsets, splits).
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray | None
    n_users: int
    n_items: int
    user_map: IdMap
    item_map: IdMap
    rating_scale: tuple[float, float] | None = None

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        users,
        items,
        values,
        timestamps=None,
        n_users: int | None = None,
        n_items: int | None = None,
        *,
        rating_scale: tuple[float, float] | None = None,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        duplicates: str = "error",
    ) -> Ratings:
        """Validate index arrays and wrap them.

        ``users``/``items`` are 0-based indices; ``timestamps`` integer Unix seconds or datetimes
        (converted by :func:`unix_seconds`); ``n_users``/``n_items`` default to ``max + 1``
        (or to the size of the given ID maps). Without ID maps the identity map is used.
        ``duplicates`` decides what a repeated (user, item) pair does: ``"error"`` (default)
        raises, ``"last"`` keeps the last occurrence, ``"mean"`` averages the values (and keeps
        the latest timestamp); the merged row sits where the pair first occurred.
        """
        users = _as_index_array(users, "users")
        items = _as_index_array(items, "items")
        values = np.asarray(values)
        if values.dtype.kind not in "iuf":
            raise DataError(f"values must be numeric, got dtype {values.dtype}")
        values = values.astype(np.float32).reshape(-1)
        lengths = {"users": users.size, "items": items.size, "values": values.size}
        if timestamps is not None:
            timestamps = unix_seconds(timestamps)
            lengths["timestamps"] = timestamps.size
        if len(set(lengths.values())) != 1:
            raise DataError(f"arrays have different lengths: {lengths}")
        if users.size == 0:
            raise DataError("no ratings: the arrays are empty")
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"value {values[row]!r} at row {row} is not finite ({int(bad.sum())} such rows)")

        n_users = _resolve_size(n_users, user_map, users, "user")
        n_items = _resolve_size(n_items, item_map, items, "item")
        for name, idx, n in (("user", users, n_users), ("item", items, n_items)):
            out = (idx < 0) | (idx >= n)
            if out.any():
                row = int(np.flatnonzero(out)[0])
                raise DataError(f"{name} index {int(idx[row])} at row {row} is outside [0, {n})")
        if rating_scale is not None:
            rating_scale = _check_scale(rating_scale, values)
        if timestamps is not None:
            bad_ts = (timestamps < 0) & (timestamps != MISSING_TIMESTAMP)
            if bad_ts.any():
                row = int(np.flatnonzero(bad_ts)[0])
                raise DataError(
                    f"timestamp {int(timestamps[row])} at row {row} is negative "
                    f"(only {MISSING_TIMESTAMP} is allowed, meaning unknown)"
                )
        users, items, values, timestamps = _merge_duplicates(users, items, values, timestamps, n_items, duplicates)
        return cls(
            users=_readonly(users),
            items=_readonly(items),
            values=_readonly(values),
            timestamps=None if timestamps is None else _readonly(timestamps),
            n_users=n_users,
            n_items=n_items,
            user_map=user_map if user_map is not None else IdMap.range(n_users),
            item_map=item_map if item_map is not None else IdMap.range(n_items),
            rating_scale=rating_scale,
        )

    @classmethod
    def from_ids(
        cls,
        raw_users,
        raw_items,
        values,
        timestamps=None,
        *,
        rating_scale: tuple[float, float] | None = None,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        duplicates: str = "error",
    ) -> Ratings:
        """Build from raw user/item IDs (ints or strings).

        Without maps, new :class:`IdMap` objects index the distinct IDs in sorted order. Given
        maps are extended with IDs they do not hold yet (existing indices never change).
        """
        user_map = IdMap.from_ids(raw_users) if user_map is None else user_map.extend(raw_users)
        item_map = IdMap.from_ids(raw_items) if item_map is None else item_map.extend(raw_items)
        return cls.from_arrays(
            user_map.lookup(raw_users),
            item_map.lookup(raw_items),
            values,
            timestamps,
            rating_scale=rating_scale,
            user_map=user_map,
            item_map=item_map,
            duplicates=duplicates,
        )

    @classmethod
    def from_pandas(
        cls,
        df,
        user: str = "user",
        item: str = "item",
        rating: str | None = "rating",
        timestamp: str | None = None,
        **kwargs,
    ) -> Ratings:
        """Build from a DataFrame's named columns of raw IDs (``rating=None``: all values 1).

        A ``timestamp`` column holds integer Unix seconds or datetimes (see :func:`unix_seconds`).

        Extra keyword arguments go to :meth:`from_ids` (``rating_scale``, ID maps, ``duplicates``).
        """
        wanted = {"user": user, "item": item, "rating": rating, "timestamp": timestamp}
        missing = {role: col for role, col in wanted.items() if col is not None and col not in df.columns}
        if missing:
            raise DataError(
                f"column(s) {sorted(missing.values())} not in the DataFrame; it has {list(df.columns)}"
            )
        for role in ("user", "item"):
            if df[wanted[role]].isna().any():
                row = int(np.flatnonzero(df[wanted[role]].isna().to_numpy())[0])
                raise DataError(f"{role} column {wanted[role]!r} is missing at row {row}")
        values = np.ones(len(df), np.float32) if rating is None else _numeric_column(df, rating)
        if timestamp is None:
            stamps = None
        elif df[timestamp].dtype.kind == "M":  # datetime64 of any unit, naive or timezone-aware
            stamps = unix_seconds(df[timestamp], f"column {timestamp!r}")
        else:
            stamps = _numeric_column(df, timestamp, integer=True)
        return cls.from_ids(df[user].to_numpy(), df[item].to_numpy(), values, stamps, **kwargs)

    # basic properties ---------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return int(self.users.size)

    def __len__(self) -> int:
        return self.nnz

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    @property
    def density(self) -> float:
        """``nnz / (n_users * n_items)``."""
        return self.nnz / (self.n_users * self.n_items)

    @property
    def sparsity(self) -> float:
        """``1 - nnz / (n_users * n_items)``."""
        return 1.0 - self.density

    @property
    def has_timestamps(self) -> bool:
        return self.timestamps is not None

    @cached_property
    def missing_timestamps(self) -> int:
        """Number of ratings whose timestamp is unknown (all of them when there are none)."""
        if self.timestamps is None:
            return self.nnz
        return int(np.count_nonzero(self.timestamps == MISSING_TIMESTAMP))

    @cached_property
    def user_counts(self) -> np.ndarray:
        """Ratings per user, shape (n_users,)."""
        return self.by_user.counts

    @cached_property
    def item_counts(self) -> np.ndarray:
        """Ratings per item, shape (n_items,)."""
        return self.by_item.counts

    @cached_property
    def by_user(self) -> Grouping:
        """Rows grouped by user (CSR order; stable, so each user's rows keep their order)."""
        return group_rows(self.users, self.n_users)

    @cached_property
    def by_item(self) -> Grouping:
        """Rows grouped by item (CSC order)."""
        return group_rows(self.items, self.n_items)

    @cached_property
    def items_by_user(self) -> np.ndarray:
        """The items of the ratings in :attr:`by_user` order (int32, (nnz,)): with
        ``by_user.indptr``, the CSR column indices. A fitted model's seen-items lists and the
        user side's chunk layout (:func:`bayesmf.engines.chunks.chunks_for`) share this gather."""
        return _readonly(self.items[self.by_user.order])

    @cached_property
    def value_moments(self) -> tuple[float, float]:
        """``(mean, variance)`` of the values, computed in float64 (one conversion for every
        caller: the "auto" priors of the Bayesian models)."""
        values = np.asarray(self.values, np.float64)
        return float(values.mean()), float(values.var())

    @cached_property
    def keys(self) -> np.ndarray:
        """The int64 pair key ``user * n_items + item`` of every row."""
        return _readonly(pair_keys(self.users, self.items, self.n_items))

    @cached_property
    def sorted_keys(self) -> np.ndarray:
        """:attr:`keys` sorted, for O(log nnz) membership tests (see :meth:`contains`)."""
        return _readonly(np.sort(self.keys))

    @cached_property
    def _pair_table(self) -> np.ndarray | None:
        """A (n_users * n_items,) boolean table of the observed pairs when it is at most
        :data:`PAIR_TABLE_BYTES` (a lookup per query instead of a binary search), else None."""
        size = self.n_users * self.n_items
        if size > PAIR_TABLE_BYTES:
            return None
        table = np.zeros(size, dtype=bool)
        table[self.keys] = True
        return _readonly(table)

    def contains(self, users, items) -> np.ndarray:
        """Boolean mask: is each (user, item) pair among the observed ratings? Vectorised."""
        q = pair_keys(np.asarray(users), np.asarray(items), self.n_items)
        table = self._pair_table
        if table is not None and (q.size == 0 or (q.min() >= 0 and q.max() < table.size)):
            return table[q]
        pos = np.minimum(np.searchsorted(self.sorted_keys, q), self.nnz - 1)
        return self.sorted_keys[pos] == q

    # derived ratings ----------------------------------------------------------------------
    def subset(self, rows) -> Ratings:
        """The ratings at ``rows`` (a boolean mask or integer positions), same shape and maps.

        A slice gives NumPy views (no copy); positions are kept in the order given.
        """
        if isinstance(rows, slice):
            sel = rows
        else:
            sel = np.asarray(rows)
            if sel.dtype == bool:
                if sel.shape != (self.nnz,):
                    raise DataError(f"mask has shape {sel.shape}, expected ({self.nnz},)")
            elif sel.dtype.kind not in "iu":
                raise DataError(f"rows must be a boolean mask or integer positions, got {sel.dtype}")

        def take(a):
            return None if a is None else _readonly(a[sel])

        return dataclasses.replace(
            self, users=take(self.users), items=take(self.items), values=take(self.values),
            timestamps=take(self.timestamps),
        )

    def with_values(self, values) -> Ratings:
        """Same pairs with new values (e.g. implicit confidences); scale dropped unless valid."""
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.size != self.nnz:
            raise DataError(f"got {values.size} values for {self.nnz} ratings")
        if not np.all(np.isfinite(values)):
            raise DataError("values must be finite")
        return dataclasses.replace(self, values=_readonly(values), rating_scale=None)

    def with_scale(self, rating_scale: tuple[float, float] | None) -> Ratings:
        """Declare (and check) the rating scale."""
        scale = None if rating_scale is None else _check_scale(rating_scale, self.values)
        return dataclasses.replace(self, rating_scale=scale)

    def compact(self) -> Ratings:
        """Drop users and items that have no ratings, renumbering the rest in the same order."""
        keep_u = self.user_counts > 0
        keep_i = self.item_counts > 0
        new_u = np.cumsum(keep_u) - 1
        new_i = np.cumsum(keep_i) - 1
        return dataclasses.replace(
            self,
            users=_readonly(new_u[self.users].astype(np.int32)),
            items=_readonly(new_i[self.items].astype(np.int32)),
            n_users=int(keep_u.sum()),
            n_items=int(keep_i.sum()),
            user_map=IdMap.from_ordered(self.user_map.ids()[keep_u]),
            item_map=IdMap.from_ordered(self.item_map.ids()[keep_i]),
        )

    # conversion ---------------------------------------------------------------------------
    def to_pandas(self, raw_ids: bool = True):
        """DataFrame with columns ``user, item, rating`` (+ ``timestamp``), rows in order.

        ``raw_ids=True`` gives the original IDs; ``False`` gives the indices.
        """
        import pandas as pd

        if raw_ids:
            cols = {"user": self.user_map.ids(self.users), "item": self.item_map.ids(self.items)}
        else:
            cols = {"user": self.users, "item": self.items}
        cols["rating"] = self.values
        if self.timestamps is not None:
            cols["timestamp"] = self.timestamps
        return pd.DataFrame(cols)

    def to_scipy(self, by: str = "user"):
        """A ``scipy.sparse.csr_matrix`` (users x items, ``by="user"``) or its item-major CSR."""
        import scipy.sparse as sp

        shape = self.shape if by == "user" else self.shape[::-1]
        rows, cols = (self.users, self.items) if by == "user" else (self.items, self.users)
        return sp.csr_matrix((self.values, (rows, cols)), shape=shape)

    def __repr__(self) -> str:
        ts = "with" if self.has_timestamps else "without"
        scale = "" if self.rating_scale is None else f", scale={self.rating_scale}"
        return (
            f"Ratings({self.nnz:,} ratings, {self.n_users:,} users x {self.n_items:,} items, "
            f"sparsity {self.sparsity:.4%}{scale}, {ts} timestamps)"
        )

    def same_index_space(self, other: Ratings) -> bool:
        """True when ``other`` uses the same shape and ID maps (e.g. train and test of a split)."""
        return (
            self.shape == other.shape
            and (self.user_map is other.user_map or self.user_map == other.user_map)
            and (self.item_map is other.item_map or self.item_map == other.item_map)
        )


# helpers ------------------------------------------------------------------------------------
def unix_seconds(timestamps, name: str = "timestamps") -> np.ndarray:
    """Timestamps as a flat int64 array of Unix seconds (UTC), the one form :class:`Ratings` stores.

    Integers are taken as Unix seconds already. Datetimes are converted whatever their unit
    (``datetime64[ns]``, pandas 3's ``[us]``, ``[s]`` ...): NumPy and timezone-naive pandas
    datetimes are read as UTC, timezone-aware pandas datetimes are converted to UTC; fractions of
    a second are dropped (floor). ``NaT`` becomes :data:`MISSING_TIMESTAMP` (unknown), and a
    datetime before 1970 is refused, since negative seconds other than that marker are invalid.
    Anything else (floats, strings, objects) raises a DataError naming ``name``.
    """
    if getattr(getattr(timestamps, "dtype", None), "tz", None) is not None:  # pandas, timezone-aware
        import pandas as pd

        timestamps = pd.DatetimeIndex(timestamps).tz_convert("UTC").tz_localize(None)
    arr = np.asarray(timestamps).reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind != "M":
        raise DataError(f"{name} must be integers (Unix seconds) or datetimes, got dtype {arr.dtype}")
    missing = np.isnat(arr)
    early = ~missing & (arr < np.datetime64(0, "s"))
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise DataError(
            f"{name} row {row}: {arr[row]} is before 1970-01-01, which Unix seconds cannot hold "
            f"({int(early.sum())} such rows)"
        )
    seconds = arr.astype("datetime64[s]").astype(np.int64)
    seconds[missing] = MISSING_TIMESTAMP
    return seconds


def _as_index_array(x, name: str) -> np.ndarray:
    """Index arrays as int32; floats holding whole numbers are accepted here, as arrays read
    from numeric files often are (the models' entry points accept integer dtypes only)."""
    arr = as_indices(x, name, allow_integral_floats=True)
    if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
        raise DataError(f"{name} indices do not fit in int32 (max {arr.max()})")
    return arr.astype(np.int32)


def _resolve_size(n, idmap, idx, name) -> int:
    if n is None:
        n = len(idmap) if idmap is not None else int(idx.max()) + 1
    n = int(n)
    if n <= 0:
        raise DataError(f"n_{name}s must be positive, got {n}")
    if idmap is not None and len(idmap) != n:
        raise DataError(f"{name} map holds {len(idmap)} IDs but n_{name}s is {n}")
    return n


def _check_scale(scale, values) -> tuple[float, float]:
    lo, hi = (float(s) for s in scale)
    if not lo < hi:
        raise DataError(f"rating_scale must be (low, high) with low < high, got {scale}")
    out = (values < lo) | (values > hi)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise DataError(
            f"rating {float(values[row])} at row {row} is outside the scale [{lo}, {hi}] "
            f"({int(out.sum())} such rows)"
        )
    return (lo, hi)


def _numeric_column(df, col: str, integer: bool = False) -> np.ndarray:
    series = df[col]
    arr = series.to_numpy()
    if arr.dtype.kind not in "iuf" or (integer and arr.dtype.kind == "f"):
        import pandas as pd

        num = pd.to_numeric(series, errors="coerce").to_numpy()
        bad = np.isnan(num.astype(float)) | (integer & (num != np.round(num)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"column {col!r} row {row}: {series.iloc[row]!r} is not a valid number")
        arr = num
    if integer:
        return arr.astype(np.int64)
    return arr


def _merge_duplicates(users, items, values, timestamps, n_items, policy):
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {policy!r}")
    keys = pair_keys(users, items, n_items)
    ordered = np.sort(keys)  # the common case, no repeat, costs one sort and no index arrays
    if not (ordered[1:] == ordered[:-1]).any():
        return users, items, values, timestamps
    del ordered
    uniq, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    if policy == "error":
        dup_key = uniq[counts > 1][0]
        rows = np.flatnonzero(keys == dup_key)[:2]
        raise DataError(
            f"duplicate (user, item) pair at rows {rows[0]} and {rows[1]} "
            f"(user index {int(users[rows[0]])}, item index {int(items[rows[0]])}); "
            f"{int(keys.size - uniq.size)} duplicate rows in all; pass duplicates='last' or 'mean' to merge"
        )
    keep = np.sort(first)  # merged row sits where its pair first occurred
    group_of_kept = inverse[keep]
    if policy == "mean":
        sums = np.bincount(inverse, weights=values.astype(np.float64), minlength=uniq.size)
        merged = (sums / counts)[group_of_kept].astype(np.float32)
    else:
        last = np.zeros(uniq.size, dtype=np.int64)
        np.maximum.at(last, inverse, np.arange(keys.size))
        merged = values[last[group_of_kept]]
    ts = None
    if timestamps is not None:
        latest = np.full(uniq.size, np.iinfo(np.int64).min)
        np.maximum.at(latest, inverse, timestamps)
        ts = latest[group_of_kept]
    return users[keep], items[keep], merged, ts
