r"""Side tables: per-user or per-item attributes (age, occupation, genres, release year, ...) keyed
by the raw user or item ID, and strict loaders for the MovieLens files that hold them.

A :class:`SideTable` maps raw IDs to rows (an :class:`~bayesmf.data.idmap.IdMap`, in file order)
and holds named columns of three kinds (:data:`KINDS`):

* ``"categorical"``: one level per row (gender, occupation, zip prefix, ML-1M's age bucket);
  stored as integer codes into the column's ``levels``;
* ``"numeric"``: one finite number per row, or *missing* where the file leaves the field empty
  (ML-100K's release date of item 267); stored as float64 with NaN exactly where missing;
* ``"multi"``: a set of levels per row (genres); stored in CSR form (``indptr``, ``codes``).

How columns become features (one-hot, percentile bins, standardisation, ``1/sqrt(n)``
normalisation of sets) is :mod:`bayesmf.data.features`' business, not the table's.

Loaders (each raises :class:`~bayesmf.errors.ParseError` naming the file and the 1-based line for
a wrong number of fields, a non-numeric or non-finite number, a 0/1 flag that is neither, an
unparseable date, or an ID that repeats):

* ML-100K ``u.user``, lines ``id|age|gender|occupation|zip``: age (numeric), gender, occupation,
  zip, zip_prefix;
* ML-100K ``u.item``, lines ``id|title|release date|video date|url|`` and one 0/1 flag per genre
  of ``u.genre``: release_year (numeric), genres (multi);
* ML-1M ``users.dat``, lines ``UserID::Gender::Age::Occupation::Zip``: gender, age (the bucket),
  occupation (the name), zip, zip_prefix, all categorical;
* ML-1M ``movies.dat``, lines ``MovieID::Title (Year)::Genre|Genre``: year (numeric, from the
  title), genres (multi).

``zip_prefix`` is the first character of the zip code (as in myFM's ``ml-100k-extended`` example).
The MovieLens side files are read as latin-1 (``u.item`` and ``movies.dat`` hold latin-1 titles;
the others are ASCII, a subset). :func:`side` loads the pair of a named data set and checks the
published row counts (943/1,682 for ML-100K, 6,040/3,883 for ML-1M).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from bayesmf.data.datasets import ALIASES, locate
from bayesmf.data.idmap import IdMap, _as_id_array
from bayesmf.errors import ConfigError, DataError, DataNotFoundError, ParseError

__all__ = [
    "KINDS", "SIDE_FILES", "SideColumn", "SideTable", "load_ml100k_items", "load_ml100k_users",
    "load_ml1m_movies", "load_ml1m_users", "side",
]

KINDS = ("categorical", "numeric", "multi")

ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
"""ML-1M's age codes and the buckets they stand for (its README)."""

ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
"""ML-1M's occupation names by code 0..20 (its README)."""


class SideColumn(NamedTuple):
    """One column of a :class:`SideTable`.

    Attributes
    ----------
    kind : str
        ``"categorical"``, ``"numeric"`` or ``"multi"``.
    values : ndarray
        ``"categorical"``: int32 codes (n_rows,) into ``levels``; ``"numeric"``: float64 (n_rows,),
        NaN exactly where the value is missing; ``"multi"``: int32 codes (n_entries,) into
        ``levels``, row ``r``'s set being ``values[indptr[r]:indptr[r + 1]]`` (distinct codes).
    levels : tuple of str
        Level names of a categorical or multi column; ``()`` for a numeric one.
    indptr : ndarray of int64, shape (n_rows + 1,), or None
        CSR row pointer of a multi column; None otherwise.
    """

    kind: str
    values: np.ndarray
    levels: tuple = ()
    indptr: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SideTable:
    """Attributes of users or items, keyed by raw ID.

    Parameters
    ----------
    name : str
        What the table is, for error messages (the file path for loaded tables).
    ids : IdMap
        Raw ID -> row (rows in file order).
    columns : dict of str -> SideColumn
        The columns, in order.
    source : tuple (dataset, which) or None
        For tables from :func:`side`: the data set name and ``"users"``/``"items"``, so that a
        feature set can be written to an experiment file (:meth:`Features.to_mapping
        <bayesmf.data.features.Features.to_mapping>`); None for other tables.
    """

    name: str
    ids: IdMap
    columns: dict
    source: tuple | None = None

    def __post_init__(self):
        n = len(self.ids)
        for cname, col in self.columns.items():
            if col.kind not in KINDS:
                raise DataError(f"side table {self.name}: column {cname!r} has kind {col.kind!r}; allowed: {KINDS}")
            if col.kind == "multi":
                ok = col.indptr is not None and col.indptr.shape == (n + 1,) and col.indptr[-1] == col.values.size
            else:
                ok = col.values.shape == (n,)
            if not ok:
                raise DataError(f"side table {self.name}: column {cname!r} does not have {n} rows")
            if col.kind == "numeric":
                bad = np.isinf(col.values)
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raw = self.ids.ids()[row].item()
                    raise DataError(f"side table {self.name}: column {cname!r}, row {row} (ID {raw!r}) has the "
                                    f"non-finite value {float(col.values[row])!r}")
            elif col.values.size and (col.values.min() < 0 or col.values.max() >= len(col.levels)):
                raise DataError(f"side table {self.name}: column {cname!r} has codes outside its "
                                f"{len(col.levels)} levels")

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}:{c.kind}" for k, c in self.columns.items())
        return f"SideTable({self.name!r}, {self.n_rows} rows; {cols})"

    def column(self, name: str) -> SideColumn:
        """The column ``name``; a DataError lists the table's columns when it has none such."""
        if name not in self.columns:
            raise DataError(f"side table {self.name} has no column {name!r}; it has {list(self.columns)}")
        return self.columns[name]

    def rows_of(self, raw_ids, missing: str = "error", what: str = "ID") -> np.ndarray:
        """Rows (int64) of ``raw_ids``; an ID the table lacks raises a DataError naming the table
        and the ID, or gives -1 with ``missing="empty"``."""
        rows = self.ids.lookup(raw_ids, missing=-1).astype(np.int64)
        if missing == "error" and (rows < 0).any():
            absent = np.asarray(raw_ids)[rows < 0]
            raise DataError(f"side table {self.name} has no row for {what} {absent[0].item()!r} "
                            f"({absent.size} {what}s missing in all); pass missing='empty' to give them "
                            "no side features")
        return rows

    @classmethod
    def from_pandas(cls, df, id_column: str, categorical=(), numeric=(), multi=None, *, name: str = "DataFrame",
                    sep: str = "|") -> SideTable:
        """A table from a DataFrame: ``categorical`` and ``numeric`` column names, ``multi`` the
        names of columns holding ``sep``-joined sets. Numeric values must be finite (NaN, inf or
        non-numbers raise a DataError naming the column and row); IDs must be distinct."""
        cols = {}
        for c in [id_column, *categorical, *numeric, *(multi or ())]:
            if c not in df.columns:
                raise DataError(f"{name}: column {c!r} not in the DataFrame; it has {list(df.columns)}")
        for c in [id_column, *categorical, *(multi or ())]:
            if df[c].isna().any():
                row = int(np.flatnonzero(df[c].isna().to_numpy())[0])
                raise DataError(f"{name}: column {c!r} is missing at row {row}")
        ids = _distinct_ids(df[id_column].to_numpy(), lambda row, first, value: DataError(
            f"{name}: ID {value!r} at row {row} repeats (first at row {first})"))
        for c in categorical:
            cols[c] = _categorical(df[c].astype(str).to_numpy())
        for c in numeric:
            num = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(num)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{name}: column {c!r}, row {row} (ID {ids.ids()[row].item()!r}): "
                                f"{str(df[c].iloc[row])!r} is not a finite number")
            cols[c] = SideColumn("numeric", num)
        for c in multi or ():
            cols[c] = _multi_from_strings(df[c].astype(str), sep)
        return cls(name, ids, cols)


# -- helpers ----------------------------------------------------------------------------------
def _categorical(values: np.ndarray) -> SideColumn:
    levels, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return SideColumn("categorical", codes.astype(np.int32).reshape(-1), tuple(levels.tolist()))


def _multi_from_strings(series: pd.Series, sep: str) -> SideColumn:
    """Sets given as ``sep``-joined strings (empty string: empty set); repeats within a row are
    kept once."""
    split = series.str.split(sep, regex=False)
    row = np.repeat(np.arange(len(series)), split.str.len().to_numpy())
    names = np.asarray(split.explode().to_numpy()).astype(str)
    keep = names != ""
    return _multi_from_pairs(row[keep], names[keep], len(series))


def _multi_from_pairs(rows: np.ndarray, names: np.ndarray, n_rows: int, levels=None) -> SideColumn:
    """CSR multi column from (row, level name) pairs (any order; duplicates dropped)."""
    if levels is None:
        levels, codes = np.unique(names, return_inverse=True)
    else:
        levels = np.asarray(levels)
        codes = np.searchsorted(levels, names) if names.size else np.zeros(0, np.int64)
    keys = np.unique(rows.astype(np.int64) * max(len(levels), 1) + codes)
    rows_s, codes_s = keys // max(len(levels), 1), keys % max(len(levels), 1)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows_s, minlength=n_rows), out=indptr[1:])
    return SideColumn("multi", codes_s.astype(np.int32), tuple(np.asarray(levels).astype(str).tolist()), indptr)


def _distinct_ids(raw: np.ndarray, error) -> IdMap:
    ids = _as_id_array(raw)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        first, second = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise error(second, first, ids[second].item())
    return IdMap.from_ordered(ids)


def _read_lines(path: Path, sep: str, n_fields: int, encoding: str = "latin-1") -> pd.DataFrame:
    """The ``n_fields`` text fields of every line of ``path`` (row ``r`` is line ``r + 1``).

    Trailing blank lines are dropped (ML-100K's ``u.genre`` ends with one); any other line with a
    different number of fields raises a ParseError naming the file and the line."""
    if not path.is_file():
        raise DataNotFoundError(f"no such file: {path}")
    text = path.read_bytes().decode(encoding).replace("\r\n", "\n").rstrip("\n")
    if not text:
        raise ParseError(path, None, "the file is empty")
    lines = pd.Series(text.split("\n"), dtype=object)
    counts = lines.str.count(re.escape(sep)).to_numpy() + 1
    bad = counts != n_fields
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        found = "an empty line" if lines.iloc[row] == "" else f"{counts[row]} fields"
        raise ParseError(path, row + 1, f"expected {n_fields} {sep!r}-separated fields, found {found}")
    return lines.str.split(sep, n=n_fields - 1, expand=True, regex=False)


def _integers(path: Path, field: pd.Series, what: str) -> np.ndarray:
    num = pd.to_numeric(field, errors="coerce").to_numpy(np.float64)
    bad = ~(np.isfinite(num) & (num == np.round(num)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ParseError(path, row + 1, f"{what} {field.iloc[row]!r} is not an integer")
    return num.astype(np.int64)


def _ids(path: Path, field: pd.Series, what: str) -> IdMap:
    return _distinct_ids(_integers(path, field, what), lambda row, first, value: ParseError(
        path, row + 1, f"{what} {value!r} repeats (first on line {first + 1})"))


def _prefix(values: np.ndarray) -> np.ndarray:
    """The first character of each string (a zip code's region digit)."""
    return pd.Series(values, dtype=object).str[:1].to_numpy().astype(str)


def _text(path: Path, field: pd.Series, what: str) -> np.ndarray:
    values = field.str.strip().to_numpy().astype(str)
    empty = values == ""
    if empty.any():
        raise ParseError(path, int(np.flatnonzero(empty)[0]) + 1, f"{what} is empty")
    return values


# -- MovieLens loaders ------------------------------------------------------------------------
def load_ml100k_users(path) -> SideTable:
    """ML-100K ``u.user`` (``id|age|gender|occupation|zip``): age numeric; gender, occupation,
    zip and zip_prefix (first character) categorical."""
    path = Path(path)
    f = _read_lines(path, "|", 5)
    zips = _text(path, f[4], "zip code")
    cols = {
        "age": SideColumn("numeric", _integers(path, f[1], "age").astype(np.float64)),
        "gender": _categorical(_text(path, f[2], "gender")),
        "occupation": _categorical(_text(path, f[3], "occupation")),
        "zip": _categorical(zips),
        "zip_prefix": _categorical(_prefix(zips)),
    }
    return SideTable(str(path), _ids(path, f[0], "user ID"), cols)


def _read_genre_names(path: Path) -> np.ndarray:
    """``u.genre`` (``name|index``, indices 0..n-1 in order) -> genre names by index."""
    f = _read_lines(path, "|", 2)
    index = _integers(path, f[1], "genre index")
    wrong = index != np.arange(index.size)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ParseError(path, row + 1, f"genre index {int(index[row])}; expected {row} (indices 0, 1, ... in order)")
    return _text(path, f[0], "genre name")


def load_ml100k_items(path, genre_path=None) -> SideTable:
    """ML-100K ``u.item`` (``id|title|release date|video date|url|`` then one 0/1 flag per genre
    of ``u.genre``, by default the file next to it): ``release_year`` numeric (missing where the
    release date is empty), ``genres`` multi."""
    path = Path(path)
    genres = _read_genre_names(Path(genre_path) if genre_path is not None else path.with_name("u.genre"))
    f = _read_lines(path, "|", 5 + genres.size)
    dates = f[2].str.strip()
    parsed = pd.to_datetime(dates, format="%d-%b-%Y", errors="coerce")
    bad = parsed.isna().to_numpy() & (dates != "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ParseError(path, row + 1, f"release date {dates.iloc[row]!r} is not a date like 01-Jan-1995")
    flags = f.iloc[:, 5:].to_numpy().astype(str)
    not_flag = (flags != "0") & (flags != "1")
    if not_flag.any():
        row, col = (int(a[0]) for a in np.nonzero(not_flag))
        raise ParseError(path, row + 1, f"genre flag {str(genres[col])!r} is {str(flags[row, col])!r}, not 0 or 1")
    rows, cols = np.nonzero(flags == "1")
    columns = {
        "release_year": SideColumn("numeric", parsed.dt.year.to_numpy(np.float64, na_value=np.nan)),
        "genres": _multi_from_pairs(rows, genres[cols], len(f), levels=np.sort(genres)),
    }
    return SideTable(str(path), _ids(path, f[0], "item ID"), columns)


def load_ml1m_users(path) -> SideTable:
    """ML-1M ``users.dat`` (``UserID::Gender::Age::Occupation::Zip``): gender, age (the bucket
    of :data:`ML1M_AGES`), occupation (the name of :data:`ML1M_OCCUPATIONS`), zip and zip_prefix,
    all categorical. An age or occupation code outside the README's lists is a ParseError."""
    path = Path(path)
    f = _read_lines(path, "::", 5)
    age = _integers(path, f[2], "age code")
    unknown = ~np.isin(age, list(ML1M_AGES))
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ParseError(path, row + 1, f"age code {int(age[row])} is not one of {sorted(ML1M_AGES)}")
    occ = _integers(path, f[3], "occupation code")
    out = (occ < 0) | (occ >= len(ML1M_OCCUPATIONS))
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise ParseError(path, row + 1, f"occupation code {int(occ[row])} is outside 0..{len(ML1M_OCCUPATIONS) - 1}")
    zips = _text(path, f[4], "zip code")
    buckets = np.asarray([ML1M_AGES[a] for a in sorted(ML1M_AGES)])
    cols = {
        "gender": _categorical(_text(path, f[1], "gender")),
        "age": _categorical(buckets[np.searchsorted(sorted(ML1M_AGES), age)]),
        "occupation": _categorical(np.asarray(ML1M_OCCUPATIONS)[occ]),
        "zip": _categorical(zips),
        "zip_prefix": _categorical(_prefix(zips)),
    }
    return SideTable(str(path), _ids(path, f[0], "user ID"), cols)


def load_ml1m_movies(path) -> SideTable:
    """ML-1M ``movies.dat`` (``MovieID::Title (Year)::Genre|Genre``, latin-1): ``year`` numeric
    (the title's trailing ``(YYYY)``; missing when the title has none), ``genres`` multi."""
    path = Path(path)
    f = _read_lines(path, "::", 3)
    year = f[1].str.strip().str.extract(r"\((\d{4})\)$", expand=False)
    columns = {
        "year": SideColumn("numeric", pd.to_numeric(year).to_numpy(np.float64)),
        "genres": _multi_from_strings(f[2].str.strip(), "|"),
    }
    return SideTable(str(path), _ids(path, f[0], "movie ID"), columns)


SIDE_FILES = {
    # data set -> (users file, users loader, published users), (items file, items loader, published items)
    "movielens-100k": (("u.user", load_ml100k_users, 943), ("u.item", load_ml100k_items, 1_682)),
    "movielens-1m": (("users.dat", load_ml1m_users, 6_040), ("movies.dat", load_ml1m_movies, 3_883)),
}


def side(name: str, data_dir=None, download: bool = True, *, check_counts: bool = True) -> tuple[SideTable, SideTable]:
    """The (users, items) side tables of data set ``name`` (``"movielens-100k"``/``"ml-100k"`` or
    ``"movielens-1m"``/``"ml-1m"``), from the folder :func:`~bayesmf.data.datasets.locate` finds.

    Both must hold the published numbers of rows unless ``check_counts=False``.
    """
    canonical = ALIASES.get(name, name)
    if canonical not in SIDE_FILES:
        short = sorted(a for a, full in ALIASES.items() if full in SIDE_FILES)
        raise ConfigError(f"no side tables for data set {name!r}; known: {sorted(SIDE_FILES) + short}")
    folder = locate(canonical, data_dir, download).parent
    tables = []
    for which, (fname, loader, published) in zip(("users", "items"), SIDE_FILES[canonical]):
        table = loader(folder / fname)
        if check_counts and table.n_rows != published:
            raise DataError(f"{folder / fname}: {table.n_rows:,} rows, but the published {canonical} file has "
                            f"{published:,}; restore it, or pass check_counts=False")
        tables.append(dataclasses.replace(table, source=(canonical, which)))
    return tables[0], tables[1]
