r"""Feature sets for factorization machines: which relation blocks a :class:`~bayesmf.data.design.Design`
has, learned from training ratings and applied to any (user, item) pairs.

A :class:`Features` is a frozen description (what a notebook or an experiment file declares);
:meth:`Features.fit` learns what it needs from the training :class:`~bayesmf.data.ratings.Ratings`
(the index spaces, categorical levels and bin edges of side columns, implicit-feedback sets, time
bins) and returns a :class:`FittedFeatures`, whose :meth:`FittedFeatures.design` builds the design
of any pairs. The columns (features) are fixed at fit time, so every design of one fitted feature
set has the same ``feature_names``, ``groups`` and ``group_names``.

With ``user`` and ``item`` alone the factorization machine is BPMF with biases: ``f(x) = w_0 +
w_u + w_i + <v_u, v_i>`` (Rendle 2010, section on matrix factorization as an FM).

Blocks and groups (each group has its own name in ``group_names``; its columns share a prior):

=================  =======  ============================================================  ==================
block              owner    row                                                           groups
=================  =======  ============================================================  ==================
``user``           user     one-hot of the user (``x = 1``)                               ``user``
``user_side``      user     the user's side columns (see below)                           one per column
``implicit_user``  user     items the user rated in training, ``x = 1/sqrt(|N(u)|)``       ``implicit_user``
``item``           item     one-hot of the item                                           ``item``
``item_side``      item     the item's side columns                                       one per column
``implicit_item``  item     users who rated the item in training, ``1/sqrt(|R(i)|)``      ``implicit_item``
``time``           context  one-hot of the rating's day or week bin                       ``time``
``user_time``      context  one-hot of the (user, time bin) pair                          ``user_time``
=================  =======  ============================================================  ==================

Side columns (:class:`~bayesmf.data.side.SideTable`): a categorical column is one-hot over the
levels that occur among the rows of the training index space; a multi column (genres) puts
``1/sqrt(n)`` on each of the row's ``n`` levels (``normalize_multi=True``, as myFM's
``MultipleValuesToSparseEncoder``; 1 each otherwise); a numeric column is one-hot over percentile
bins (``n_bins`` percentiles of the training rows' values at ``100 k / (n_bins + 1)``, duplicates
merged, as myFM's ``BinningEncoder``; a bin ``(e_{k-1}, e_k]``; plus a ``missing`` bin when a
training row lacks the value), or, for the columns named in ``standardize``, the single feature
``(x - mean) / sd`` over the training rows (0 where missing, i.e. mean imputation).

Unseen values at design time: a categorical or multi level, or a missing numeric value without a
``missing`` bin, that the training rows did not have raises a DataError naming the table, the
column, the ID and the value, or goes to the column's explicit ``<unknown>`` level with
``unknown="level"`` (then every categorical, multi and binned column has that level). An ID the
side table lacks raises a DataError naming the table and the ID, or, with ``missing="empty"``,
gives the user or item no side features (an empty row).

Time: the bin of timestamp ``t`` (Unix seconds, UTC) is ``t // 86400`` (``"day"``) or ``t //
604800`` (``"week"``, weeks of the Unix epoch, starting on Thursdays). The columns are the bins of
the training ratings plus one ``unknown`` bin, which takes the pairs whose bin no training rating
has (a new day: its effect is a draw from the group's prior, as myFM's unknown category) and,
with ``missing_time="unknown"``, the pairs without a timestamp (or with
:data:`~bayesmf.data.ratings.MISSING_TIMESTAMP`); with ``missing_time="error"`` (the default)
those raise a DataError. ``user_time`` adds the indicator of the (user, bin) pair, one column per
pair seen in training (Koren's day-specific user bias ``b_{u,t}``, here with a factor too); a
pair not seen in training has an empty row.

Bayesian timeSVD++ "flipped" of Rendle, Zhang & Koren (2019) is the feature set user, item, day,
implicit user, implicit item: ``Features(time="day", implicit=True, implicit_items=True)`` (their
time effects are the day's own factor and bias interacting with everything else; the optional
``user_time`` block is not part of it).

Cold start: :meth:`FittedFeatures.design` takes indices of an index space that extends the
training one (``user_map``/``item_map``, :class:`~bayesmf.data.idmap.IdMap` objects whose first
IDs are the training map's, e.g. ``train.user_map.extend(new_ids)``; :meth:`FittedFeatures.design_of`
passes a :class:`Ratings`' own maps). Users and items of the training index space keep their
one-hot and implicit rows (empty for those without training ratings); those beyond it have empty
one-hot and implicit rows and their side features, looked up by raw ID.

References
----------
Rendle, S. (2010). Factorization machines. ICDM.
Koren, Y. (2008). Factorization meets the neighborhood (SVD++). KDD.
Koren, Y. (2009). Collaborative filtering with temporal dynamics. KDD.
Rendle, S., Zhang, L. & Koren, Y. (2019). On the difficulty of evaluating baselines: a study on
recommender systems. arXiv:1905.01395.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from bayesmf.data.design import Block, Design, check_design
from bayesmf.data.idmap import IdMap
from bayesmf.data.ratings import MISSING_TIMESTAMP, Ratings
from bayesmf.data.side import SideTable, side
from bayesmf.errors import ConfigError, DataError
from bayesmf.validate import as_indices, check_positive_int

__all__ = ["TIME_BINS", "Features", "FittedFeatures", "one_hot_block"]

TIME_BINS = {"day": 86_400, "week": 604_800}
"""Seconds per time bin."""
UNKNOWN = "<unknown>"
_OPTIONS = {"unknown": ("error", "level"), "missing": ("error", "empty"), "missing_time": ("error", "unknown")}


def one_hot_block(name: str, owner: str, index, n_rows: int, first_column: int) -> Block:
    """The block ``X = I`` (``n_rows`` columns starting at ``first_column``): row ``k`` has the
    single feature ``first_column + k`` with value 1."""
    return Block(name, owner, np.asarray(index, np.int32), np.arange(n_rows + 1, dtype=np.int64),
                 np.arange(first_column, first_column + n_rows, dtype=np.int32), np.ones(n_rows, np.float32),
                 int(n_rows))


def _csr(rows, cols, vals, n_rows: int):
    """CSR (indptr int64, columns int32, values float32) of COO entries, sorted by row then column."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    order = np.argsort(rows * (int(cols.max()) + 1 if cols.size else 1) + cols, kind="stable")
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order].astype(np.int32), np.asarray(vals, np.float32)[order]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[k], starts[k] + lengths[k])`` over k, without a loop."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.repeat(np.asarray(starts, np.int64) - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(int(lengths.sum()), dtype=np.int64)


def _names(prefix: str, labels) -> tuple:
    labels = np.asarray(labels).astype(str)
    return tuple(np.char.add(prefix, labels).tolist()) if labels.size else ()


def _bin_labels(edges: np.ndarray) -> list:
    e = [f"{x:g}" for x in edges]
    return [f"<={e[0]}"] + [f"({a}, {b}]" for a, b in zip(e[:-1], e[1:])] + [f">{e[-1]}"]


# -- the declaration --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Features:
    """The feature groups of a factorization machine (see the module docstring for each).

    Parameters
    ----------
    user, item : bool
        The user's and the item's one-hot index (groups ``"user"`` and ``"item"``).
    user_side, item_side : SideTable, optional
        Side tables of users and items (:func:`bayesmf.datasets.side`).
    user_columns, item_columns : sequence of str, optional
        The side columns to use (default: all of the table's); each becomes a group.
    n_bins : int
        Percentiles of a binned numeric column (at most ``n_bins + 1`` bins).
    standardize : sequence of str
        Numeric side columns entered as one standardised feature instead of bins.
    normalize_multi : bool
        Multi (set) columns put ``1/sqrt(n)`` rather than 1 on each of a row's ``n`` levels.
    unknown : {"error", "level"}
        A side level unseen in training: DataError, or the column's ``<unknown>`` level.
    missing : {"error", "empty"}
        An ID the side table lacks: DataError, or an empty side row.
    implicit, implicit_items : bool
        SVD++ implicit feedback: the items each user rated in training (user-owned group
        ``"implicit_user"``), and the flipped set of users who rated each item (``"implicit_item"``).
    time : {None, "day", "week"}
        One-hot of the rating's time bin (group ``"time"``).
    missing_time : {"error", "unknown"}
        A pair without a timestamp: DataError, or the ``unknown`` time bin.
    user_time : bool
        One-hot of the (user, time bin) pair (group ``"user_time"``; needs ``time``).

    Examples
    --------
    myFM's ``ml-100k-extended`` feature set (one-hot, side information, implicit feedback, date):

    >>> users, items = bayesmf.datasets.side("ml-100k")  # doctest: +SKIP
    >>> Features(user_side=users, user_columns=["age", "occupation", "zip_prefix"], item_side=items,
    ...          implicit=True, implicit_items=True, time="day")  # doctest: +SKIP
    """

    user: bool = True
    item: bool = True
    user_side: SideTable | None = None
    user_columns: tuple | None = None
    item_side: SideTable | None = None
    item_columns: tuple | None = None
    n_bins: int = 10
    standardize: tuple = ()
    normalize_multi: bool = True
    unknown: str = "error"
    missing: str = "error"
    implicit: bool = False
    implicit_items: bool = False
    time: str | None = None
    missing_time: str = "error"
    user_time: bool = False

    def __post_init__(self):
        for key, allowed in _OPTIONS.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"Features({key}={getattr(self, key)!r}): allowed values are {allowed}")
        if self.time is not None and self.time not in TIME_BINS:
            raise ConfigError(f"Features(time={self.time!r}): allowed values are None, {tuple(TIME_BINS)}")
        if self.user_time and self.time is None:
            raise ConfigError("Features(user_time=True) needs time='day' or 'week'")
        for key in ("user", "item", "normalize_multi", "implicit", "implicit_items", "user_time"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise ConfigError(f"Features({key}=...) must be True or False, got {getattr(self, key)!r}")
        check_positive_int("n_bins", self.n_bins)
        object.__setattr__(self, "standardize", (self.standardize,) if isinstance(self.standardize, str)
                           else tuple(self.standardize))
        numeric = set()
        for owner in ("user", "item"):
            table, key = getattr(self, f"{owner}_side"), f"{owner}_columns"
            columns = getattr(self, key)
            if table is None:
                if columns is not None:
                    raise ConfigError(f"Features({key}=...) needs {owner}_side")
                continue
            if not isinstance(table, SideTable):
                raise ConfigError(f"Features({owner}_side=...) must be a SideTable, got {type(table).__name__}")
            if isinstance(columns, str):
                columns = (columns,)
            columns = tuple(table.columns) if columns is None else tuple(columns)
            if not columns:
                raise ConfigError(f"feature group {owner}_side has no columns: {key} is empty")
            if len(set(columns)) != len(columns):
                raise ConfigError(f"Features({key}={list(columns)}) names a column twice")
            for c in columns:
                if table.column(c).kind == "numeric":
                    numeric.add(c)
            object.__setattr__(self, key, columns)
        stray = [c for c in self.standardize if c not in numeric]
        if stray:
            raise ConfigError(f"Features(standardize={list(self.standardize)}): {stray} are not selected numeric "
                              f"side columns (those are {sorted(numeric)})")
        if not (self.user or self.item or self.user_side is not None or self.item_side is not None or self.implicit
                or self.implicit_items or self.time):
            raise ConfigError("Features(...) selects no feature group")

    def fit(self, train: Ratings) -> FittedFeatures:
        """Learn the index spaces, side levels and bins, implicit sets and time bins from ``train``."""
        groups = []
        for owner, other, one_hot, implicit, prefix in (("user", "item", self.user, self.implicit, "rated="),
                                                        ("item", "user", self.item, self.implicit_items, "rated_by=")):
            n, idmap = getattr(train, f"n_{owner}s"), getattr(train, f"{owner}_map")
            if one_hot:
                groups.append(_OneHot(owner, owner, n, idmap))
            if getattr(self, f"{owner}_side") is not None:
                groups.append(_fit_side(self, owner, idmap))
            if implicit:
                groups.append(_fit_implicit(f"implicit_{owner}", owner, getattr(train, f"by_{owner}"),
                                            getattr(train, f"{other}s"), n, getattr(train, f"n_{other}s"),
                                            getattr(train, f"{other}_map"), prefix))
        if self.time is not None:
            time = _fit_time(self, train)
            groups.append(time)
            if self.user_time:
                groups.append(_fit_user_time(train, time))
        names, group_names, group_of = [], [], []
        blocks = []
        for g in groups:
            for gname, gcols in g.groups():
                if not gcols:
                    raise DataError(f"feature group {gname!r} has no columns: {g.empty_reason(gname)}")
                gname = _unique_name(gname, group_names, g.owner)
                group_of += [len(group_names)] * len(gcols)
                group_names.append(gname)
                names += gcols
            blocks.append((g, len(names) - g.n_columns))
        return FittedFeatures(self, train.n_users, train.n_items, train.user_map, train.item_map, tuple(blocks),
                              tuple(names), np.asarray(group_of, np.int32), tuple(group_names))

    # experiment files -----------------------------------------------------------------------
    def to_mapping(self) -> dict:
        """A TOML-ready mapping (side tables as ``{dataset = ..., columns = [...]}``) that
        :meth:`from_mapping` reads back; options at their defaults are left out."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_columns") or value == f.default:
                continue
            if f.name.endswith("_side"):
                if value.source is None:
                    raise ConfigError(f"Features.{f.name} ({value.name}) was not loaded by bayesmf.datasets.side(); "
                                      "it cannot be written to an experiment file")
                owner = f.name[: -len("_side")]
                value = {"dataset": value.source[0], "columns": list(getattr(self, f"{owner}_columns"))}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_mapping(cls, mapping, data_dir=None, *, check_counts: bool = True) -> Features:
        """The feature set of an experiment file's mapping (see :meth:`to_mapping`); side tables
        are loaded with :func:`bayesmf.datasets.side` from ``data_dir`` (default: the usual
        data directory)."""
        fields = {f.name for f in dataclasses.fields(cls) if not f.name.endswith("_columns")}
        unknown = sorted(set(mapping) - fields)
        if unknown:
            raise ConfigError(f"features: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kwargs, loaded = dict(mapping), {}
        for owner, which in (("user", 0), ("item", 1)):
            ref = kwargs.get(f"{owner}_side")
            if ref is None:
                continue
            if not isinstance(ref, dict) or set(ref) - {"dataset", "columns"} or "dataset" not in ref:
                raise ConfigError(f"features.{owner}_side must be {{dataset = ..., columns = [...]}}, got {ref!r}")
            if ref["dataset"] not in loaded:
                loaded[ref["dataset"]] = side(ref["dataset"], data_dir, check_counts=check_counts)
            kwargs[f"{owner}_side"] = loaded[ref["dataset"]][which]
            if "columns" in ref:
                kwargs[f"{owner}_columns"] = tuple(ref["columns"])
        return cls(**kwargs)


def _unique_name(name: str, taken: list, owner: str) -> str:
    if name not in taken:
        return name
    prefixed = f"{owner}_{name}"
    if prefixed in taken:
        raise DataError(f"feature group name {name!r} occurs twice")
    return prefixed


# -- fitted groups ----------------------------------------------------------------------------
# Each fitted part has ``name`` (its block's), ``owner``, ``n_columns``, ``groups()`` -> [(group
# name, feature names)], ``empty_reason(group)`` for the error on a group without columns, and
# ``block(index, space, first)`` -> its Block for the pairs' rows ``index`` in an index space whose
# columns start at ``first``.
class _Space(NamedTuple):
    """The index space of one owner at design time: its IdMap and the training size."""

    ids: IdMap
    n_train: int


class _OneHot:
    """One-hot of the training index (rows beyond training are empty)."""

    def __init__(self, name, owner, n, idmap):
        self.name, self.owner, self.n_columns = name, owner, int(n)
        self.labels = idmap.ids()

    def groups(self):
        return [(self.name, _names(f"{self.name}=", self.labels))]

    def empty_reason(self, _):
        return "the training index space is empty"

    def block(self, index, space: _Space, first: int):
        n = len(space.ids)
        known = np.arange(n) < self.n_columns
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(known, out=indptr[1:])
        return Block(self.name, self.owner, index, indptr, (first + np.flatnonzero(known)).astype(np.int32),
                     np.ones(int(known.sum()), np.float32), n)


class _Implicit:
    """SVD++ set of a user (items rated in training) or its flip for an item."""

    def __init__(self, name, owner, indptr, columns, values, labels, prefix):
        self.name, self.owner = name, owner
        self.indptr, self.columns, self.values = indptr, columns, values
        self.labels, self.prefix = labels, prefix
        self.n_columns = len(labels)

    def groups(self):
        return [(self.name, _names(self.prefix, self.labels))]

    def empty_reason(self, _):
        return "no training ratings"

    def block(self, index, space: _Space, first: int):
        n = len(space.ids)
        indptr = np.concatenate([self.indptr, np.full(n - space.n_train, self.indptr[-1])])
        return Block(self.name, self.owner, index, indptr, (first + self.columns).astype(np.int32), self.values, n)


def _fit_implicit(name, owner, grouping, others, n_rows, n_others, other_map, prefix) -> _Implicit:
    """Row ``r`` of the owner: the others it has training ratings with, ``1/sqrt(count)`` each;
    columns: the others with at least one training rating."""
    counts = grouping.counts
    rated = np.bincount(others, minlength=n_others) > 0
    column_of = np.cumsum(rated) - 1
    cols = column_of[np.asarray(others)[grouping.order]]
    vals = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts).astype(np.float32)
    indptr, cols, vals = _csr(grouping.segment_ids, cols, vals, n_rows)
    return _Implicit(name, owner, indptr, cols, vals, other_map.ids()[rated], prefix)


class _ColumnCode(NamedTuple):
    """How one side column maps to feature columns (offsets relative to the column's first)."""

    name: str
    kind: str  # "categorical", "multi", "bins", "standardized"
    column_of: np.ndarray  # categorical/multi: level code -> column (-1 unseen); bins: bin edges
    labels: tuple  # one per feature column
    unknown_col: int  # -1 when there is none
    missing_col: int  # bins: the missing bin's column, -1 when none
    mean: float = 0.0
    sd: float = 1.0
    normalize: bool = True  # multi: 1/sqrt(n) on each of a row's n levels


class _Side:
    """The side block of one owner: a group per selected column."""

    def __init__(self, owner, table, codes, missing, fit_rows):
        self.name, self.owner, self.table, self.codes, self.missing = f"{owner}_side", owner, table, codes, missing
        self.n_columns = sum(len(c.labels) for c in codes)
        self.fit_rows = fit_rows

    def groups(self):
        return [(c.name, _names(f"{c.name}=", c.labels) if c.kind != "standardized" else (c.name,))
                for c in self.codes]

    def empty_reason(self, gname):
        return (f"side column {gname!r} of {self.table.name} has no value in the {self.fit_rows} rows of the "
                "training index space")

    def block(self, index, space: _Space, first: int):
        n = len(space.ids)
        trow = self.table.rows_of(space.ids.ids(), self.missing, self.owner)
        present = np.flatnonzero(trow >= 0)
        trow = trow[present]
        parts, offset = [], first
        for code in self.codes:
            r, c, v = _encode(code, self.table, space.ids, present, trow)
            parts.append((r, c + offset, v))
            offset += len(code.labels)
        rows, cols, vals = (np.concatenate(p) for p in zip(*parts))
        indptr, cols, vals = _csr(rows, cols, vals, n)
        return Block(self.name, self.owner, index, indptr, cols, vals, n)


def _fit_side(spec: Features, owner: str, idmap: IdMap) -> _Side:
    table = getattr(spec, f"{owner}_side")
    trow = table.rows_of(idmap.ids(), spec.missing, owner)
    trow = trow[trow >= 0]
    codes = []
    for cname in getattr(spec, f"{owner}_columns"):
        col = table.column(cname)
        extra = [UNKNOWN] if spec.unknown == "level" else []
        if col.kind in ("categorical", "multi"):
            if col.kind == "categorical":
                seen_codes = col.values[trow]
            else:
                seen_codes = col.values[_ranges(col.indptr[trow], np.diff(col.indptr)[trow])]
            seen = np.zeros(len(col.levels), bool)
            seen[seen_codes] = True
            column_of = np.where(seen, np.cumsum(seen) - 1, -1)
            labels = tuple(np.asarray(col.levels)[seen].tolist()) + tuple(extra)
            codes.append(_ColumnCode(cname, col.kind, column_of, labels, len(labels) - 1 if extra else -1, -1,
                                     normalize=spec.normalize_multi))
            continue
        x = col.values[trow]
        finite = x[~np.isnan(x)]
        if cname in spec.standardize:
            sd = float(finite.std()) if finite.size else 0.0
            if not sd > 0:
                raise DataError(f"side column {cname!r} of {table.name} cannot be standardised: its training rows "
                                f"hold {finite.size} values with standard deviation {sd}")
            codes.append(_ColumnCode(cname, "standardized", np.zeros(0), (cname,), -1, -1, float(finite.mean()), sd))
            continue
        edges = np.unique(np.percentile(finite, np.linspace(0, 100, spec.n_bins + 2)[1:-1])) if finite.size \
            else np.zeros(0)
        labels = _bin_labels(edges) if finite.size else []
        missing_col = -1
        if finite.size < x.size:
            missing_col = len(labels)
            labels.append("missing")
        labels += extra
        codes.append(_ColumnCode(cname, "bins", edges, tuple(labels), len(labels) - 1 if extra else -1, missing_col))
    return _Side(owner, table, tuple(codes), spec.missing, len(idmap))


def _encode(code: _ColumnCode, table: SideTable, ids: IdMap, rows: np.ndarray, trow: np.ndarray):
    """COO entries (row, column offset, value) of one side column for the space rows ``rows``
    (whose table rows are ``trow``)."""
    col = table.columns[code.name]
    if code.kind == "standardized":
        x = col.values[trow]
        ok = ~np.isnan(x)
        return rows[ok], np.zeros(int(ok.sum()), np.int64), (x[ok] - code.mean) / code.sd
    if code.kind == "bins":
        x = col.values[trow]
        c = np.searchsorted(code.column_of, x, side="left").astype(np.int64)
        if not code.column_of.size:
            c[:] = -1  # training had no value of this column: any value is unseen
        c[np.isnan(x)] = code.missing_col
        c = _unseen(code, table, ids, rows, c, lambda k: "a missing value" if np.isnan(x[k]) else f"the value {x[k]:g}")
        return rows, c, np.ones(c.size)
    if code.kind == "categorical":
        c = code.column_of[col.values[trow]]
        c = _unseen(code, table, ids, rows, c, lambda k: f"level {col.levels[col.values[trow[k]]]!r}")
        return rows, c, np.ones(c.size)
    lengths = np.diff(col.indptr)[trow]
    flat = _ranges(col.indptr[trow], lengths)
    r = np.repeat(rows, lengths)
    c = code.column_of[col.values[flat]]
    c = _unseen(code, table, ids, r, c, lambda k: f"level {col.levels[col.values[flat[k]]]!r}")
    keys = np.unique(r * (len(code.labels) + 1) + c)
    r, c = keys // (len(code.labels) + 1), keys % (len(code.labels) + 1)
    counts = np.bincount(r)[r] if r.size else np.zeros(0)
    v = 1.0 / np.sqrt(counts) if code.normalize else np.ones(r.size)
    return r, c, v


def _unseen(code, table, ids, rows, c, describe):
    """Map the -1 entries of ``c`` (values the training rows did not have) to the unknown level,
    or raise a DataError naming the table, column, ID and value."""
    bad = c < 0
    if not bad.any():
        return c
    if code.unknown_col >= 0:
        return np.where(bad, code.unknown_col, c)
    k = int(np.flatnonzero(bad)[0])
    raw = ids.ids()[rows[k]].item()
    raise DataError(f"side table {table.name}, column {code.name!r}, ID {raw!r} (index {int(rows[k])}): {describe(k)} "
                    f"does not occur in the training rows ({int(bad.sum())} such entries); pass unknown='level' "
                    "to map unseen values to an explicit unknown level")


class _Time:
    """One-hot of the rating's time bin: the training bins, then the unknown bin."""

    def __init__(self, kind, bins, missing_time):
        self.name, self.owner, self.kind, self.bins, self.missing_time = "time", "context", kind, bins, missing_time
        self.n_columns = bins.size + 1

    def groups(self):
        start = (self.bins * TIME_BINS[self.kind]).astype("datetime64[s]").astype("datetime64[D]")
        return [("time", _names(f"{self.kind}=", start) + (f"{self.kind}={UNKNOWN}",))]

    def empty_reason(self, _):
        return "no training timestamps"

    def rows(self, timestamps, nnz: int, what: str) -> np.ndarray:
        """Block row of each pair's time bin (``bins.size`` = the unknown bin)."""
        if timestamps is None:
            if self.missing_time == "error":
                raise DataError(f"time features need timestamps; {what} has none (pass missing_time='unknown' "
                                "to put such pairs in the unknown time bin)")
            return np.full(nnz, self.bins.size, np.int64)
        ts = np.asarray(timestamps, np.int64).reshape(-1)
        if ts.size != nnz:
            raise DataError(f"{what}: got {ts.size} timestamps for {nnz} pairs")
        absent = ts == MISSING_TIMESTAMP
        if absent.any() and self.missing_time == "error":
            pos = int(np.flatnonzero(absent)[0])
            raise DataError(f"{what}: pair {pos} has no timestamp ({int(absent.sum())} such pairs); pass "
                            "missing_time='unknown' to put them in the unknown time bin")
        bad = (ts < 0) & ~absent
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(f"{what}: timestamp {int(ts[pos])} of pair {pos} is negative")
        if not self.bins.size:
            return np.full(nnz, 0, np.int64)
        b = ts // TIME_BINS[self.kind]
        pos = np.minimum(np.searchsorted(self.bins, b), self.bins.size - 1)
        return np.where(~absent & (self.bins[pos] == b), pos, self.bins.size)

    def block(self, index, space, first: int):
        return one_hot_block("time", "context", index, self.n_columns, first)


def _fit_time(spec: Features, train: Ratings) -> _Time:
    provisional = _Time(spec.time, np.zeros(0, np.int64), spec.missing_time)
    provisional.rows(train.timestamps, train.nnz, "the training ratings")  # the missing-time rule
    ts = train.timestamps[train.timestamps != MISSING_TIMESTAMP] if train.timestamps is not None else np.zeros(0)
    return _Time(spec.time, np.unique(ts // TIME_BINS[spec.time]).astype(np.int64), spec.missing_time)


class _UserTime:
    """One-hot of the (user, time bin) pairs of the training ratings; one empty last row for the
    pairs training does not have."""

    def __init__(self, keys, time, n_users, user_map):
        self.name, self.owner, self.keys, self.time = "user_time", "context", keys, time
        self.n_columns, self.n_users, self.user_map = keys.size, n_users, user_map

    def groups(self):
        u, b = self.keys // self.time.n_columns, self.keys % self.time.n_columns
        start = (self.time.bins[b] * TIME_BINS[self.time.kind]).astype("datetime64[s]").astype("datetime64[D]")
        labels = np.char.add(np.char.add(self.user_map.ids()[u].astype(str), "@"), start.astype(str))
        return [("user_time", _names("user_time=", labels))]

    def empty_reason(self, _):
        return "no training rating has a known time bin"

    def rows(self, users, time_rows):
        keys = users.astype(np.int64) * self.time.n_columns + time_rows
        pos = np.minimum(np.searchsorted(self.keys, keys), max(self.keys.size - 1, 0))
        found = (self.keys[pos] == keys) & (users < self.n_users) & (time_rows < self.time.bins.size) \
            if self.keys.size else np.zeros(keys.size, bool)
        return np.where(found, pos, self.keys.size)

    def block(self, index, space, first: int):
        n = self.keys.size
        indptr = np.concatenate([np.arange(n + 1, dtype=np.int64), [n]])
        return Block("user_time", "context", index, indptr, np.arange(first, first + n, dtype=np.int32),
                     np.ones(n, np.float32), n + 1)


def _fit_user_time(train: Ratings, time: _Time) -> _UserTime:
    rows = time.rows(train.timestamps, train.nnz, "the training ratings")
    known = rows < time.bins.size
    keys = np.unique(train.users[known].astype(np.int64) * time.n_columns + rows[known])
    return _UserTime(keys, time, train.n_users, train.user_map)


# -- the fitted feature set -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class FittedFeatures:
    """:class:`Features` fitted to training data: builds designs for any pairs.

    Attributes
    ----------
    spec : Features
        The declaration.
    n_users, n_items : int
        Size of the training index spaces.
    user_map, item_map : IdMap
        The training ID maps; design index spaces extend them.
    feature_names, groups, group_names
        The columns of every design this object builds (see :class:`~bayesmf.data.design.Design`).
    """

    spec: Features
    n_users: int
    n_items: int
    user_map: IdMap
    item_map: IdMap
    parts: tuple  # (fitted group, first column) per block, in design order
    feature_names: tuple
    groups: np.ndarray
    group_names: tuple

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def design(self, users, items, timestamps=None, *, user_map: IdMap | None = None,
               item_map: IdMap | None = None) -> Design:
        """The design of the pairs ``(users[r], items[r])``.

        Parameters
        ----------
        users, items : int arrays of one length
            Indices in the index spaces of ``user_map`` / ``item_map``.
        timestamps : int array, optional
            Unix seconds per pair (:data:`~bayesmf.data.ratings.MISSING_TIMESTAMP` = unknown), for
            the time groups.
        user_map, item_map : IdMap, optional
            Index spaces extending the training maps (their first ``n_users`` / ``n_items`` IDs
            are the training ones), for users and items beyond training (cold start); default:
            the training maps.

        Returns
        -------
        Design
            One block per group kind; user- and item-owned blocks have one row per index of the
            space, context blocks one row per time bin (or (user, bin) pair) plus one.
        """
        spaces = {"user": self._space(user_map, self.user_map, "user"),
                  "item": self._space(item_map, self.item_map, "item")}
        users = as_indices(users, "users", len(spaces["user"].ids))
        items = as_indices(items, "items", len(spaces["item"].ids))
        if users.size != items.size:
            raise DataError(f"users and items have different lengths ({users.size} and {items.size})")
        index = {"user": users.astype(np.int32), "item": items.astype(np.int32)}
        time_rows = None
        blocks = []
        for part, first in self.parts:
            if isinstance(part, _Time):
                time_rows = part.rows(timestamps, users.size, "the pairs")
                idx = time_rows
            elif isinstance(part, _UserTime):
                idx = part.rows(users, time_rows)
            else:
                idx = index[part.owner]
            blocks.append(part.block(np.asarray(idx, np.int32), spaces.get(part.owner), first))
        return check_design(Design(tuple(blocks), self.feature_names, self.groups, self.group_names))

    def design_of(self, ratings: Ratings) -> Design:
        """The design of a :class:`Ratings`' pairs (in its row order), in its own index spaces."""
        return self.design(ratings.users, ratings.items, ratings.timestamps, user_map=ratings.user_map,
                           item_map=ratings.item_map)

    def _space(self, idmap, train_map: IdMap, what: str) -> _Space:
        if idmap is None:
            return _Space(train_map, len(train_map))
        n = len(train_map)
        if len(idmap) < n or not np.array_equal(idmap.ids()[:n], train_map.ids()):
            raise DataError(f"the {what} map ({len(idmap)} IDs) does not extend the training {what} map ({n} IDs): "
                            f"its first {n} IDs must be the training ones (build it with "
                            f"train.{what}_map.extend(new_ids))")
        return _Space(idmap, n)
