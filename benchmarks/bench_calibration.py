"""Calibration of predictive intervals across real data sets and methods: BPMF Gibbs with each
noise model, BPMF SVI, BPMF NUTS (on request: ``--methods nuts-gaussian``; one chain, 100 + 100,
tree depth 7), bootstrap ALS and split-conformal ALS. Prints one markdown table: coverage
of the 50% and 90% intervals, width of the 90% interval, NLL (of the mixture where the predictive
is one), CRPS, RMSE and fit seconds.

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_calibration [--data ml-100k-u1 ...] [--methods ...]

Data sets: ``ml-100k-u1`` (u1.base / u1.test), ``ml-1m`` (random 90/10, seed 42),
``ml-latest-small`` and ``filmtrust`` (random 80/20, seed 0; FilmTrust's 3 pairs rated twice are
merged into their mean, and the count is printed), ``yahoo-music`` (the Monti et al. 3000 x 3000
sub-matrix on a 1-100 scale, its published train/test masks).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

import bayesmf
from bayesmf import Ratings, datasets, metrics, splits

BPMF_COMMON = dict(rank=10, biases=True, seed=0)  # the noise and offset priors at their defaults
METHODS = {
    "gibbs-gaussian": lambda: bayesmf.BPMF(**BPMF_COMMON),
    "gibbs-student_t": lambda: bayesmf.BPMF(noise="student_t", **BPMF_COMMON),
    "gibbs-heteroscedastic": lambda: bayesmf.BPMF(noise="heteroscedastic", **BPMF_COMMON),
    "svi-gaussian": lambda: bayesmf.BPMF(inference="svi", **BPMF_COMMON),
    "nuts-gaussian": lambda: bayesmf.BPMF(inference={"name": "nuts", "max_tree_depth": 7}, n_warmup=100,
                                          n_samples=100, **BPMF_COMMON),
    "bootstrap-als": lambda: metrics.BootstrapEnsemble(bayesmf.ALS(rank=10, seed=0), n_models=10, seed=0),
    "conformal-als": lambda: metrics.ConformalRegressor(bayesmf.ALS(rank=10, seed=0), calibration_fraction=0.1),
}


def _data_dir() -> Path:
    return Path(os.environ.get("BAYESMF_DATA", "../shared/data"))


def _filmtrust():
    folder = _data_dir() / "filmtrust"
    rows = np.concatenate([np.loadtxt(folder / f"ratings_{k}.txt", ndmin=2) for k in range(4)])
    keys, inverse, counts = np.unique(rows[:, :2], axis=0, return_inverse=True, return_counts=True)
    values = np.bincount(inverse.ravel(), weights=rows[:, 2]) / counts  # a pair rated twice: the mean
    print(f"filmtrust: {rows.shape[0]} lines, {int((counts > 1).sum())} pairs rated more than once merged")
    return Ratings.from_ids(keys[:, 0].astype(np.int64), keys[:, 1].astype(np.int64), values)


def _monti(name: str):
    npz = np.load(_data_dir() / f"{name}-monti" / f"{name}_ratings.npz")
    ratings = Ratings.from_arrays(npz["user"], npz["item"], npz["rating"], n_users=int(npz["shape"][0]),
                                  n_items=int(npz["shape"][1]))
    test = npz["is_test"].astype(bool)
    return ratings.subset(np.flatnonzero(~test)), ratings.subset(np.flatnonzero(test))


def load(name: str):
    if name == "ml-100k-u1":
        return splits.predefined("movielens-100k", "u1")
    if name == "ml-1m":
        return splits.random(datasets.load("movielens-1m"), 0.1, seed=42)
    if name == "ml-latest-small":
        return splits.random(datasets.load("movielens-latest-small"), 0.2, seed=0)
    if name == "filmtrust":
        return splits.random(_filmtrust(), 0.2, seed=0)
    if name == "yahoo-music":
        return _monti("yahoo_music")
    if name in ("douban", "flixster"):
        return _monti(name)
    raise SystemExit(f"unknown data set {name!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1", "ml-latest-small", "filmtrust", "yahoo-music"])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "nuts-gaussian"],
                        choices=list(METHODS), help="default: every method but NUTS (minutes per data set)")
    args = parser.parse_args(argv)
    print("| data | method | cov@0.5 | cov@0.9 | width@0.9 | NLL | CRPS | RMSE | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.data:
        train, test = load(name)
        for method in args.methods:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = METHODS[method]().fit(train)
            seconds = time.perf_counter() - start
            if isinstance(model, bayesmf.BPMF):
                dist = model.predict_dist(test.users, test.items, n_draws=100)
            else:
                dist = model.predict_dist(test.users, test.items)
            out = metrics.evaluate_ratings(test, dist, levels=(0.5, 0.9), n_boot=10)
            nll = out.get("nll_mixture", out["nll"])
            print(f"| {name} | {method} | {out['coverage@0.5']:.3f} | {out['coverage@0.9']:.3f} | "
                  f"{out['width@0.9']:.3f} | {nll:.3f} | {out['crps']:.4f} | {out['rmse']:.4f} | {seconds:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
