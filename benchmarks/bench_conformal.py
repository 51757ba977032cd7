"""Bayesian predictive intervals against the distribution-free reference: BPMF Gibbs (defaults)
next to split-conformal ALS and FunkSVD, on MovieLens-100K u1. Prints a markdown table: test
RMSE, coverage of the 50% and 90% intervals, mean width of the 90% interval, CRPS, fit seconds
(split-conformal: the fit on the proper 90% plus scoring the 10% calibration ratings).

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_conformal [--seeds 0 1] [--fraction 0.1]

Figures: benchmarks/RESULTS.md, "Split-conformal intervals next to BPMF".
"""

from __future__ import annotations

import argparse
import time

import bayesmf
from bayesmf import metrics, splits


def rows(train, test, seed: int, fraction: float):
    yield "BPMF Gibbs (defaults)", lambda: bayesmf.BPMF(rank=10, seed=seed).fit(train)
    yield "BPMF Gibbs (noise learned, biases)", lambda: bayesmf.BPMF(
        rank=10, noise_prior=(1.0, 1.0), biases=True, seed=seed).fit(train)
    for name, est in (("ALS", bayesmf.ALS(rank=10, seed=seed)), ("FunkSVD", bayesmf.FunkSVD(rank=10, seed=seed))):
        yield f"split-conformal {name} ({fraction:g} calibration)", (
            lambda est=est: metrics.ConformalRegressor(est, calibration_fraction=fraction, seed=seed).fit(train))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    train, test = splits.predefined("movielens-100k", "u1")
    print("| model | seed | RMSE | cov@0.5 | cov@0.9 | width@0.9 | CRPS | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for seed in args.seeds:
        for name, fit in rows(train, test, seed, args.fraction):
            start = time.perf_counter()
            model = fit()
            seconds = time.perf_counter() - start
            r = metrics.evaluate_ratings(test, model, levels=(0.5, 0.9), n_boot=100)
            print(f"| {name} | {seed} | {r['rmse']:.4f} | {r['coverage@0.5']:.3f} | {r['coverage@0.9']:.3f} | "
                  f"{r['width@0.9']:.3f} | {r['crps']:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
