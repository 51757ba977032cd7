"""What the Gibbs sweep's mixing moves cost: XLA compilation of the whole sweep and its warm time,
with every move on, with each one left out, and with ``rescale=False``; then each move jitted alone.

    BAYESMF_DATA=../shared/data python -m benchmarks.profile_gibbs_moves [--data ml-1m] [--sweeps 20]

BPMF at the README's configuration (rank 10, ``noise_prior=(1, 1)``, ``biases=True``, learned
offset), one chain from a random start (the sweep's cost does not depend on the start). A move is
left out by replacing its function in :mod:`bayesmf.posterior.gibbs` with the identity before
the sweep is traced. Compilation: ``lower(...).compile()`` of the jitted sweep; per sweep: the
median of ``--sweeps`` timed sweeps after three untimed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import bayesmf
from bayesmf import datasets, splits
from bayesmf.posterior import gibbs

# move -> (function name in gibbs, identity replacement)
MOVES = {
    "collapsed shift": ("collapsed_shift_move", lambda key, state, prior, **kw: state),
    "rescale": ("rescale_move", lambda key, state, prior, repeats=1: (state, jnp.zeros((), state.U.dtype))),
    "shift": ("shift_move", lambda key, state, prior: state),
    "translate": ("translate_move", lambda key, state, prior: state),
}
if hasattr(gibbs, "bias_block_move"):
    MOVES["bias block"] = ("bias_block_move", lambda key, state, data, prior, **kw: state)


@contextlib.contextmanager
def without(move: str | None):
    if move is None:
        yield
        return
    name, identity = MOVES[move]
    original = getattr(gibbs, name)
    setattr(gibbs, name, identity)
    try:
        yield
    finally:
        setattr(gibbs, name, original)


def setup(name: str):
    if name == "ml-100k-u1":
        train = splits.predefined("movielens-100k", "u1").train
    else:
        train = splits.random(datasets.load("movielens-1m"), 0.1, seed=42).train
    model = bayesmf.BPMF(rank=10, biases=True, noise_prior=(1.0, 1.0))
    model.offset_prior_, model.noise_prior_ = model._offset_prior(train), model._noise_prior(train)
    _, prior, dtype = model._validate()
    centre = float(np.mean(train.values))
    data = gibbs.prepare(train, centre, prior.rank, dtype)
    state = gibbs.init(jax.random.PRNGKey(0), prior, train.n_users, train.n_items, dtype=dtype, offset=centre)
    states = jax.tree_util.tree_map(lambda x: x[None], state)
    return data, prior, states


def time_sweep(data, prior, states, rescale: bool, sweeps: int):
    structure, values = gibbs._split_prior(prior)
    fn = jax.jit(functools.partial(gibbs._chains_sweep.__wrapped__, structure=structure, rescale=rescale))
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    compiled = fn.lower(key, states, 0.0, data, values=values).compile()
    compile_s = time.perf_counter() - start
    times = []
    for s in range(sweeps + 3):
        t0 = time.perf_counter()
        states, info = compiled(jax.random.fold_in(key, s), states, 0.0, data, values=values)
        jax.block_until_ready(states)
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times[3:]))


def time_alone(fn, *args, repeats: int = 20):
    jitted = jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml-100k-u1", "ml-1m"], default="ml-1m")
    parser.add_argument("--sweeps", type=int, default=20)
    args = parser.parse_args(argv)
    data, prior, states = setup(args.data)
    print(f"{args.data}: rank {prior.rank}, one chain, median of {args.sweeps} sweeps")
    print("| sweep | compile (s) | per sweep (s) |\n|---|---:|---:|")
    for label, move, rescale in [("every move", None, True), *((f"without {m}", m, True) for m in MOVES),
                                 ("rescale=False", None, False)]:
        with without(move):
            c, t = time_sweep(data, prior, states, rescale, args.sweeps)
        print(f"| {label} | {c:.2f} | {t:.4f} |", flush=True)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    key = jax.random.PRNGKey(2)
    alone = {"collapsed shift": lambda k, s: gibbs.collapsed_shift_move(k, s, prior),
             "rescale": lambda k, s: gibbs.rescale_move(k, s, prior)[0],
             "shift + translate": lambda k, s: gibbs.translate_move(k, gibbs.shift_move(k, s, prior), prior)}
    if "bias block" in MOVES:
        alone["bias block"] = lambda k, s: gibbs.bias_block_move(k, s, data, prior)
    print("\n| move alone | compile (s) | per call (s) |\n|---|---:|---:|")
    for label, fn in alone.items():
        c, t = time_alone(fn, key, state)
        print(f"| {label} | {c:.2f} | {t:.4f} |", flush=True)


if __name__ == "__main__":
    main()
