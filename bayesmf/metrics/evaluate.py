"""The two public entry points: :func:`evaluate_ratings` and :func:`evaluate_ranking`.

Both return an :class:`~bayesmf.metrics.results.EvaluationResult`: a flat ``dict`` whose scalar
entries go straight into a results table (keys such as ``rmse``, ``coverage@0.9``, ``ndcg@10``)
and whose few non-scalar entries (curves, per-bin tables) are NumPy arrays or dicts of them; it
prints as a compact table of the scalars and offers the curves as DataFrames and plots. Definitions live in the modules
:mod:`~bayesmf.metrics.rating`, :mod:`~bayesmf.metrics.uncertainty`,
:mod:`~bayesmf.metrics.ranking` and :mod:`~bayesmf.metrics.sampled`.
"""

from __future__ import annotations

import numpy as np

from bayesmf.data.levels import rating_levels
from bayesmf.data.ratings import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics import categorical, rating, uncertainty
from bayesmf.metrics.ranking import full_ranking
from bayesmf.metrics.results import EvaluationResult
from bayesmf.metrics.sampled import sampled_ranking
from bayesmf.predictive import CategoricalDistribution, PredictiveDistribution, check_level
from bayesmf.validate import as_values, same_length

__all__ = ["evaluate_ranking", "evaluate_ratings", "pair_arguments"]


def pair_arguments(model, test: Ratings) -> dict:
    """Keyword arguments of ``model.predict`` / ``predict_dist`` beyond the pairs: the ratings'
    timestamps for a model whose predictions depend on time (``model.needs_timestamps``, e.g. a
    factorization machine with a time block)."""
    return {"timestamps": test.timestamps} if getattr(model, "needs_timestamps", False) else {}


def _resolve(test: Ratings, source):
    """``(unclipped point predictions (n,), PredictiveDistribution or None, rating scale)``."""
    scale = test.rating_scale
    if isinstance(source, PredictiveDistribution):
        return source.mean, source, scale
    if isinstance(source, tuple):
        if len(source) != 2:
            raise DataError(f"a tuple of predictions must be (mean, std), got {len(source)} entries")
        dist = PredictiveDistribution(*source)
        return dist.mean, dist, scale
    if hasattr(source, "predict"):
        scale = getattr(source, "rating_scale_", None) or scale
        if hasattr(source, "predict_dist"):
            dist = source.predict_dist(test.users, test.items, **pair_arguments(source, test))
            if not isinstance(dist, PredictiveDistribution):
                raise DataError(f"{type(source).__name__}.predict_dist must return a PredictiveDistribution")
            return dist.mean, dist, scale
        point = source.predict(test.users, test.items, clip=False, **pair_arguments(source, test))
        return np.asarray(point), None, scale
    return np.asarray(source), None, scale


def evaluate_ratings(
    test: Ratings,
    model_or_predictions,
    levels=uncertainty.DEFAULT_LEVELS,
    clip: bool = True,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    by_user: bool = False,
    seed: int = 0,
) -> EvaluationResult:
    """Accuracy and, when a predictive distribution is available, uncertainty metrics on ``test``.

    ``model_or_predictions`` is a fitted model (``predict``, and ``predict_dist`` for a
    predictive distribution), a :class:`~bayesmf.predictive.PredictiveDistribution`, a tuple
    ``(mean, std)`` (Gaussian predictive) or an array of point predictions, aligned with the rows
    of ``test`` (in the model's index space).

    Keys. Always: ``n``; ``rmse``, ``mae`` (predictions clipped to the rating scale when ``clip``
    and a scale is known — the model's, else the test set's), ``rmse_unclipped``,
    ``mae_unclipped``; ``rmse_ci``, ``mae_ci`` (percentile bootstrap over test ratings, ``n_boot``
    replicates, level ``ci_level``) and with ``by_user`` also ``rmse_ci_users``, ``mae_ci_users``
    (over users); ``user_rmse_p10/p50/p90`` and ``n_test_users`` (per-user RMSE distribution).
    With a predictive distribution (computed on the *unclipped* distribution: clipping a Gaussian
    does not give one): ``coverage@L`` (from PIT values, ``mean(|2 F(y) - 1| <= L)``, the same as
    counting ``y`` inside the central interval for a continuous predictive), ``width@L`` for each
    level ``L``; ``nll`` (Gaussian, from mean and std; for a categorical predictive its own
    negative log probability of the observed category: moments of a distribution on a few
    levels have no density, and a certain prediction has std 0) and, for mixtures,
    ``nll_mixture``; ``crps``; ``calibration_area`` and
    ``calibration_curve`` (dict of arrays ``nominal``/``observed``); ``aurc`` and
    ``risk_coverage`` (arrays), ``rmse_by_std_decile`` (dict), ``spearman_abs_error_std`` — these
    last three rank the (clipped) point predictions' errors by the predictive std. For a
    Gaussian-mixture predictive (noise-free posterior draws of the prediction plus ``noise_std``):
    ``rmse_draws_mean``, ``rmse_draws_lo``, ``rmse_draws_hi`` — the posterior distribution of the
    test RMSE (one RMSE per draw, clipped like the point predictions; its central ``ci_level``
    interval). Empirical draws (``noise_std`` None) are draws of the *observed* rating, noise
    included, so a per-draw RMSE would mix in the noise and is not reported for them.
    By rating category (:mod:`bayesmf.metrics.categorical`), when the predictive is categorical
    (an ordinal model) or the ratings lie on an integer or half-star scale (any other predictive
    is then discretised onto its levels: the model's ``rating_levels_`` when it has them, else the
    grid spanned by the test ratings): ``categorical_nll``, ``rps``, ``ece`` (top-label),
    ``ece_classwise`` and ``reliability`` (the top-label diagram: dict of arrays). For a
    categorical predictive, ``coverage@L`` counts ``y`` inside the central set of categories and
    the calibration curve uses the randomized PIT (a discrete PIT is not uniform).

    Cost: linear in N for point predictions, Gaussians and empirical draws. A Gaussian mixture
    (draws + ``noise_std``) needs ``S x N`` normal-CDF evaluations per Newton round of each
    interval end and per lag of the CRPS pair term, so it is the slow case (benchmarks/RESULTS.md).
    """
    if not isinstance(test, Ratings):
        raise DataError(f"test must be a bayesmf Ratings, got {type(test).__name__}")
    if test.nnz == 0:
        raise DataError("the test set is empty")
    ci_level = check_level(ci_level)
    y = test.values.astype(np.float64)
    raw, dist, scale = _resolve(test, model_or_predictions)
    raw = as_values("predictions", raw)
    same_length(test=y, predictions=raw)
    clip_to = scale if clip and scale is not None else None
    pred = np.clip(raw, *clip_to) if clip_to else raw

    report = {"n": int(y.size), "rmse": rating.rmse(y, pred), "mae": rating.mae(y, pred),
              "rmse_unclipped": rating.rmse(y, raw), "mae_unclipped": rating.mae(y, raw), "clipped_to": clip_to}
    for metric in ("rmse", "mae"):
        report[f"{metric}_ci"] = rating.bootstrap_ci(y, pred, metric, n_boot=n_boot, level=ci_level, seed=seed)
        if by_user:
            report[f"{metric}_ci_users"] = rating.bootstrap_ci(
                y, pred, metric, by="users", users=test.users, n_boot=n_boot, level=ci_level, seed=seed
            )
    per_user = rating.per_user_errors(test.users, y, pred)
    report["n_test_users"] = int(per_user["users"].size)
    for p in (10, 50, 90):
        report[f"user_rmse_p{p}"] = float(np.percentile(per_user["rmse"], p))
    if dist is not None:
        report.update(_uncertainty_report(y, pred, dist, levels))
        scale_levels = _rating_levels(model_or_predictions, dist, y)
        if scale_levels is not None:
            report.update(_categorical_report(y, dist, scale_levels))
        if dist.kind == "mixture":  # draws of the noise-free prediction: one RMSE per posterior draw
            draws = np.clip(dist.samples, *clip_to) if clip_to else dist.samples
            post = rating.posterior_rmse(y, draws, ci_level)
            report.update(rmse_draws_mean=post["mean"], rmse_draws_lo=post["lo"], rmse_draws_hi=post["hi"])
    return EvaluationResult(report, kind="ratings")


def _rating_levels(source, dist, y):
    """The levels to score ``dist`` by category on, or None (module docstring of
    :func:`evaluate_ratings`)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.levels
    levels = getattr(source, "rating_levels_", None)
    if levels is not None:
        return np.asarray(levels, np.float64)
    try:
        return rating_levels(y)
    except DataError:  # not an ordinal scale: no categorical metrics
        return None


def _categorical_report(y, dist, levels) -> dict:
    cat = categorical.as_categorical(dist, levels)
    try:
        cat.category_index(y)
    except DataError:  # test ratings outside the model's scale: the categorical metrics are undefined
        return {}
    diagram = categorical.reliability_diagram(y, cat)
    return {"categorical_nll": float(categorical.categorical_nll(y, cat).mean()),
            "rps": float(categorical.ranked_probability_score(y, cat).mean()),
            "ece": diagram["ece"],
            "ece_classwise": categorical.expected_calibration_error(y, cat, which="classwise"),
            "reliability": {k: v for k, v in diagram.items() if k != "ece"}}


def _uncertainty_report(y, pred, dist: PredictiveDistribution, levels) -> dict:
    out = {}
    levels = [check_level(level) for level in levels]
    discrete = isinstance(dist, CategoricalDistribution)
    # one CDF evaluation serves coverage at every level and the calibration curve and area
    pit = dist.randomized_pit(y) if discrete else uncertainty.pit(y, dist)
    for level, observed in zip(levels, uncertainty.coverage_from_pit(pit, levels), strict=True):
        if discrete:  # y inside the central set of categories (a discrete PIT cannot say it)
            observed = uncertainty.interval_scores(y, dist, level)[0]
        out[f"coverage@{level:g}"] = float(observed)
        out[f"width@{level:g}"] = uncertainty.interval_width(dist, level)
    nll = categorical.categorical_nll(y, dist) if discrete else uncertainty.gaussian_nll(y, dist.mean, dist.std)
    out["nll"] = float(nll.mean())
    if dist.kind == "mixture":
        out["nll_mixture"] = float(uncertainty.mixture_nll(y, dist).mean())
    out["crps"] = uncertainty.crps(y, dist)
    nominal = np.linspace(0.0, 1.0, 101)
    observed = uncertainty.coverage_from_pit(pit, nominal)
    out["calibration_area"] = uncertainty.calibration_area_from_pit(pit)
    out["calibration_curve"] = {"nominal": nominal, "observed": observed}
    rc = uncertainty.risk_coverage(y, pred, dist.std)
    out["aurc"] = rc["aurc"]
    out["risk_coverage"] = {"coverage": rc["coverage"], "risk": rc["risk"]}
    out["rmse_by_std_decile"] = uncertainty.rmse_by_std_bin(y, pred, dist.std, 10)
    out["spearman_abs_error_std"] = uncertainty.spearman_error_std(y, pred, dist.std)
    return out


def evaluate_ranking(
    model,
    train: Ratings,
    test: Ratings,
    ks=(10,),
    protocol: str = "full",
    n_negatives: int = 99,
    seed: int = 0,
    threshold: float | None = None,
    exclude_train: bool = True,
    how: str = "mean",
    q: float = 0.9,
    gamma: float = 0.1,
    memory_budget: int = 2**28,
) -> EvaluationResult:
    """Top-k ranking metrics of ``model`` on ``test`` (relevant: ``value >= threshold``).

    ``protocol="full"`` (recommended): every catalogue item is a candidate, training items
    excluded unless ``exclude_train=False`` — keys ``hr@k``, ``precision@k``, ``recall@k``,
    ``ndcg@k``, ``map@k``, ``mrr``, ``auc`` (see :mod:`bayesmf.metrics.ranking`).
    ``protocol="sampled"``: each positive against ``n_negatives`` sampled negatives (seeded by
    ``seed``), plus Krichene-Rendle corrected estimates — **sampled metrics can reorder models**;
    the report carries this in ``"warning"`` (see :mod:`bayesmf.metrics.sampled`).
    ``how`` ranks by posterior ``"mean"``, an upper ``"quantile"`` ``q`` or ``"thompson"``
    sampling (models whose ``score_users`` accepts ``how``). Scores are computed in batches of
    users within ``memory_budget`` bytes.
    """
    if protocol == "full":
        report = full_ranking(model, train, test, ks, threshold, exclude_train, how, q, seed, memory_budget)
    elif protocol == "sampled":
        if not exclude_train:
            raise ConfigError("the sampled protocol always draws negatives outside the training items")
        report = sampled_ranking(model, train, test, ks, n_negatives, seed, threshold, how, q, gamma, memory_budget)
    else:
        raise ConfigError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
    return EvaluationResult(report, kind="ranking")
