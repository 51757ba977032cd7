"""Synthetic ratings drawn from the BPMF generative model, with the truth kept.

Generative model (Salakhutdinov & Mnih 2008), for rank ``D``:

    Lambda_U ~ Wishart(nu0, W0),   mu_U ~ N(0, (beta0 Lambda_U)^-1),   u_i ~ N(mu_U, Lambda_U^-1)
    (the same for items)
    r_ij = global_mean + u_i . v_j + eps,   eps ~ N(0, noise^2)

with ``nu0 = D + 10``, ``beta0 = 2`` and ``W0 = I sqrt(D) / (nu0 - D - 1)``, so that the factor
covariance has mean ``E[Lambda^-1] = I / sqrt(D)`` and the signal ``u_i . v_j`` has variance
about 1 whatever the rank (with the authors' ``W0 = I, nu0 = D`` the covariance is heavy-tailed
and its scale changes with D, so the signal-to-noise ratio would depend on the rank).

Which pairs are observed follows power laws, as in real catalogues: user ``i`` is drawn with
probability proportional to ``(rank_i)^-user_exponent`` and item ``j`` to
``(rank_j)^-item_exponent`` over random rank orders; duplicate pairs are redrawn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayesmf.data.idmap import sorted_distinct
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError


class SyntheticData(NamedTuple):
    """Ratings plus the true parameters that generated them."""

    ratings: Ratings
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)
    global_mean: float
    noise: float

    def true_mean(self, users, items) -> np.ndarray:
        """Noise-free ``global_mean + u_i . v_j`` for index arrays ``users``, ``items``."""
        u = self.user_factors[np.asarray(users)]
        v = self.item_factors[np.asarray(items)]
        return self.global_mean + np.einsum("nd,nd->n", u, v)


def _draw_factors(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    from scipy.stats import wishart

    nu0, beta0 = rank + 10, 2.0
    scale = np.eye(rank) * np.sqrt(rank) / (nu0 - rank - 1)
    precision = np.atleast_2d(wishart(df=nu0, scale=scale).rvs(random_state=rng))
    cov = np.linalg.inv(precision)
    mean = rng.multivariate_normal(np.zeros(rank), cov / beta0)
    return rng.multivariate_normal(mean, cov, size=n)


def _power_law_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    rng.shuffle(w)  # popularity is not tied to the index
    return w / w.sum()


def synthetic(
    n_users: int = 500,
    n_items: int = 300,
    n_ratings: int = 20_000,
    rank: int = 5,
    noise: float = 0.5,
    seed: int = 0,
    *,
    global_mean: float = 3.5,
    user_exponent: float = 0.5,
    item_exponent: float = 0.8,
) -> SyntheticData:
    """Draw a synthetic data set from the BPMF generative model (see the module docstring).

    Values are continuous (no rounding, no scale); ``n_ratings`` distinct pairs are observed.
    Deterministic given ``seed``.
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings), ("rank", rank)):
        if int(value) <= 0:
            raise DataError(f"{name} must be positive, got {value}")
    if n_ratings > 0.5 * n_users * n_items:
        raise DataError(
            f"n_ratings={n_ratings} exceeds half of the {n_users}x{n_items} matrix; "
            "power-law sampling of distinct pairs needs a sparse matrix"
        )
    if noise < 0:
        raise DataError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    user_factors = _draw_factors(rng, n_users, rank)
    item_factors = _draw_factors(rng, n_items, rank)
    pu = _power_law_weights(rng, n_users, user_exponent)
    pi = _power_law_weights(rng, n_items, item_exponent)

    keys = np.empty(0, dtype=np.int64)
    for _ in range(100):  # rounds of redrawing duplicates, not a loop over ratings
        need = n_ratings - keys.size
        if need == 0:
            break
        draw = max(2 * need, 1024)
        new = rng.choice(n_users, draw, p=pu).astype(np.int64) * n_items + rng.choice(n_items, draw, p=pi)
        merged = np.concatenate([keys, new])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)][:n_ratings]
    else:
        raise DataError("could not draw enough distinct pairs; lower n_ratings or the exponents")
    users = (keys // n_items).astype(np.int32)
    items = (keys % n_items).astype(np.int32)
    del keys
    values = _low_rank_values(user_factors, item_factors, users, items, global_mean)
    values += noise * rng.standard_normal(n_ratings)
    return SyntheticData(_trusted(users, items, values.astype(np.float32), n_users, n_items, None), user_factors,
                         item_factors, float(global_mean), float(noise))


def _low_rank_values(user_factors, item_factors, users, items, global_mean: float, block: int = 1 << 20):
    """``global_mean + u_users . v_items`` (float64), ``block`` ratings at a time: the gathered
    factors of all ratings at once would take ``2 nnz rank`` floats."""
    out = np.empty(users.size, np.float64)
    for lo in range(0, users.size, block):  # blocks of ratings: bounded memory
        hi = lo + block
        out[lo:hi] = global_mean + np.einsum("nd,nd->n", user_factors[users[lo:hi]], item_factors[items[lo:hi]])
    return out


def _trusted(users, items, values, n_users: int, n_items: int, rating_scale) -> Ratings:
    """Ratings from arrays that are valid by construction (distinct pairs, indices in range,
    finite float32 values): the trusted constructor skips :meth:`Ratings.from_arrays`'s
    O(nnz log nnz) duplicate check and its copies."""
    from bayesmf.data.idmap import IdMap
    from bayesmf.data.ratings import _readonly

    return Ratings(_readonly(users), _readonly(items), _readonly(values), None, n_users, n_items,
                   IdMap.range(n_users), IdMap.range(n_items), rating_scale)


def _degrees(weights: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Integer degrees ``d`` with ``1 <= d <= cap`` summing to ``total``, proportional to
    ``weights`` where the bounds allow: ``d = clip(s w, 1, cap)`` with the scale ``s`` found by
    bisection, rounded down, and the units left over given to the largest remainders."""
    lo, hi = 0.0, float(total) / weights.min()
    for _ in range(200):  # bisection on the scale (a loop over halvings, not over rows)
        mid = 0.5 * (lo + hi)
        if np.clip(mid * weights, 1, cap).sum() < total:
            lo = mid
        else:
            hi = mid
    target = np.clip(hi * weights, 1, cap)
    degrees = np.floor(target).astype(np.int64)
    short = total - int(degrees.sum())
    if short > 0:
        room = np.flatnonzero(degrees < cap)
        order = room[np.argsort(-(target[room] - degrees[room]), kind="stable")]
        degrees[order[:short]] += 1
    elif short < 0:
        room = np.flatnonzero(degrees > 1)
        order = room[np.argsort(target[room] - degrees[room], kind="stable")]
        degrees[order[:-short]] -= 1
    return degrees


def _top_k_items(rng, log_w: np.ndarray, need: np.ndarray, taken: np.ndarray | None) -> np.ndarray:
    """Weighted sampling without replacement by Gumbel top-k (Efraimidis & Spirakis 2006): row
    ``r`` gets the ``need[r]`` items of largest ``log w_j + Gumbel noise``, excluding the items
    marked in ``taken`` (rows, n_items) bool. Returns the chosen items' pair keys within the rows
    (``row * n_items + item``)."""
    n_items = log_w.size
    keys = log_w[None, :] - np.log(-np.log(rng.random((need.size, n_items))))
    if taken is not None:
        keys[taken] = -np.inf
    order = np.argsort(-keys, axis=1, kind="stable")
    pick = np.arange(n_items)[None, :] < need[:, None]
    rows = np.repeat(np.arange(need.size, dtype=np.int64), need)
    return rows * n_items + order[pick]


def _merge_distinct(keys: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` (sorted, distinct) joined with the distinct values of ``new`` it lacks; returns
    the sorted union and those added values. Sort-based (a merge of two sorted runs)."""
    new = sorted_distinct(new)
    if keys.size:
        pos = np.searchsorted(keys, new).clip(max=keys.size - 1)
        new = new[keys[pos] != new]
    return np.sort(np.concatenate([keys, new]), kind="stable"), new


def _block_pairs(rng, users: np.ndarray, degrees: np.ndarray, cdf: np.ndarray, log_w: np.ndarray,
                 n_items: int, rounds: int = 64) -> np.ndarray:
    """Sorted pair keys ``user * n_items + item`` of one block of users, user ``users[r]`` with
    exactly ``degrees[r]`` distinct items drawn by the item weights (see :func:`synthetic_large`)."""
    local = np.arange(users.size, dtype=np.int64)
    heavy = degrees > n_items // 8
    keys = np.empty(0, np.int64)
    have = np.zeros(users.size, np.int64)
    light = ~heavy
    for _ in range(rounds):  # rounds of redrawing the items a user drew twice
        need = np.where(light, degrees - have, 0)
        if not need.any():
            break
        rows = np.repeat(local, need)
        items = np.searchsorted(cdf, rng.random(rows.size), side="right").clip(max=n_items - 1)
        keys, fresh = _merge_distinct(keys, rows * n_items + items)
        have += np.bincount(fresh // n_items, minlength=users.size)
    rest = np.flatnonzero(degrees - have)  # heavy users, and light ones the rounds left short
    batch = max(1, (1 << 22) // n_items)
    parts = [keys]
    for start in range(0, rest.size, batch):  # batches of rows: memory (batch, n_items)
        rows = rest[start:start + batch]
        taken = None
        if have[rows].any():
            taken = np.zeros((rows.size, n_items), bool)
            mine = np.isin(keys // n_items, rows)
            taken[np.searchsorted(rows, keys[mine] // n_items), keys[mine] % n_items] = True
        got = _top_k_items(rng, log_w, degrees[rows] - have[rows], taken)
        parts.append(rows[got // n_items] * n_items + got % n_items)
    keys = np.sort(np.concatenate(parts))
    return users[keys // n_items].astype(np.int64) * n_items + keys % n_items


def synthetic_large(
    n_users: int = 480_189,
    n_items: int = 17_770,
    n_ratings: int = 100_480_507,
    rank: int = 10,
    noise: float = 0.8,
    seed: int = 0,
    *,
    chunk: int = 4096,
    global_mean: float = 3.6,
    user_exponent: float = 0.5,
    item_exponent: float = 0.8,
    rating_scale: tuple[float, float] | None = (1.0, 5.0),
) -> SyntheticData:
    r"""A Netflix-shaped synthetic data set, generated ``chunk`` users at a time.

    Defaults: the Netflix Prize's shape (480,189 users, 17,770 movies, 100,480,507 ratings, whole
    stars 1..5). Truth: the BPMF generative model of the module docstring (factors ``u_i``,
    ``v_j``; ``r_ij = round(global_mean + u_i . v_j + eps)`` clipped into ``rating_scale``, or
    the continuous value with ``rating_scale=None``).

    Which pairs are observed: user ``i``'s degree ``d_i`` is fixed first, proportional to
    ``(rank_i)^-user_exponent`` over a random rank order, with ``1 <= d_i <= n_items`` and
    ``sum d_i = n_ratings`` exactly (:func:`_degrees`); each user then gets ``d_i`` *distinct*
    items drawn with probability proportional to ``(rank_j)^-item_exponent``. Duplicates are
    avoided exactly, not filtered afterwards: a pair's user belongs to one chunk only, so pairs of
    different chunks never collide; inside a chunk, users with ``d_i <= n_items / 8`` draw items
    with replacement and redraw, in rounds, as many as they lost to repeats (the chunk's keys
    ``user * n_items + item`` are deduplicated with ``np.unique`` after each round), and users
    with more ratings — or left short after the rounds — draw their (remaining) items by
    weighted sampling without replacement (Gumbel top-k, excluding the items they hold).
    Popular items saturate (an item has at most one rating per user), so the item degrees
    follow the law below the top items.

    Memory: the three final arrays (``nnz`` int32 users and items, float32 values: 12 bytes a
    rating) are filled in place, plus one chunk's temporaries and the factors
    (``(n_users + n_items) rank`` floats); never ``n_users x n_items``. Rows come ordered by
    user, then item. Deterministic given ``seed`` and ``chunk`` (each chunk draws from its own
    stream of the seed, so a chunk's pairs do not depend on the others).
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings), ("rank", rank),
                        ("chunk", chunk)):
        if int(value) <= 0:
            raise DataError(f"{name} must be positive, got {value}")
    n_users, n_items, n_ratings, chunk = int(n_users), int(n_items), int(n_ratings), int(chunk)
    if not n_users <= n_ratings <= n_users * n_items:
        raise DataError(f"n_ratings={n_ratings:,} must lie between n_users ({n_users:,}: every user rates) and "
                        f"n_users * n_items ({n_users * n_items:,})")
    if noise < 0:
        raise DataError(f"noise must be >= 0, got {noise}")
    if n_ratings >= 2**31:
        raise DataError(f"n_ratings={n_ratings:,} does not fit the int32 row indices of the layouts")
    root = np.random.SeedSequence(seed)
    rng = np.random.default_rng(root.spawn(1)[0])
    user_factors = _draw_factors(rng, n_users, rank)
    item_factors = _draw_factors(rng, n_items, rank)
    degrees = _degrees(_power_law_weights(rng, n_users, user_exponent), n_ratings, n_items)
    item_w = _power_law_weights(rng, n_items, item_exponent)
    cdf, log_w = np.cumsum(item_w), np.log(item_w)
    cdf /= cdf[-1]
    users = np.empty(n_ratings, np.int32)
    items = np.empty(n_ratings, np.int32)
    values = np.empty(n_ratings, np.float32)
    end = np.cumsum(degrees)
    starts = range(0, n_users, chunk)
    for start, stream in zip(starts, root.spawn(len(starts) + 1)[1:]):  # a loop over chunks of users
        block_rng = np.random.default_rng(stream)
        block = np.arange(start, min(start + chunk, n_users))
        keys = _block_pairs(block_rng, block, degrees[block], cdf, log_w, n_items)
        lo, hi = int(end[start] - degrees[start]), int(end[block[-1]])
        u, i = keys // n_items, keys % n_items
        val = _low_rank_values(user_factors, item_factors, u, i, global_mean)
        val += noise * block_rng.standard_normal(u.size)
        if rating_scale is not None:
            val = np.clip(np.round(val), *rating_scale)
        users[lo:hi], items[lo:hi], values[lo:hi] = u, i, val
    scale = None if rating_scale is None else (float(rating_scale[0]), float(rating_scale[1]))
    ratings = _trusted(users, items, values, n_users, n_items, scale)
    return SyntheticData(ratings, user_factors, item_factors, float(global_mean), float(noise))
