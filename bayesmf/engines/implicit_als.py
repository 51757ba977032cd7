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
from bayesmf.engines.blocks import Blocks, gram_rhs, in_row_order
from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays, entry_dot


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


def _confidence_matvec(blocks, other, alpha: float, shared, x):
    """``(shared + sum_j alpha r_j f_j f_j^T) x_r`` for every row, without forming the sums.

    ``shared`` (k, k) is ``Y^T Y + reg I``; rows without ratings get ``shared x_r`` only.
    Written as broadcast-multiply-reduce so XLA fuses the gather of ``f_j`` into the reduction.
    """
    parts = []
    for rows, cols, vals, mask in zip(blocks.rows, blocks.cols, blocks.vals, blocks.mask, strict=True):
        f = other[cols]  # (n_b, w, k)
        proj = jnp.sum(f * x[rows][:, None, :], axis=-1) * (alpha * vals * mask)  # (n_b, w)
        parts.append(jnp.sum(f * proj[..., None], axis=1))
    return x @ shared + in_row_order(blocks, parts)


def _confidence_rhs(blocks, other, alpha: float):
    """``sum_{j in N(r)} (1 + alpha r_j) f_j`` per row -> (n_rows, k)."""
    parts = [jnp.sum(other[cols] * ((1 + alpha * vals) * mask)[..., None], axis=1)
             for cols, vals, mask in zip(blocks.cols, blocks.vals, blocks.mask, strict=True)]
    return in_row_order(blocks, parts)


def update_side(blocks, own, other, config: ImplicitConfig):
    """Minimise ``L`` over one side; returns ``(factors, retried)``."""
    n_rows, k = own.shape
    shared = other.T @ other + config.reg * jnp.eye(k, dtype=own.dtype)
    rhs = _confidence_rhs(blocks, other, config.alpha)
    if config.exact:
        weights = tuple(config.alpha * v for v in blocks.vals)
        gram, _ = gram_rhs(blocks, other, n_rows, weights=weights)
        return solve_spd_with_retry(gram + shared, rhs)
    matvec = partial(_confidence_matvec, blocks, other, config.alpha, shared)
    return linalg.conjugate_gradient(matvec, rhs, own, config.cg_steps), jnp.asarray(False)


def objective(state: FactorState, data: ImplicitData, config: ImplicitConfig):
    """The full weighted objective ``L`` over all users x items pairs, in O(nnz k + (n + m) k^2)."""
    x, y = state.user_factors, state.item_factors
    users, items, r = data.ratings
    s = entry_dot(x, y, users, items)
    c = 1 + config.alpha * r
    all_pairs = jnp.sum((x.T @ x) * (y.T @ y))  # sum over every pair of (x_u . y_i)^2
    observed = jnp.sum(c * (1 - s) ** 2 - s**2)
    return all_pairs + observed + config.reg * (jnp.sum(x**2) + jnp.sum(y**2))


@partial(jax.jit, donate_argnums=0)
def step(state: FactorState, data: ImplicitData, config: ImplicitConfig):
    """One sweep (users, then items); ``info`` holds ``loss`` and ``cholesky_retries``."""
    x, retried_u = update_side(data.user_blocks, state.user_factors, state.item_factors, config)
    y, retried_i = update_side(data.item_blocks, state.item_factors, x, config)
    state = state._replace(user_factors=x, item_factors=y)
    retries = retried_u.astype(jnp.int32) + retried_i.astype(jnp.int32)
    return state, {"loss": objective(state, data, config), "cholesky_retries": retries}
