"""BayesFM Gibbs on MovieLens-100K u1: seconds per sample and test RMSE, against BPMF(biases=True).

Usage: ``BAYESMF_DATA=... python -m benchmarks.bench_fm [--samples 200] [--warmup 50] [--rank 10]``.
Runs on the same split (``--which``, comma-separated): ``bpmf`` (``BPMF(biases=True)``),
``fm_estimator`` (``BayesFM()``), ``fm`` (the FM sampler with ``Features()``, user and item
one-hot), ``fm_implicit`` (plus a hand-built SVD++-style implicit block: the items each user
rated, values ``1/sqrt(|N(u)|)``, user-owned; its columns drawn by colours) and
``fm_implicit_columns`` (the same, column by column), ``fm_extended`` (myFM's ml-100k-extended
features: user and item side tables, both implicit blocks) and ``fm_extended_day`` (plus day
bins); the FM runs predict the test ratings by the online mean over the draws. Seconds per
sample: wall time of all sweeps (burn-in and kept) divided by their number, after a first sweep
that compiles.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from bayesmf import splits
from bayesmf.data.design import Block, Design, check_design


def implicit_design(base: Design, train, users, n_items: int) -> Design:
    """``base`` plus a user-owned block: row u holds the items u rated in ``train`` with value
    ``1/sqrt(|N(u)|)``, columns appended after ``base``'s, one new group ``"implicit"``."""
    order = np.lexsort((train.items, train.users))
    counts = np.bincount(train.users, minlength=train.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    first = base.n_features
    values = (1.0 / np.sqrt(np.maximum(counts, 1)))[train.users[order]].astype(np.float32)
    block = Block("implicit", "user", np.asarray(users, np.int32), indptr.astype(np.int64),
                  (first + train.items[order]).astype(np.int32), values, train.n_users)
    names = base.feature_names + tuple(f"rated={i}" for i in range(n_items))
    groups = np.concatenate([base.groups, np.full(n_items, len(base.group_names), np.int32)])
    return check_design(Design(base.blocks + (block,), names, groups, base.group_names + ("implicit",)))


def rmse(pred, values) -> float:
    return float(np.sqrt(np.mean((np.clip(pred, 1, 5) - values) ** 2)))


def extended_features(time: str | None = None):
    """myFM's ml-100k-extended set: user side (age, occupation, zip prefix), item side (release
    year, genres), both implicit blocks, and with ``time`` the day bins."""
    from bayesmf.data.features import Features
    from bayesmf.data.side import side

    users, items = side("ml-100k")
    return Features(user_side=users, user_columns=("age", "occupation", "zip_prefix"), item_side=items,
                    implicit=True, implicit_items=True, time=time)


def run_fm_design(train, test, rank, n_warmup, n_samples, implicit: bool, seed=0, colouring=True, spec=None):
    """The FM sampler over the driver, test predictions as the online mean of the draws;
    ``spec``: the feature set (default ``Features()``), ``implicit``: add the hand-built block."""
    from bayesmf.data.features import Features
    from bayesmf.engines.driver import run
    from bayesmf.models.bpmf import auto_noise_prior, auto_offset_prior
    from bayesmf.posterior import fm_gibbs

    fitted = (spec or Features()).fit(train)
    d_train, d_test = fitted.design_of(train), fitted.design_of(test)
    if implicit:
        d_train = implicit_design(d_train, train, train.users, train.n_items)
        d_test = implicit_design(d_test, train, test.users, train.n_items)
    centre = float(np.mean(train.values))
    prior = fm_gibbs.FMPrior(rank, 1.0, auto_noise_prior(train, rank, True), auto_offset_prior(train))
    data = fm_gibbs.prepare(d_train, train.values, rank, centre, colouring=colouring)
    test_data = fm_gibbs.prepare(d_test, test.values, rank, centre)
    kernel = fm_gibbs.build_kernel(data, prior)
    k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
    state = kernel.init(k_init, chains=1)
    predict = jax.jit(jax.vmap(lambda s: fm_gibbs.predict(test_data, s.w0, s.w, s.V)))
    t0 = time.perf_counter()
    state, _ = kernel.step(jax.random.PRNGKey(99), state)  # compiles
    jax.block_until_ready(state.w)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run(kernel, state, k_run, n_warmup=n_warmup, n_samples=n_samples, track=predict, draw_axis=1)
    wall = time.perf_counter() - t0
    colours = [b.n_colours for b in data.blocks]
    return {"rmse": rmse(result.tracked.mean[0] if result.tracked.mean.ndim > 1 else result.tracked.mean,
                         test.values),
            "s_per_sweep": wall / (n_warmup + n_samples), "first_sweep_s": compile_s, "colours": colours}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--which", default="bpmf,fm,fm_implicit")
    args = parser.parse_args(argv)
    split = splits.predefined("movielens-100k", "u1", drop_unseen=True)
    train, test = split.train, split.test
    out = {}
    for which in args.which.split(","):
        if which == "bpmf":
            import bayesmf

            t0 = time.perf_counter()
            m = bayesmf.BPMF(rank=args.rank, biases=True, n_samples=args.samples, n_warmup=args.warmup).fit(train)
            wall = time.perf_counter() - t0
            out[which] = {"rmse": rmse(m.predict_ratings(test, clip=False), test.values),
                          "fit_s": wall, "s_per_sweep_incl_compile": wall / (args.samples + args.warmup)}
        elif which == "fm_estimator":
            import bayesmf

            t0 = time.perf_counter()
            m = bayesmf.BayesFM(rank=args.rank, n_samples=args.samples, n_warmup=args.warmup).fit(train)
            wall = time.perf_counter() - t0
            out[which] = {"rmse": rmse(m.predict_ratings(test, clip=False), test.values),
                          "fit_s": wall, "s_per_sweep_incl_compile": wall / (args.samples + args.warmup)}
        elif which in ("fm_extended", "fm_extended_day"):
            spec = extended_features("day" if which == "fm_extended_day" else None)
            out[which] = run_fm_design(train, test, args.rank, args.warmup, args.samples, False, spec=spec)
        else:
            implicit = which.startswith("fm_implicit")
            out[which] = run_fm_design(train, test, args.rank, args.warmup, args.samples, implicit,
                                       colouring=which != "fm_implicit_columns")
        print(which, json.dumps(out[which]), flush=True)
    return out


if __name__ == "__main__":
    main()
