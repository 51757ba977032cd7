"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with a conjugate-gradient inner solver.

Every (user, item) pair is a data point with preference ``p_ui = 1`` if observed (0 otherwise)
and confidence ``c_ui = 1 + alpha r_ui`` (1 for unobserved pairs). The objective ::

    L = sum_{all u,i} c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2)

is minimised over each side in turn. With the items fixed, user ``u`` solves

    (Y^T Y + reg I + sum_{i in N(u)} (c_ui - 1) y_i y_i^T) x_u = sum_{i in N(u)} c_ui y_i,

where ``Y^T Y`` (k x k) is computed once per half step and shared by all users — the trick that
makes the dense "all pairs" objective cost O(nnz k + n k^2) per matrix-vector product.

Solvers: ``exact=True`` builds every row's matrix (O(nnz k^2)) and uses a batched Cholesky; the
default runs ``cg_steps`` conjugate-gradient steps warm-started from the previous factors
(Takacs et al. 2011), never forming the per-row matrices: each product costs O(nnz k + n k^2).
Both run chunk by chunk over the cache-sized layout of :mod:`bayesmf.engines.chunks`: a CG step
reads each row's gathered factors twice, and from cache that is much faster than streaming the
whole side's gathered block from memory.

The full objective is computed without the dense matrix from
``sum_{all} (x.y)^2 = sum((X^T X) * (Y^T Y))`` plus corrections on the observed pairs.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bayesmf.engines import linalg, sharding
from bayesmf.engines.als import RETRY_JITTER, FactorState, init_factors, solve_spd_jittered
from bayesmf.engines.chunks import Chunks, in_row_order, to_rows
from bayesmf.engines.config import engine_config
from bayesmf.engines.driver import Kernel
from bayesmf.engines.linalg import EXACT
from bayesmf.engines.sparse import RatingArrays, entry_dot


class ImplicitData(NamedTuple):
    user_chunks: Chunks
    item_chunks: Chunks
    ratings: RatingArrays


@engine_config("cg_steps", "exact", "jitter")
class ImplicitConfig:
    """Implicit ALS settings: ``reg``, ``alpha`` (traced), ``cg_steps``, ``exact`` (Cholesky
    instead of conjugate gradients) and ``jitter`` (static; the relative diagonal jitter of the
    exact solves, 0 but in the driver's retry)."""

    reg: float
    alpha: float
    cg_steps: int = 3
    exact: bool = False
    jitter: float = 0.0


class ImplicitInfo(NamedTuple):
    """Diagnostics of one implicit ALS sweep."""

    loss: jnp.ndarray
    """``L`` after the sweep (its observed-pair part from the item half step)."""
    finite: jnp.ndarray
    """False when an exact solve's Cholesky factorisation failed (the driver retries)."""


def _solve_chunk(factors, own, shared, config: ImplicitConfig, chunk):
    """Minimise ``L`` over the rows of one chunk (:mod:`bayesmf.engines.chunks`).

    ``factors`` (n_other + 1, k): the other side's factors with a zero row appended (padding
    slots gather it); ``own`` (n_rows + 1, k) this side's current factors, zero row appended (the
    warm start; unused local rows read it); ``chunk`` = ``(cols, vals, owner, rows)`` of one chunk.
    Returns ``(x (C, k), observed, finite)``: ``observed`` is this chunk's share of the
    observed-pair term ``sum c (1 - s)^2 - s^2`` with ``s = x_r . f_j`` at the new factors,
    ``finite`` whether the exact solve's factorisation succeeded.

    The gathered block ``f`` (C, W, k) is read ``2 cg_steps + 3`` times; sized to stay in cache.
    """
    cols, vals, owner, rows = chunk
    n_local = rows.shape[0]
    f = factors[cols]
    w = config.alpha * vals  # c - 1 per slot, 0 on padding (where f is 0 too)
    rhs = to_rows(owner, jnp.einsum("cwk,cw->ck", f, 1 + w, precision=EXACT), n_local)
    if config.exact:
        gram = to_rows(owner, jnp.einsum("cwk,cwl->ckl", f * w[..., None], f, precision=EXACT), n_local)
        x, finite = solve_spd_jittered(gram + shared, rhs, config.jitter)
    else:
        finite = jnp.asarray(True)

        def matvec(x):
            proj = jnp.einsum("cwk,ck->cw", f, x[owner], precision=EXACT)
            spread = jnp.einsum("cwk,cw->ck", f, proj * w, precision=EXACT)
            return jnp.matmul(x, shared, precision=EXACT) + to_rows(owner, spread, n_local)

        x = linalg.conjugate_gradient(matvec, rhs, own[rows], config.cg_steps)
    scores = jnp.einsum("cwk,ck->cw", f, x[owner], precision=EXACT)
    real = cols < factors.shape[0] - 1
    observed = jnp.sum(jnp.where(real, (1 + w) * (1 - scores) ** 2 - scores**2, 0.0))
    return x, observed, finite


def update_side(chunks: Chunks, own, other, config: ImplicitConfig):
    """Minimise ``L`` over one side, chunk by chunk (``lax.map``). Returns
    ``(factors, observed, finite)``:
    ``observed`` is the sum over this side's observed pairs of ``c (1 - s)^2 - s^2``, ``s`` = the
    new ``x_r . f_j`` (the observed-pair part of :func:`objective`), ``finite`` whether every exact
    solve's factorisation succeeded. Rows without ratings get 0,
    the exact minimiser ``(Y^T Y + reg I)^-1 0``.

    Memory: O(nnz) indices and one chunk's gathered factors at a time, O(chunk_slots k).
    With :class:`~bayesmf.engines.sharding.ShardedChunks` (inside
    :func:`~bayesmf.engines.sharding.call`) each device solves its own chunks.
    """
    k = own.shape[1]
    shared = jnp.matmul(other.T, other, precision=EXACT) + config.reg * jnp.eye(k, dtype=own.dtype)
    zero = jnp.zeros((1, k), own.dtype)
    factors, warm = jnp.concatenate([other, zero]), jnp.concatenate([own, zero])
    if sharding.is_sharded(chunks):  # this device's chunks; the rows all-gathered, the sums in chunk order
        x, observed, finite = jax.lax.map(partial(_solve_chunk, factors, warm, shared, config), _blocks(chunks.chunks))
        x = sharding.compact(chunks, x.reshape(-1, k))
        return (sharding.gather_rows(chunks, x), sharding.chunk_total(chunks, observed),
                sharding.all_true(chunks, jnp.all(finite)))
    x, observed, finite = jax.lax.map(partial(_solve_chunk, factors, warm, shared, config), _blocks(chunks))
    return in_row_order(chunks, x), jnp.sum(observed), jnp.all(finite)


def _blocks(chunks: Chunks):
    return chunks.cols, chunks.vals, chunks.owner, chunks.rows


def objective(state: FactorState, data: ImplicitData, config: ImplicitConfig):
    """The full weighted objective ``L`` over all users x items pairs, in O(nnz k + (n + m) k^2)."""
    x, y = state.user_factors, state.item_factors
    users, items, r = data.ratings
    s = entry_dot(x, y, users, items)
    c = 1 + config.alpha * r
    # sum over every pair of (x_u . y_i)^2
    all_pairs = jnp.sum(jnp.matmul(x.T, x, precision=EXACT) * jnp.matmul(y.T, y, precision=EXACT))
    observed = jnp.sum(c * (1 - s) ** 2 - s**2)
    return all_pairs + observed + config.reg * (jnp.sum(x**2) + jnp.sum(y**2))


@jax.jit
def sweep(state: FactorState, data: ImplicitData, config: ImplicitConfig) -> tuple[FactorState, ImplicitInfo]:
    """One sweep (users, then items)."""
    x, _, finite_u = update_side(data.user_chunks, state.user_factors, state.item_factors, config)
    y, observed, finite_i = update_side(data.item_chunks, state.item_factors, x, config)
    state = state._replace(user_factors=x, item_factors=y)
    all_pairs = jnp.sum(jnp.matmul(x.T, x, precision=EXACT) * jnp.matmul(y.T, y, precision=EXACT))
    loss = all_pairs + observed + config.reg * (jnp.sum(x**2) + jnp.sum(y**2))
    return state, ImplicitInfo(loss, finite_u & finite_i)


def _sweep_on_mesh(state: FactorState, config: ImplicitConfig, data: ImplicitData):
    return sweep.__wrapped__(state, data, config)


def build_kernel(data: ImplicitData, config: ImplicitConfig) -> Kernel:
    """The implicit ALS :class:`~bayesmf.engines.driver.Kernel`: ``init`` is
    :func:`~bayesmf.engines.als.init_factors`, ``step(key, state)`` one :func:`sweep`
    (deterministic), ``retry`` the sweep with relative jitter on every exact solve. With
    ``data`` from :func:`shard` the sweep runs over its mesh."""
    jittered = dataclasses.replace(config, jitter=RETRY_JITTER)
    if sharding.mesh_of(data) is not None:
        def step(_key, state, config=config):
            return sharding.call(_sweep_on_mesh, state, config, data=data)

        return Kernel(init=init_factors, step=step, retry=lambda key, state: step(key, state, jittered),
                      jitter=RETRY_JITTER)
    return Kernel(init=init_factors, step=lambda _key, state: sweep(state, data, config),
                  retry=lambda _key, state: sweep(state, data, jittered), jitter=RETRY_JITTER)


def shard(data: ImplicitData, mesh) -> ImplicitData:
    """``data`` with both sides' chunks split over the one-axis ``mesh``, the rest replicated."""
    n_users, n_items = data.user_chunks.slot.shape[0], data.item_chunks.slot.shape[0]
    return sharding.shard_data(data, mesh, {"user_chunks": n_items, "item_chunks": n_users})
