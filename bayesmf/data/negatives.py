"""Vectorised, seeded negative sampling.

A negative for user ``u`` is an item ``u`` has no rating for in ``positives``. Items are drawn
uniformly or with probability proportional to ``popularity^alpha`` (popularity = number of
ratings in ``positives``), *conditioned on not being a positive*: candidates are drawn for all
users at once and positives (and, without replacement, repeats) are rejected; users that still
lack negatives are redrawn in the next round with a larger batch sized from their acceptance
rate. The loop runs over rounds (a handful), never over users or ratings.
"""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import Ratings, pair_keys
from bayesmf.errors import DataError
from bayesmf.validate import check_positive_int

DISTRIBUTIONS = ("uniform", "popularity")


def _item_probabilities(positives: Ratings, distribution: str, alpha: float, popularity) -> np.ndarray:
    if distribution == "uniform":
        return np.full(positives.n_items, 1.0 / positives.n_items)
    if distribution == "popularity":
        counts = positives.item_counts if popularity is None else np.asarray(popularity)
        if counts.shape != (positives.n_items,):
            raise DataError(f"popularity has shape {counts.shape}, expected ({positives.n_items},)")
        w = counts.astype(np.float64) ** alpha
        if w.sum() == 0:
            raise DataError("popularity sampling needs items with ratings")
        return w / w.sum()
    raise DataError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def sample_negatives(
    positives: Ratings,
    n: int,
    seed: int = 0,
    users=None,
    distribution: str = "uniform",
    alpha: float = 1.0,
    replace: bool = False,
    popularity=None,
    max_rounds: int = 64,
) -> np.ndarray:
    """Draw ``n`` negative items for each user in ``users`` (default: every user index).

    Returns an int32 array of shape ``(len(users), n)``; row ``r`` holds negatives of
    ``users[r]`` (a user may appear several times and gets independent draws). With
    ``replace=False`` a row has no repeated item; a user with fewer than ``n`` available
    negatives (items with nonzero probability that they did not rate) is an error naming them.
    ``popularity`` (shape ``(n_items,)``) replaces ``positives.item_counts`` as the popularity
    used by ``distribution="popularity"``.
    """
    n = check_positive_int("n", n)
    users = np.arange(positives.n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if users.ndim != 1 or users.size == 0:
        raise DataError("users must be a non-empty 1-D array of user indices")
    if users.min() < 0 or users.max() >= positives.n_users:
        bad = users[(users < 0) | (users >= positives.n_users)][0]
        raise DataError(f"user index {bad} outside [0, {positives.n_users})")
    p = _item_probabilities(positives, distribution, alpha, popularity)
    _check_availability(positives, users, p, n, replace)

    # Probability mass of each user's positives -> acceptance rate, to size each round's draw.
    pos_mass = np.bincount(positives.users, weights=p[positives.items], minlength=positives.n_users)
    accept = np.clip(1.0 - pos_mass[users], 1e-6, 1.0)

    rng = np.random.default_rng(seed)
    out = np.full((users.size, n), -1, dtype=np.int64)
    filled = np.zeros(users.size, dtype=np.int64)
    uniform = bool(np.all(p == p[0]))
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    todo = np.arange(users.size)
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        need = n - filled[todo]
        # size the batch for 90% of the rows; the unlucky rest get a larger batch next round
        width = int(np.ceil(np.percentile(need / accept[todo], 90) * 1.2)) + 8
        u = rng.random((todo.size, width))
        # inverse CDF; for equal probabilities it is floor(u * n_items), without a search
        cand = (u * positives.n_items).astype(np.int64) if uniform else np.searchsorted(cdf, u, side="right")
        cand = np.minimum(cand, positives.n_items - 1)
        ok = ~positives.contains(np.repeat(users[todo], width), cand.reshape(-1)).reshape(cand.shape)
        out[todo], filled[todo] = _accept_in_order(cand, ok, out[todo], filled[todo], n, replace)
        todo = todo[filled[todo] < n]
    if todo.size:
        raise DataError(f"could not draw {n} negatives for user index {users[todo[0]]} in {max_rounds} rounds")
    return out.astype(np.int32)


def _accept_in_order(cand: np.ndarray, ok: np.ndarray, rows: np.ndarray, filled: np.ndarray, n: int,
                     replace: bool) -> tuple[np.ndarray, np.ndarray]:
    """Append to each row of ``rows`` (shape (r, n), -1 in its empty slots; ``filled`` (r,)
    slots used) the candidates of ``cand`` (r, width) whose ``ok`` is set, in draw order, until the
    row holds ``n``; without ``replace`` a candidate already in its row is skipped.

    Keeping the first occurrences in draw order (not, say, the smallest items) makes the kept
    items a successive sample without replacement from the sampling distribution. The loop runs
    over the ``width`` candidate columns (a few dozen), each step vectorised over the rows.
    """
    rows, filled = rows.copy(), filled.copy()
    index = np.arange(rows.shape[0])
    for j in range(cand.shape[1]):
        c = cand[:, j]
        take = ok[:, j] & (filled < n)
        if not replace:
            take &= ~(rows == c[:, None]).any(axis=1)
        sel = index[take]
        rows[sel, filled[sel]] = c[sel]
        filled[sel] += 1
    return rows, filled


def _check_availability(positives: Ratings, users: np.ndarray, p: np.ndarray, n: int, replace: bool) -> None:
    support = p > 0
    rated_in_support = np.bincount(positives.users, weights=support[positives.items].astype(float),
                                   minlength=positives.n_users)
    available = support.sum() - rated_in_support[users]
    short = available < (1 if replace else n)
    if short.any():
        r = int(np.flatnonzero(short)[0])
        raise DataError(
            f"user index {users[r]} has only {int(available[r])} items available as negatives; "
            f"{n} requested{' without replacement' if not replace else ''}"
        )


def candidate_sets(
    train: Ratings,
    test: Ratings,
    n_negatives: int = 99,
    seed: int = 0,
    distribution: str = "uniform",
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The "1 held-out positive + N sampled negatives" candidates of sampled ranking protocols.

    For each test rating ``(u, i)`` draws ``n_negatives`` distinct items that ``u`` rated in
    neither ``train`` nor ``test``. Returns ``(users, candidates)`` with ``candidates`` of shape
    ``(test.nnz, 1 + n_negatives)``; column 0 is the held-out item.
    """
    if not train.same_index_space(test):
        raise DataError("train and test must share ID maps and shape (use a bayesmf split)")
    both = Ratings(
        users=np.concatenate([train.users, test.users]),
        items=np.concatenate([train.items, test.items]),
        values=np.concatenate([train.values, test.values]),
        timestamps=None, n_users=train.n_users, n_items=train.n_items,
        user_map=train.user_map, item_map=train.item_map,
    )
    if np.unique(pair_keys(both.users, both.items, both.n_items)).size != both.nnz:
        raise DataError("train and test share (user, item) pairs")
    # popularity from training only: test positives must not leak into the sampling weights
    negs = sample_negatives(both, n_negatives, seed, test.users, distribution, alpha, popularity=train.item_counts)
    return test.users.copy(), np.concatenate([test.items[:, None], negs], axis=1)
