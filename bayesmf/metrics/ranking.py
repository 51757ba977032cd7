r"""Full-catalogue top-k ranking metrics, computed in memory-bounded batches of users.

Protocol. For each user ``u`` the *candidates* are all catalogue items except the items ``u``
rated in training (``exclude_train=True``, the default; with ``False`` they stay as non-relevant
candidates). The *relevant* items ``R_u`` are ``u``'s test items with rating ``>= threshold``
(``threshold=None``: every test item). Test items below the threshold stay in the catalogue as
non-relevant candidates. Users with no relevant item are skipped (reported as
``n_users_skipped``); every metric is the unweighted mean over the remaining users.

Ranks and ties. Candidates are ranked by score, highest first. Ties are broken *pessimistically*:
a relevant item is placed after every non-relevant candidate with the same score (so a model that
gives constant scores cannot look good by accident); ties between two relevant items do not
change any metric below (relevance is binary) and are broken by item index. So the rank of
relevant item ``i`` is ``rank_i = #{non-rel. c: s_c >= s_i} + j_i``, with ``j_i`` its position
among ``R_u`` sorted by score.

Metrics at cut-off ``k``, with ``hits_u = #{i in R_u : rank_i <= k}``:

* ``hr@k`` = ``1[hits_u > 0]``;  ``precision@k`` = ``hits_u / k`` (a user with ``|R_u| < k``
  can reach at most ``|R_u|/k``; this is the usual definition and is kept so numbers compare
  with the literature);  ``recall@k`` = ``hits_u / |R_u|`` (at most ``k/|R_u|`` when
  ``|R_u| > k``).
* ``ndcg@k`` = ``DCG/IDCG`` with binary gains, ``DCG = sum_{i in R_u, rank_i <= k} 1/log2(rank_i + 1)``
  and ``IDCG = sum_{j=1}^{min(k, |R_u|)} 1/log2(j + 1)``, so 1 is reachable whatever ``|R_u|``.
* ``map@k``: ``AP@k = (1/min(k, |R_u|)) sum_{i in R_u, rank_i <= k} j_i / rank_i`` (precision at
  each relevant item's rank; normalised so that a perfect list scores 1).
* ``mrr`` = ``1 / min_i rank_i`` (no cut-off).
* ``auc`` = fraction of (relevant, non-relevant candidate) pairs ordered correctly, a tie counting
  1/2: ``mean_i (n_neg - #{s_c > s_i} - #{s_c = s_i}/2) / n_neg``; users without non-relevant
  candidates are left out of the AUC mean.

Memory. Scores are computed for a batch of users at a time (``model.score_users``), shape
``(batch, n_items)``; the batch is sized so that the scores and their working copies stay within
``memory_budget`` bytes. Results do not depend on the batch size.
"""

from __future__ import annotations

import inspect

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.validate import check_ks

__all__ = [
    "HOW", "auc", "full_ranking", "heldout_metrics", "hit_rate", "map_at_k", "mrr", "ndcg_at_k", "precision_at_k",
    "rank_relevant", "ranking_metrics", "recall_at_k", "score_batch", "strong_generalization_ranking",
]

HOW = ("mean", "quantile", "thompson")
# bytes per (user, item) cell in a batch: the scores, a sorted working copy (float64 at most), slack
_BYTES_PER_CELL = 4 + 8 + 8


# --- scoring ---------------------------------------------------------------------------------
def score_batch(model, users, items=None, how: str = "mean", q: float = 0.9, seed: int = 0) -> np.ndarray:
    """``model.score_users(users, items)`` as a finite array (len(users), n_items or len(items)).

    ``how="mean"`` works with every model. ``"quantile"`` (rank by the ``q``-quantile of the
    posterior of each score: optimism under uncertainty) and ``"thompson"`` (one posterior draw
    per user) need a ``score_users`` that accepts ``how``, ``q`` and ``seed``.
    """
    if how not in HOW:
        raise ConfigError(f"how must be one of {HOW}, got {how!r}")
    if how == "mean":
        scores = model.score_users(users) if items is None else model.score_users(users, items)
    else:
        params = inspect.signature(model.score_users).parameters
        if "how" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ConfigError(
                f"{type(model).__name__}.score_users has no posterior (no 'how' argument): only how='mean' "
                f"is available, got how={how!r}"
            )
        scores = model.score_users(users, items, how=how, q=q, seed=seed)
    scores = np.asarray(scores)
    width = model.n_items_ if items is None else len(items)
    if scores.shape != (len(users), width):
        raise DataError(f"score_users returned shape {scores.shape}, expected ({len(users)}, {width})")
    if not np.all(np.isfinite(scores)):
        raise DataError(f"score_users returned {int((~np.isfinite(scores)).sum())} non-finite scores")
    return scores


# --- ranks -------------------------------------------------------------------------------------
def _row_searchsorted(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(sorted_rows[r], v, side)`` for every (r, v) pair at once: a vectorized
    binary search over all pairs (``ceil(log2(n + 1))`` rounds of one gather each)."""
    n = sorted_rows.shape[1]
    lo = np.zeros(rows.size, dtype=np.int64)
    hi = np.full(rows.size, n, dtype=np.int64)
    for _ in range(int(np.ceil(np.log2(n + 1))) + 1):  # rounds of a binary search, not a loop over data
        active = lo < hi
        mid = np.minimum((lo + hi) // 2, n - 1)
        probe = sorted_rows[rows, mid]
        right = (probe < values) if side == "left" else (probe <= values)
        lo = np.where(active & right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return lo


def _pair_counts(scores, pair_row, pair_item, removed_row, removed_item):
    """For each relevant pair ``(pair_row, pair_item)`` of a score batch (b, n_items): the number
    of non-relevant candidates scoring strictly higher (``greater``), equal (``equal``), and in
    all (``n_neg``). Non-candidates (``removed_*``) and relevant items are set to +inf — scores
    are finite, so +inf never ties with or undercuts a real score — and each row is sorted once."""
    b, n_items = scores.shape
    s = scores[pair_row, pair_item]
    work = scores.astype(np.result_type(scores.dtype, np.float32))  # a copy we may overwrite and sort
    work[removed_row, removed_item] = np.inf
    work[pair_row, pair_item] = np.inf
    n_neg = n_items - np.bincount(removed_row, minlength=b) - np.bincount(pair_row, minlength=b)
    work.sort(axis=1)
    below_or_equal = _row_searchsorted(work, pair_row, s, "right")
    below = _row_searchsorted(work, pair_row, s, "left")
    return n_neg[pair_row] - below_or_equal, below_or_equal - below, n_neg[pair_row]


def _within_user_position(user_pos, pair_score, pair_item):
    """1-based position ``j`` of each relevant pair among its user's relevant items sorted by
    score (descending), ties by item index; pairs must be grouped by ``user_pos`` ascending."""
    order = np.lexsort((pair_item, -pair_score, user_pos))
    sorted_user = user_pos[order]
    first = np.searchsorted(sorted_user, sorted_user, side="left")
    j = np.empty(order.size, dtype=np.int64)
    j[order] = np.arange(order.size) - first + 1
    return j


def _user_metrics(user_pos, rank, j, n_rel, ks, auc_pair, n_neg_user) -> dict:
    """Per-user metric arrays (length ``len(n_rel)``) from the ranks of relevant pairs and their
    positions ``j`` among the user's relevant items (``j`` ascends with ``rank``)."""
    n_users = n_rel.size
    out = {}
    discount = 1.0 / np.log2(np.arange(2, max(ks) + 2))  # 1/log2(j+1), j = 1..max(k)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # IDCG for min(k, |R|) = 0..max(k)
    for k in ks:
        top = rank <= k
        hits = np.bincount(user_pos, weights=top, minlength=n_users)
        out[f"hr@{k}"] = (hits > 0).astype(np.float64)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_rel
        gain = np.where(top, 1.0 / np.log2(rank + 1.0), 0.0)
        out[f"ndcg@{k}"] = np.bincount(user_pos, weights=gain, minlength=n_users) / ideal[np.minimum(k, n_rel)]
        precision_at_rank = np.where(top, j / rank, 0.0)
        out[f"map@{k}"] = np.bincount(user_pos, weights=precision_at_rank, minlength=n_users) / np.minimum(k, n_rel)
    best = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(best, user_pos, rank)
    out["mrr"] = 1.0 / best
    with np.errstate(invalid="ignore", divide="ignore"):
        out["auc"] = np.where(
            n_neg_user > 0, np.bincount(user_pos, weights=auc_pair, minlength=n_users) / n_rel, np.nan
        )
    return out


def _batch_metrics(scores, user_pos, pair_item, removed_row, removed_item, ks) -> dict:
    """Per-user metrics for one score batch; ``user_pos`` (row of each relevant pair) ascending,
    every row with at least one relevant pair."""
    n_users = scores.shape[0]
    greater, equal, n_neg = _pair_counts(scores, user_pos, pair_item, removed_row, removed_item)
    j = _within_user_position(user_pos, scores[user_pos, pair_item], pair_item)
    rank = greater + equal + j
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_pair = np.where(n_neg > 0, (n_neg - greater - 0.5 * equal) / n_neg, 0.0)
    n_rel = np.bincount(user_pos, minlength=n_users)
    n_neg_user = np.zeros(n_users, dtype=np.int64)
    n_neg_user[user_pos] = n_neg
    return _user_metrics(user_pos, rank, j, n_rel, ks, auc_pair, n_neg_user)


def _summarise(per_user: dict, n_skipped: int) -> dict:
    report = {name: float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
              for name, values in per_user.items()}
    report["n_users"] = int(next(iter(per_user.values())).size)
    report["n_users_skipped"] = int(n_skipped)
    return report


# --- dense API for small problems ----------------------------------------------------------------
def _dense_inputs(scores, relevant, exclude):
    scores = np.asarray(scores)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.dtype.kind not in "iuf":
        raise DataError(f"scores must be a numeric (n_users, n_items) array, got shape {scores.shape}")
    if relevant.shape != scores.shape:
        raise DataError(f"relevant has shape {relevant.shape}, scores {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores hold non-finite values")
    exclude = np.zeros_like(relevant) if exclude is None else np.asarray(exclude, dtype=bool)
    if exclude.shape != scores.shape:
        raise DataError(f"exclude has shape {exclude.shape}, scores {scores.shape}")
    if (exclude & relevant).any():
        raise DataError("an item is both relevant and excluded for the same user")
    keep = relevant.any(axis=1)
    return scores[keep], relevant[keep], exclude[keep], int((~keep).sum())


def ranking_metrics(scores, relevant, ks=(10,), exclude=None) -> dict:
    """All full-ranking metrics (module docstring) for a dense score matrix (n_users, n_items),
    a boolean ``relevant`` mask of the same shape and an optional boolean ``exclude`` mask
    (e.g. training items). Means over users with a relevant item; for small problems and tests
    — :func:`full_ranking` is the batched version for models."""
    ks = check_ks(ks)
    scores, relevant, exclude, skipped = _dense_inputs(scores, relevant, exclude)
    if scores.shape[0] == 0:
        raise DataError("no user has a relevant item")
    user_pos, pair_item = np.nonzero(relevant)
    removed_row, removed_item = np.nonzero(exclude)
    return _summarise(_batch_metrics(scores, user_pos, pair_item, removed_row, removed_item, ks), skipped)


def rank_relevant(scores, relevant, exclude=None) -> np.ndarray:
    """Pessimistic 1-based rank of every relevant item (0 elsewhere), shape (n_users, n_items)."""
    scores, relevant_kept, exclude, _ = _dense_inputs(scores, relevant, exclude)
    keep_rows = np.flatnonzero(np.asarray(relevant, dtype=bool).any(axis=1))
    user_pos, pair_item = np.nonzero(relevant_kept)
    greater, equal, _ = _pair_counts(scores, user_pos, pair_item, *np.nonzero(exclude))
    j = _within_user_position(user_pos, scores[user_pos, pair_item], pair_item)
    ranks = np.zeros(np.shape(relevant), dtype=np.int64)
    ranks[keep_rows[user_pos], pair_item] = greater + equal + j
    return ranks


def _single(name: str):
    def metric(scores, relevant, k: int = 10, exclude=None) -> float:
        return ranking_metrics(scores, relevant, (k,), exclude)[f"{name}@{k}"]

    metric.__name__ = f"{name}_at_k" if name != "hr" else "hit_rate"
    metric.__doc__ = f"Mean ``{name}@k`` over users with a relevant item (definition in the module docstring)."
    return metric


hit_rate = _single("hr")
precision_at_k = _single("precision")
recall_at_k = _single("recall")
ndcg_at_k = _single("ndcg")
map_at_k = _single("map")


def mrr(scores, relevant, exclude=None) -> float:
    """Mean reciprocal rank of the first relevant item (no cut-off)."""
    return ranking_metrics(scores, relevant, (1,), exclude)["mrr"]


def auc(scores, relevant, exclude=None) -> float:
    """Mean per-user AUC of relevant vs non-relevant candidates, ties counting 1/2."""
    return ranking_metrics(scores, relevant, (1,), exclude)["auc"]


# --- batched, model-based ----------------------------------------------------------------------
def _gather_groups(indptr: np.ndarray, groups: np.ndarray):
    """CSR rows of ``groups``: ``(position of the group in groups, flat index into the CSR order)``."""
    counts = indptr[groups + 1] - indptr[groups]
    group_pos = np.repeat(np.arange(groups.size), counts)
    offsets = np.arange(group_pos.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return group_pos, indptr[groups][group_pos] + offsets


def relevant_test(train: Ratings, test: Ratings, threshold) -> Ratings:
    """The test ratings that count as relevant (``value >= threshold``; all when None), after
    checking that train and test share an index space and no (user, item) pair."""
    if not isinstance(train, Ratings) or not isinstance(test, Ratings):
        raise DataError(f"train and test must be bayesmf Ratings, got {type(train).__name__}, {type(test).__name__}")
    if test.nnz == 0:
        raise DataError("the test set is empty")
    if not train.same_index_space(test):
        raise DataError("train and test must share ID maps and shape (use a bayesmf split)")
    overlap = train.contains(test.users, test.items)
    if overlap.any():
        row = int(np.flatnonzero(overlap)[0])
        raise DataError(
            f"{int(overlap.sum())} test pairs are also in train, e.g. (user {test.users[row]}, item {test.items[row]})"
        )
    if threshold is None:
        return test
    rel = test.subset(test.values >= float(threshold))
    if rel.nnz == 0:
        raise DataError(f"no test rating reaches the relevance threshold {threshold!r}")
    return rel


def _check_model(model, train: Ratings) -> None:
    if not hasattr(model, "score_users"):
        raise ConfigError(f"{type(model).__name__} has no score_users method")
    if getattr(model, "n_items_", train.n_items) != train.n_items:
        raise DataError(f"model scores {model.n_items_} items, train has {train.n_items}")


def users_per_batch(n_items: int, memory_budget: int, bytes_per_cell: int = _BYTES_PER_CELL) -> int:
    """How many users' full score rows fit in ``memory_budget`` bytes (at least one)."""
    if not isinstance(memory_budget, (int, np.integer)) or memory_budget < 1:
        raise ConfigError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return max(1, int(memory_budget) // (bytes_per_cell * n_items))


def full_ranking(
    model,
    train: Ratings,
    test: Ratings,
    ks=(10,),
    threshold: float | None = None,
    exclude_train: bool = True,
    how: str = "mean",
    q: float = 0.9,
    seed: int = 0,
    memory_budget: int = 2**28,
) -> dict:
    """Full-catalogue metrics of ``model`` (module docstring) over the users with a relevant test
    item, scored ``users_per_batch`` users at a time. Returns the mean of every metric plus
    ``n_users``, ``n_users_skipped`` and the protocol settings."""
    ks = check_ks(ks)
    _check_model(model, train)
    rel = relevant_test(train, test, threshold)
    n_skipped = int(np.unique(test.users).size - np.unique(rel.users).size)
    group = rel.by_user
    eval_users = np.flatnonzero(group.counts > 0)
    rel_item = rel.items[group.order].astype(np.int64)  # relevant pairs grouped by user
    train_indptr, train_item = train.by_user.indptr, train.items[train.by_user.order]
    batch = users_per_batch(train.n_items, memory_budget)
    parts = []
    for start in range(0, eval_users.size, batch):  # a loop over memory-bounded batches of users
        users = eval_users[start:start + batch]
        scores = score_batch(model, users, how=how, q=q, seed=seed)
        user_pos, flat = _gather_groups(group.indptr, users)
        if exclude_train:
            removed_row, flat_train = _gather_groups(train_indptr, users)
            removed_item = train_item[flat_train]
        else:
            removed_row = removed_item = np.zeros(0, dtype=np.int64)
        parts.append(_batch_metrics(scores, user_pos, rel_item[flat], removed_row, removed_item, ks))
    per_user = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    report = _summarise(per_user, n_skipped)
    report.update(protocol="full", threshold=threshold, exclude_train=bool(exclude_train), how=how)
    return report


# --- strong generalization (held-out users) ----------------------------------------------------------
def heldout_metrics(scores, relevant, ks=(20, 50, 100), exclude=None) -> dict:
    r"""Per-user metrics of the strong-generalization protocol (Liang et al. 2018) for a dense score
    matrix (n_users, n_items), boolean ``relevant`` (the held-out targets) and ``exclude`` (the
    folded-in items, never ranked): ``recall@k`` normalised by :math:`\min(k, |R_u|)`,

    .. math:: \mathrm{Recall@}k(u) = \frac{\#\{i \in R_u : \mathrm{rank}_i \le k\}}{\min(k, |R_u|)},

    so 1 is reachable whatever ``|R_u|`` (unlike the module's ``recall@k``, divided by ``|R_u|``),
    and ``ndcg@k`` as in the module docstring. Ranks are pessimistic, as everywhere in this module.
    Returns ``{name: array (n_users,)}`` over the users with a relevant item (rows without one are
    dropped, in order).

    References
    ----------
    D. Liang, R. G. Krishnan, M. D. Hoffman, T. Jebara, "Variational Autoencoders for
    Collaborative Filtering", WWW 2018, section 4.2.
    """
    ks = check_ks(ks)
    scores, relevant, exclude, _ = _dense_inputs(scores, relevant, exclude)
    user_pos, pair_item = np.nonzero(relevant)
    per_user = _batch_metrics(scores, user_pos, pair_item, *np.nonzero(exclude), ks)
    return _heldout_from(per_user, relevant.sum(axis=1), ks)


def _heldout_from(per_user: dict, n_rel: np.ndarray, ks) -> dict:
    """Liang's recall (hits / min(k, |R_u|), hits = precision@k * k) and ndcg@k per user."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = per_user[f"precision@{k}"] * k / np.minimum(k, n_rel)
        out[f"ndcg@{k}"] = per_user[f"ndcg@{k}"]
    return out


def strong_generalization_ranking(model, fold_in: Ratings, target: Ratings, ks=(20, 50, 100),
                                  memory_budget: int = 2**28) -> dict:
    """The strong-generalization protocol on a model fitted on the training users of a
    :func:`bayesmf.data.splits.strong_generalization` split.

    Calls ``model.fold_in(fold_in)`` (which adds the held-out users to ``model``: it is modified),
    then scores every held-out user over the whole catalogue with ``model.score_users`` in
    memory-bounded batches, excludes the user's folded-in items and ranks the ``target`` items:
    means over users of :func:`heldout_metrics` (``recall@k`` normalised by ``min(k, |R_u|)``,
    ``ndcg@k``), plus ``n_users``.
    """
    ks = check_ks(ks)
    if not isinstance(fold_in, Ratings) or not isinstance(target, Ratings):
        raise DataError("fold_in and target must be bayesmf Ratings (from strong_generalization)")
    if not fold_in.same_index_space(target):
        raise DataError("fold_in and target must share ID maps and shape (use strong_generalization)")
    _check_model(model, fold_in)
    if getattr(model, "item_map_", fold_in.item_map) != fold_in.item_map:
        raise DataError("the model's item IDs differ from the split's: fit it on the split's train")
    overlap = fold_in.contains(target.users, target.items)
    if overlap.any():
        row = int(np.flatnonzero(overlap)[0])
        raise DataError(f"target pair (user {target.users[row]}, item {target.items[row]}) is also in fold_in")
    missing = np.flatnonzero((target.user_counts > 0) & (fold_in.user_counts == 0))
    if missing.size:
        raise DataError(f"held-out user {fold_in.user_map.ids(missing[:1])[0].item()!r} has targets but no fold-in "
                        "interactions")
    model.fold_in(fold_in)
    model_index = model.user_map_.lookup(fold_in.user_map.ids()).astype(np.int64)
    eval_users = np.flatnonzero(target.user_counts > 0)
    tgt, seen = target.by_user, fold_in.by_user
    tgt_item, seen_item = target.items[tgt.order].astype(np.int64), fold_in.items[seen.order].astype(np.int64)
    batch = users_per_batch(fold_in.n_items, memory_budget)
    parts = []
    for start in range(0, eval_users.size, batch):  # a loop over memory-bounded batches of users
        users = eval_users[start:start + batch]
        scores = score_batch(model, model_index[users])
        user_pos, flat = _gather_groups(tgt.indptr, users)
        removed_row, flat_seen = _gather_groups(seen.indptr, users)
        per_user = _batch_metrics(scores, user_pos, tgt_item[flat], removed_row, seen_item[flat_seen], ks)
        parts.append(_heldout_from(per_user, tgt.counts[users], ks))
    report = {name: float(np.concatenate([p[name] for p in parts]).mean()) for name in parts[0]}
    report.update(n_users=int(eval_users.size), protocol="strong_generalization")
    return report
