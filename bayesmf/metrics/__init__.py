"""Evaluation: rating accuracy, uncertainty quality and honest ranking metrics.

Entry points: :func:`evaluate_ratings` and :func:`evaluate_ranking`, which return an
:class:`~bayesmf.metrics.results.EvaluationResult` (a dict that prints as a table of its scalar
metrics). The individual metrics are exported too; each module's docstring states the definitions
(with formulas):

* :mod:`~bayesmf.metrics.rating` — RMSE, MAE, bootstrap intervals, per-user errors, posterior RMSE;
* :mod:`~bayesmf.metrics.uncertainty` — coverage, width, NLL, CRPS, calibration, risk-coverage;
* :mod:`~bayesmf.metrics.categorical` — categorical NLL, ranked probability score, reliability
  diagram and expected calibration error of predictives over rating categories;
* :mod:`~bayesmf.metrics.ranking` — full-catalogue HR/Precision/Recall/NDCG/MAP@k, MRR, AUC;
* :mod:`~bayesmf.metrics.sampled` — the sampled (1 + N) protocol and Krichene-Rendle corrections;
* :mod:`~bayesmf.metrics.bootstrap` — bootstrap ensembles giving point models a predictive;
* :mod:`~bayesmf.metrics.conformal` — split-conformal intervals around any point model, the
  distribution-free reference for Bayesian intervals.

Nothing here imports the engines: models are used through ``predict``/``predict_dist``/``score_users``.
"""

from bayesmf.metrics.bootstrap import BootstrapEnsemble
from bayesmf.metrics.categorical import (
    as_categorical,
    categorical_nll,
    expected_calibration_error,
    ranked_probability_score,
    reliability_diagram,
)
from bayesmf.metrics.conformal import ConformalDistribution, ConformalRegressor, conformal_quantile
from bayesmf.metrics.evaluate import evaluate_ranking, evaluate_ratings
from bayesmf.metrics.ranking import (
    auc,
    full_ranking,
    heldout_metrics,
    hit_rate,
    map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    rank_relevant,
    ranking_metrics,
    recall_at_k,
    strong_generalization_ranking,
)
from bayesmf.metrics.rating import bootstrap_ci, mae, per_user_errors, posterior_rmse, rmse, rmse_per_draw
from bayesmf.metrics.results import EvaluationResult
from bayesmf.metrics.sampled import SAMPLED_WARNING, full_rank_metric, kr_correction, sampled_metrics, sampled_ranking
from bayesmf.metrics.uncertainty import (
    calibration_area,
    calibration_area_from_pit,
    calibration_curve,
    coverage,
    coverage_from_pit,
    crps,
    crps_gaussian,
    crps_mixture,
    crps_samples,
    gaussian_nll,
    interval_scores,
    interval_width,
    mixture_nll,
    pit,
    risk_coverage,
    rmse_by_std_bin,
    spearman_error_std,
)
from bayesmf.predictive import CategoricalDistribution, PredictiveDistribution

__all__ = [
    "SAMPLED_WARNING", "BootstrapEnsemble", "CategoricalDistribution", "ConformalDistribution", "ConformalRegressor",
    "EvaluationResult", "PredictiveDistribution", "as_categorical", "auc", "bootstrap_ci", "calibration_area",
    "calibration_area_from_pit", "calibration_curve", "categorical_nll", "conformal_quantile", "coverage",
    "coverage_from_pit", "crps", "crps_gaussian", "crps_mixture", "crps_samples", "evaluate_ranking",
    "evaluate_ratings", "expected_calibration_error", "full_rank_metric", "full_ranking", "gaussian_nll",
    "heldout_metrics", "hit_rate", "interval_scores", "interval_width", "kr_correction", "mae", "map_at_k",
    "mixture_nll", "mrr", "ndcg_at_k", "per_user_errors", "pit", "posterior_rmse", "precision_at_k", "rank_relevant",
    "ranked_probability_score", "ranking_metrics", "recall_at_k", "reliability_diagram", "risk_coverage", "rmse",
    "rmse_by_std_bin", "rmse_per_draw", "sampled_metrics", "sampled_ranking", "spearman_error_std",
    "strong_generalization_ranking",
]
