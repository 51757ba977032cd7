"""Ordered probit against the Gaussian likelihood, and the two cutpoint samplers.

``--part mixing``: the cutpoint chains of the two exact schemes of :mod:`bayesmf.posterior.ordinal`
with the predictions ``f`` held fixed (MovieLens-100K-sized synthetic data, 5 categories):
Albert & Chib's ``c | z`` step alternating with ``z | c`` against the collapsed independence
Metropolis-Hastings step; lag-1 autocorrelation and effective sample size of each cutpoint per
1,000 sweeps, and seconds per sweep.

``--part compare``: BPMF Gibbs with ``likelihood="gaussian"`` and ``"ordinal"`` on the same split,
scored by :func:`bayesmf.metrics.evaluate_ratings` (the Gaussian model's predictive discretised
onto the rating levels for the categorical metrics).

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_ordinal --part compare [--data ml-100k-u1 ml-1m]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import bayesmf
from bayesmf import datasets, splits
from bayesmf.metrics import evaluate_ratings
from bayesmf.posterior import ordinal


def load(name: str):
    if name == "ml-100k-u1":
        return splits.predefined("movielens-100k", "u1")
    ratings = datasets.load("movielens-1m")
    return splits.random(ratings, 0.1, seed=42)


def _ess(x: np.ndarray) -> float:
    """Effective sample size from the initial positive sequence of autocorrelations (Geyer 1992)."""
    x = x - x.mean()
    n = x.size
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / (x.var() * n)
    total = 0.0
    for k in range(1, n - 1, 2):
        pair = acf[k] + acf[k + 1]
        if pair < 0:
            break
        total += pair
    return n / (1 + 2 * total)


def mixing(n_sweeps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = 80_000
    f = jnp.asarray(rng.normal(1.5, 0.8, n), jnp.float32)
    truth = jnp.asarray([0.0, 0.9, 2.0, 3.2])
    y = jnp.sum((f + jnp.asarray(rng.standard_normal(n), jnp.float32))[:, None] > truth[None], axis=1)
    start = ordinal.initial_cutpoints(5)

    def albert_chib(carry, key):
        c, z = carry
        k_z, k_c = jax.random.split(key)
        z = ordinal.sample_latent(k_z, f, y, c)
        c, acc = ordinal.sample_cutpoints(k_c, z, y, c)
        return (c, z), (c, acc)

    def collapsed(c, key):
        c, acc = ordinal.sample_cutpoints_mh(key, c, f, y)
        return c, (c, acc)

    print("| scheme | sweeps | acceptance | lag-1 autocorr c_1 / c_2 / c_3 | ESS per 1000 sweeps c_1 / c_2 / c_3 "
          "| s/sweep |")
    print("|---|---:|---:|---|---|---:|")
    keys = jax.random.split(jax.random.PRNGKey(seed), n_sweeps)
    schemes = (("Albert-Chib (c given z)", albert_chib, (start, f)), ("collapsed MH (c given f)", collapsed, start))
    for name, body, init in schemes:
        run = jax.jit(lambda init, keys, body=body: jax.lax.scan(body, init, keys)[1])
        jax.block_until_ready(run(init, keys[:2]))  # compile
        t0 = time.perf_counter()
        cuts, acc = jax.block_until_ready(run(init, keys))
        seconds = (time.perf_counter() - t0) / n_sweeps
        cuts = np.asarray(cuts, np.float64)[n_sweeps // 5:]
        lag1 = [np.corrcoef(cuts[:-1, k], cuts[1:, k])[0, 1] for k in (1, 2, 3)]
        ess = [1000 * _ess(cuts[:, k]) / cuts.shape[0] for k in (1, 2, 3)]
        print(f"| {name} | {n_sweeps} | {np.mean(acc):.2f} | {' / '.join(f'{v:.3f}' for v in lag1)} | "
              f"{' / '.join(f'{v:.1f}' for v in ess)} | {seconds:.4f} |", flush=True)


def compare(data: list[str], rank: int, n_samples: int, n_warmup: int, seed: int) -> None:
    print("| data | likelihood | RMSE | categorical NLL | RPS | ECE | ECE class-wise | CRPS | cov@0.9 | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in data:
        train, test = load(name)
        for likelihood in ("gaussian", "ordinal"):
            start = time.perf_counter()
            model = bayesmf.BPMF(rank=rank, n_samples=n_samples, n_warmup=n_warmup, biases=True,
                                 likelihood=likelihood, seed=seed).fit(train)
            seconds = time.perf_counter() - start
            r = evaluate_ratings(test, model, n_boot=10)
            print(f"| {name} | {likelihood} | {r['rmse']:.4f} | {r['categorical_nll']:.4f} | {r['rps']:.4f} | "
                  f"{r['ece']:.4f} | {r['ece_classwise']:.4f} | {r['crps']:.4f} | {r['coverage@0.9']:.3f} | "
                  f"{seconds:.0f} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("mixing", "compare"), default="compare")
    parser.add_argument("--data", nargs="+", default=["ml-100k-u1"])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--n-warmup", type=int, default=50)
    parser.add_argument("--sweeps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.part == "mixing":
        mixing(args.sweeps, args.seed)
    else:
        compare(args.data, args.rank, args.n_samples, args.n_warmup, args.seed)


if __name__ == "__main__":
    main()
