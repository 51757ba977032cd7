"""BPMF on MovieLens: accuracy, seconds per Gibbs sweep, SVI and NUTS timings.

    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py gibbs --data ml-1m --rank 10 --samples 200
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py svi --data ml-1m
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py nuts --data ml-100k

Splits: ml-100k = the predefined u1.base/u1.test; ml-1m = random 90/10 with
``numpy.random.default_rng(42).permutation`` over rows (first 90% train). Timings are taken
after ``jax.block_until_ready``; the sweep time is the median over sweeps after compilation
(from a second, warm fit of the same shapes). Whole-process wall time is printed at exit —
compare it with the in-process figures.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import time

import numpy as np

START = time.perf_counter()


def load(name):
    from bayesmf import datasets, splits

    if name == "ml-100k":
        return splits.predefined("movielens-100k", "u1")
    return splits.random(datasets.load("movielens-1m"), 0.1, seed=42)


def rmse(model, test):
    pred = model.predict_ratings(test)
    return float(np.sqrt(np.mean((pred - test.values) ** 2)))


def sweep_seconds(train, rank, sweeps, **kw):
    """Median seconds per Gibbs sweep, timed per sweep on already-compiled code."""
    import functools

    import jax

    from bayesmf.models.bpmf import BPMF
    from bayesmf.posterior import gibbs

    model = BPMF(rank=rank, **kw)
    prior = model.prior
    m = float(np.mean(train.values))
    data = gibbs.prepare(train, m)
    state = gibbs.init(jax.random.PRNGKey(0), prior, train.n_users, train.n_items)
    state = jax.tree_util.tree_map(lambda x: x[None], state)
    kernel = functools.partial(gibbs.chain_step, data=data, prior=prior)
    keys = jax.random.split(jax.random.PRNGKey(1), 1)
    state, _ = jax.block_until_ready(kernel(keys, state, 0.0))  # compile
    times = []
    for t in range(sweeps):
        keys = jax.random.split(jax.random.PRNGKey(t), 1)
        t0 = time.perf_counter()
        state, info = jax.block_until_ready(kernel(keys, state, 0.0))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), data.user_blocks.n_slots


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("inference", choices=["gibbs", "svi", "nuts", "map", "sweep"])
    parser.add_argument("--data", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--learn-noise", action="store_true", help="alpha ~ Gamma(1, 1) instead of fixed 2")
    parser.add_argument("--biases", action="store_true", help="user/item biases with Gamma(1, 1) precisions")
    parser.add_argument("--svi-steps", type=int, default=3000)
    parser.add_argument("--guide", default="meanfield")
    parser.add_argument("--svi-batch", type=int, default=100_000)
    parser.add_argument("--svi-lr", type=float, default=0.01)
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--max-depth", type=int, default=None, help="NUTS maximum tree depth (default NumPyro's 10)")
    args = parser.parse_args()
    atexit.register(lambda: print(f"whole-process wall time {time.perf_counter() - START:.1f} s"))

    from bayesmf.models.bpmf import BPMF

    train, test = load(args.data)
    noise = dict(noise_prior=(1.0, 1.0)) if args.learn_noise else {}
    if args.biases:
        noise["biases"] = True
    out = {"data": args.data, "inference": args.inference, "rank": args.rank, "learn_noise": args.learn_noise,
           "biases": args.biases, "threads": os.environ.get("XLA_FLAGS", "default")}
    if args.inference == "sweep":
        out["seconds_per_sweep"], out["padded_slots"] = sweep_seconds(train, args.rank, 30, **noise)
        print(json.dumps(out))
        return
    kw = dict(rank=args.rank, inference=args.inference, n_samples=args.samples, n_warmup=args.warmup, **noise)
    if args.inference == "nuts":
        kw["chains"] = args.chains
        if args.max_depth is not None:
            kw["nuts_max_tree_depth"] = args.max_depth
    if args.inference == "svi":
        kw.update(svi_steps=args.svi_steps, svi_guide=args.guide, svi_batch_size=args.svi_batch,
                  svi_learning_rate=args.svi_lr)
    t0 = time.perf_counter()
    model = BPMF(**kw).fit(train)
    out["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["rmse"] = rmse(model, test)
    out["predict_seconds"] = time.perf_counter() - t0
    if args.inference == "gibbs":
        out["seconds_per_sweep"], out["padded_slots"] = sweep_seconds(train, args.rank, 20, **noise)
    if args.inference == "nuts":
        stats = model.sample_stats_
        out["divergences"] = int(stats["diverging"].sum())
        out["mean_leapfrog_steps"] = float(stats["num_steps"].mean())
        import arviz as az

        idata = model.to_arviz(factors=False)
        ess = az.ess(idata)
        out["min_ess_hyper"] = float(min(float(ess[v].min()) for v in ess.data_vars))
    if model.has_draws:
        import arviz as az

        idata = model.to_arviz(factors=False)
        out["alpha_mean"] = float(model.alpha_samples_.mean())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
