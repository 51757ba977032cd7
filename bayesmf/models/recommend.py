"""The recommendation layer of every fitted factor model: top-k with business rules, similar items
and users, fold-in of new users, and export of the factors.

:class:`RecommendMixin` is a base class of :class:`~bayesmf.models.base.FactorModel`; it relies
on the fitted state that class defines (``n_users_``, ``n_items_``, ``user_map_``/``item_map_``,
``global_mean_``, ``user_bias_``/``item_bias_``, ``user_factors_``/``item_factors_``, the seen-item
CSR ``seen_indptr_``/``seen_items_``, ``user_counts_``/``item_counts_``) and on ``score_users``.

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

import numbers
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.idmap import IdMap
from bayesmf.data.ratings import Ratings
from bayesmf.engines.chunks import build_gram_chunks, gram_rhs
from bayesmf.engines.linalg import solve_spd
from bayesmf.errors import ConfigError, DataError
from bayesmf.validate import as_indices

SCORE_BUDGET_BYTES = 64 * 2**20
"""Memory allowed for one batch's score block and its masks (about 13 bytes per user-item cell)."""

_BYTES_PER_CELL = 13  # float32 scores + float32 ranked copy + bool mask + matmul temporary
HOW = ("mean", "quantile", "thompson")
SIMILARITY_METRICS = ("cosine", "dot")


# -- jitted kernels ------------------------------------------------------------------------------
@partial(jax.jit, static_argnames="k")
def masked_top_k(scores, allowed, weights, k: int):
    """Top ``k`` of ``where(allowed, scores * weights, -inf)`` per row.

    ``scores`` (b, m) float, ``allowed`` (b, m) bool, ``weights`` (m,) float. Returns ``values``
    (b, k) (``-inf`` where fewer than ``k`` entries are allowed), ``columns`` (b, k) int32 and
    ``row_ok`` (b,) bool: False where an allowed score is NaN or infinite (the caller raises; a
    NaN must never be ranked, and numpy would even rank it first).
    """
    row_ok = jnp.all(jnp.isfinite(scores) | ~allowed, axis=1)
    ranked = jnp.where(allowed, scores * weights, -jnp.inf)
    values, columns = jax.lax.top_k(ranked, k)
    return values, columns, row_ok


@jax.jit
def linear_scores(user_offset, user_factors, item_offset, item_factors):
    """``(mu + b_u) + c_i + p_u . q_i`` for a batch: offsets (b,), (m,); factors (b, r), (m, r) or
    None (no factor term). Same maths as ``FactorModel.score_users``, kept on the device so that
    the top-k reads it without a host round trip. Returns (b, m)."""
    scores = user_offset[:, None] + item_offset[None, :]
    if user_factors is not None:
        scores = scores + exact_matmul(user_factors, item_factors.T)
    return scores


def exact_matmul(a, b):
    """``a @ b`` in full float32 precision: on GPUs the default would use TF32 (10-bit
    mantissa), whose ~1e-3 relative error reorders near-tied items against the exact ranking."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


@partial(jax.jit, static_argnames="minimum_norm")
def ridge_rows(chunks, features, penalty, minimum_norm: bool = False):
    """Per-row ridge solutions ``x_r = (Z_r^T Z_r + diag(penalty_r))^-1 Z_r^T y_r``.

    ``chunks``: the rows' ratings (:mod:`bayesmf.engines.chunks`; targets ``y`` as values,
    columns indexing ``features``);
    ``features`` (n_cols, d) the rows of ``Z``; ``penalty`` (n_rows, d) >= 0. Batched Cholesky;
    ``minimum_norm=True`` (some penalty is 0, the system may be singular) uses the pseudo-inverse,
    i.e. the minimum-norm least-squares solution. One compiled call: op-by-op dispatch would cost
    more than the maths for the few-ratings systems of a fold-in. Returns (n_rows, d).
    """
    gram, rhs, _ = gram_rhs(chunks, features)
    precision = gram + penalty[:, :, None] * jnp.eye(features.shape[1], dtype=features.dtype)
    if minimum_norm:
        return jnp.einsum("nkl,nl->nk", jnp.linalg.pinv(precision), rhs)
    return solve_spd(precision, rhs)


# -- small host-side helpers ---------------------------------------------------------------------
def check_k(k, limit: int, what: str) -> int:
    """``k`` must be an integer in ``1..limit``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > limit:
        raise ConfigError(f"k={k} is larger than the {what} ({limit})")
    return int(k)


def lookup_ids(idmap: IdMap, raw, what: str) -> np.ndarray:
    """Indices of raw IDs; an unknown one raises a DataError naming it."""
    idx = idmap.lookup(np.atleast_1d(np.asarray(raw)), missing=-1).astype(np.int64)
    if (idx < 0).any():
        unknown = np.atleast_1d(np.asarray(raw))[idx < 0]
        raise DataError(f"unknown {what} ID {unknown[0].item()!r} ({unknown.size} unknown in all)")
    return idx


def seen_pairs(indptr: np.ndarray, seen_items: np.ndarray, users: np.ndarray):
    """The (row, item) pairs of a CSR for the rows ``users``: row ``r`` of the result refers to
    ``users[r]``. Vectorised range concatenation, no Python loop over users."""
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    rows = np.repeat(np.arange(users.size), counts)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, seen_items[np.repeat(starts, counts) + offsets]


def batch_height(n_rows: int, n_cols: int, batch_size: int | None) -> int:
    """Rows per batch: a power of two, at most ``batch_size`` (default: what fits the budget)."""
    if batch_size is None:
        batch_size = max(1, SCORE_BUDGET_BYTES // (_BYTES_PER_CELL * n_cols))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    height = 1 << int(np.floor(np.log2(batch_size)))
    return min(height, 1 << int(np.ceil(np.log2(max(n_rows, 1)))))


def _pad_to(rows: np.ndarray, height: int) -> np.ndarray:
    """Pad a batch of row indices to ``height`` by repeating its last entry (results discarded)."""
    return rows if rows.size == height else np.concatenate([rows, np.full(height - rows.size, rows[-1])])


class RecommendMixin:
    """Top-k recommendation, similar items/users, fold-in and factor export for factor models."""

    is_bayesian = False

    # ==========================================================================================
    # top-k recommendation
    # ==========================================================================================
    def recommend(
        self,
        users=None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates=None,
        filter=None,  # noqa: A002 - the issue's public name
        weights=None,
        unknown: str = "error",
        how: str = "mean",
        q: float = 0.9,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        """Top-``k`` items for each of ``users`` (raw IDs; default: every known user), as a DataFrame.

        Columns: ``user`` and ``item`` (raw IDs), ``score`` (the ranking score: unclipped
        prediction times weight, float32), ``rank`` (1..k); Bayesian models add ``std``, the
        standard deviation of the recommended pair's score (``score_std_users``; absent when the
        model has no posterior draws, ``has_draws`` False). Rows follow the order of
        ``users`` (duplicates allowed), then rank. A user with fewer than ``k`` allowed items gets
        fewer rows.

        ``candidates``: raw item IDs to choose from (default: the catalogue). ``filter``: which
        items may be recommended, a boolean array over the catalogue in index order or a boolean
        ``pandas.Series`` indexed by raw item ID (items absent from the Series are allowed).
        ``weights``: finite, non-negative per-item multipliers applied to the scores before the
        top-k, an array in index order or a ``Series`` by raw item ID (absent items weigh 1).
        Multiplicative weights assume non-negative scores (ratings); for models whose scores can
        be negative, shift the scores or use ``filter``.

        ``unknown="error"`` raises on a user ID not in the model; ``"fallback"`` gives such users
        the cold-start ranking (:meth:`cold_start_scores`: ``mu + c_i`` when the model has item
        biases, else popularity), with nothing to exclude (and ``std`` NaN). ``how``/``q``/``seed`` choose the score
        of Bayesian models (see the module docstring); ``batch_size`` caps the users per batch.
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
        """:meth:`recommend` in index space: ``(items, scores)``, each (len(user_indices), k).

        ``items`` int64 item indices, best first, ``-1`` where fewer than ``k`` items are allowed;
        ``scores`` float32, ``NaN`` there. ``candidates`` are item indices; ``filter``/``weights``
        arrays over the catalogue in index order. ``return_std=True`` (Bayesian models) also
        returns the predictive std of each recommended pair (a third array, ``NaN`` for padding).
        Every index must be a known user (use :meth:`recommend` for cold-start fallback).
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
        """Scores (n_items,) used for users the model does not know: ``mu + c_i`` if the model has
        item biases, otherwise the training popularity ``item_counts_``. Subclasses may override."""
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
            users = _pad_to(user_idx[rows], height)
            raw = score(users)
            allowed = np.broadcast_to(keep, raw.shape).copy()
            if exclude_seen:
                r, seen = seen_pairs(self.seen_indptr_, self.seen_items_, users)
                col = seen if cols is None else column_of_item[seen]
                allowed[r[col >= 0], col[col >= 0]] = False
            top = self._top(raw, allowed, weights, k_eff, users)
            self._store(rows, top, cols, items, scores)
            if want_std:
                sd = np.asarray(self.score_std_users(users, cols))
                std[rows, :k_eff] = np.take_along_axis(sd, np.asarray(top[1]), 1)[: rows.size]
        cold = np.flatnonzero(user_idx < 0)
        if cold.size:
            base = self.cold_start_scores()
            base = base if cols is None else base[cols]
            top = self._top(base[None, :], keep[None, :], weights, k_eff, None)
            self._store(cold, [np.repeat(np.asarray(t), cold.size, 0) for t in top], cols, items, scores)
        pad = ~np.isfinite(scores)
        items[pad] = -1
        scores[pad] = np.nan
        if want_std:
            std[pad] = np.nan
        return items, scores, std

    @staticmethod
    def _top(raw, allowed, weights, k, rows):
        """:func:`masked_top_k` plus the NaN guard; ``rows`` name the batch's rows in the error
        (None: the cold-start scores)."""
        values, columns, row_ok = masked_top_k(raw, allowed, weights, k)
        if not bool(jnp.all(row_ok)):
            which = "the cold-start scores" if rows is None else f"row index {int(rows[int(np.argmin(row_ok))])}"
            raise DataError(f"the scores for {which} contain NaN or inf; refusing to rank them")
        return values, columns

    @staticmethod
    def _store(rows, top, cols, items, scores):
        values, columns = (np.asarray(t)[: rows.size] for t in top)
        k = columns.shape[1]
        items[rows, :k] = columns if cols is None else cols[columns]
        scores[rows, :k] = values  # -inf marks padding; _rank turns it into NaN / -1

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
        if how == "quantile" and not (isinstance(q, numbers.Real) and not isinstance(q, bool) and 0.0 < q < 1.0):
            raise ConfigError(f"q must be a number strictly between 0 and 1, got {q!r}")

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

    # ==========================================================================================
    # similar items / users
    # ==========================================================================================
    def similar_items(self, items=None, k: int = 10, *, metric: str = "cosine", batch_size: int | None = None):
        """The ``k`` items most similar to each of ``items`` (raw IDs; default: the catalogue).

        DataFrame with columns ``item``, ``similar_item`` (raw IDs), ``score``, ``rank`` (1..k).
        See :meth:`similar_items_indices` for the similarity.
        """
        return self._similar_frame("item", items, k, metric, batch_size)

    def similar_users(self, users=None, k: int = 10, *, metric: str = "cosine", batch_size: int | None = None):
        """The ``k`` users most similar to each of ``users`` (raw IDs; default: all users); columns
        ``user``, ``similar_user``, ``score``, ``rank``."""
        return self._similar_frame("user", users, k, metric, batch_size)

    def similar_items_indices(self, item_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        """``(items, scores)`` (n, k): nearest items by factor similarity, the query itself excluded.

        ``metric="cosine"``: ``q_i . q_j / (|q_i| |q_j|)`` (0 when a factor vector is zero);
        ``"dot"``: ``q_i . q_j``. Models with posterior samples ``item_samples_`` (S, n, r)
        average the similarity over the S samples, computed as one matmul of the samples
        concatenated along the factor axis and scaled by ``1/sqrt(S)`` (leading axes of the
        samples, e.g. (chains, draws, n, r), are flattened into S).
        """
        idx = as_indices(item_indices, "item_indices", self.n_items_)
        return self._similar(self._embeddings("item", metric), idx, k, batch_size)

    def similar_users_indices(self, user_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        """:meth:`similar_items_indices` for users (``user_factors_`` / ``user_samples_``)."""
        idx = as_indices(user_indices, "user_indices", self.n_users_)
        return self._similar(self._embeddings("user", metric), idx, k, batch_size)

    def _similar_frame(self, side, raw, k, metric, batch_size):
        import pandas as pd

        self._require_fitted()
        idmap = self.user_map_ if side == "user" else self.item_map_
        idx = np.arange(len(idmap)) if raw is None else lookup_ids(idmap, raw, side)
        found, scores = self._similar(self._embeddings(side, metric), idx, k, batch_size)
        rows, ranks = np.nonzero(found >= 0)
        return pd.DataFrame({
            side: idmap.ids(idx[rows]),
            f"similar_{side}": idmap.ids(found[rows, ranks]),
            "score": scores[rows, ranks],
            "rank": (ranks + 1).astype(np.int32),
        })

    def _embeddings(self, side: str, metric: str) -> np.ndarray:
        """Vectors ``x`` with ``x_i . x_j`` = the (posterior-averaged) similarity; (n, S*r)."""
        self._require_fitted()
        if metric not in SIMILARITY_METRICS:
            raise ConfigError(f"metric must be one of {SIMILARITY_METRICS}, got {metric!r}")
        samples = getattr(self, f"{side}_samples_", None)
        if samples is None:
            factors = getattr(self, f"{side}_factors_")
            if factors is None:
                raise ConfigError(f"{type(self).__name__} has no {side} factors to compare")
            samples = np.asarray(factors)[None]
        samples = np.asarray(samples, np.float32)
        samples = samples.reshape(-1, *samples.shape[-2:])  # (chains, draws, n, r) -> (S, n, r)
        if metric == "cosine":
            norms = np.linalg.norm(samples, axis=-1, keepdims=True)
            samples = samples / np.where(norms > 0, norms, 1.0)
        n_samples, n, r = samples.shape
        return samples.transpose(1, 0, 2).reshape(n, n_samples * r) / np.float32(np.sqrt(n_samples))

    def _similar(self, emb: np.ndarray, queries: np.ndarray, k: int, batch_size):
        n = emb.shape[0]
        k = check_k(k, n - 1, "number of other rows to compare with")
        out_idx = np.full((queries.size, k), -1, np.int64)
        out_val = np.full((queries.size, k), np.nan, np.float32)
        emb_dev = jnp.asarray(emb)
        ones = np.ones(n, np.float32)
        height = batch_height(queries.size, n, batch_size)
        for start in range(0, queries.size, height):
            rows = np.arange(start, min(start + height, queries.size))
            q = _pad_to(queries[rows], height)
            allowed = np.ones((height, n), bool)
            allowed[np.arange(height), q] = False  # never "similar to itself"
            sims = exact_matmul(jnp.asarray(emb[q]), emb_dev.T)
            self._store(rows, self._top(sims, allowed, ones, k, q), None, out_idx, out_val)
        return out_idx, out_val

    # ==========================================================================================
    # fold-in of new users
    # ==========================================================================================
    _per_user_arrays = {"user_factors_": 0, "user_bias_": 0}
    """Fitted arrays with one entry per user, and the axis that indexes users; fold-in appends to
    each one that is not None. Bayesian models add e.g. ``"user_samples_": -2`` for samples laid
    out (chains, draws, n_users, rank)."""

    def fold_in(self, new_ratings, *, user: str = "user", item: str = "item", rating: str = "rating"):
        """Add users unseen in training from their ratings, without retraining; returns ``self``.

        ``new_ratings``: a DataFrame with columns ``user``, ``item``, ``rating`` (names
        configurable) or a :class:`~bayesmf.data.Ratings`, in raw IDs. Every user must be new and
        every item known. The new users' factors come from :meth:`_fold_in_solve` given the
        item-side parameters (default: the exact regularised least-squares solution), their IDs
        extend ``user_map_`` (existing indices never change), and their rated items count as seen,
        so :meth:`recommend` excludes them. ``item_counts_`` (training popularity) is unchanged.
        """
        self._require_fitted()
        raw_users, raw_items, values = self._fold_in_input(new_ratings, user, item, rating)
        known = self.user_map_.lookup(raw_users, missing=-1) >= 0
        if known.any():
            raise DataError(
                f"user ID {raw_users[known][0].item()!r} is already in the model; fold_in adds new users only"
            )
        item_idx = lookup_ids(self.item_map_, raw_items, "item")
        n_old = self.n_users_
        user_map = self.user_map_.extend(raw_users)
        new = Ratings.from_arrays(
            user_map.lookup(raw_users) - n_old, item_idx, values,
            n_users=len(user_map) - n_old, n_items=self.n_items_, rating_scale=self.rating_scale_,
            user_map=IdMap.from_ordered(user_map.ids()[n_old:]), item_map=self.item_map_,
        )
        solved = self._fold_in_solve(new)
        for name, axis in self._per_user_arrays.items():
            current = getattr(self, name, None)
            if current is None:
                continue
            if name not in solved:
                raise ConfigError(f"{type(self).__name__}._fold_in_solve did not return {name}")
            extra = np.asarray(solved[name], dtype=np.asarray(current).dtype)
            if extra.shape[axis] != new.n_users:
                raise ConfigError(f"_fold_in_solve returned {extra.shape[axis]} rows of {name} for {new.n_users} users")
            setattr(self, name, np.concatenate([np.asarray(current), extra], axis=axis))
        by_user = new.by_user
        self.seen_items_ = np.concatenate([self.seen_items_, new.items[by_user.order].astype(np.int32)])
        self.seen_indptr_ = np.concatenate([self.seen_indptr_, self.seen_indptr_[-1] + by_user.indptr[1:]])
        self.user_counts_ = np.concatenate([self.user_counts_, by_user.counts])
        self.user_map_ = user_map
        self.n_users_ = len(user_map)
        return self

    @staticmethod
    def _fold_in_input(data, user, item, rating):
        if isinstance(data, Ratings):
            return data.user_map.ids(data.users), data.item_map.ids(data.items), data.values
        if not hasattr(data, "columns"):
            raise DataError(f"fold_in expects a pandas DataFrame or a bayesmf Ratings, got {type(data).__name__}")
        missing = [c for c in (user, item, rating) if c not in data.columns]
        if missing:
            raise DataError(f"column(s) {missing} not in the DataFrame; it has {list(data.columns)}")
        if len(data) == 0:
            raise DataError("fold_in got no ratings")
        values = data[rating].to_numpy()
        if values.dtype.kind not in "iuf":
            raise DataError(f"rating column {rating!r} must be numeric, got dtype {values.dtype}")
        return data[user].to_numpy(), data[item].to_numpy(), values

    def fold_in_penalty(self, counts: np.ndarray):
        """Ridge penalties ``(lambda_factors, lambda_bias)``, each (n,), for new users with
        ``counts`` ratings. Default: ``self.regularization`` (0 when absent) on the factors and
        ``self.bias_regularization`` (when present and not None; else the same value) on the bias.
        Models with another regulariser (e.g. weighted-lambda ``lambda * n_u``) override this."""
        reg = self._penalty_value("regularization", 0.0)
        bias_reg = self._penalty_value("bias_regularization", reg)
        return np.full(counts.shape, reg, np.float64), np.full(counts.shape, bias_reg, np.float64)

    def _penalty_value(self, name: str, default: float) -> float:
        value = getattr(self, name, None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or value < 0:
            raise ConfigError(
                f"{type(self).__name__}.{name} is {value!r}; override fold_in_penalty to map it to ridge penalties"
            )
        return float(value)

    def _fold_in_solve(self, new: Ratings) -> dict:
        """Per-user parameters of the users in ``new`` (indices ``0..new.n_users-1``; items in
        the model's item index space), as ``{attribute name: array}`` laid out like
        :attr:`_per_user_arrays`.

        Default, for ``r_hat = mu + b_u + c_i + p_u . q_i``: with ``x_u = [p_u; b_u]`` (the terms
        the model has) and ``z_i = [q_i; 1]``, minimise

            sum_{i in N(u)} (r_ui - mu - c_i - z_i . x_u)^2 + lambda_f |p_u|^2 + lambda_b b_u^2,

        i.e. ``x_u = (Z^T Z + Lambda_u)^-1 Z^T y_u``, the same ridge system ALS solves for a user
        given the item side. Gram matrices come from the chunked layout of
        :mod:`bayesmf.engines.chunks` (batched matmuls per chunk) and the systems are solved by
        batched Cholesky; with a zero penalty the minimum-norm least-squares solution
        (pseudo-inverse) is used instead. Bayesian models
        override this with the conditional posterior given each item-factor sample.
        """
        has_f, has_b = self.user_factors_ is not None, self.user_bias_ is not None
        if not (has_f or has_b):
            return {}
        if not self._scores_are_linear():
            # The ridge solution is the right answer only for the plain linear model.
            raise ConfigError(
                f"fold_in is not available for {type(self).__name__}: it does not score with "
                "mu + b_u + c_i + p_u . q_i alone, so it must implement _fold_in_solve"
            )
        dtype = np.asarray(self.item_factors_ if has_f else self.user_bias_).dtype
        targets = new.values.astype(dtype) - dtype.type(self.global_mean_)
        if self.item_bias_ is not None:
            targets -= np.asarray(self.item_bias_, dtype)[new.items]
        # Only the rated items' features travel to the device, padded to a power of two so that
        # a few compiled shapes serve every fold-in (padding rows are never referenced).
        rated, column = np.unique(new.items, return_inverse=True)
        rated = np.concatenate([rated, np.zeros((1 << int(np.ceil(np.log2(max(rated.size, 8))))) - rated.size, int)])
        parts = ([np.asarray(self.item_factors_, dtype)[rated]] if has_f else []) + (
            [np.ones((rated.size, 1), dtype)] if has_b else [])
        features = np.concatenate(parts, axis=1)
        chunks = build_gram_chunks(new.users, column, targets, new.n_users, *features.shape, dtype=dtype)
        lam_f, lam_b = self.fold_in_penalty(new.user_counts)
        rank = features.shape[1] - has_b
        penalty = np.concatenate([np.repeat(lam_f[:, None], rank, 1)] + ([lam_b[:, None]] if has_b else []), axis=1)
        x = np.asarray(ridge_rows(chunks, features, penalty.astype(dtype), minimum_norm=not (penalty > 0).all()))
        out = {}
        if has_f:
            out["user_factors_"] = x[:, :rank]
        if has_b:
            out["user_bias_"] = x[:, rank]
        return out

    # ==========================================================================================
    # export
    # ==========================================================================================
    def export_factors(self, path, format: str = "parquet") -> Path:  # noqa: A002
        """Write the factors for scoring in another system; returns the directory ``path``.

        Files: ``users.<ext>`` and ``items.<ext>`` with a raw-ID column (``user``/``item``),
        ``bias`` when the model has that bias, and ``f0 .. f{r-1}`` for the factors (posterior
        means for Bayesian models); ``factors.json`` holds ``global_mean``, ``rank``,
        ``rating_scale`` and the scoring rule ``mu + b_u + c_i + sum_f u_f * i_f``. ``format`` is
        ``"parquet"`` (needs pyarrow) or ``"csv"``. Written atomically, like :meth:`save`.
        """
        import json

        import pandas as pd

        from bayesmf.models.persist import write_dir_atomically

        self._require_fitted()
        if format not in ("parquet", "csv"):
            raise ConfigError(f"format must be 'parquet' or 'csv', got {format!r}")
        if format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                msg = "format='parquet' needs pyarrow (pip install 'bayesmf[parquet]'); or use format='csv'"
                raise ConfigError(msg) from None
        factors = self.user_factors_ if self.user_factors_ is not None else self.item_factors_
        rank = 0 if factors is None else int(np.asarray(factors).shape[1])

        def table(side, idmap, bias, fac):
            cols = {side: idmap.ids()}
            if bias is not None:
                cols["bias"] = np.asarray(bias)
            if fac is not None:
                cols.update({f"f{j}": np.asarray(fac)[:, j] for j in range(rank)})
            return pd.DataFrame(cols)

        def write_into(tmp: Path) -> None:
            for side, idmap, bias, fac in (("user", self.user_map_, self.user_bias_, self.user_factors_),
                                           ("item", self.item_map_, self.item_bias_, self.item_factors_)):
                frame = table(side, idmap, bias, fac)
                target = tmp / f"{side}s.{format}"
                if format == "parquet":
                    frame.to_parquet(target, index=False)
                else:
                    frame.to_csv(target, index=False)
            (tmp / "factors.json").write_text(json.dumps({
                "model": type(self).__name__, "global_mean": float(self.global_mean_), "rank": rank,
                "rating_scale": self.rating_scale_,
                "score": "global_mean + user.bias + item.bias + sum_f user.f * item.f",
            }, indent=1))

        return write_dir_atomically(path, write_into, marker="factors.json")
