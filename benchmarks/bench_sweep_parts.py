"""Where a warm BPMF Gibbs sweep's time goes: each part jitted on its own and timed after
``jax.block_until_ready``, in process CPU time (with one XLA thread it is the part's own cost,
less sensitive than wall time to other jobs on the machine).

    BAYESMF_DATA=../shared/data XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/bench_sweep_parts.py --rank 32

ML-1M random 90/10 (seed 42), biases and a learned noise precision, one chain. The parts of a
half step are those of :func:`bayesmf.posterior.gibbs.rows_with_biases`: the Gram matrices and
right-hand sides (:func:`bayesmf.engines.chunks.gram_rhs`, with its gather alone), the batched
Cholesky factorisation, one triangular solve, the whole Gaussian draw by each kernel of
:func:`bayesmf.engines.linalg.sample_gaussian`; then the hyperparameter draw and the moves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def cpu_ms(fn, *args, reps: int = 5):
    """(min, median) process CPU milliseconds of ``fn(*args)`` after one call that compiles it."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        jax.block_until_ready(fn(*args))
        times.append(1e3 * (time.process_time() - t0))
    return min(times), float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    from bayesmf import datasets, splits
    from bayesmf.engines import chunks, linalg
    from bayesmf.models.bpmf import BPMF
    from bayesmf.posterior import gibbs

    train, _ = splits.random(datasets.load("movielens-1m"), 0.1, seed=42)
    prior = BPMF(rank=args.rank, biases=True, noise_prior=(1.0, 1.0)).prior
    data = gibbs.prepare(train, float(np.mean(train.values)), args.rank)
    states = jax.tree_util.tree_map(lambda x: x[None], gibbs.init(jax.random.PRNGKey(0), prior, train.n_users,
                                                                  train.n_items))
    key = jax.random.PRNGKey(1)
    for _ in range(3):  # away from the starting point
        states, _ = gibbs.chains_sweep(key, states, 0.0, data, prior)
    rows = []

    def record(name, fn, *a):
        rows.append((name, *cpu_ms(fn, *a, reps=args.reps)))
        print(f"{name:44s} {rows[-1][1]:8.1f} {rows[-1][2]:8.1f}", flush=True)

    print(f"{'part (ms of CPU time)':44s} {'min':>8s} {'median':>8s}")
    record("whole sweep", lambda s: gibbs.chains_sweep(key, s, 0.0, data, prior), states)
    record("whole sweep, rescale=False", lambda s: gibbs.chains_sweep(key, s, 0.0, data, prior, rescale=False),
           states)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    sides = (("users", data.user_chunks, state.V, state.b_V), ("items", data.item_chunks, state.U, state.b_U))
    gram = jax.jit(lambda c, f, b: chunks.gram_rhs(c, f, b, 0.1))
    gather = jax.jit(lambda c, f: jax.lax.map(
        lambda cols: jnp.sum(jnp.concatenate([f, jnp.zeros((1, f.shape[1]), f.dtype)])[cols], axis=1), c.cols))
    for side, ch, other, bias in sides:
        features = jnp.concatenate([other, jnp.ones((other.shape[0], 1), other.dtype)], axis=1)
        G, b, _ = gram(ch, features, bias)
        record(f"{side}: gram_rhs (k = {features.shape[1]})", gram, ch, features, bias)
        record(f"{side}: its gather alone", gather, ch, features)
        P, h = 2.0 * G + jnp.eye(G.shape[-1], dtype=G.dtype), 2.0 * b
        L = jnp.linalg.cholesky(P)
        record(f"{side}: batched Cholesky {P.shape}", jax.jit(jnp.linalg.cholesky), P)
        record(f"{side}: one triangular solve", jax.jit(lambda L, h: solve_triangular(L, h[..., None], lower=True)),
               L, h)
        for unrolled in (False, True):
            record(f"{side}: Gaussian draw, {'unrolled' if unrolled else 'LAPACK'}",
                   jax.jit(lambda k, P, h, u=unrolled: linalg.sample_gaussian(k, P, h, unrolled=u)[0]), key, P, h)
    record("Normal-Wishart draw (one side)", jax.jit(lambda k, s: gibbs.sample_normal_wishart(k, s.U, prior)), key,
           state)
    record("collapsed_shift_move", jax.jit(lambda k, s: gibbs.collapsed_shift_move(k, s, prior)), key, state)
    record("rescale_move", jax.jit(lambda k, s: gibbs.rescale_move(k, s, prior)), key, state)
    record("shift_move", jax.jit(lambda k, s: gibbs.shift_move(k, s, prior)), key, state)
    record("bias_block_move", jax.jit(lambda k, s, d: gibbs.bias_block_move(k, s, d, prior)), key, state, data)


if __name__ == "__main__":
    main()
