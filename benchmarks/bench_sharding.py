"""Seconds per sweep of the sharded fits (``devices=``) against the unsharded one, and their agreement.

BPMF Gibbs at rank 10 and explicit ALS at rank 32 on MovieLens-1M (all ratings), each laid out as
the estimators lay it out, timed as the engines' kernels (``build_kernel(...).step``, what the
driver calls): the median of ``--sweeps`` warm sweeps after one that compiles, for
``devices=None`` and for meshes of 1 and ``--devices`` host CPU devices. Then the agreement:
the largest absolute difference of the final factors (ALS) and of the last sweep's draw of
``U`` (Gibbs) between the unsharded run and each mesh, after the same sweeps from the same start.
The device count is fixed when JAX starts, so this script sets
``XLA_FLAGS=--xla_force_host_platform_device_count`` itself (run it in a fresh process):

    BAYESMF_DATA=/work/shared/data .venv/bin/python benchmarks/bench_sharding.py [--devices 2] [--sweeps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="movielens-1m")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--sweeps", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()

    import jax
    import numpy as np

    from bayesmf import datasets
    from bayesmf.engines import als
    from bayesmf.engines.chunks import gram_chunks_for
    from bayesmf.engines.sharding import device_mesh
    from bayesmf.engines.sparse import rating_arrays
    from bayesmf.posterior import gibbs
    from bayesmf.posterior.model import Prior

    train = datasets.load(args.data)
    print(f"{args.data}: {train.n_users} users, {train.n_items} items, {train.nnz} ratings; "
          f"{jax.device_count()} host devices, {os.cpu_count()} cores")
    meshes = {"None": None, "1": device_mesh(jax.devices()[:1]),
              str(args.devices): device_mesh(jax.devices()[:args.devices])}

    def timed(step, state, key):
        seconds = []
        for t in range(args.sweeps + 1):
            start = time.perf_counter()
            state = jax.block_until_ready(step(jax.random.fold_in(key, t), state)[0])
            seconds.append(time.perf_counter() - start)
        return state, seconds[0], statistics.median(seconds[1:])

    # ALS rank 32, as bayesmf.ALS lays it out
    f32 = np.float32
    data = als.ALSData(*(gram_chunks_for(train, side, 33, dtype=f32) for side in ("user", "item")),
                       jax.numpy.asarray(train.user_counts, f32), jax.numpy.asarray(train.item_counts, f32),
                       rating_arrays(train, f32), jax.numpy.asarray(np.mean(train.values), f32))
    config = als.ALSConfig(0.05, 0.05, True)
    finals = {}
    for label, mesh in meshes.items():
        kernel = als.build_kernel(data if mesh is None else als.shard(data, mesh), config)
        start = als.init_factors(0, train.n_users, train.n_items, 32, 0.1, f32)
        state, first, warm = timed(kernel.step, start, jax.random.PRNGKey(0))
        finals[label] = np.asarray(state.user_factors)
        diff = np.abs(finals[label] - finals["None"]).max()
        print(f"ALS rank 32   devices={label:>4}: first sweep {first:6.2f} s, warm {warm:6.3f} s/sweep; "
              f"max |U - U(None)| {diff:.2e}")

    # BPMF Gibbs rank 10, one chain, biases, learned offset and noise precision
    centre = float(np.mean(train.values))
    gdata = gibbs.prepare(train, centre, 10)
    prior = Prior(rank=10, alpha=2.0, noise_prior=(1.0, 0.5), offset_prior=(centre, 1.0), bias_prior=(1.0, 1.0))
    start = als.init_factors(0, train.n_users, train.n_items, 10, 0.1, f32)
    for label, mesh in meshes.items():
        kernel = gibbs.build_kernel(gdata if mesh is None else gibbs.shard(gdata, mesh), prior)
        one = kernel.init(jax.random.PRNGKey(1), train.n_users, train.n_items, U=start.user_factors,
                          V=start.item_factors, offset=centre)
        states = jax.tree.map(lambda x: x[None], one)
        state, first, warm = timed(kernel.step, states, jax.random.PRNGKey(2))
        finals[f"g{label}"] = np.asarray(state.U)
        diff = np.abs(finals[f"g{label}"] - finals["gNone"]).max()
        same = "" if label == "None" else f", same as devices=1: {np.array_equal(finals[f'g{label}'], finals['g1'])}"
        print(f"Gibbs rank 10 devices={label:>4}: first sweep {first:6.2f} s, warm {warm:6.3f} s/sweep; "
              f"max |U - U(None)| {diff:.2e}{same}")


if __name__ == "__main__":
    main()
