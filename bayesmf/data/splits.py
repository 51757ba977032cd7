"""Train/test splits, all deterministic given a seed and all vectorised.

Every split returns a :class:`Split` ``(train, test)`` whose two parts share the ID maps and
shape of the input, so test indices live in the training index space. Rows keep their input
order inside each part. A split knows which test users/items have no training rating
(:attr:`Split.unseen_users`, :attr:`Split.unseen_items`); ``drop_unseen=True`` removes those test
ratings and records how many in :attr:`Split.dropped`.

:func:`strong_generalization` is the exception: it holds out whole users and returns a
:class:`StrongSplit` (training users, and the held-out users' fold-in and target parts).

Random choices come from ``numpy.random.default_rng(seed)``. ``random(r, 0.1, seed=42)`` is the
common "MovieLens-1M 90/10" protocol: the training rows are the first 90% of
``default_rng(42).permutation(nnz)`` (test size ``round(0.1 * nnz)``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from bayesmf.data.idmap import IdMap
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


def validation_split(train: Ratings, seed: int = 0, by: str = "time", skip_short: bool = False) -> Split:
    """A validation split carved from a TRAINING set (never from test), for tuning: one rating per
    user held out by :func:`leave_one_out` (the latest with ``by="time"``, a random one with
    ``by="random"``), the rest the tuning fit's training set.

    A user with a single training rating cannot give one up: holding it out would leave them
    without training positives, so that is a :class:`~bayesmf.errors.DataError` naming the
    user's raw ID, unless ``skip_short=True``, which keeps such users in training with nothing
    to validate (as :func:`leave_one_out` does).
    """
    short = train.user_counts == 1
    if short.any() and not skip_short:
        u = int(np.flatnonzero(short)[0])
        raise DataError(
            f"user {train.user_map.ids([u])[0].item()!r} has a single training rating; holding it out for "
            f"validation would leave them without training positives ({int(short.sum())} such users); "
            "pass skip_short=True to keep them in training without a validation item"
        )
    return leave_one_out(train, seed=seed, by=by)


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
    """A split published with the data: ``predefined("movielens-100k", "u1")`` (u1..u5, ua, ub)
    or ``predefined("netflix", "probe")`` (the Netflix Prize probe set as the test set).

    The files must hold their published numbers of ratings; ``check_counts=False`` accepts a
    deliberately modified copy (see :func:`bayesmf.datasets.load`)."""
    from bayesmf.data.datasets import ALIASES, load_movielens_100k_split, load_netflix_probe_split

    name = ALIASES.get(name, name)
    if name == "movielens-100k":
        train, test = load_movielens_100k_split(fold, data_dir, check_counts=check_counts)
    elif name == "netflix":
        if fold != "probe":
            raise DataError(f"unknown Netflix split {fold!r}; allowed: ('probe',)")
        train, test = load_netflix_probe_split(data_dir, check_counts=check_counts)
    else:
        raise DataError(f"no predefined splits for {name!r}; known: ['movielens-100k', 'netflix']")
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


class StrongSplit(NamedTuple):
    """The strong-generalization protocol's parts (:func:`strong_generalization`).

    ``train``: the ratings of the users not held out, compacted (its users and items only).
    ``fold_in`` / ``target``: the held-out test users' interactions, split per user; both use the
    test users' own ID map (raw IDs, in index order of the input) and ``train``'s item map, so
    their item indices are ``train``'s. ``validation_fold_in`` / ``validation_target``: the same
    for the validation users (None when none were requested). ``dropped``: held-out ratings
    removed because their item never occurs in ``train`` (no model can score such an item).
    """

    train: Ratings
    fold_in: Ratings
    target: Ratings
    validation_fold_in: Ratings | None
    validation_target: Ratings | None
    dropped: int


def strong_generalization(
    ratings: Ratings,
    n_heldout_users: int,
    fold_in_fraction: float = 0.8,
    seed: int = 0,
    n_validation_users: int = 0,
    min_heldout_ratings: int = 5,
) -> StrongSplit:
    """Held-out users: the strong-generalization protocol of Liang, Krishnan, Hoffman & Jebara
    (2018, "Variational Autoencoders for Collaborative Filtering", the Mult-VAE paper).

    ``n_heldout_users`` test users and ``n_validation_users`` validation users are drawn without
    replacement, uniformly among the users with at least ``min_heldout_ratings`` ratings
    (``default_rng(seed).permutation`` of those users: test users first, then validation users).
    Models are fitted on the other users (``train``); each held-out user's interactions are split
    at random into ``fold_in`` (``round(fold_in_fraction * n_u)`` of them, clipped to
    ``1..n_u - 1``), given to the model, and ``target``, the rest, to rank. Ratings of held-out
    users on items that no training user rated are removed first and counted in ``dropped``.

    For the paper's ML-1M set-up pass ``to_implicit(ratings, threshold=4)`` (ratings >= 4 are the
    positives) with 600 test and 600 validation users.

    Returns
    -------
    StrongSplit
        ``(train, fold_in, target, validation_fold_in, validation_target, dropped)``.

    References
    ----------
    D. Liang, R. G. Krishnan, M. D. Hoffman, T. Jebara, "Variational Autoencoders for
    Collaborative Filtering", WWW 2018, section 4.
    """
    n_test = check_int("n_heldout_users", n_heldout_users, low=1)
    n_val = check_int("n_validation_users", n_validation_users, low=0)
    f = check_fraction("fold_in_fraction", fold_in_fraction)
    min_n = check_int("min_heldout_ratings", min_heldout_ratings, low=2)
    rng = _rng(seed)
    eligible = np.flatnonzero(ratings.user_counts >= min_n)
    if eligible.size < n_test + n_val + 1:
        raise DataError(
            f"{n_test} test + {n_val} validation held-out users requested, but only {eligible.size} users have >= "
            f"{min_n} ratings (and at least one user must stay in training)"
        )
    chosen = rng.permutation(eligible)
    groups = [np.sort(chosen[:n_test]), np.sort(chosen[n_test:n_test + n_val])]
    group = np.full(ratings.n_users, -1, np.int64)  # -1 train, 0 test, 1 validation
    group[groups[0]] = 0
    group[groups[1]] = 1
    of_rating = group[ratings.users]
    train = ratings.subset(of_rating < 0)
    in_train = train.item_counts > 0
    item_index = np.cumsum(in_train) - 1  # original item index -> train item index
    train = train.compact()
    usable = in_train[ratings.items]
    dropped = int((~usable & (of_rating >= 0)).sum())
    parts = [None, None, None, None]
    for g, users in enumerate(groups):  # the (at most two) held-out groups
        if users.size:
            held = ratings.subset((of_rating == g) & usable)
            parts[2 * g:2 * g + 2] = _fold_in_target(held, users, item_index, train.item_map, f, rng)
    return StrongSplit(train, *parts, dropped)


def _fold_in_target(held: Ratings, users: np.ndarray, item_index: np.ndarray, item_map: IdMap, f: float,
                    rng: np.random.Generator) -> list[Ratings]:
    """Split the held-out users' ratings into ``[fold_in, target]``, re-indexed to the users' own
    map (``users`` in order) and the training item map."""
    counts = held.user_counts[users]
    if (counts < 2).any():
        u = users[int(np.flatnonzero(counts < 2)[0])]
        raise DataError(
            f"held-out user {held.user_map.ids([u])[0].item()!r} has {int(held.user_counts[u])} rating(s) on items "
            "known to training; fold-in and target need at least one each (raise min_heldout_ratings)"
        )
    n_u = held.user_counts[held.users]
    n_fold = np.clip(np.round(f * n_u), 1, n_u - 1)
    to_target = _rank_within_user(held, rng.random(held.nnz)) >= n_fold
    user_map = IdMap.from_ordered(held.user_map.ids(users))
    local = np.searchsorted(users, held.users)

    def build(mask):
        return Ratings.from_arrays(
            local[mask], item_index[held.items[mask]], held.values[mask],
            None if held.timestamps is None else held.timestamps[mask], users.size, len(item_map),
            rating_scale=held.rating_scale, user_map=user_map, item_map=item_map,
        )

    return [build(~to_target), build(to_target)]
