"""Strict, fast readers for delimited rating files.

The fast path hands the file to pandas' C parser with ``skip_blank_lines=False`` so that row ``r``
of the frame is line ``r + 1 + header_lines`` of the file; when the fast path finds a problem, the
error names that file and line. Multi-character separators (MovieLens-1M's ``::``) are rewritten
to a tab in memory first, because pandas' C parser accepts single characters only and its Python
parser is much slower.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, ParseError

ROLES = ("user", "item", "rating", "timestamp")
ID_TYPES = ("auto", "int", "str")
"""How the ``user``/``item`` columns are read: ``"int"`` (every ID an integer), ``"str"`` (IDs
are text, kept verbatim) or ``"auto"`` (integers when every ID is one, text when none is; a
column mixing both is refused, since one stray field must not turn every ID into a string)."""


def _source_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def read_delimited(
    path,
    sep: str,
    columns: dict[str, int | str],
    header: bool = False,
    ids: str = "auto",
) -> dict[str, np.ndarray]:
    """Read the ``columns`` (role -> position or header name) of a delimited text file.

    Returns a dict of raw arrays keyed by role (``user``/``item`` int64 or str as ``ids`` says,
    see :data:`ID_TYPES`; ``rating`` float, ``timestamp`` int64). Every line must have the same
    number of fields, every rating and timestamp must parse as a number and every ID must have
    the column's type, else :class:`~bayesmf.errors.ParseError` names the line and the text.
    """
    path = Path(path)
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise DataError(f"unknown column role(s) {sorted(unknown)}; allowed: {ROLES}")
    if ids not in ID_TYPES:
        raise DataError(f"ids must be one of {ID_TYPES}, got {ids!r}")
    raw = _source_bytes(path)
    if raw.endswith(b"\n"):
        raw = raw[:-1]  # a final newline ends the last line; it is not an empty line
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw:
        raise ParseError(path, None, "the file is empty")
    if len(sep) > 1:
        if b"\t" in raw:
            line = raw[: raw.index(b"\t")].count(b"\n") + 1
            raise ParseError(path, line, f"unexpected tab character in a {sep!r}-separated file")
        raw = raw.replace(sep.encode(), b"\t")
        sep = "\t"
    header_lines = 1 if header else 0
    text_columns = {columns[r]: str for r in ("user", "item") if r in columns} if ids == "str" else None
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), sep=sep, header=0 if header else None, dtype=text_columns,
            skip_blank_lines=False, engine="c", keep_default_na=False, na_values=[""],
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            expected, line, saw = (int(g) for g in match.groups())
            raise ParseError(path, line, f"expected {expected} fields, found {saw}") from None
        raise ParseError(path, None, str(exc)) from None
    except pd.errors.EmptyDataError:
        raise ParseError(path, None, "the file has no data") from None

    if header:
        absent = [name for name in columns.values() if name not in frame.columns]
        if absent:
            raise ParseError(path, 1, f"header lacks column(s) {absent}; it has {list(frame.columns)}")
    elif frame.shape[1] <= max(columns.values()):
        raise ParseError(path, 1, f"expected at least {max(columns.values()) + 1} fields, found {frame.shape[1]}")

    out = {}
    for role, col in columns.items():
        series = frame[col]
        if series.isna().any():
            row = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise ParseError(path, row + 1 + header_lines, f"missing {role} field (blank or short line)")
        if role in ("rating", "timestamp"):
            values = pd.to_numeric(series, errors="coerce") if series.dtype.kind not in "iuf" else series
            arr = values.to_numpy(dtype=np.float64)
            bad = np.isnan(arr)
            if role == "timestamp":
                bad |= arr != np.round(arr)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                kind = "an integer" if role == "timestamp" else "a number"
                raise ParseError(path, row + 1 + header_lines, f"{role} {str(series.iloc[row])!r} is not {kind}")
            out[role] = arr.astype(np.int64) if role == "timestamp" else arr
        else:
            out[role] = _id_column(series, role, ids, path, header_lines)
    return out


def _id_column(series: pd.Series, role: str, ids: str, path: Path, header_lines: int) -> np.ndarray:
    """The IDs of one column as int64 or str (see :data:`ID_TYPES`); vectorised, and a
    ParseError naming the first offending line when the column does not have one type."""
    if ids == "str":
        return series.to_numpy().astype(str)
    arr = series.to_numpy()
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    # IDs that all read as whole numbers are integers ("1", "1.0" and 1 name the same user).
    num = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    not_int = ~(np.isfinite(num) & (num == np.round(num)) & (np.abs(num) < 2.0**63))
    if not not_int.any():
        return num.astype(np.int64)
    if ids == "auto" and not_int.all():
        return arr.astype(str)
    row = int(np.flatnonzero(not_int)[0])
    message = f"{role} ID {str(series.iloc[row])!r} is not an integer"
    if ids == "auto":
        n_int = int((~not_int).sum())
        message += (
            f", but {n_int:,} of the column's {not_int.size:,} {role} IDs are; a corrupted field? "
            "If the IDs are text, pass ids='str'"
        )
    raise ParseError(path, row + 1 + header_lines, message)


def read_parquet(path, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Read named columns of a Parquet file (needs pyarrow)."""
    path = Path(path)
    frame = pd.read_parquet(path)
    absent = [name for name in columns.values() if name not in frame.columns]
    if absent:
        raise DataError(f"{path}: column(s) {absent} not found; it has {list(frame.columns)}")
    return {role: frame[name].to_numpy() for role, name in columns.items()}
