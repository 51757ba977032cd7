"""Markov chains over a batch of chains, run by the package's one driver.

:func:`run_sampler` adapts a chain kernel ``chain_kernel(keys, states, jitter) -> (states,
info)`` (one sweep of every chain; e.g. :func:`bayesmf.posterior.gibbs.chain_step` with its data
and prior bound by ``functools.partial``) to the kernel protocol of
:mod:`bayesmf.engines.driver` and runs it with :func:`bayesmf.engines.driver.run`: burn-in,
thinning, kept samples, online predictive moments, progress, checkpoints and resumption, and the
Cholesky jitter retry all live there. Sweep ``t`` of the run uses ``fold_in(key, t)`` split over
chains, so the chain is a deterministic function of ``(key, t)``: a run interrupted after sweep
``t`` and resumed from its checkpoint continues bit-identically.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax

from bayesmf.engines.driver import (  # noqa: F401  (re-exported: the sampler's public names)
    Kernel,
    OnlineMoments,
    RunResult,
    content_digest,
    non_finite_fields,
    run,
)
from bayesmf.posterior.gibbs import RETRY_JITTER

SamplerResult = RunResult


@functools.partial(jax.jit, static_argnums=2)
def sweep_keys(key, t, n_chains: int):
    """The chains' keys of sweep ``t``: ``split(fold_in(key, t), n_chains)``, as one compiled call
    (two op-by-op dispatches would each compile on first use)."""
    return jax.random.split(jax.random.fold_in(key, t), n_chains)


@functools.partial(jax.jit, static_argnums=1)
def _split(key, n_chains: int):
    return jax.random.split(key, n_chains)


def chain_kernel_as_kernel(chain_kernel: Callable, n_chains: int) -> Kernel:
    """The :class:`~bayesmf.engines.driver.Kernel` of a chain kernel ``(keys, states, jitter)``:
    its step splits the iteration's key over the chains and solves without jitter; its retry
    adds :data:`RETRY_JITTER`."""
    return Kernel(init=None, step=lambda key, states: chain_kernel(_split(key, n_chains), states, 0.0),
                  retry=lambda key, states: chain_kernel(_split(key, n_chains), states, RETRY_JITTER),
                  jitter=RETRY_JITTER)


def run_sampler(
    chain_kernel: Callable,
    init_state,
    key,
    *,
    n_warmup: int,
    n_samples: int,
    thin: int = 1,
    collect: Callable | None = None,
    keep_every: int = 1,
    track: Callable | None = None,
    progress: bool = False,
    desc: str = "sampling",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    fingerprint: dict | None = None,
) -> RunResult:
    """Run ``n_warmup + n_samples * thin`` sweeps of every chain in ``init_state`` (a pytree
    whose leaves have a leading chain axis) with :func:`bayesmf.engines.driver.run`.

    Parameters
    ----------
    chain_kernel : callable
        ``chain_kernel(keys, states, jitter) -> (states, info)``, ``info`` with a boolean
        ``finite`` field per chain, or a :class:`~bayesmf.engines.driver.Kernel` over the chains.
    init_state : pytree
        Leaves with a leading chain axis.
    key : PRNG key
    n_warmup, n_samples, thin, collect, keep_every, track, progress, desc, checkpoint,
    checkpoint_every, fingerprint
        As :func:`bayesmf.engines.driver.run` (``collect``'s draws stacked as (chains, draws, ...)).

    Returns
    -------
    RunResult
        ``samples`` site -> (chains, draws, ...), ``history`` field -> (sweeps, chains),
        ``tracked`` moments, final ``state``.
    """
    n_chains = jax.tree_util.tree_leaves(init_state)[0].shape[0]
    kernel = chain_kernel if isinstance(chain_kernel, Kernel) else chain_kernel_as_kernel(chain_kernel, n_chains)
    return run(kernel, init_state, key, n_warmup=n_warmup, n_samples=n_samples, thin=thin, collect=collect,
               keep_every=keep_every, track=track, draw_axis=1, progress=progress, desc=desc,
               checkpoint=checkpoint, checkpoint_every=checkpoint_every,
               fingerprint=fingerprint if checkpoint is not None else None)
