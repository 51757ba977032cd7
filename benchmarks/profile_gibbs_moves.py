"""What the Gibbs sweep's mixing moves cost: XLA compilation of the whole sweep and its warm time,
with every move on, with each one left out, and with ``rescale=False``; then each move jitted alone.

    BAYESMF_DATA=../shared/data python -m benchmarks.profile_gibbs_moves [--data ml-1m] [--sweeps 20]
        [--without "collapsed shift" rescale ...]

BPMF at the README's configuration (rank 10, ``noise_prior=(1, 1)``, ``biases=True``, learned
offset), one chain from a random start (the sweep's cost does not depend on the start). A move is
left out by replacing its function in :mod:`bayesmf.posterior.gibbs` with the identity before
the sweep is traced. HLO ops: operations in the traced program (load-independent); compilation:
``lower(...).compile()`` of the jitted sweep; per sweep: the median of ``--sweeps`` timed sweeps
after three untimed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time

# compile times are measured: off unless asked for, as in compile_times.py (set before bayesmf's import)
os.environ.setdefault("BAYESMF_COMPILATION_CACHE", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bayesmf  # noqa: E402
from bayesmf import datasets, splits  # noqa: E402
from bayesmf.posterior import gibbs  # noqa: E402

# move -> (function name in gibbs, identity replacement)
MOVES = {
    "collapsed shift": ("collapsed_shift_move", lambda key, state, prior, **kw: state),
    "rescale": ("rescale_move", lambda key, state, prior, repeats=1: (state, jnp.zeros((), state.U.dtype))),
    "shift": ("shift_move", lambda key, state, prior: state),
    "translate": ("translate_move", lambda key, state, prior: state),
}
if hasattr(gibbs, "bias_block_move"):  # the sampler before the collapsed bias precision
    MOVES["bias block"] = ("bias_block_move", lambda key, state, data, prior, **kw: state)
if hasattr(gibbs, "marginal_bias_precision"):
    MOVES["collapsed bias precision"] = ("marginal_bias_precision", lambda normals, s, r, rated, current,
                                         bias_prior: current)


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


def hlo_size(lowered) -> int:
    """Operations in the traced program (StableHLO lines that assign a value): what XLA compiles,
    a load-independent measure of its compile time."""
    return sum(" = " in line for line in lowered.as_text().splitlines())


def time_sweep(data, prior, states, rescale: bool, sweeps: int):
    """(HLO operations, compile seconds, median warm seconds per sweep; the last two NaN with
    ``sweeps=0``)."""
    structure, values = gibbs._split_prior(prior)
    fn = jax.jit(functools.partial(gibbs._chains_sweep.__wrapped__, structure=structure, rescale=rescale))
    key = jax.random.PRNGKey(1)
    lowered = fn.lower(key, states, 0.0, data, values=values)
    if sweeps == 0:
        return hlo_size(lowered), np.nan, np.nan
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    times = []
    for s in range(sweeps + 3):
        t0 = time.perf_counter()
        states, info = compiled(jax.random.fold_in(key, s), states, 0.0, data, values=values)
        jax.block_until_ready(states)
        times.append(time.perf_counter() - t0)
    return hlo_size(lowered), compile_s, float(np.median(times[3:]))


def time_alone(fn, *args, repeats: int = 20):
    lowered = jax.jit(fn).lower(*args)
    if repeats == 0:
        return hlo_size(lowered), np.nan, np.nan
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return hlo_size(lowered), compile_s, float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml-100k-u1", "ml-1m"], default="ml-1m")
    parser.add_argument("--sweeps", type=int, default=20, help="0: count the HLO operations only (no compilation)")
    parser.add_argument("--without", nargs="*", default=None, help="moves to leave out one at a time (default all)")
    args = parser.parse_args(argv)
    data, prior, states = setup(args.data)
    print(f"{args.data}: rank {prior.rank}, one chain, median of {args.sweeps} sweeps")
    print("| sweep | HLO ops | compile (s) | per sweep (s) |\n|---|---:|---:|---:|")
    left_out = MOVES if args.without is None else [m for m in args.without if m in MOVES]
    for label, move, rescale in [("every move", None, True), *((f"without {m}", m, True) for m in left_out),
                                 ("rescale=False", None, False)]:
        with without(move):
            n, c, t = time_sweep(data, prior, states, rescale, args.sweeps)
        print(f"| {label} | {n} | {c:.2f} | {t:.4f} |", flush=True)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    key = jax.random.PRNGKey(2)
    alone = {"collapsed shift": lambda k, s: gibbs.collapsed_shift_move(k, s, prior),
             "rescale": lambda k, s: gibbs.rescale_move(k, s, prior)[0],
             "shift + translate": lambda k, s: gibbs.translate_move(k, gibbs.shift_move(k, s, prior), prior)}
    if "bias block" in MOVES:
        alone["bias block"] = lambda k, s: gibbs.bias_block_move(k, s, data, prior)
    print("\n| move alone | HLO ops | compile (s) | per call (s) |\n|---|---:|---:|---:|")
    for label, fn in alone.items():
        n, c, t = time_alone(fn, key, state, repeats=args.sweeps)
        print(f"| {label} | {n} | {c:.2f} | {t:.4f} |", flush=True)


if __name__ == "__main__":
    main()
