"""Evaluate one fitted model: the requested scalar metrics plus the curves the report plots.

Everything is computed by :mod:`bayesmf.metrics`; this module only decides what to call, times
the prediction, keeps the requested scalars and compresses the curves to a fixed size so that a
run's record stays small whatever the test-set size:

* ``calibration``: observed coverage of the central intervals at nominal levels 0, 0.01, ..., 1;
* ``risk_coverage``: RMSE of the most confident fraction ``c`` of predictions at c = 0.01, ..., 1
  (linear interpolation of the exact curve of :func:`bayesmf.metrics.risk_coverage`);
* ``history``: the estimator's per-iteration diagnostics (``history_``: training RMSE, ...);
* ``rmse_vs_draws``: for models with posterior draws, the test RMSE of the posterior-mean
  prediction built from the first ``s`` draws of every chain, ``s = 1 .. S`` (one scan over
  draws, memory O(test size)).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.metrics import evaluate_ranking, evaluate_ratings, rmse
from bayesmf.metrics.evaluate import pair_arguments
from bayesmf.metrics.uncertainty import DEFAULT_LEVELS
from bayesmf.predictive import PredictiveDistribution

CURVE_POINTS = np.linspace(0.01, 1.0, 100)
SAMPLER_INFERENCES = ("gibbs", "nuts")
HYPER_SITES = ("mu_U", "mu_V", "Lambda_U", "Lambda_V", "alpha")


def evaluate(model, train, test, experiment, prepared) -> tuple[dict, dict, float]:
    """``(scalars, curves, predict_seconds)`` for a fitted ``model`` on ``test``.

    ``scalars`` holds the requested metrics the model supports (uncertainty metrics need a
    ``predict_dist``); ``predict_seconds`` times the predictions on the test pairs alone.
    """
    ev = experiment.evaluation
    kinds = {m.kind for m in experiment.metrics}
    available, curves, predict_seconds = {}, {}, 0.0
    if kinds & {"rating", "uncertainty"}:
        start = time.perf_counter()
        extra = pair_arguments(model, test)
        if hasattr(model, "predict_dist"):
            source = model.predict_dist(test.users, test.items, **extra)
        else:
            source = np.asarray(model.predict(test.users, test.items, clip=False, **extra))
        predict_seconds = time.perf_counter() - start
        levels = sorted({*DEFAULT_LEVELS, *(m.level for m in experiment.metrics if m.level is not None)})
        report = evaluate_ratings(test, source, levels=levels, clip=ev["clip"], n_boot=ev["n_boot"], seed=ev["seed"])
        available.update({k: v for k, v in report.items() if _is_number(v)})
        if prepared.truth is not None:
            mean = source.mean if isinstance(source, PredictiveDistribution) else source
            pred = np.clip(mean, *report["clipped_to"]) if report["clipped_to"] else mean
            available["rmse_truth"] = rmse(prepared.true_mean(test), pred)
        curves.update(_uncertainty_curves(report))
    for kind, protocol, prefix in (("ranking", "full", ""), ("sampled", "sampled", "sampled_")):
        wanted = [m for m in experiment.metrics if m.kind == kind]
        if not wanted:
            continue
        ks = sorted({m.k for m in wanted if m.k is not None}) or [10]
        report = evaluate_ranking(model, train, test, ks=ks, protocol=protocol, n_negatives=ev["n_negatives"],
                                  seed=ev["seed"], threshold=ev["threshold"])
        available.update({prefix + k: v for k, v in report.items() if _is_number(v)})
    scalars = {m.name: float(available[m.name]) for m in experiment.metrics if m.name in available}
    curves["history"] = {k: [float(x) for x in v] for k, v in (getattr(model, "history_", None) or {}).items()}
    if getattr(model, "has_draws", False) and kinds & {"rating", "uncertainty"}:
        clip_to = model.rating_scale_ if ev["clip"] else None
        curves["rmse_vs_draws"] = running_rmse(model.user_samples_, model.item_samples_, test, model.global_mean_,
                                               clip_to).tolist()
    return scalars, curves, predict_seconds


def _uncertainty_curves(report: dict) -> dict:
    curves = {}
    if "calibration_curve" in report:
        cal = report["calibration_curve"]
        curves["calibration"] = {"nominal": cal["nominal"].tolist(), "observed": cal["observed"].tolist()}
    if "risk_coverage" in report:
        rc = report["risk_coverage"]
        curves["risk_coverage"] = {"coverage": CURVE_POINTS.tolist(),
                                   "risk": np.interp(CURVE_POINTS, rc["coverage"], rc["risk"]).tolist()}
    return curves


@jax.jit
def _running_rmse(U, V, users, items, y, mu, lo, hi):
    """U (S, C, n_users, D), V (S, C, n_items, D) -> (S,) RMSE of the running posterior mean."""

    def body(total, uv):
        u, v = uv
        total = total + jnp.sum(jnp.sum(u[:, users] * v[:, items], axis=-1), axis=0)
        return total, total

    n_chains = U.shape[1]
    _, totals = jax.lax.scan(body, jnp.zeros(users.shape, U.dtype), (U, V))
    counts = n_chains * jnp.arange(1, U.shape[0] + 1, dtype=U.dtype)
    pred = jnp.clip(mu + totals / counts[:, None], lo, hi)
    return jnp.sqrt(jnp.mean((pred - y) ** 2, axis=1))


def running_rmse(user_samples, item_samples, test, global_mean: float, clip_to=None) -> np.ndarray:
    """Test RMSE of the posterior mean of the first ``s`` draws (per chain), ``s = 1..S``.

    ``user_samples`` (C, S, n_users, D) and ``item_samples`` (C, S, n_items, D) as BPMF keeps
    them. Memory O(test size) besides the draws; a lax.scan over draws.
    """
    lo, hi = clip_to if clip_to else (-np.inf, np.inf)
    U = jnp.swapaxes(jnp.asarray(user_samples), 0, 1)
    V = jnp.swapaxes(jnp.asarray(item_samples), 0, 1)
    out = _running_rmse(U, V, jnp.asarray(test.users), jnp.asarray(test.items), jnp.asarray(test.values, U.dtype),
                        jnp.asarray(global_mean, U.dtype), jnp.asarray(lo, U.dtype), jnp.asarray(hi, U.dtype))
    return np.asarray(out, np.float64)


def hyper_draws(model) -> dict[str, np.ndarray] | None:
    """Hyperparameter draws of a sampler fit for trace and rank plots: ``mu_U``, ``mu_V``
    (C, S, D), the diagonals ``Lambda_U``, ``Lambda_V`` (C, S, D) and ``alpha`` (C, S) when it
    varies; None for point fits and for SVI (independent draws from a fitted guide, not a chain)."""
    name = getattr(model, "inference_name", getattr(model, "inference", None))
    if not getattr(model, "has_draws", False) or name not in SAMPLER_INFERENCES:
        return None
    out = {}
    for site in HYPER_SITES:
        draws = np.asarray(getattr(model, f"{site}_samples_"))
        if site.startswith("Lambda"):
            draws = np.diagonal(draws, axis1=-2, axis2=-1)
        if site == "alpha" and np.ptp(draws) == 0:
            continue  # fixed noise precision: nothing to diagnose
        out[site] = draws
    stats = getattr(model, "sample_stats_", None) or {}
    if "diverging" in stats:
        out["diverging"] = np.asarray(stats["diverging"])
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
