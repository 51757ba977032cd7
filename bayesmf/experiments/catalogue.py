"""The names an experiment file may use: metrics and models.

**Metrics** (``[evaluation] metrics``), each a scalar that :func:`bayesmf.metrics.evaluate_ratings`
or :func:`bayesmf.metrics.evaluate_ranking` reports under the same name:

* rating accuracy: ``rmse``, ``mae``, ``rmse_unclipped``, ``mae_unclipped``, ``user_rmse_p10``,
  ``user_rmse_p50``, ``user_rmse_p90``; on synthetic data also ``rmse_truth`` (RMSE of the
  clipped predictions against the noise-free truth ``mu + u_i . v_j``, whose floor is 0);
* uncertainty (models with a predictive distribution: Bayesian models and bootstrap ensembles;
  absent for point models): ``coverage@L`` and ``width@L`` for a level ``0 < L < 1``, ``nll``,
  ``nll_mixture``, ``crps``, ``calibration_area``, ``aurc``, ``spearman_abs_error_std``,
  ``rmse_draws_mean``, ``rmse_draws_lo``, ``rmse_draws_hi``; by rating category (ordinal models,
  and other predictives discretised onto the rating levels): ``categorical_nll``, ``rps``,
  ``ece``, ``ece_classwise``;
* full-catalogue ranking: ``hr@k``, ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr``,
  ``auc``;
* sampled ranking (1 positive + ``n_negatives``; comparable with NCF-style papers only):
  ``sampled_hr@k``, ``sampled_ndcg@k``, ``sampled_mrr``, ``sampled_auc`` and the Krichene-Rendle
  corrected ``sampled_hr@k_corrected``, ``sampled_ndcg@k_corrected``, ``sampled_mrr_corrected``.

**Models** (``[[models]] model``): the estimators of :mod:`bayesmf` (``BPMF``, ``PMF``, ``ALS``,
``ImplicitALS``, ``NMF``, ``FunkSVD``, ``SVDpp``, ``Baseline``, ``Popularity``, ``EASE``, and the
implicit-feedback ``GMF``, ``MLP``, ``NeuMF``, ``BPR``, ``MultVAE``, ``MultDAE``); their
hyperparameters are their constructor arguments.
"""

from __future__ import annotations

import inspect
import re

from bayesmf.errors import ConfigError
from bayesmf.registry import ESTIMATOR_MODULES, estimator_class

RATING_METRICS = ("rmse", "mae", "rmse_unclipped", "mae_unclipped", "user_rmse_p10", "user_rmse_p50",
                  "user_rmse_p90", "rmse_truth")
UNCERTAINTY_METRICS = ("nll", "nll_mixture", "crps", "calibration_area", "aurc", "spearman_abs_error_std",
                       "rmse_draws_mean", "rmse_draws_lo", "rmse_draws_hi", "categorical_nll", "rps", "ece",
                       "ece_classwise")
LEVEL_METRICS = ("coverage", "width")  # name@L
RANKING_AT_K = ("hr", "precision", "recall", "ndcg", "map")  # name@k
RANKING_PLAIN = ("mrr", "auc")
SAMPLED_AT_K = ("hr", "ndcg")
SAMPLED_PLAIN = ("mrr", "auc")

MODEL_MODULES = ESTIMATOR_MODULES  # the names an experiment may use: bayesmf.registry's table
# set by the runner, never by the experiment file
RUNNER_PARAMS = ("seed", "progress", "checkpoint")

_AT = re.compile(r"^(?P<name>[a-z_]+)@(?P<arg>[0-9.]+)(?P<suffix>_corrected)?$")

METRIC_HELP = (
    f"rating {list(RATING_METRICS)}; uncertainty {list(UNCERTAINTY_METRICS)} and 'coverage@L', 'width@L' "
    f"(0 < L < 1); ranking {[m + '@k' for m in RANKING_AT_K] + list(RANKING_PLAIN)}; sampled ranking "
    f"{['sampled_' + m + '@k' for m in SAMPLED_AT_K] + ['sampled_' + m for m in SAMPLED_PLAIN]} "
    "(hr/ndcg/mrr also with '_corrected')"
)


class MetricSpec(tuple):
    """``(kind, name)``: kind is ``"rating"``, ``"uncertainty"``, ``"ranking"`` or ``"sampled"``;
    ``level`` (coverage/width) or ``k`` (ranking) is parsed from the name."""

    def __new__(cls, kind: str, name: str, level: float | None = None, k: int | None = None):
        obj = super().__new__(cls, (kind, name))
        obj.level, obj.k = level, k
        return obj

    kind = property(lambda self: self[0])
    name = property(lambda self: self[1])


def parse_metric(name: str) -> MetricSpec | None:
    """The :class:`MetricSpec` of a metric name, or None when the name is not in the catalogue."""
    if not isinstance(name, str):
        return None
    if name in RATING_METRICS:
        return MetricSpec("rating", name)
    if name in UNCERTAINTY_METRICS:
        return MetricSpec("uncertainty", name)
    if name in RANKING_PLAIN:
        return MetricSpec("ranking", name)
    sampled = name.startswith("sampled_")
    base = name[len("sampled_"):] if sampled else name
    if sampled and base in SAMPLED_PLAIN:
        return MetricSpec("sampled", name)
    if sampled and base == "mrr_corrected":
        return MetricSpec("sampled", name)
    match = _AT.match(base)
    if match is None:
        return None
    head, arg, corrected = match["name"], match["arg"], match["suffix"]
    if not sampled and not corrected and head in LEVEL_METRICS:
        level = float(arg)
        return MetricSpec("uncertainty", name, level=level) if 0.0 < level < 1.0 else None
    if not arg.isdigit() or int(arg) < 1:
        return None
    if sampled and head in SAMPLED_AT_K:
        return MetricSpec("sampled", name, k=int(arg))
    if not sampled and not corrected and head in RANKING_AT_K:
        return MetricSpec("ranking", name, k=int(arg))
    return None


def model_class(name: str) -> type:
    """The estimator class called ``name`` (imported on demand)."""
    if name not in MODEL_MODULES:
        raise ConfigError(f"unknown model {name!r}; allowed values: {list(MODEL_MODULES)}")
    return estimator_class(name)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """Constructor parameters of model ``name`` (without ``self``), in signature order."""
    sig = inspect.signature(model_class(name).__init__)
    return {p.name: p for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD}
