"""Train/test splits, all deterministic given a seed and all vectorised.

Every split returns a :class:`Split` ``(train, test)`` whose two parts share the ID maps and
shape of the input, so test indices live in the training index space. Rows keep their input
order inside each part. A split knows which test users/items have no training rating
(:attr:`Split.unseen_users`, :attr:`Split.unseen_items`); ``drop_unseen=True`` removes those test
ratings and records how many in :attr:`Split.dropped`.

Random choices come from ``numpy.random.default_rng(seed)``. ``random(r, 0.1, seed=42)`` is the
common "MovieLens-1M 90/10" protocol: the training rows are the first 90% of
``default_rng(42).permutation(nnz)`` (test size ``round(0.1 * nnz)``).
"""

from __future__ import annotations

import warnings

import numpy as np

from bayesmf.data.ratings import MISSING_TIMESTAMP, Ratings
from bayesmf.errors import DataError
from bayesmf.validate import check_fraction, check_int


class Split(tuple):
    """A ``(train, test)`` pair (unpacks like a tuple) with unseen-entity bookkeeping."""

    def __new__(cls, train: Ratings, test: Ratings, dropped: int = 0):
        obj = super().__new__(cls, (train, test))
        obj.dropped = int(dropped)
        return obj

    @property
    def train(self) -> Ratings:
        return self[0]

    @property
    def test(self) -> Ratings:
        return self[1]

    @property
    def unseen_users(self) -> np.ndarray:
        """Indices of users with test ratings but no training rating."""
        return np.flatnonzero((self.train.user_counts == 0) & (self.test.user_counts > 0))

    @property
    def unseen_items(self) -> np.ndarray:
        """Indices of items with test ratings but no training rating."""
        return np.flatnonzero((self.train.item_counts == 0) & (self.test.item_counts > 0))

    def report(self) -> dict:
        """Counts a paper reports about a split."""
        tr, te = self.train, self.test
        cold = (tr.user_counts[te.users] == 0) | (tr.item_counts[te.items] == 0)
        return {
            "train_ratings": tr.nnz,
            "test_ratings": te.nnz,
            "test_users": int(np.count_nonzero(te.user_counts)),
            "test_items": int(np.count_nonzero(te.item_counts)),
            "unseen_test_users": int(self.unseen_users.size),
            "unseen_test_items": int(self.unseen_items.size),
            "test_ratings_with_unseen_user_or_item": int(cold.sum()),
            "dropped_unseen": self.dropped,
        }

    def __repr__(self) -> str:
        return f"Split(train={self.train!r}, test={self.test!r})"


def _make(ratings: Ratings, test_mask: np.ndarray, drop_unseen: bool) -> Split:
    return _finish(ratings.subset(~test_mask), ratings.subset(test_mask), drop_unseen)


def _finish(train: Ratings, test: Ratings, drop_unseen: bool) -> Split:
    dropped = 0
    if drop_unseen:
        seen = (train.user_counts[test.users] > 0) & (train.item_counts[test.items] > 0)
        dropped = int((~seen).sum())
        if dropped:
            test = test.subset(seen)
    if test.nnz == 0:
        raise DataError("the split leaves the test set empty")
    if train.nnz == 0:
        raise DataError("the split leaves the training set empty")
    return Split(train, test, dropped)


def _rng(seed) -> np.random.Generator:
    """The split's generator; ``seed`` must be a non-negative integer (NumPy's own rule)."""
    return np.random.default_rng(check_int("seed", seed, low=0))


def random(ratings: Ratings, test_fraction: float = 0.2, seed: int = 0, drop_unseen: bool = False) -> Split:
    """Global random split: ``round(test_fraction * nnz)`` ratings go to test."""
    f = check_fraction("test_fraction", test_fraction)
    perm = _rng(seed).permutation(ratings.nnz)
    n_test = int(round(f * ratings.nnz))
    mask = np.zeros(ratings.nnz, dtype=bool)
    mask[perm[ratings.nnz - n_test:]] = True
    return _make(ratings, mask, drop_unseen)


def _rank_within_user(ratings: Ratings, sort_key: np.ndarray) -> np.ndarray:
    """Position (0-based) of each rating within its user when the user's ratings are ordered by
    ``sort_key`` ascending. One lexsort over all ratings; no loop over users."""
    order = np.lexsort((sort_key, ratings.users))
    indptr = ratings.by_user.indptr
    pos_sorted = np.arange(ratings.nnz) - indptr[ratings.users[order]]
    rank = np.empty(ratings.nnz, dtype=np.int64)
    rank[order] = pos_sorted
    return rank


def per_user(
    ratings: Ratings, test_fraction: float = 0.2, seed: int = 0, min_train: int = 1, drop_unseen: bool = False
) -> Split:
    """Per-user random split: each user sends ``round(test_fraction * n_u)`` of their ratings to
    test, keeping at least ``min_train`` in training (users with ``n_u <= min_train`` keep all)."""
    f = check_fraction("test_fraction", test_fraction)
    min_train = check_int("min_train", min_train, low=0)
    rng = _rng(seed)
    rank = _rank_within_user(ratings, rng.random(ratings.nnz))
    counts = ratings.user_counts[ratings.users]
    n_test = np.minimum(np.round(f * counts), np.maximum(counts - min_train, 0))
    return _make(ratings, rank < n_test, drop_unseen)


def leave_one_out(ratings: Ratings, seed: int = 0, by: str = "time", drop_unseen: bool = False) -> Split:
    """Hold out one rating per user: the latest (``by="time"``; ties broken at random) or a
    random one (``by="random"``). Users with a single rating keep it in training.

    Without timestamps ``by="time"`` falls back to random with a warning; with some timestamps
    unknown it refuses (the "latest" rating would be a guess).
    """
    if by not in ("time", "random"):
        raise DataError(f"by must be 'time' or 'random', got {by!r}")
    rng = _rng(seed)
    tiebreak = rng.random(ratings.nnz)
    if by == "time" and ratings.timestamps is None:
        warnings.warn("ratings have no timestamps: leave_one_out holds out a random rating per user", stacklevel=2)
        by = "random"
    if by == "time":
        _require_timestamps(ratings, "leave_one_out(by='time')")
        # latest first: order by -timestamp, then by the random tie-break
        key = np.lexsort((tiebreak, -ratings.timestamps))
        sort_key = np.empty(ratings.nnz, dtype=np.int64)
        sort_key[key] = np.arange(ratings.nnz)
    else:
        sort_key = tiebreak
    rank = _rank_within_user(ratings, sort_key)
    mask = (rank == 0) & (ratings.user_counts[ratings.users] > 1)
    return _make(ratings, mask, drop_unseen)


def temporal(
    ratings: Ratings, test_fraction: float | None = 0.2, cutoff: int | None = None, drop_unseen: bool = False
) -> Split:
    """Global temporal cut: ratings at or after ``cutoff`` (unix seconds) go to test; without a
    cutoff, the latest ``test_fraction`` of ratings (ties at the boundary go to test)."""
    _require_timestamps(ratings, "temporal")
    ts = ratings.timestamps
    if cutoff is not None:
        cutoff = check_int("cutoff", cutoff)
    if cutoff is None:
        f = check_fraction("test_fraction", test_fraction)
        n_test = int(round(f * ratings.nnz))
        cutoff = int(np.sort(ts)[ratings.nnz - n_test])
    return _make(ratings, ts >= cutoff, drop_unseen)


def kfold(ratings: Ratings, k: int = 5, seed: int = 0, drop_unseen: bool = False) -> list[Split]:
    """``k`` folds over a random permutation: fold ``f`` tests on the ratings whose permuted
    position is ``f (mod k)``; the test sets partition the ratings."""
    k = check_int("k", k, low=2, high=ratings.nnz)
    perm = _rng(seed).permutation(ratings.nnz)
    fold = np.empty(ratings.nnz, dtype=np.int64)
    fold[perm] = np.arange(ratings.nnz) % k
    return [_make(ratings, fold == f, drop_unseen) for f in range(k)]


def predefined(
    name: str, fold: str, data_dir=None, drop_unseen: bool = False, *, check_counts: bool = True
) -> Split:
    """A split published with the data: ``predefined("movielens-100k", "u1")`` (u1..u5, ua, ub).

    The files must hold their published numbers of ratings; ``check_counts=False`` accepts a
    deliberately modified copy (see :func:`bayesmf.datasets.load`)."""
    from bayesmf.data.datasets import load_movielens_100k_split

    if name != "movielens-100k":
        raise DataError(f"no predefined splits for {name!r}; known: ['movielens-100k']")
    train, test = load_movielens_100k_split(fold, data_dir, check_counts=check_counts)
    return _finish(train, test, drop_unseen)


def _require_timestamps(ratings: Ratings, what: str) -> None:
    if ratings.timestamps is None:
        raise DataError(f"{what} needs timestamps; these ratings have none")
    missing = ratings.missing_timestamps
    if missing:
        raise DataError(
            f"{what} needs timestamps but {missing:,} of {ratings.nnz:,} ratings have an unknown timestamp "
            f"({MISSING_TIMESTAMP}); use a random split, or drop those ratings first"
        )
