"""How well several Gibbs chains mix, with and without the rescaling move: R-hat and bulk ESS of
the identified summaries (bayesmf.posterior.convergence) and of the predicted mean at 200 test
pairs, for BPMF at the README's configuration (rank 10, noise_prior=(1, 1), biases=True) with
4 chains from over-dispersed starts. Prints a markdown table per data set.

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_mixing [--data ml-100k-u1 ml-1m] [--chains 4]
        [--moves on off] [--rescale-repeats N]

``--rescale-repeats`` sets ``gibbs.RESCALE_REPEATS`` (rescaling moves per sweep) for this run.

``--moves on`` alone fits only the default sampler (with the invariance moves; a column of NaN
for the other).
"""

from __future__ import annotations

import argparse
import time
import warnings

import arviz as az
import numpy as np

import bayesmf
from bayesmf import datasets, splits
from bayesmf.models.inference import GibbsConfig
from bayesmf.posterior import gibbs


def load(name: str):
    if name == "ml-100k-u1":
        return splits.predefined("movielens-100k", "u1")
    return splits.random(datasets.load("movielens-1m"), 0.1, seed=42)


def prediction_draws(model, users, items) -> np.ndarray:
    """(chains, draws, pairs): offset + biases + u.v of every kept draw."""
    f = np.einsum("csnk,csnk->csn", model.user_samples_[:, :, users], model.item_samples_[:, :, items])
    if model.b_U_samples_ is not None:
        f = f + model.b_U_samples_[:, :, users] + model.b_V_samples_[:, :, items]
    if model.offset_samples_ is not None:
        f = f + model.offset_samples_[:, :, None]
    return f


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1"])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--moves", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--rescale-repeats", type=int, default=gibbs.RESCALE_REPEATS)
    args = parser.parse_args(argv)
    gibbs.RESCALE_REPEATS = args.rescale_repeats  # read when the sweep is traced, i.e. by the first fit
    for name in args.data:
        train, test = load(name)
        pick = np.random.default_rng(0).choice(test.nnz, 200, replace=False)
        rows = {}
        for rescale in (flag == "on" for flag in args.moves):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = bayesmf.BPMF(rank=10, n_samples=args.samples, n_warmup=args.warmup, chains=args.chains,
                                     noise_prior=(1.0, 1.0), biases=True, inference=GibbsConfig(rescale=rescale),
                                     seed=args.seed).fit(train)
            seconds = time.perf_counter() - start
            figures = dict(model.diagnostics_)
            preds = prediction_draws(model, test.users[pick], test.items[pick])
            dataset = az.convert_to_dataset(preds)
            rhat = np.asarray(az.rhat(dataset)["x"]).ravel()
            ess = np.asarray(az.ess(dataset, method="bulk")["x"]).ravel()
            figures["predictions (median of 200)"] = (float(np.median(rhat)), float(np.median(ess)))
            figures["predictions (worst of 200)"] = (float(np.max(rhat)), float(np.min(ess)))
            rmse = float(np.sqrt(np.mean((model.predict_ratings(test) - test.values) ** 2)))
            accept = float(np.mean(model.history_["rescale_accept"]))
            rows[rescale] = (figures, rmse, seconds, accept)
        print(f"\n{name}: {args.chains} chains x {args.samples} draws after {args.warmup} sweeps, seed {args.seed}, "
              f"{args.rescale_repeats} rescaling(s) per sweep")
        print("| summary | R-hat (move) | ESS (move) | R-hat (no move) | ESS (no move) |")
        print("|---|---:|---:|---:|---:|")
        missing = ({}, np.nan, np.nan, np.nan)
        on, off = rows.get(True, missing), rows.get(False, missing)
        for summary in on[0] or off[0]:
            (r1, e1), (r0, e0) = (side[0].get(summary, (np.nan, np.nan)) for side in (on, off))
            print(f"| {summary} | {r1:.3f} | {e1:.0f} | {r0:.3f} | {e0:.0f} |")
        for label, key in (("test RMSE", 1), ("fit seconds", 2), ("move acceptance", 3)):
            print(f"| {label} | {on[key]:.4f} | | {off[key]:.4f} | |")


if __name__ == "__main__":
    main()
