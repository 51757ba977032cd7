"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with a conjugate-gradient inner solver.

Every (user, item) pair is a data point with preference ``p_ui = 1`` if observed (0 otherwise)
and confidence ``c_ui = 1 + alpha r_ui`` (1 for unobserved pairs). The objective

    L = sum_{all u,i} c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2)

is minimised over each side in turn. With the items fixed, user ``u`` solves

    (Y^T Y + reg I + sum_{i in N(u)} (c_ui - 1) y_i y_i^T) x_u = sum_{i in N(u)} c_ui y_i,

where ``Y^T Y`` (k x k) is computed once per half step and shared by all users — the trick that
makes the dense "all pairs" objective cost O(nnz k + n k^2) per matrix-vector product.

Solvers: ``exact=True`` builds every row's matrix (O(nnz k^2), via
:func:`~bayesmf.engines.blocks.gram_rhs`) and uses a batched Cholesky; the default runs
``cg_steps`` conjugate-gradient steps warm-started from the previous factors (Takacs et al.
2011), never forming the per-row matrices: each product costs O(nnz k + n k^2).

The full objective is computed without the dense matrix from
``sum_{all} (x.y)^2 = sum((X^T X) * (Y^T Y))`` plus corrections on the observed pairs.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bayesmf.engines import linalg
from bayesmf.engines.als import FactorState, solve_spd_with_retry
from bayesmf.engines.blocks import EXACT, Blocks, gram_rhs, in_row_order
from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays, entry_dot, gather_other, slot_dot, weighted_row_sum


class ImplicitData(NamedTuple):
    user_blocks: Blocks
    item_blocks: Blocks
    ratings: RatingArrays


@engine_config("cg_steps", "exact")
class ImplicitConfig:
    reg: float
    alpha: float
    cg_steps: int = 3
    exact: bool = False


def _confidence_matvec(blocks, gathered, weights, shared, x):
    """``(shared + sum_j w_rj f_j f_j^T) x_r`` for every row, without forming the sums.

    ``shared`` (k, k) is ``Y^T Y + reg I``; ``gathered`` the other side's factors per slot
    (:func:`~bayesmf.engines.sparse.gather_other`), ``weights`` ``alpha r_rj`` per slot (0 on
    padding). Rows without ratings get ``shared x_r`` only. Two batched matrix-vector products
    per bucket over the pre-gathered factors: gathering inside every CG step would repeat the
    most expensive part of the step ``cg_steps + 1`` times.
    """
    proj = slot_dot(blocks, x, gathered)
    parts = [jnp.einsum("nwk,nw->nk", f, p * w, precision=EXACT)
             for f, p, w in zip(gathered, proj, weights, strict=True)]
    return jnp.matmul(x, shared, precision=EXACT) + in_row_order(blocks, parts)


def update_side(blocks, own, other, config: ImplicitConfig):
    """Minimise ``L`` over one side. Returns ``(factors, retried, observed)``: ``observed`` is the
    sum over this side's observed pairs of ``c (1 - s)^2 - s^2``, ``s`` = the new ``x_r . f_j``
    (the observed-pair part of :func:`objective`, from the factors already gathered).

    Memory: the CG solver keeps the other side's factors gathered per slot, O(nnz k) floats.
    """
    n_rows, k = own.shape
    shared = jnp.matmul(other.T, other, precision=EXACT) + config.reg * jnp.eye(k, dtype=own.dtype)
    gathered = gather_other(blocks, other)
    weights = tuple(config.alpha * v * m for v, m in zip(blocks.vals, blocks.mask, strict=True))
    rhs = weighted_row_sum(blocks, gathered, tuple(1 + w for w in weights), n_rows)
    retried = jnp.asarray(False)
    if config.exact:
        gram, _ = gram_rhs(blocks, other, n_rows, weights=weights)
        x, retried = solve_spd_with_retry(gram + shared, rhs)
    else:
        matvec = partial(_confidence_matvec, blocks, gathered, weights, shared)
        x = linalg.conjugate_gradient(matvec, rhs, own, config.cg_steps)
    scores = slot_dot(blocks, x, gathered)
    observed = sum(jnp.sum(m * ((1 + w) * (1 - s) ** 2 - s**2))
                   for s, w, m in zip(scores, weights, blocks.mask, strict=True))
    return x, retried, observed


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


@partial(jax.jit, donate_argnums=0)
def step(state: FactorState, data: ImplicitData, config: ImplicitConfig):
    """One sweep (users, then items); ``info`` holds ``loss`` (``L`` after the sweep, its
    observed-pair part from the item half step) and ``cholesky_retries``."""
    x, retried_u, _ = update_side(data.user_blocks, state.user_factors, state.item_factors, config)
    y, retried_i, observed = update_side(data.item_blocks, state.item_factors, x, config)
    state = state._replace(user_factors=x, item_factors=y)
    retries = retried_u.astype(jnp.int32) + retried_i.astype(jnp.int32)
    all_pairs = jnp.sum(jnp.matmul(x.T, x, precision=EXACT) * jnp.matmul(y.T, y, precision=EXACT))
    loss = all_pairs + observed + config.reg * (jnp.sum(x**2) + jnp.sum(y**2))
    return state, {"loss": loss, "cholesky_retries": retries}
