"""The global offset in the model or plugged in: BPMF Gibbs on real splits, both settings, one
process. Prints one row per (data set, offset setting, seed): test RMSE, coverage of the 50% and
90% predictive intervals, the offset's posterior mean and sd, fit seconds.

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_offset [--data ml-100k-u1 ml-1m] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bayesmf
from bayesmf import datasets, splits


def load(name: str):
    if name == "ml-100k-u1":
        return splits.predefined("movielens-100k", "u1")
    ratings = datasets.load("movielens-1m")
    return splits.random(ratings, 0.1, seed=42)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rank", type=int, default=10)
    args = parser.parse_args(argv)
    print("| data | offset | seed | RMSE | cov@0.5 | cov@0.9 | offset mean | offset sd | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.data:
        train, test = load(name)
        for offset in ("auto", None):
            for seed in args.seeds:
                start = time.perf_counter()
                model = bayesmf.BPMF(rank=args.rank, n_samples=200, n_warmup=50, noise_prior=(1.0, 1.0), biases=True,
                                     offset_prior=offset, seed=seed).fit(train)
                seconds = time.perf_counter() - start
                dist = model.predict_dist(test.users, test.items)
                cover = []
                for level in (0.5, 0.9):
                    lo, hi = dist.interval(level)
                    cover.append(np.mean((test.values >= lo) & (test.values <= hi)))
                rmse = np.sqrt(np.mean((model.predict_ratings(test) - test.values) ** 2))
                draws = model.offset_samples_
                m, s = (np.nan, np.nan) if draws is None else (draws.mean(), draws.std())
                print(f"| {name} | {offset} | {seed} | {rmse:.4f} | {cover[0]:.3f} | {cover[1]:.3f} | {m:.4f} | "
                      f"{s:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
