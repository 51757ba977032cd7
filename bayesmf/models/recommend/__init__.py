"""The recommendation layer of every fitted factor model, one module per concern.

:class:`RecommendMixin` is a base class of :class:`~bayesmf.models.base.FactorModel`; it relies
on the fitted state that class defines (``n_users_``, ``n_items_``, ``user_map_``/``item_map_``,
``global_mean_``, ``user_bias_``/``item_bias_``, ``user_factors_``/``item_factors_``, the seen-item
CSR ``seen_indptr_``/``seen_items_``, ``user_counts_``/``item_counts_``) and on ``score_users``.

* :mod:`~bayesmf.models.recommend.topk` — ``recommend`` / ``recommend_indices``: top-k with
  candidates, filters, weights, seen-item exclusion and cold-start fallback;
* :mod:`~bayesmf.models.recommend.similar` — ``similar_items`` / ``similar_users``;
* :mod:`~bayesmf.models.recommend.foldin` — ``fold_in`` of new users (one place for all models);
* :mod:`~bayesmf.models.recommend.export` — ``export_factors``;
* :mod:`~bayesmf.models.recommend._batch` — the batched, jitted top-k both rankings share.
"""

from bayesmf.models.recommend._batch import (
    SCORE_BUDGET_BYTES,
    batch_height,
    check_k,
    exact_matmul,
    lookup_ids,
    masked_top_k,
)
from bayesmf.models.recommend.export import ExportMixin
from bayesmf.models.recommend.foldin import FoldInMixin, ridge_rows
from bayesmf.models.recommend.similar import SIMILARITY_METRICS, SimilarMixin
from bayesmf.models.recommend.topk import HOW, TopKMixin, linear_scores, seen_pairs

__all__ = [
    "HOW", "SCORE_BUDGET_BYTES", "SIMILARITY_METRICS", "ExportMixin", "FoldInMixin", "RecommendMixin",
    "SimilarMixin", "TopKMixin", "batch_height", "check_k", "exact_matmul", "linear_scores", "lookup_ids",
    "masked_top_k", "ridge_rows", "seen_pairs",
]


class RecommendMixin(TopKMixin, SimilarMixin, FoldInMixin, ExportMixin):
    """Top-k recommendation, similar items/users, fold-in and factor export for factor models."""
