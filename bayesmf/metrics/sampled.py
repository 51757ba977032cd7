r"""Sampled ranking protocol ("1 held-out positive + N sampled negatives", as in the NCF papers)
and the corrected estimators of Krichene & Rendle (KDD 2020).

.. warning::
   Sampled metrics are **not** full-catalogue metrics with less noise: they are different metrics,
   inconsistent with them, and they **can reorder models** (Krichene & Rendle, "On Sampled Metrics
   for Item Recommendation", KDD 2020). Use full-catalogue metrics
   (:func:`bayesmf.metrics.evaluate_ranking` with ``protocol="full"``) for conclusions; use the
   sampled protocol only to reproduce published numbers, and prefer its corrected estimates.
   Every report from this module carries this warning under the key ``"warning"``.

Protocol. Each relevant test rating ``(u, i)`` (``value >= threshold``, all when None) is one
ranking task: ``n_negatives`` distinct items that ``u`` rated neither in training nor as a
relevant test item are drawn uniformly without replacement
(:func:`bayesmf.data.negatives.candidate_sets`), and ``i`` is ranked among the ``1 + N``
candidates. Ties are pessimistic: ``r = 1 + #{negatives scoring >= s_i}``, so ``r in 1..N+1``.
Sampled metrics are means over positives: ``hr@k = 1[r <= k]``, ``ndcg@k = 1[r <= k]/log2(r + 1)``,
``mrr = 1/r``, ``auc = (#{neg < s_i} + #{neg = s_i}/2) / N`` (the sampled AUC is already an unbiased
estimate of the full AUC).

Correction. Let ``R in 1..n`` be the positive's rank among ``n`` items (the positive and its
``n - 1`` possible negatives). Sampling ``m = N`` negatives without replacement gives
``r - 1 ~ Hypergeometric(population n - 1, successes R - 1, draws m)``; write
``A[R, r] = P(r | R)``. The corrected metric replaces ``f(r)`` by the values ``f~ in R^(m+1)``
minimising, for a uniform prior on ``R``,
``sum_R [ (E[f~(r) | R] - f(R))^2 + gamma Var[f~(r) | R] ]``, i.e.
``((1 - gamma) A^T A + gamma diag(A^T 1)) f~ = A^T f``; ``gamma = 0`` is the "minimal bias"
estimator (solved by least squares), ``gamma > 0`` trades bias for variance ("BV", the paper's
recommendation; default ``gamma = 0.1``). The per-positive estimate is ``f~(r)``, averaged over
positives. Catalogue sizes differ slightly between users (their training items are excluded);
one ``n`` is used, the mean candidate-pool size rounded (reported as ``kr_n``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom

from bayesmf.data.negatives import candidate_sets
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics.ranking import _check_model, relevant_test, score_batch, users_per_batch
from bayesmf.validate import check_ks, check_positive_int

__all__ = [
    "SAMPLED_WARNING", "full_rank_metric", "kr_correction", "sampled_metrics", "sampled_ranking", "sampled_ranks",
]

SAMPLED_WARNING = (
    "sampled metrics (1 positive vs N sampled negatives) are inconsistent with full-catalogue metrics and can "
    "reorder models (Krichene & Rendle, KDD 2020); report full-catalogue metrics for conclusions"
)


def full_rank_metric(name: str, n: int, k: int | None = None) -> np.ndarray:
    """Value of a one-positive metric at every full rank ``R = 1..n``: shape (n,).

    ``"hr"`` (= recall with one positive) ``1[R <= k]``; ``"ndcg"`` ``1[R <= k]/log2(R + 1)``;
    ``"mrr"`` ``1/R``; ``"auc"`` ``(n - R)/(n - 1)``.
    """
    ranks = np.arange(1, n + 1, dtype=np.float64)
    if name in ("hr", "ndcg"):
        if k is None:
            raise ConfigError(f"metric {name!r} needs a cut-off k")
        top = ranks <= check_ks(k)[0]
        return top * (1.0 if name == "hr" else 1.0 / np.log2(ranks + 1))
    if name == "mrr":
        return 1.0 / ranks
    if name == "auc":
        return (n - ranks) / max(n - 1, 1)
    raise ConfigError(f"metric must be one of 'hr', 'ndcg', 'mrr', 'auc', got {name!r}")


def kr_correction(f_full, n_negatives: int, gamma: float = 0.1) -> np.ndarray:
    """Corrected per-sampled-rank values ``f~`` (n_negatives + 1,) for a metric whose value at full
    rank ``R = 1..n`` is ``f_full`` (n,) (module docstring)."""
    f_full = np.asarray(f_full, dtype=np.float64)
    n, m = f_full.size, check_positive_int("n_negatives", n_negatives)
    if m > n - 1:
        raise DataError(f"n_negatives={m} exceeds the {n - 1} negatives of a catalogue of {n} items")
    if not 0 <= gamma <= 1:
        raise ConfigError(f"gamma must lie in [0, 1], got {gamma!r}")
    above = np.arange(n)[:, None]  # R - 1 negatives rank above the positive
    A = hypergeom.pmf(np.arange(m + 1)[None, :], n - 1, above, m)  # A[R-1, r-1] = P(r | R)
    if gamma == 0:
        return np.linalg.lstsq(A, f_full, rcond=None)[0]
    lhs = (1 - gamma) * A.T @ A + gamma * np.diag(A.sum(axis=0))
    return np.linalg.solve(lhs, A.T @ f_full)


def sampled_ranks(model, train, test, n_negatives=99, seed=0, threshold=None, how="mean", q=0.9,
                  memory_budget=2**28) -> dict:
    """Score the ``1 + n_negatives`` candidates of every relevant test rating. Returns ``rank``
    (P,) pessimistic sampled rank, ``below``/``equal`` (P,) negatives scoring lower / the same,
    ``users`` (P,) the user of each positive (positives are grouped by user) and ``pool`` (P,)
    the number of items the positive competes with in the full catalogue (itself plus its
    possible negatives)."""
    n_negatives = check_positive_int("n_negatives", n_negatives)
    _check_model(model, train)
    rel = relevant_test(train, test, threshold)
    users, candidates = candidate_sets(train, rel, n_negatives, seed=seed)
    order = np.argsort(users, kind="stable")  # group positives by user to score each user once
    users, candidates = users[order], candidates[order]
    eval_users, first = np.unique(users, return_index=True)
    batch = users_per_batch(train.n_items, memory_budget)
    pos_score, neg_scores = np.empty(users.size), np.empty((users.size, n_negatives))
    for start in range(0, eval_users.size, batch):  # memory-bounded batches of users
        batch_users = eval_users[start:start + batch]
        scores = score_batch(model, batch_users, how=how, q=q, seed=seed)
        lo = first[start]
        hi = first[start + batch] if start + batch < eval_users.size else users.size
        row = np.searchsorted(batch_users, users[lo:hi])
        cand_scores = scores[row[:, None], candidates[lo:hi]]
        pos_score[lo:hi], neg_scores[lo:hi] = cand_scores[:, 0], cand_scores[:, 1:]
    below = (neg_scores < pos_score[:, None]).sum(axis=1)
    equal = (neg_scores == pos_score[:, None]).sum(axis=1)
    n_excluded = train.user_counts[users] + rel.user_counts[users]
    return {"rank": n_negatives + 1 - below, "below": below, "equal": equal,
            "pool": train.n_items - n_excluded + 1, "users": users}


def sampled_metrics(rank, n_negatives: int, ks=(10,), below=None, equal=None) -> dict:
    """Uncorrected sampled metrics (means over positives) from sampled ranks ``rank`` (P,) in
    ``1..n_negatives + 1``; ``auc`` needs ``below`` and ``equal``."""
    ks = check_ks(ks)
    rank = np.asarray(rank, dtype=np.float64)
    if rank.size == 0 or rank.min() < 1 or rank.max() > n_negatives + 1:
        raise DataError(f"sampled ranks must lie in 1..{n_negatives + 1}")
    out = {}
    for k in ks:
        top = rank <= k
        out[f"hr@{k}"] = float(top.mean())
        out[f"ndcg@{k}"] = float(np.where(top, 1.0 / np.log2(rank + 1), 0.0).mean())
    out["mrr"] = float((1.0 / rank).mean())
    if below is not None:
        out["auc"] = float(((np.asarray(below) + 0.5 * np.asarray(equal)) / n_negatives).mean())
    return out


def sampled_ranking(model, train, test, ks=(10,), n_negatives=99, seed=0, threshold=None, how="mean", q=0.9,
                    gamma=0.1, memory_budget=2**28) -> dict:
    """The sampled protocol's report: uncorrected metrics, Krichene-Rendle corrected estimates
    (keys ending ``_corrected``), the protocol settings and ``"warning"``: sampled metrics can
    reorder models (see the module docstring; prefer ``protocol="full"``)."""
    ks = check_ks(ks)
    ranked = sampled_ranks(model, train, test, n_negatives, seed, threshold, how, q, memory_budget)
    rank = ranked["rank"]
    report = sampled_metrics(rank, n_negatives, ks, ranked["below"], ranked["equal"])
    n = int(np.round(ranked["pool"].mean()))
    for name, k in [*[(m, k) for k in ks for m in ("hr", "ndcg")], ("mrr", None)]:
        corrected = kr_correction(full_rank_metric(name, n, k), n_negatives, gamma)
        report[f"{name}@{k}_corrected" if k else f"{name}_corrected"] = float(corrected[rank - 1].mean())
    report.update(
        protocol="sampled", n_positives=int(rank.size), n_users=int(np.unique(ranked["users"]).size),
        n_negatives=int(n_negatives), threshold=threshold, how=how, kr_n=n, kr_gamma=float(gamma),
        warning=SAMPLED_WARNING,
    )
    return report
