"""BPMF's factor and bias priors in the ratings' unit against the fixed ones (issue 19): test RMSE,
CRPS and 50% / 90% interval coverage of the default Gibbs fit (rank 10, biases, 50 + 200 sweeps)
with ``w0="auto", bias_prior="auto"`` (``W0 = I / sd(r)``, ``Gamma(1, var(r))``) and with the
earlier ``w0=1, bias_prior=(1, 1)``, seeds 0 and 1. Markdown rows on stdout.

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_unit_priors --data ml-100k-u1 yahoo-music

Data and splits: :func:`benchmarks.bench_calibration.load` (the Monti et al. sets keep their test
pairs with users or items unseen in training).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import bayesmf
from bayesmf import metrics
from benchmarks.bench_calibration import load

VARIANTS = {"unit (auto)": {}, "fixed w0=1, (1, 1)": dict(w0=1.0, bias_prior=(1.0, 1.0))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1", "filmtrust", "douban", "flixster",
                                                       "ml-latest-small", "ml-1m", "yahoo-music"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args(argv)
    print("| data | priors | seed | cov@0.5 | cov@0.9 | RMSE | CRPS | median residual | fit CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.data:
        train, test = load(name)
        for label, settings in VARIANTS.items():
            for seed in args.seeds:
                start = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = bayesmf.BPMF(rank=10, biases=True, seed=seed, **settings).fit(train)
                seconds = time.process_time() - start
                dist = model.predict_dist(test.users, test.items, n_draws=100)
                out = metrics.evaluate_ratings(test, dist, levels=(0.5, 0.9), n_boot=10)
                residual = float(np.median(test.values - np.asarray(dist.mean)))
                print(f"| {name} | {label} | {seed} | {out['coverage@0.5']:.3f} | {out['coverage@0.9']:.3f} | "
                      f"{out['rmse']:.4f} | {out['crps']:.4f} | {residual:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
