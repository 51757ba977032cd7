"""Time the classical bayesmf engines on MovieLens: RMSE, fit seconds, seconds per iteration.

Protocols: ML-1M random 90/10 (``splits.random(r, 0.1, seed=42)``: the rng(42) permutation,
first 90% train) and ML-100K ``u1.base``/``u1.test``. Each configuration is fitted ``--repeats``
times in this process; the first fit includes JIT compilation, so the table reports the first
fit and the median of the later ones (warm). Peer numbers are not measured here.

    BAYESMF_DATA=/work/shared/data .venv/bin/python benchmarks/bench_engines.py [--data ml-100k] [--repeats 3]

``--als-sweep`` instead times one compiled sweep of explicit ALS alone (the issue's "per
iteration" figure without the fit's host-side set-up): the engine's jitted ``step`` on the data
laid out as ``bayesmf.ALS`` lays it out, the median of ``--sweeps`` calls after compiling.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

T0 = time.perf_counter()

import bayesmf  # noqa: E402
from bayesmf import datasets, splits  # noqa: E402

CONFIGS = {
    "Baseline (ALS biases, Surprise defaults)": lambda: bayesmf.Baseline(),
    "ALS explicit rank 10, 10 it": lambda: bayesmf.ALS(rank=10, regularization=0.05, n_iter=10),
    "ALS nonnegative rank 10, 10 it": lambda: bayesmf.ALS(rank=10, regularization=0.05, n_iter=10, nonnegative=True),
    "NMF (Surprise defaults: k=15, 50 it)": lambda: bayesmf.NMF(),
    "NMF biased k=15, 50 it": lambda: bayesmf.NMF(biases=True),
    "FunkSVD k=10, 20 ep, lr .01 (Cornac MF cfg)": lambda: bayesmf.FunkSVD(rank=10, learning_rate=0.01, init_std=0.01),
    "FunkSVD (Surprise SVD defaults: k=100, 20 ep)": lambda: bayesmf.FunkSVD(),
    "SVDpp (Surprise defaults: k=20, 20 ep)": lambda: bayesmf.SVDpp(),
    "ImplicitALS k=64, 15 it (CG)": lambda: bayesmf.ImplicitALS(rank=64),
    "ImplicitALS k=128, 15 it (CG)": lambda: bayesmf.ImplicitALS(rank=128),
}


def load(name):
    if name == "ml-100k":
        return splits.predefined("movielens-100k", "u1")
    return splits.random(datasets.load("movielens-1m"), 0.1, seed=42)


def n_iterations(model) -> int:
    return getattr(model, "n_iter", None) or model.n_epochs


def als_sweep_seconds(train, rank: int, sweeps: int) -> float:
    """Median seconds of one compiled ``bayesmf.engines.als.step`` (users then items), rank
    ``rank`` with biases and regularisation 0.1 (the harness's als-explicit settings)."""
    import jax
    import jax.numpy as jnp

    from bayesmf.engines import als
    from bayesmf.engines.chunks import gram_chunks_for
    from bayesmf.engines.sparse import rating_arrays

    ratings = rating_arrays(train)
    data = als.ALSData(*(gram_chunks_for(train, side, rank + 1) for side in ("user", "item")),
                       jnp.asarray(train.user_counts, jnp.float32), jnp.asarray(train.item_counts, jnp.float32),
                       ratings, jnp.mean(ratings.values))
    config = als.ALSConfig(0.1, 0.1, True)
    state = als.init_factors(0, train.n_users, train.n_items, rank, 0.1)
    state, _ = jax.block_until_ready(als.sweep(state, data, config))  # compile
    times = []
    for _ in range(sweeps):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(als.sweep(state, data, config))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["ml-100k", "ml-1m"], default="ml-1m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="", help="substring filter on configuration names")
    ap.add_argument("--als-sweep", action="store_true", help="time one compiled explicit-ALS sweep instead")
    ap.add_argument("--rank", type=int, default=10, help="with --als-sweep")
    ap.add_argument("--sweeps", type=int, default=21, help="with --als-sweep")
    args = ap.parse_args(argv)
    split = load(args.data)
    train, test = split[0], split[1]
    if args.als_sweep:
        seconds = als_sweep_seconds(train, args.rank, args.sweeps)
        print(f"{args.data}: one compiled ALS sweep, rank {args.rank} with biases: {1e3 * seconds:.1f} ms "
              f"(median of {args.sweeps}); whole process {time.perf_counter() - T0:.1f} s")
        return
    print(f"{args.data}: train {train.nnz}, test {test.nnz}")
    print(f"| {'configuration':48s} | RMSE  | first fit s | warm fit s | s/iteration |")
    print(f"|{'-' * 50}|-------|-------------|------------|-------------|")
    for name, make in CONFIGS.items():
        if args.only not in name:
            continue
        times = []
        for _ in range(args.repeats):
            model = make()
            t = time.perf_counter()
            model.fit(train)  # fit ends with device_get of the factors: all work is done
            times.append(time.perf_counter() - t)
        if "Implicit" in name:
            rmse = float("nan")  # implicit feedback: scores are preferences, RMSE is meaningless
        else:
            pred = model.predict(test.users, test.items, unknown="fallback")
            rmse = float(np.sqrt(np.mean((pred - test.values) ** 2)))
        warm = float(np.median(times[1:])) if len(times) > 1 else times[0]
        print(f"| {name:48s} | {rmse:.4f} | {times[0]:11.2f} | {warm:10.2f} | {warm / n_iterations(model):11.4f} |",
              flush=True)
    print(f"whole process wall time: {time.perf_counter() - T0:.1f} s")


if __name__ == "__main__":
    main()
