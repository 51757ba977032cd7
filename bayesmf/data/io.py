"""Strict, fast, streaming readers for delimited rating files.

Files are read in blocks of whole lines (:data:`BLOCK_BYTES`), each handed to pandas' C parser
with ``skip_blank_lines=False``, so that row ``r`` of a block's frame is a known line of the file;
when a block has a problem, the error names that file and line. Each block becomes compact NumPy
columns at once (IDs int64 or text, ratings float32, timestamps int64) and the raw text and frame
are dropped before the next block is read, so the peak memory of a large file is about twice its
final columns plus one block, whatever the file's size. Multi-character separators (MovieLens'
``::``) are rewritten to a tab block by block, because pandas' C parser accepts single characters
only and its Python parser is much slower.

The Netflix Prize layout (:func:`read_netflix_training`, :func:`read_netflix_pairs`) is parsed
the same way: ``training_set/mv_0000001.txt`` holds ``MovieID:`` on its first line and then
``CustomerID,Rating,YYYY-MM-DD`` lines; ``probe.txt`` and ``qualifying.txt`` hold ``MovieID:``
lines each followed by that movie's ``CustomerID`` (probe) or ``CustomerID,YYYY-MM-DD``
(qualifying) lines. Dates are split at their hyphens into three integer columns and converted
to Unix seconds (midnight UTC) with NumPy, so no Python object is made per rating.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, ParseError

ROLES = ("user", "item", "rating", "timestamp")
ID_TYPES = ("auto", "int", "str")
"""How the ``user``/``item`` columns are read: ``"int"`` (every ID an integer), ``"str"`` (IDs
are text, kept verbatim) or ``"auto"`` (integers when every ID is one, text when none is; a
column mixing both is refused, since one stray field must not turn every ID into a string)."""

BLOCK_BYTES = 64 << 20
"""Bytes of text parsed at a time (whole lines; a longer line is read whole)."""

_INTEGER_ROLES = ("timestamp", "year", "month", "day")  # the date parts: Netflix's YYYY-MM-DD split


def _open(path: Path):
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _line_blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(number of the block's first line, block)`` for blocks of whole lines of ``path``; every
    block but the file's last ends with a newline."""
    line, rest = 1, b""
    with _open(path) as fh:
        while True:
            data = fh.read(block_bytes)
            if not data:
                if rest:
                    yield line, rest
                return
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1:]
            yield line, block
            line += block.count(b"\n")


def _strip_end(raw: bytes) -> bytes:
    """A final newline ends the last line; it is not an empty line."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def parse_block(
    raw: bytes,
    path: Path,
    sep: str,
    columns: dict[str, int],
    n_fields: int,
    ids: str,
    line_of: Callable[[int], int],
    rating_scale: tuple[float, float] | None = None,
) -> dict[str, np.ndarray] | None:
    """Parse whole lines of text holding ``n_fields`` fields each into compact columns.

    ``columns`` maps roles to field positions: ``user``/``item`` (IDs as ``ids`` says), ``rating``
    (float32, inside ``rating_scale`` when given), and the integer roles ``timestamp``, ``year``,
    ``month``, ``day`` (int64). ``line_of(row)`` is the file line of the block's row ``row``;
    every problem raises :class:`~bayesmf.errors.ParseError` naming ``path`` and that line.
    Returns None for an empty block.
    """
    raw = _strip_end(raw)
    if not raw:
        return None
    text_columns = {columns[r]: str for r in ("user", "item") if r in columns} if ids == "str" else None
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), sep=sep, header=None, names=list(range(n_fields)), index_col=False,
            dtype=text_columns, skip_blank_lines=False, engine="c", keep_default_na=False, na_values=[""],
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            expected, line, saw = (int(g) for g in match.groups())
            raise ParseError(path, line_of(line - 1), f"expected {expected} fields, found {saw}") from None
        raise ParseError(path, None, str(exc)) from None
    out = {}
    for role, col in columns.items():
        series = frame[col]
        missing = series.isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ParseError(path, line_of(row), f"missing {role} field (blank or short line)")
        if role == "rating" or role in _INTEGER_ROLES:
            values = pd.to_numeric(series, errors="coerce") if series.dtype.kind not in "iuf" else series
            arr = values.to_numpy(dtype=np.float64)
            bad = np.isnan(arr)
            integer = role in _INTEGER_ROLES
            if integer:
                bad |= arr != np.round(arr)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                kind = "an integer" if integer else "a number"
                raise ParseError(path, line_of(row), f"{role} {str(series.iloc[row])!r} is not {kind}")
            if integer:
                out[role] = arr.astype(np.int64)
            else:
                out[role] = arr.astype(np.float32)
                if rating_scale is not None:
                    lo, hi = rating_scale
                    outside = (out[role] < lo) | (out[role] > hi)
                    if outside.any():
                        row = int(np.flatnonzero(outside)[0])
                        raise ParseError(path, line_of(row), f"rating {float(out[role][row])} is outside the "
                                         f"scale [{float(lo)}, {float(hi)}]")
        else:
            out[role] = _id_column(series, role, ids, path, line_of)
    return out


def read_delimited(
    path,
    sep: str,
    columns: dict[str, int | str],
    header: bool = False,
    ids: str = "auto",
    *,
    rating_scale: tuple[float, float] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> dict[str, np.ndarray]:
    """Read the ``columns`` (role -> position or header name) of a delimited text file.

    Returns a dict of raw arrays keyed by role (``user``/``item`` int64 or str as ``ids`` says,
    see :data:`ID_TYPES`; ``rating`` float32, ``timestamp`` int64). Every line must have the
    number of fields of the first one (the header's, with ``header=True``), every rating and
    timestamp must parse as a number and every ID must have the column's type, and with
    ``rating_scale=(lo, hi)`` every rating must lie inside it; else
    :class:`~bayesmf.errors.ParseError` names the line and the text, and nothing is returned.
    The file is read ``block_bytes`` at a time (see the module docstring); ``.gz`` files are
    decompressed on the fly.
    """
    path = Path(path)
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise DataError(f"unknown column role(s) {sorted(unknown)}; allowed: {ROLES}")
    if ids not in ID_TYPES:
        raise DataError(f"ids must be one of {ID_TYPES}, got {ids!r}")
    parts: list[dict[str, np.ndarray]] = []
    positions: dict[str, int] | None = None
    n_fields = 0
    for first, block in _line_blocks(path, block_bytes):
        if len(sep) > 1:
            if b"\t" in block:
                line = first + block[: block.index(b"\t")].count(b"\n")
                raise ParseError(path, line, f"unexpected tab character in a {sep!r}-separated file")
            block = block.replace(sep.encode(), b"\t")
        text_sep = "\t" if len(sep) > 1 else sep
        if positions is None:
            if not _strip_end(block):
                raise ParseError(path, None, "the file is empty")
            end = block.find(b"\n")
            head = _strip_end(block if end < 0 else block[: end + 1])
            fields = head.decode(errors="replace").split(text_sep)
            if header:
                absent = [name for name in columns.values() if name not in fields]
                if absent:
                    raise ParseError(path, 1, f"header lacks column(s) {absent}; it has {fields}")
                positions = {role: fields.index(name) for role, name in columns.items()}
                block, first = (b"" if end < 0 else block[end + 1:]), 2
            else:
                if len(fields) <= max(columns.values()):
                    raise ParseError(path, 1, f"expected at least {max(columns.values()) + 1} fields, "
                                     f"found {len(fields)}")
                positions = dict(columns)
            n_fields = len(fields)
        parsed = parse_block(block, path, text_sep, positions, n_fields, ids, lambda row, f=first: f + row,
                             rating_scale)
        if parsed is not None:
            _same_id_types(parts, parsed, path, first)
            parts.append(parsed)
    if positions is None:
        raise ParseError(path, None, "the file is empty")
    if not parts:
        raise ParseError(path, None, "the file has no data")
    return concat_columns(parts)


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The blocks' columns joined, each block freed as soon as it is copied."""
    out = {}
    for role in list(parts[0]):
        out[role] = np.concatenate([p.pop(role) for p in parts])
    return out


def _same_id_types(parts, parsed, path: Path, first: int) -> None:
    if not parts:
        return
    for role in ("user", "item"):
        if role in parsed and (parsed[role].dtype.kind == "U") != (parts[0][role].dtype.kind == "U"):
            kinds = {True: "text", False: "integers"}
            raise ParseError(path, first, f"{role} IDs from this line on are {kinds[parsed[role].dtype.kind == 'U']}, "
                             f"earlier ones {kinds[parts[0][role].dtype.kind == 'U']}; pass ids='str' if the IDs "
                             "are text")


def _id_column(series: pd.Series, role: str, ids: str, path: Path, line_of: Callable[[int], int]) -> np.ndarray:
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
    raise ParseError(path, line_of(row), message)


def read_parquet(path, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Read named columns of a Parquet file (needs pyarrow)."""
    path = Path(path)
    frame = pd.read_parquet(path)
    absent = [name for name in columns.values() if name not in frame.columns]
    if absent:
        raise DataError(f"{path}: column(s) {absent} not found; it has {list(frame.columns)}")
    return {role: frame[name].to_numpy() for role, name in columns.items()}


# -- the Netflix Prize layout -------------------------------------------------------------------
def date_seconds(parts: dict[str, np.ndarray], path: Path, line_of: Callable[[int], int]) -> np.ndarray:
    """Unix seconds (midnight UTC) of the dates ``parts["year"], ["month"], ["day"]``; a date that
    does not exist (month 13, February 30) raises a ParseError naming its line."""
    year, month, day = parts.pop("year"), parts.pop("month"), parts.pop("day")
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (year >= 1970) & (year <= 9999)
    months = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (np.clip(day, 1, 31) - 1).astype("timedelta64[D]")
    ok &= days.astype("datetime64[M]") == months  # the day exists in that month
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ParseError(path, line_of(row), f"date {year[row]:04d}-{month[row]:02d}-{day[row]:02d} does not exist "
                         "(or is before 1970)")
    return days.astype(np.int64) * 86_400


def _movie_line(head: bytes, path: Path, line: int) -> int:
    text = _strip_end(head)
    if not (text.endswith(b":") and text[:-1].isdigit()):
        shown = text[:40].decode(errors="replace")
        raise ParseError(path, line, f"expected a 'MovieID:' line, found {shown!r}")
    return int(text[:-1])


def read_netflix_movie(path, rating_scale: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """One ``training_set/mv_*.txt`` file: columns ``user`` (CustomerID, int64), ``item`` (the
    MovieID of its first line, int64), ``rating`` (float32) and ``timestamp`` (Unix seconds of the
    date). The MovieID must match the file name's number (``mv_0000001.txt``: 1) when it has one."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"\n")
    movie = _movie_line(raw if end < 0 else raw[:end], path, 1)
    digits = path.stem.rpartition("_")[2]
    if digits.isdigit() and int(digits) != movie:
        raise ParseError(path, 1, f"MovieID {movie} differs from the file name's {int(digits)}")
    body = b"" if end < 0 else raw[end + 1:]
    del raw
    columns = {"user": 0, "rating": 1, "year": 2, "month": 3, "day": 4}
    parsed = parse_block(body.replace(b"-", b","), path, ",", columns, 5, "int", lambda row: 2 + row, rating_scale)
    if parsed is None:
        raise ParseError(path, 2, "no CustomerID,Rating,Date line after the MovieID line (truncated file?)")
    parsed["timestamp"] = date_seconds(parsed, path, lambda row: 2 + row)
    parsed["item"] = np.full(parsed["user"].size, movie, np.int64)
    return {k: parsed[k] for k in ROLES}


def read_netflix_training(folder, rating_scale: tuple[float, float] | None = None):
    """Every ``mv_*.txt`` file of the Netflix ``training_set`` folder, in file-name order.

    Returns ``(columns, sources)``: the joined columns of :func:`read_netflix_movie` and, per
    file, ``(path, number of ratings)`` in row order (so row ``r`` can be traced to its file and
    line). The folder must hold at least one such file.
    """
    folder = Path(folder)
    files = sorted(folder.glob("mv_*.txt"))
    if not files:
        from bayesmf.errors import DataNotFoundError

        raise DataNotFoundError(f"no mv_*.txt files in {folder}")
    parts, sources = [], []
    for path in files:
        part = read_netflix_movie(path, rating_scale)
        parts.append(part)
        sources.append((path, int(part["user"].size)))
    return concat_columns(parts), sources


def read_netflix_pairs(path, dates: bool) -> dict[str, np.ndarray]:
    """``probe.txt`` (``dates=False``) or ``qualifying.txt`` (``dates=True``): ``MovieID:`` lines
    each followed by ``CustomerID`` (``CustomerID,YYYY-MM-DD``) lines.

    Returns ``user``, ``item`` (int64 raw IDs), ``timestamp`` (with dates) and ``line`` (each
    pair's 1-based line in the file, for messages). Vectorised over the bytes: the ``MovieID:``
    lines are found by their final colon and parsed apart from the customers' lines.
    """
    path = Path(path)
    raw = _strip_end(path.read_bytes()).replace(b"\r\n", b"\n")
    if not raw:
        raise ParseError(path, None, "the file is empty")
    buf = np.frombuffer(raw, np.uint8)
    ends = np.append(np.flatnonzero(buf == ord("\n")), buf.size)  # each line's end
    starts = np.concatenate([[0], ends[:-1] + 1])
    blank = ends == starts
    if blank.any():
        raise ParseError(path, int(np.flatnonzero(blank)[0]) + 1, "blank line")
    is_movie = buf[ends - 1] == ord(":")
    if not is_movie[0]:
        _movie_line(raw[: ends[0]], path, 1)
    lines = np.arange(1, ends.size + 1)
    movie_lines, pair_lines = lines[is_movie], lines[~is_movie]
    keep = np.repeat(is_movie, ends - starts + 1)[: buf.size]
    movies = parse_block(buf[keep].tobytes().replace(b":", b""), path, ",", {"item": 0}, 1, "int",
                         lambda row: int(movie_lines[row]))
    if dates:
        columns, n_fields = {"user": 0, "year": 1, "month": 2, "day": 3}, 4
        text = buf[~keep].tobytes().replace(b"-", b",")
    else:
        columns, n_fields, text = {"user": 0}, 1, buf[~keep].tobytes()
    del buf, keep
    pairs = parse_block(text, path, ",", columns, n_fields, "int", lambda row: int(pair_lines[row]))
    if pairs is None:
        raise ParseError(path, None, "no CustomerID lines")
    if dates:
        pairs["timestamp"] = date_seconds(pairs, path, lambda row: int(pair_lines[row]))
    pairs["item"] = np.repeat(movies["item"], np.diff(np.append(np.flatnonzero(is_movie), is_movie.size)) - 1)
    pairs["line"] = pair_lines
    return pairs
