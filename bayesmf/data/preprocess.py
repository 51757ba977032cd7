"""Filters and conversions that report exactly what they remove.

Every filter returns ``(ratings, report)``; the :class:`FilterReport` counts the ratings, users
and items removed, so a paper can state them and nothing disappears silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError


@dataclass(frozen=True)
class FilterReport:
    """What a filter removed. ``rounds`` lists (ratings, users, items) removed per iteration."""

    removed_ratings: int
    removed_users: int
    removed_items: int
    kept_ratings: int
    rounds: tuple[tuple[int, int, int], ...] = field(default=())

    def __str__(self) -> str:
        return (
            f"removed {self.removed_ratings:,} ratings, {self.removed_users:,} users, "
            f"{self.removed_items:,} items ({len(self.rounds)} round(s)); kept {self.kept_ratings:,} ratings"
        )


def kcore(ratings: Ratings, min_user_ratings: int = 1, min_item_ratings: int = 1, compact: bool = True):
    """Iterated minimum-count filter: keep ratings whose user has at least ``min_user_ratings``
    and whose item has at least ``min_item_ratings`` ratings, repeating until stable.

    Returns ``(filtered, FilterReport)``. With ``compact=True`` (default) users and items left
    without ratings leave the ID maps and the rest are renumbered in the same order.
    """
    if min_user_ratings < 1 or min_item_ratings < 1:
        raise DataError("minimum counts must be >= 1")
    keep = np.ones(ratings.nnz, dtype=bool)
    rounds = []
    while True:
        u_cnt = np.bincount(ratings.users[keep], minlength=ratings.n_users)
        i_cnt = np.bincount(ratings.items[keep], minlength=ratings.n_items)
        bad_u = (u_cnt > 0) & (u_cnt < min_user_ratings)
        bad_i = (i_cnt > 0) & (i_cnt < min_item_ratings)
        drop = keep & (bad_u[ratings.users] | bad_i[ratings.items])
        if not drop.any():
            break
        keep &= ~drop
        rounds.append((int(drop.sum()), int(bad_u.sum()), int(bad_i.sum())))
    if not keep.any():
        raise DataError(
            f"k-core with min_user_ratings={min_user_ratings}, min_item_ratings={min_item_ratings} removes every rating"
        )
    out = ratings.subset(keep)
    before_u = int(np.count_nonzero(ratings.user_counts))
    before_i = int(np.count_nonzero(ratings.item_counts))
    report = FilterReport(
        removed_ratings=int(ratings.nnz - keep.sum()),
        removed_users=before_u - int(np.count_nonzero(out.user_counts)),
        removed_items=before_i - int(np.count_nonzero(out.item_counts)),
        kept_ratings=int(keep.sum()),
        rounds=tuple(rounds),
    )
    return (out.compact() if compact else out), report


def to_implicit(ratings: Ratings, threshold: float | None = None, alpha: float | None = None):
    """Implicit feedback from explicit ratings.

    Keeps ratings ``>= threshold`` (all when None). Values become 1, or the Hu-Koren-Volinsky
    confidence ``c = 1 + alpha * r`` when ``alpha`` is given. Returns ``(implicit, FilterReport)``;
    users and items are not renumbered (so the result stays in the original index space).
    """
    keep = np.ones(ratings.nnz, bool) if threshold is None else ratings.values >= threshold
    if not keep.any():
        raise DataError(f"no rating is >= threshold {threshold}")
    kept = ratings.subset(keep)
    values = np.ones(kept.nnz, np.float32) if alpha is None else 1.0 + alpha * kept.values
    report = FilterReport(
        removed_ratings=int((~keep).sum()),
        removed_users=int(np.count_nonzero(ratings.user_counts) - np.count_nonzero(kept.user_counts)),
        removed_items=int(np.count_nonzero(ratings.item_counts) - np.count_nonzero(kept.item_counts)),
        kept_ratings=int(kept.nnz),
        rounds=((int((~keep).sum()), 0, 0),),
    )
    return kept.with_values(values), report


def summary(ratings: Ratings) -> dict:
    """Sizes, sparsity and distributions of a data set (plain Python numbers, JSON-ready)."""
    uc, ic = ratings.user_counts, ratings.item_counts
    values = ratings.values.astype(np.float64)
    out = {
        "n_ratings": ratings.nnz,
        "n_users": ratings.n_users,
        "n_items": ratings.n_items,
        "users_with_ratings": int(np.count_nonzero(uc)),
        "items_with_ratings": int(np.count_nonzero(ic)),
        "density": ratings.density,
        "sparsity": ratings.sparsity,
        "rating_mean": float(values.mean()),
        "rating_std": float(values.std()),
        "rating_min": float(values.min()),
        "rating_max": float(values.max()),
        "ratings_per_user": _quantiles(uc),
        "ratings_per_item": _quantiles(ic),
        "top_1pct_items_share": _head_share(ic, 0.01),
        "missing_timestamps": ratings.missing_timestamps,
    }
    distinct = np.unique(values)
    if distinct.size <= 20:
        counts = np.bincount(np.searchsorted(distinct, values), minlength=distinct.size)
        out["rating_counts"] = {f"{v:g}": int(c) for v, c in zip(distinct, counts)}
    return out


def _quantiles(counts: np.ndarray) -> dict:
    q = np.percentile(counts, [0, 25, 50, 75, 100])
    return {"min": int(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "max": int(q[4]),
            "mean": float(counts.mean())}


def _head_share(counts: np.ndarray, fraction: float) -> float:
    """Share of all ratings that go to the most-rated ``fraction`` of entities (popularity skew)."""
    k = max(1, int(round(fraction * counts.size)))
    return float(np.sort(counts)[::-1][:k].sum() / max(counts.sum(), 1))
