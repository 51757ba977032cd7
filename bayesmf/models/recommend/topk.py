"""Top-k recommendation with business rules, for every fitted factor model.

**Ranking.** For a batch of ``b`` users and the ``m`` candidate items (the catalogue, or the
``candidates`` given) the model's scores ``S`` (b, m) are computed, then

    ranked[u, j] = S[u, j] * w_j      if item j is allowed for u,      -inf otherwise

where ``w`` are the optional ``weights`` and "allowed" means: passes ``filter``, and (with
``exclude_seen``) was not rated by ``u`` in training or fold-in. The top ``k`` of each row come
from ``jax.lax.top_k`` in one jitted call per batch; ties go to the lower item index, so results
are deterministic. Users are processed in batches whose ``b x m`` score block fits
:data:`SCORE_BUDGET_BYTES`, so memory is bounded whatever the number of users; the users x items
matrix is never built unless it fits that budget. Batch heights are powers of two so that a
handful of compiled shapes serve any request.

Scores are *unclipped* predictions (clipping to the rating scale would tie every item predicted
above the top of the scale); use ``predict`` for clipped ratings.

**Fewer than k.** An item is never returned twice. When a user has fewer than ``k`` allowed
items, the index API pads the row with item ``-1`` and score ``NaN`` after the real items, and
the DataFrame API returns only the real rows (so that user has fewer than ``k`` rows).

**Bayesian models** (class attribute ``is_bayesian = True``) provide
``score_users(user_indices, items, how=, q=, seed=)`` with ``how`` one of ``"mean"`` (posterior
predictive mean), ``"quantile"`` (upper ``q`` quantile, optimism under uncertainty) or
``"thompson"`` (one posterior draw per user, Thompson sampling), and
``score_std_users(user_indices, items)``, the predictive standard deviation, which is returned
with every recommendation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import ConfigError, DataError
from bayesmf.models.recommend._batch import (
    batch_height,
    check_k,
    exact_matmul,
    lookup_ids,
    pad_to,
    store_rows,
    top_rows,
)
from bayesmf.validate import as_indices, check_fraction

__all__ = ["HOW", "TopKMixin", "linear_scores", "seen_pairs"]

HOW = ("mean", "quantile", "thompson")


@jax.jit
def linear_scores(user_offset, user_factors, item_offset, item_factors):
    """``(mu + b_u) + c_i + p_u . q_i`` for a batch: offsets (b,), (m,); factors (b, r), (m, r) or
    None (no factor term). Same maths as ``FactorModel.score_users``, kept on the device so that
    the top-k reads it without a host round trip. Returns (b, m)."""
    scores = user_offset[:, None] + item_offset[None, :]
    if user_factors is not None:
        scores = scores + exact_matmul(user_factors, item_factors.T)
    return scores


def seen_pairs(indptr: np.ndarray, seen_items: np.ndarray, users: np.ndarray):
    """The (row, item) pairs of a CSR for the rows ``users``: row ``r`` of the result refers to
    ``users[r]``. Vectorised range concatenation, no Python loop over users."""
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    rows = np.repeat(np.arange(users.size), counts)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, seen_items[np.repeat(starts, counts) + offsets]


class TopKMixin:
    """:meth:`recommend` (raw IDs, a DataFrame) and :meth:`recommend_indices` (index space) for a
    fitted :class:`~bayesmf.models.base.FactorModel`; see the module docstring for the rule."""

    is_bayesian = False

    def recommend(
        self,
        users=None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates=None,
        filter=None,  # noqa: A002 - the public API name
        weights=None,
        unknown: str = "error",
        how: str = "mean",
        q: float = 0.9,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        r"""Top-``k`` items for each of ``users``, as a DataFrame in raw IDs.

        Each user's items are ranked by ``S[u, j] * w_j`` over the allowed items (see the module
        docstring): the model's unclipped score times the item's weight.

        Parameters
        ----------
        users : array-like of raw user IDs, optional
            Duplicates allowed; default: every known user, in index order.
        k : int
            Items per user, ``1 <= k <= n_items``.
        exclude_seen : bool
            Leave out items the user rated in training or fold-in.
        candidates : array-like of raw item IDs, optional
            The items to choose from, each listed once (default: the catalogue).
        filter : bool array (n_items,) or pandas.Series of bool by raw item ID, optional
            Which items may be recommended; items absent from a Series are allowed.
        weights : float array (n_items,) or pandas.Series by raw item ID, optional
            Finite, non-negative multipliers of the scores (absent items weigh 1). They assume
            non-negative scores (ratings); for models whose scores can be negative use ``filter``.
        unknown : {"error", "fallback"}
            A user ID not in the model raises, or gets the cold-start ranking
            (:meth:`cold_start_scores`) with nothing excluded and ``std`` NaN.
        how : {"mean", "quantile", "thompson"}
            The score of a Bayesian model: posterior mean, Gaussian upper ``q`` quantile, or one
            posterior draw per user keyed by ``seed``; point models take ``"mean"`` only.
        q : float
            Quantile level for ``how="quantile"``, strictly inside (0, 1).
        seed : int
            Seed of the Thompson draws.
        batch_size : int, optional
            Most users scored at once (default: what fits :data:`SCORE_BUDGET_BYTES`).

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``item`` (raw IDs), ``score`` (float32), ``rank`` (1..k) and, for a
            Bayesian model with posterior draws, ``std`` (the score's posterior standard
            deviation, :meth:`score_std_users`). Rows follow ``users``, then rank; a user with
            fewer than ``k`` allowed items has fewer rows.

        References
        ----------
        O. Chapelle and L. Li, "An empirical evaluation of Thompson sampling", NeurIPS 2011
        (``how="thompson"``).
        """
        import pandas as pd

        self._require_fitted()
        if unknown not in ("error", "fallback"):
            raise ConfigError(f"unknown must be 'error' or 'fallback', got {unknown!r}")
        if users is None:
            raw_users = self.user_map_.ids()
            user_idx = np.arange(self.n_users_, dtype=np.int64)
        else:
            raw_users = np.atleast_1d(np.asarray(users))
            user_idx = self.user_map_.lookup(raw_users, missing=-1).astype(np.int64)
            if unknown == "error" and (user_idx < 0).any():
                bad = raw_users[user_idx < 0]
                raise DataError(
                    f"unknown user ID {bad[0].item()!r} ({bad.size} unknown in all); "
                    "pass unknown='fallback' for cold-start recommendations"
                )
        cols = None if candidates is None else self._candidate_indices(lookup_ids(self.item_map_, candidates, "item"))
        items, scores, std = self._rank(
            user_idx, k, exclude_seen, cols,
            self._item_rule(filter, "filter"), self._item_rule(weights, "weights"),
            how, q, seed, batch_size,
        )
        rows, ranks = np.nonzero(items >= 0)  # row-major: padding only ever trails a row
        frame = {
            "user": raw_users[rows],
            "item": self.item_map_.ids(items[rows, ranks]),
            "score": scores[rows, ranks],
            "rank": (ranks + 1).astype(np.int32),
        }
        if std is not None:
            frame["std"] = std[rows, ranks]
        return pd.DataFrame(frame)

    def recommend_indices(
        self,
        user_indices,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates=None,
        filter=None,  # noqa: A002
        weights=None,
        how: str = "mean",
        q: float = 0.9,
        seed: int = 0,
        batch_size: int | None = None,
        return_std: bool = False,
    ):
        """:meth:`recommend` in index space, for known users.

        Parameters
        ----------
        user_indices : array-like of int
            User indices in ``0..n_users-1`` (duplicates allowed).
        k, exclude_seen, how, q, seed, batch_size
            As in :meth:`recommend`.
        candidates : array-like of int, optional
            Item indices to choose from, each listed once.
        filter, weights : array (n_items,), optional
            As in :meth:`recommend`, in item index order only.
        return_std : bool
            Also return each recommended pair's posterior std (Bayesian models only).

        Returns
        -------
        items : ndarray of int64, shape (len(user_indices), k)
            Item indices, best first; ``-1`` where fewer than ``k`` items are allowed.
        scores : ndarray of float32, same shape
            Their scores; ``NaN`` for padding.
        std : ndarray of float32, same shape
            Only with ``return_std=True``: the scores' posterior std, ``NaN`` for padding.
        """
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        cols = None
        if candidates is not None:
            cols = self._candidate_indices(as_indices(candidates, "candidates", self.n_items_))
        items, scores, std = self._rank(
            users, k, exclude_seen, cols,
            self._item_rule(filter, "filter", by_id=False), self._item_rule(weights, "weights", by_id=False),
            how, q, seed, batch_size, want_std=return_std,
        )
        return (items, scores, std) if return_std else (items, scores)

    def cold_start_scores(self) -> np.ndarray:
        """Scores of every item for a user the model does not know.

        Returns
        -------
        ndarray of float32, shape (n_items,)
            ``mu + c_i`` when the model has item biases, otherwise the training popularity
            ``item_counts_``. Subclasses may override.
        """
        if self.item_bias_ is not None:
            return (self.global_mean_ + np.asarray(self.item_bias_)).astype(np.float32)
        return np.asarray(self.item_counts_, dtype=np.float32)

    # -- ranking core ------------------------------------------------------------------------------
    def _rank(self, user_idx, k, exclude_seen, cols, keep, weights, how, q, seed, batch_size, want_std=None):
        """Shared engine of both APIs; ``user_idx`` (n,) with -1 for cold-start users.
        Returns items (n, k) int64, scores (n, k) float32 and std (n, k) or None."""
        n_cols = self.n_items_ if cols is None else cols.size
        k = check_k(k, self.n_items_, "catalogue")
        k_eff = min(k, n_cols)  # a small candidate set: the rest of each row is padding
        self._check_how(how, q)
        if want_std is None:  # a MAP fit of a Bayesian model (has_draws False) has no std
            want_std = self.is_bayesian and getattr(self, "has_draws", True)
        if want_std and not self.is_bayesian:
            raise ConfigError(f"{type(self).__name__} is not Bayesian: it has no predictive std to return")
        keep = np.ones(n_cols, bool) if keep is None else (keep if cols is None else keep[cols])
        weights = np.ones(n_cols, np.float32) if weights is None else (weights if cols is None else weights[cols])

        n = user_idx.size
        items = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), np.nan, np.float32)
        std = np.full((n, k), np.nan, np.float32) if want_std else None
        known = np.flatnonzero(user_idx >= 0)
        height = batch_height(known.size, n_cols, batch_size)
        score = self._scorer(cols, how, q, seed)
        column_of_item = None if cols is None else self._column_of_item(cols)
        for start in range(0, known.size, height):
            rows = known[start:start + height]
            users = pad_to(user_idx[rows], height)
            raw = score(users)
            allowed = np.broadcast_to(keep, raw.shape).copy()
            if exclude_seen:
                r, seen = seen_pairs(self.seen_indptr_, self.seen_items_, users)
                col = seen if cols is None else column_of_item[seen]
                allowed[r[col >= 0], col[col >= 0]] = False
            top = top_rows(raw, allowed, weights, k_eff, users)
            store_rows(rows, top, cols, items, scores)
            if want_std:
                sd = np.asarray(self.score_std_users(users, cols))
                std[rows, :k_eff] = np.take_along_axis(sd, np.asarray(top[1]), 1)[: rows.size]
        cold = np.flatnonzero(user_idx < 0)
        if cold.size:
            base = self.cold_start_scores()
            base = base if cols is None else base[cols]
            top = top_rows(base[None, :], keep[None, :], weights, k_eff, None)
            store_rows(cold, [np.repeat(np.asarray(t), cold.size, 0) for t in top], cols, items, scores)
        pad = ~np.isfinite(scores)
        items[pad] = -1
        scores[pad] = np.nan
        if want_std:
            std[pad] = np.nan
        return items, scores, std

    def _scorer(self, cols, how, q, seed):
        """A function ``users (b,) -> scores (b, m)`` over ``cols`` (None = the catalogue)."""
        if self.is_bayesian:
            return lambda users: self.score_users(users, cols, how=how, q=q, seed=seed)
        if not self._scores_are_linear():
            return lambda users: self.score_users(users, cols)  # a subclass's own rule (SVD++ ...)
        # The plain linear model: item side moved to the device once, users gathered per batch.
        sel = slice(None) if cols is None else cols
        n_cols = self.n_items_ if cols is None else cols.size
        item_offset = np.zeros(n_cols, np.float32) if self.item_bias_ is None else self.item_bias_[sel]
        item_offset = jnp.asarray(item_offset, jnp.float32)
        has_f = self.user_factors_ is not None
        item_factors = jnp.asarray(self.item_factors_[sel], jnp.float32) if has_f else None

        def score(users):
            offset = np.full(users.size, self.global_mean_, np.float32)
            if self.user_bias_ is not None:
                offset += self.user_bias_[users]
            factors = jnp.asarray(self.user_factors_[users], jnp.float32) if has_f else None
            return linear_scores(jnp.asarray(offset), factors, item_offset, item_factors)

        return score

    def _check_how(self, how, q):
        if how not in HOW:
            raise ConfigError(f"how must be one of {HOW}, got {how!r}")
        if how != "mean" and not self.is_bayesian:
            raise ConfigError(f"how={how!r} needs a Bayesian model; {type(self).__name__} only has how='mean'")
        if how == "quantile":
            check_fraction("q", q)

    def _candidate_indices(self, cols: np.ndarray) -> np.ndarray:
        if cols.size == 0:
            raise DataError("candidates is empty")
        uniq, counts = np.unique(cols, return_counts=True)
        if (counts > 1).any():
            dup = self.item_map_.ids(uniq[counts > 1][:1])[0]
            raise DataError(f"candidate item {dup.item()!r} is listed more than once")
        return cols

    def _column_of_item(self, cols: np.ndarray) -> np.ndarray:
        """Catalogue index -> position in ``cols`` (-1 for items not among the candidates)."""
        col_of = np.full(self.n_items_, -1, np.int64)
        col_of[cols] = np.arange(cols.size)
        return col_of

    def _item_rule(self, rule, name: str, by_id: bool = True):
        """A per-item ``filter`` (bool) or ``weights`` (float) as an array over the catalogue."""
        if rule is None:
            return None
        is_filter = name == "filter"
        if by_id and hasattr(rule, "index") and hasattr(rule, "to_numpy"):  # a pandas Series by raw ID
            idx = lookup_ids(self.item_map_, rule.index.to_numpy(), f"{name} item")
            if np.unique(idx).size != idx.size:
                raise DataError(f"the {name} Series lists an item more than once")
            full = np.ones(self.n_items_, bool if is_filter else np.float32)
            values = self._rule_values(rule.to_numpy(), name, rule.index.to_numpy())
            full[idx] = values
            return full
        arr = np.asarray(rule)
        if arr.shape != (self.n_items_,):
            raise DataError(f"{name} must have one entry per catalogue item ({self.n_items_},), got shape {arr.shape}")
        return self._rule_values(arr, name, self.item_map_.ids())

    @staticmethod
    def _rule_values(values: np.ndarray, name: str, ids: np.ndarray) -> np.ndarray:
        if name == "filter":
            if values.dtype != bool:
                raise DataError(f"filter must be boolean (True = may be recommended), got dtype {values.dtype}")
            return values
        if values.dtype.kind not in "iuf":
            raise DataError(f"weights must be numeric, got dtype {values.dtype}")
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise DataError(f"weight {values[bad][0].item()!r} of item {ids[bad][0].item()!r} is not finite and >= 0")
        return values.astype(np.float32)
