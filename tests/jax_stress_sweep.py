"""A JIT-compiled, Gibbs-style sweep run repeatedly: the workload that exposed the jaxlib 0.10.2
CPU deadlock (a process sleeping forever inside ``block_until_ready``).

Each sweep does what a blocked BPMF Gibbs sweep does: per-row Gram matrices by segment sums over
sorted ratings, a batched Cholesky factorisation and solve, and Gaussian draws, first for users
and then for items. Usage: ``python jax_stress_sweep.py [n_users n_items n_ratings rank sweeps]``.
Prints ``ok <seconds>`` when done; a hang is detected by the caller's timeout.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(n_users=2000, n_items=1000, nnz=200_000, rank=10, sweeps=30):
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, n_users, nnz)).astype(np.int32)
    items = rng.integers(0, n_items, nnz).astype(np.int32)
    by_item = np.argsort(items, kind="stable")
    values = jnp.asarray(rng.normal(size=nnz).astype(np.float32))

    def draw_rows(key, other, rows, cols, vals, n_rows):
        feats = other[cols]
        gram = jax.ops.segment_sum(feats[:, :, None] * feats[:, None, :], rows, n_rows, indices_are_sorted=True)
        rhs = jax.ops.segment_sum(feats * vals[:, None], rows, n_rows, indices_are_sorted=True)
        prec = 2.0 * gram + jnp.eye(rank)
        chol = jnp.linalg.cholesky(prec)
        mean = jax.scipy.linalg.cho_solve((chol, True), 2.0 * rhs[..., None])[..., 0]
        z = jax.random.normal(key, mean.shape)
        noise = jax.scipy.linalg.solve_triangular(chol, z[..., None], lower=True, trans=1)[..., 0]
        return mean + noise

    @jax.jit
    def sweep(key, u, v):
        ku, kv = jax.random.split(key)
        u = draw_rows(ku, v, users, items, values, n_users)
        v = draw_rows(kv, u, items[by_item], users[by_item], values[by_item], n_items)
        return u, v

    u = jnp.zeros((n_users, rank))
    v = jnp.asarray(rng.normal(size=(n_items, rank)).astype(np.float32))
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    for _ in range(sweeps):
        key, sub = jax.random.split(key)
        u, v = sweep(sub, u, v)
        jax.block_until_ready((u, v))
    print(f"ok {time.perf_counter() - start:.2f}", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
