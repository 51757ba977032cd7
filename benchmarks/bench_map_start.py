"""BPMF's starting point: does the PMF MAP start (``init="map"``, ``n_iter`` coordinate-ascent
sweeps) change the fitted model's test accuracy and calibration against a shorter MAP start or
a random one? Prints one markdown row per (data, start, seed) and a summary per (data, start).

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_map_start
    BAYESMF_DATA=../shared/data python -m benchmarks.bench_map_start --data ml-100k-u1 --starts map10 random --seeds 0
    BAYESMF_DATA=../shared/data python -m benchmarks.bench_map_start --warmup 0 --samples 20   # a short run

Model: ``BPMF(rank=10, seed=seed)`` with every other setting at its default (``n_warmup=50``,
``n_samples=200``, or ``--warmup``/``--samples``); the start is ``init="random"`` or ``init="map"`` with
``GibbsConfig(start=MAPConfig(n_iter=k))`` (``mapK``). Data: ``ml-100k-u1`` (u1.base / u1.test)
and ``ml-1m`` (random 90/10, seed 42), loaded as :mod:`benchmarks.bench_calibration` does.
Metrics from :func:`bayesmf.metrics.evaluate_ratings` on the predictive distribution (100 draws
of the mixture): RMSE of the predictive mean, coverage of the central 50% and 90% intervals,
NLL. Seconds: the start (``BPMF._initial_factors``: the MAP start with its compilation, or the
random factors) and the whole fit, in
one process per data set (the compiled sweeps are shared by the fits after the first).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import bayesmf
from bayesmf import metrics
from bayesmf.models.inference import GibbsConfig, MAPConfig
from benchmarks.bench_calibration import load


def estimator(start: str, seed: int, **sweeps) -> bayesmf.BPMF:
    """``start``: ``"random"`` or ``"mapK"`` (K MAP sweeps); ``sweeps``: ``n_warmup``/``n_samples``."""
    if start == "random":
        return bayesmf.BPMF(rank=10, init="random", seed=seed, **sweeps)
    n_iter = int(start.removeprefix("map"))
    return bayesmf.BPMF(rank=10, init="map", inference=GibbsConfig(start=MAPConfig(n_iter=n_iter)), seed=seed,
                        **sweeps)


def timed_starts() -> list:
    """Wrap ``BPMF._initial_factors`` (the starting factors: the MAP start or random ones) so that
    every call appends its seconds to the returned list."""
    seconds = []
    original = bayesmf.BPMF._initial_factors

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        seconds.append(time.perf_counter() - t0)
        return out

    bayesmf.BPMF._initial_factors = timed
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1", "ml-1m"])
    parser.add_argument("--starts", nargs="+", default=["map10", "map2", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=50, help="n_warmup (the default: 50)")
    parser.add_argument("--samples", type=int, default=200, help="n_samples (the default: 200)")
    args = parser.parse_args(argv)
    print("| data | start | seed | RMSE | cov@0.5 | cov@0.9 | NLL | MAP train RMSE | start s | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    start_seconds = timed_starts()
    for name in args.data:
        train, test = load(name)
        for start in args.starts:
            for seed in args.seeds:
                model = estimator(start, seed, n_warmup=args.warmup, n_samples=args.samples)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(train)
                seconds = time.perf_counter() - t0
                dist = model.predict_dist(test.users, test.items, n_draws=100)
                out = metrics.evaluate_ratings(test, dist, levels=(0.5, 0.9), n_boot=10)
                nll = out.get("nll_mixture", out["nll"])
                map_rmse = model.history_.get("map_train_rmse", [float("nan")])[-1]
                row = (out["rmse"], out["coverage@0.5"], out["coverage@0.9"], nll)
                summary.setdefault((name, start), []).append(row)
                print(f"| {name} | {start} | {seed} | {row[0]:.4f} | {row[1]:.3f} | {row[2]:.3f} | {row[3]:.4f} "
                      f"| {map_rmse:.4f} | {start_seconds[-1]:.1f} | {seconds:.1f} |", flush=True)
    print("\n| data | start | seeds | RMSE mean (sd) | cov@0.5 | cov@0.9 | NLL |")
    print("|---|---|---:|---|---:|---:|---:|")
    for (name, start), rows in summary.items():
        a = np.array(rows)
        sd = a[:, 0].std(ddof=1) if len(a) > 1 else float("nan")
        print(f"| {name} | {start} | {len(a)} | {a[:, 0].mean():.4f} ({sd:.4f}) | {a[:, 1].mean():.3f} "
              f"| {a[:, 2].mean():.3f} | {a[:, 3].mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
