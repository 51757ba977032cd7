"""Named data sets (MovieLens), generic file loading, and where data live.

Data directory, in order of precedence: the ``data_dir`` argument, the ``BAYESMF_DATA``
environment variable, then the per-user cache ``$XDG_CACHE_HOME/bayesmf`` (``~/.cache/bayesmf``).
Inside it the layout is the one of the shared data folder::

    ml-100k/u.data, ml-100k/u1.base ... ub.test
    ml-1m/ratings.dat            (or ml-1m/ml-1m_ratings.npz, whose timestamp is -1 where unknown)
    ml-latest-small/ratings.csv
    ml-10M100K/ratings.dat       (the folder the GroupLens archive ml-10m.zip unpacks to)
    ml-20m/ratings.csv, ml-25m/ratings.csv, ml-32m/ratings.csv
    netflix/training_set/mv_0000001.txt ... mv_0017770.txt, netflix/probe.txt, netflix/qualifying.txt

The short names ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"`` ... name the same data sets as
``"movielens-100k"`` ... (:data:`ALIASES`). Large files are read in blocks into compact arrays
(:mod:`bayesmf.data.io`), never as one Python object per rating.

A named data set must hold its published numbers of ratings, users and items (a truncated or
corrupted copy fails naming the file and both counts; ``check_counts=False`` loads a
deliberately modified one).

MovieLens may not be redistributed, so bayesmf ships no data. A missing MovieLens data set is
downloaded from GroupLens into the cache when the network allows; otherwise the error names the
exact path expected and how to supply it. The Netflix Prize data are no longer distributed by
Netflix: bayesmf never downloads them, and reads them where the user put them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayesmf.data.idmap import IdMap
from bayesmf.data.io import read_delimited, read_netflix_pairs, read_netflix_training, read_parquet
from bayesmf.data.ratings import Ratings, pair_keys
from bayesmf.errors import DataError, DataNotFoundError, ParseError

ENV_VAR = "BAYESMF_DATA"


def default_data_dir() -> Path:
    """The per-user cache directory used when neither an argument nor BAYESMF_DATA is given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bayesmf"


def resolve_data_dir(data_dir=None) -> Path:
    """``data_dir``, else ``$BAYESMF_DATA``, else :func:`default_data_dir`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_data_dir()


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named data set lives inside the data directory and how to read it."""

    name: str
    folder: str
    files: tuple[str, ...]  # alternatives, first found wins
    url: str | None  # None: not downloadable
    sha256: str | None  # of the archive at ``url``; None where it could not be pinned offline
    rating_scale: tuple[float, float]
    expected: tuple[int, int, int | None]  # ratings, users, items (the published counts; None: not checked)
    file_ratings: tuple[tuple[str, int], ...] = ()  # (file name, published ratings) of its other files


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "movielens-100k", "ml-100k", ("u.data",),
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip", None, (1.0, 5.0),
            (100_000, 943, 1_682),
            tuple((f"u{k}.{part}", n) for k in range(1, 6) for part, n in (("base", 80_000), ("test", 20_000)))
            + tuple((f"u{k}.{part}", n) for k in "ab" for part, n in (("base", 90_570), ("test", 9_430))),
        ),
        DatasetSpec(
            "movielens-1m", "ml-1m", ("ratings.dat", "ml-1m_ratings.npz"),
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip", None, (1.0, 5.0),
            (1_000_209, 6_040, 3_706),
        ),
        DatasetSpec(
            "movielens-latest-small", "ml-latest-small", ("ratings.csv",),
            "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip", None, (0.5, 5.0),
            (100_836, 610, 9_724),
        ),
        DatasetSpec(
            "movielens-10m", "ml-10M100K", ("ratings.dat",),
            "https://files.grouplens.org/datasets/movielens/ml-10m.zip", None, (0.5, 5.0),
            (10_000_054, 69_878, 10_677),
        ),
        DatasetSpec(
            "movielens-20m", "ml-20m", ("ratings.csv",),
            "https://files.grouplens.org/datasets/movielens/ml-20m.zip", None, (0.5, 5.0),
            (20_000_263, 138_493, 26_744),
        ),
        DatasetSpec(
            "movielens-25m", "ml-25m", ("ratings.csv",),
            "https://files.grouplens.org/datasets/movielens/ml-25m.zip", None, (0.5, 5.0),
            (25_000_095, 162_541, 59_047),
        ),
        DatasetSpec(
            "movielens-32m", "ml-32m", ("ratings.csv",),
            "https://files.grouplens.org/datasets/movielens/ml-32m.zip", None, (0.5, 5.0),
            (32_000_204, 200_948, None),
        ),
        DatasetSpec(
            "netflix", "netflix", ("training_set",), None, None, (1.0, 5.0),
            (100_480_507, 480_189, 17_770), (("probe.txt", 1_408_395), ("qualifying.txt", 2_817_131)),
        ),
    )
}

ALIASES = {f"ml-{size}": f"movielens-{size}" for size in ("100k", "1m", "10m", "20m", "25m", "32m")}
"""Short names accepted wherever a data set is named."""


def available(data_dir=None) -> dict[str, Path | None]:
    """For every named data set, the file that :func:`load` would read (None when absent)."""
    root = resolve_data_dir(data_dir)
    return {name: _find(spec, root) for name, spec in DATASETS.items()}


def _find(spec: DatasetSpec, root: Path) -> Path | None:
    for fname in spec.files:
        candidate = root / spec.folder / fname
        if candidate.is_file() or (candidate.is_dir() and spec.url is None):
            return candidate
    return None


def locate(name: str, data_dir=None, download: bool = True) -> Path:
    """Path of the ratings file of data set ``name``, downloading it if allowed and needed."""
    spec = _spec(name)
    root = resolve_data_dir(data_dir)
    found = _find(spec, root)
    if found is not None:
        return found
    if spec.url is None:
        reason = f"bayesmf does not download {name}"
    elif download:
        try:
            _download(spec, root)
        except OSError as exc:  # no network, read-only directory, ...
            reason = f"download from {spec.url} failed ({exc})"
        else:
            found = _find(spec, root)
            if found is not None:
                return found
            reason = f"the archive from {spec.url} did not contain {spec.files}"
    else:
        reason = "download=False"
    expected = " or ".join(str(root / spec.folder / f) for f in spec.files)
    raise DataNotFoundError(
        f"data set {name!r} not found: expected {expected}. {reason}. Put the published files there, "
        f"or point the data_dir argument or the {ENV_VAR} environment variable at a folder holding "
        f"{spec.folder}/."
    )


def _download(spec: DatasetSpec, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(spec.url).name
    partial = archive.with_suffix(".part")
    with urllib.request.urlopen(spec.url, timeout=30) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    if spec.sha256 is not None and digest != spec.sha256:
        partial.unlink()
        raise OSError(f"sha256 mismatch for {spec.url}: got {digest}, expected {spec.sha256}")
    partial.rename(archive)
    (root / (archive.name + ".sha256")).write_text(digest + "\n")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)


def _spec(name: str) -> DatasetSpec:
    name = ALIASES.get(name, name)
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {sorted(DATASETS)} (or use load_file)")
    return DATASETS[name]


# -- loading ----------------------------------------------------------------------------------
def load(name: str, data_dir=None, download: bool = True, *, check_counts: bool = True) -> Ratings:
    """Load a named data set as :class:`~bayesmf.data.ratings.Ratings` with raw-ID maps.

    ``name`` is one of :data:`DATASETS` (``"movielens-100k"``, ``"movielens-1m"``,
    ``"movielens-latest-small"``, ``"movielens-10m"``, ``"movielens-20m"``, ``"movielens-25m"``,
    ``"movielens-32m"``, ``"netflix"``) or a short name of :data:`ALIASES` (``"ml-10m"``).
    Rows keep the file's order (Netflix: the ``mv_*.txt`` files in name order); user and item
    indices follow the sorted raw IDs.

    The ratings, users and items read must equal the published counts (``DATASETS[name].expected``),
    so a truncated or corrupted copy fails here, naming the file and both counts, instead of
    giving results on the wrong data. ``check_counts=False`` loads a deliberately modified copy.
    """
    spec = _spec(name)
    path = locate(name, data_dir, download)
    if path.suffix == ".npz":
        ratings = load_npz(path, rating_scale=spec.rating_scale)
    elif spec.name == "netflix":
        ratings = load_netflix(path, rating_scale=spec.rating_scale)
    else:
        ratings = load_file(path, rating_scale=spec.rating_scale)
    if check_counts:
        _check_published(path, spec.name, (ratings.nnz, ratings.n_users, ratings.n_items), spec.expected)
    return ratings


def _check_published(path: Path, name: str, got: tuple[int, ...], published: tuple[int, ...]) -> None:
    """DataError naming the file and both counts when ``got`` differs from the ``published``
    (ratings[, users, items]) counts of data set ``name``."""
    published = tuple(p if p is not None else g for g, p in zip(got, published))
    if tuple(got) == published:
        return

    def counts(c):
        return ", ".join(f"{n:,} {what}" for n, what in zip(c, ("ratings", "users", "items")))

    raise DataError(
        f"{path}: {counts(got)}, but the published {name} file has {counts(published)}: the file is "
        "truncated, corrupted or not the published one. Restore it (or delete it to download it again); "
        "to load a deliberately modified copy, pass check_counts=False "
        "(datasets.load or splits.predefined)."
    )


_FORMATS = {
    # file name -> (separator, column roles by position or header name, has header, ID type)
    "u.data": ("\t", {"user": 0, "item": 1, "rating": 2, "timestamp": 3}, False, "int"),
    "ratings.dat": ("::", {"user": 0, "item": 1, "rating": 2, "timestamp": 3}, False, "int"),
    "ratings.csv": (",", {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}, True,
                    "int"),
}
_MOVIELENS_100K_SPLIT = ("\t", {"user": 0, "item": 1, "rating": 2, "timestamp": 3}, False, "int")


def load_file(
    path,
    sep: str | None = None,
    columns: dict | None = None,
    header: bool | None = None,
    *,
    rating_scale: tuple[float, float] | None = None,
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    duplicates: str = "error",
    ids: str | None = None,
) -> Ratings:
    """Load a ratings file: MovieLens formats by name, or any CSV/TSV/Parquet with named columns.

    For MovieLens files (``u.data``, ``u1.base``..., ``ratings.dat``, ``ratings.csv``) the format
    is known, integer IDs included. Otherwise give ``columns`` mapping roles (``user``, ``item``,
    ``rating``, ``timestamp``) to header names (``header=True``, the default for ``.csv``) or
    positions, and ``sep`` (default: ``,`` for ``.csv``, tab otherwise). ``rating`` may be omitted
    for implicit data (all values 1). ``ids`` is the type of the user and item IDs of a delimited
    file, ``"int"``, ``"str"`` or ``"auto"`` (see :data:`bayesmf.data.io.ID_TYPES`; default: the
    known format's, else ``"auto"``). This loader does not compare counts with published ones;
    :func:`load` does.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no such file: {path}")
    if path.suffix == ".parquet":
        if columns is None:
            raise DataError("a Parquet file needs columns={'user': ..., 'item': ..., 'rating': ...}")
        fields = read_parquet(path, columns)
    else:
        known = _FORMATS.get(path.name)
        if known is None and path.suffix in (".base", ".test") and path.stem[:1] == "u":
            known = _MOVIELENS_100K_SPLIT
        if columns is None and known is not None:
            sep, columns, header, declared = known
            ids = declared if ids is None else ids
        if columns is None:
            raise DataError(f"{path}: unknown format; pass columns={{'user': ..., 'item': ..., 'rating': ...}}")
        if sep is None:
            sep = "," if path.suffix == ".csv" else "\t"
        if header is None:
            header = all(isinstance(c, str) for c in columns.values())
        fields = read_delimited(path, sep, columns, header, ids="auto" if ids is None else ids,
                                rating_scale=rating_scale)
        sources = [(path, 1 + bool(header), len(fields["user"]))]
        return _to_ratings(fields, rating_scale, user_map, item_map, duplicates, sources)
    return _to_ratings(fields, rating_scale, user_map, item_map, duplicates)


def load_npz(path, rating_scale: tuple[float, float] | None = None) -> Ratings:
    """Load an ``.npz`` with arrays ``user``, ``item``, ``rating`` (+ ``timestamp``, -1 = unknown)."""
    path = Path(path)
    with np.load(path) as npz:
        absent = [k for k in ("user", "item", "rating") if k not in npz.files]
        if absent:
            raise DataError(f"{path}: arrays {absent} missing; it holds {npz.files}")
        fields = {k: npz[k] for k in ("user", "item", "rating", "timestamp") if k in npz.files}
    return _to_ratings(fields, rating_scale, None, None, "error")


def _to_ratings(fields, rating_scale, user_map, item_map, duplicates, sources=None) -> Ratings:
    """``fields`` (raw columns, consumed) as Ratings. ``sources``: ``(path, line of its first
    row, rows)`` per file in row order, so that a duplicate pair is reported by file and line."""
    values = fields.pop("rating", None)
    if values is None:
        values = np.ones(len(fields["user"]), np.float32)
    users, items = fields.pop("user"), fields.pop("item")
    try:
        return Ratings.from_ids(
            users, items, values, fields.pop("timestamp", None),
            rating_scale=rating_scale, user_map=user_map, item_map=item_map, duplicates=duplicates,
        )
    except DataError as exc:
        if sources is None or duplicates != "error" or not str(exc).startswith("duplicate"):
            raise
        raise _duplicate_error(users, items, sources) from None


def _duplicate_error(users, items, sources) -> ParseError:
    """A ParseError naming the file and line of the first repeated (user, item) pair and of its
    earlier occurrence (the error path only: it sorts the pairs again)."""
    user_idx, item_idx = np.unique(users, return_inverse=True)[1], np.unique(items, return_inverse=True)[1]
    keys = pair_keys(user_idx.ravel(), item_idx.ravel(), int(item_idx.max()) + 1)
    order = np.argsort(keys, kind="stable")
    repeat = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    pairs = np.stack([order[repeat], order[repeat + 1]], axis=1)
    first, second = pairs[np.argmin(pairs[:, 1])]

    ends = np.cumsum([rows for _, _, rows in sources])

    def where(row):
        k = int(np.searchsorted(ends, row, side="right"))
        return sources[k][0], sources[k][1] + int(row) - (int(ends[k - 1]) if k else 0)

    path, line = where(second)
    earlier = "{}:{}".format(*where(first))
    return ParseError(path, line, f"duplicate (user {users[second]}, item {items[second]}) pair, first at {earlier}; "
                      "pass duplicates='last' or 'mean' to merge")


def load_movielens_100k_split(
    fold: str, data_dir=None, download: bool = True, *, check_counts: bool = True
) -> tuple[Ratings, Ratings]:
    """The predefined MovieLens-100K split ``fold`` (``u1``..``u5``, ``ua``, ``ub``) as (train, test).

    Both share ID maps built from the whole ``u.data``, so test indices live in the training
    index space (users/items with no training rating simply have no training rows). ``u.data``
    and both fold files must hold their published numbers of ratings unless ``check_counts=False``
    (see :func:`load`).
    """
    allowed = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
    if fold not in allowed:
        raise DataError(f"unknown MovieLens-100K fold {fold!r}; allowed: {allowed}")
    spec = _spec("movielens-100k")
    full = load(spec.name, data_dir, download, check_counts=check_counts)
    folder = locate(spec.name, data_dir, download=False).parent
    published = dict(spec.file_ratings)
    parts = []
    for suffix in ("base", "test"):
        path = folder / f"{fold}.{suffix}"
        if not path.is_file():
            raise DataNotFoundError(f"predefined split file missing: {path}")
        part = load_file(path, rating_scale=full.rating_scale, user_map=full.user_map, item_map=full.item_map)
        if part.n_users != full.n_users or part.n_items != full.n_items:
            raise DataError(f"{path} holds IDs that u.data does not")
        if check_counts:
            _check_published(path, spec.name, (part.nnz,), (published[path.name],))
        parts.append(part)
    return parts[0], parts[1]


# -- the Netflix Prize ------------------------------------------------------------------------
def load_netflix(training_set, *, rating_scale: tuple[float, float] | None = (1.0, 5.0), user_map: IdMap | None = None,
                 item_map: IdMap | None = None, duplicates: str = "error") -> Ratings:
    """The Netflix Prize ratings of the folder ``training_set`` (its ``mv_*.txt`` files, see
    :func:`bayesmf.data.io.read_netflix_movie`) as :class:`Ratings`; timestamps are the dates'
    midnights (UTC). Read file by file into compact arrays; a malformed file raises a
    ParseError naming it and the line, and nothing is returned. Counts are not compared with
    the published ones here (:func:`load` does)."""
    fields, files = read_netflix_training(training_set, rating_scale)
    sources = [(path, 2, rows) for path, rows in files]
    return _to_ratings(fields, rating_scale, user_map, item_map, duplicates, sources)


def _netflix_pairs(ratings: Ratings, path: Path) -> tuple[np.ndarray, dict]:
    """The rows of ``ratings`` at the pairs of ``path`` (probe.txt), in the file's order; a pair
    that is not among the ratings raises a ParseError naming its line."""
    pairs = read_netflix_pairs(path, dates=False)
    users = ratings.user_map.lookup(pairs["user"], missing=-1)
    items = ratings.item_map.lookup(pairs["item"], missing=-1)
    known = (users >= 0) & (items >= 0)
    found = np.zeros(known.shape, bool)
    found[known] = ratings.contains(users[known], items[known])
    if not found.all():
        row = int(np.flatnonzero(~found)[0])
        raise ParseError(path, int(pairs["line"][row]), f"(customer {pairs['user'][row]}, movie "
                         f"{pairs['item'][row]}) is not among the training_set ratings")
    keys = pair_keys(users, items, ratings.n_items)
    order = np.argsort(ratings.keys, kind="stable")
    rows = order[np.searchsorted(ratings.keys, keys, sorter=order)]
    return rows, pairs


def load_netflix_probe_split(data_dir=None, *, check_counts: bool = True) -> tuple[Ratings, Ratings]:
    """The Netflix Prize probe split as (train, test): test holds the ratings of the pairs listed
    in ``netflix/probe.txt`` (in the file's order), train every other rating of the training set;
    both share the ID maps of the whole training set. Every probe pair must be a training rating
    (else a ParseError names the probe line), and with ``check_counts`` the training set and the
    probe file must hold their published counts."""
    spec = _spec("netflix")
    full = load("netflix", data_dir, download=False, check_counts=check_counts)
    path = locate("netflix", data_dir, download=False).parent / "probe.txt"
    if not path.is_file():
        raise DataNotFoundError(f"predefined split file missing: {path}")
    rows, _ = _netflix_pairs(full, path)
    if check_counts:
        _check_published(path, spec.name, (rows.size,), (dict(spec.file_ratings)[path.name],))
    test_mask = np.zeros(full.nnz, bool)
    test_mask[rows] = True
    return full.subset(~test_mask), full.subset(rows)


def load_netflix_qualifying(ratings: Ratings, data_dir=None) -> dict[str, np.ndarray]:
    """The pairs of ``netflix/qualifying.txt`` (no ratings: the Prize's hidden set) in the index
    space of ``ratings`` (the Netflix training set): ``users``, ``items`` (int32 indices) and
    ``timestamps`` (Unix seconds of the dates), in the file's order. A customer or movie that
    ``ratings`` does not know raises a ParseError naming its line."""
    path = locate("netflix", data_dir, download=False).parent / "qualifying.txt"
    if not path.is_file():
        raise DataNotFoundError(f"qualifying file missing: {path}")
    pairs = read_netflix_pairs(path, dates=True)
    users = ratings.user_map.lookup(pairs["user"], missing=-1)
    items = ratings.item_map.lookup(pairs["item"], missing=-1)
    unknown = (users < 0) | (items < 0)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ParseError(path, int(pairs["line"][row]), f"customer {pairs['user'][row]} or movie "
                         f"{pairs['item'][row]} is not in the training set")
    return {"users": users, "items": items, "timestamps": pairs["timestamp"]}
