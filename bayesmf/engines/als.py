"""Explicit alternating least squares with weighted-lambda regularisation (Zhou et al. 2008).

Model ``r_hat(u, i) = mu + b_u + c_i + p_u . q_i`` (biases optional) and objective ::

    L = sum_{(u,i)} (r_ui - r_hat)^2 + reg sum_u n_u |p_u|^2 + reg sum_i n_i |q_i|^2
        + bias_reg (sum_u n_u b_u^2 + sum_i n_i c_i^2)

with ``n_u``, ``n_i`` the rating counts ("weighted lambda": rows with more data are shrunk with
a larger penalty, which keeps the same ``reg`` good across data-set sizes). With the items fixed,
each user's augmented vector ``x_u = [p_u, b_u]`` solves the (k+1)-dimensional normal equations

    (sum_{i in N(u)} z_i z_i^T + n_u diag(reg..., bias_reg)) x_u = sum_i (r_ui - mu - c_i) z_i,
    z_i = [q_i, 1]

exactly (batched Cholesky over all users in one call), then symmetrically for items; every half
step minimises ``L`` over one side, so ``L`` never increases. A row without ratings solves
``I x = 0`` (its regularised solution, zero) instead of dividing by zero.

Nonnegative variant (Spark's ``nonnegative=True``): factors ``p_u >= 0`` by projected coordinate
descent (:func:`~bayesmf.engines.linalg.nnls`), warm-started from the previous factors; a free
bias is first eliminated exactly through the Schur complement of its 1x1 block,

    min_{p >= 0, b} 1/2 [p,b]^T [[A, s], [s^T, c]] [p,b] - [f, g]^T [p,b]
    =  min_{p >= 0} 1/2 p^T (A - s s^T / c) p - (f - s g / c)^T p,   b = (g - s.p) / c.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines import linalg
from bayesmf.engines.chunks import Chunks, gram_rhs, squared_error
from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays, entry_dot

# Relative jitter for the one retry of a failed Cholesky factorisation (scaled by each row's mean
# diagonal, plus an absolute floor for all-zero rows).
RETRY_JITTER = 1e-4


class FactorState(NamedTuple):
    """Factors and biases of both sides (biases stay zero when a model has none)."""

    user_factors: jnp.ndarray  # (n_users, k)
    item_factors: jnp.ndarray  # (n_items, k)
    user_bias: jnp.ndarray  # (n_users,)
    item_bias: jnp.ndarray  # (n_items,)


class ALSData(NamedTuple):
    """Everything a sweep reads: both chunked layouts, counts per row, the ratings and ``mu``."""

    user_chunks: Chunks
    item_chunks: Chunks
    user_counts: jnp.ndarray  # (n_users,) float
    item_counts: jnp.ndarray  # (n_items,) float
    ratings: RatingArrays
    mu: jnp.ndarray  # scalar


@engine_config("biases", "nonnegative", "nnls_steps")
class ALSConfig:
    reg: float
    bias_reg: float
    biases: bool
    nonnegative: bool = False
    nnls_steps: int = 20


def init_factors(seed, n_users: int, n_items: int, rank: int, scale: float, dtype=jnp.float32,
                 nonnegative: bool = False) -> FactorState:
    """Small random factors ``N(0, scale^2)`` (``|N(0, scale^2)|`` when nonnegative), zero biases.

    Drawn on the host (NumPy, ``seed``): XLA compiles JAX's threefry sampler anew for every
    shape, which costs more than a whole ALS fit (benchmarks/RESULTS.md, section 9).
    """
    rng = np.random.default_rng(seed)
    u, v = (scale * rng.standard_normal((n, rank)) for n in (n_users, n_items))
    if nonnegative:
        u, v = np.abs(u), np.abs(v)
    return FactorState(*(jnp.asarray(a, dtype) for a in (u, v, np.zeros(n_users), np.zeros(n_items))))


def solve_spd_with_retry(precision, rhs):
    """:func:`~bayesmf.engines.linalg.solve_spd` that, if any row fails (NaN from a non-PD
    matrix), solves all rows again with a small relative jitter. Returns ``(x, retried)``; the
    caller warns on ``retried`` (a host-side decision, outside jit)."""
    x = linalg.solve_spd(precision, rhs)
    ok = linalg.all_finite(x)

    def with_jitter(_):
        d = precision.shape[-1]
        scale = RETRY_JITTER * jnp.trace(precision, axis1=-2, axis2=-1) / d + 1e-6
        return linalg.solve_spd(precision + scale[:, None, None] * jnp.eye(d, dtype=precision.dtype), rhs)

    x = jax.lax.cond(ok, lambda _: x, with_jitter, None)
    return x, ~ok


def solve_nonnegative(precision, rhs, x0, steps: int, free_last: bool):
    """``argmin 1/2 x^T P x - rhs^T x`` per row over ``x >= 0``, or with ``free_last`` over
    ``x = [p >= 0, b]`` with ``b`` free, eliminated through the Schur complement of its 1x1 block
    (module docstring). ``x0`` (n, k) warm-starts the nonnegative part. Returns (n, d)."""
    if not free_last:
        return linalg.nnls(precision, rhs, x0, steps)
    k = precision.shape[-1] - 1
    a, s, c = precision[:, :k, :k], precision[:, :k, k], precision[:, k, k]
    f, g = rhs[:, :k], rhs[:, k]
    schur = a - s[:, :, None] * s[:, None, :] / c[:, None, None]
    p = linalg.nnls(schur, f - s * (g / c)[:, None], x0, steps)
    return jnp.concatenate([p, ((g - jnp.einsum("nk,nk->n", s, p)) / c)[:, None]], axis=1)


def update_side(chunks, counts, own_factors, other_factors, other_bias, mu, config: ALSConfig):
    """Exact minimisation of the objective over one side's factors (and biases).

    Returns ``(factors (n, k), bias (n,), retried, sse)``; ``bias`` is zero when ``config.biases``
    is off; ``sse`` is the sum of squared errors after the update, ``sum_r (y_r.y_r - 2 x_r.b_r
    + x_r^T G_r x_r)`` from the row systems already built (``G_r``, ``b_r`` without the penalty),
    so reporting the loss costs no extra pass over the ratings.
    """
    n_rows, k = own_factors.shape
    dtype = own_factors.dtype
    reg = jnp.full((k,), config.reg, dtype)
    other = other_factors
    if config.biases:  # augment with the constant column that carries this side's bias
        other = jnp.concatenate([other_factors, jnp.ones((other_factors.shape[0], 1), dtype)], axis=1)
        reg = jnp.concatenate([reg, jnp.full((1,), config.bias_reg, dtype)])
    gram, rhs, yy = gram_rhs(chunks, other, other_bias if config.biases else None, mu)
    d = other.shape[-1]
    # n_r * reg on the diagonal; the identity added to rows without ratings makes their solution 0
    diag = counts[:, None] * reg[None, :] + (counts == 0)[:, None].astype(dtype)
    precision = gram + diag[:, :, None] * jnp.eye(d, dtype=dtype)
    retried = jnp.asarray(False)
    if config.nonnegative:
        x = solve_nonnegative(precision, rhs, own_factors, config.nnls_steps, config.biases)
    else:
        x, retried = solve_spd_with_retry(precision, rhs)
    bias = x[:, k] if config.biases else jnp.zeros((n_rows,), dtype)
    return x[:, :k], bias, retried, squared_error(x, gram, rhs, yy)


def objective(state: FactorState, data: ALSData, config: ALSConfig):
    """``(L, train RMSE)`` of the module docstring's objective, from the ratings."""
    users, items, r = data.ratings
    pred = data.mu + entry_dot(state.user_factors, state.item_factors, users, items)
    if config.biases:
        pred = pred + state.user_bias[users] + state.item_bias[items]
    sse = jnp.sum((r - pred) ** 2)
    return sse + penalty(state, data, config), jnp.sqrt(sse / r.shape[0])


def penalty(state: FactorState, data: ALSData, config: ALSConfig):
    """The weighted-lambda penalty terms of ``L``."""
    total = config.reg * (data.user_counts @ jnp.sum(state.user_factors**2, 1)
                          + data.item_counts @ jnp.sum(state.item_factors**2, 1))
    return total + config.bias_reg * (data.user_counts @ state.user_bias**2 + data.item_counts @ state.item_bias**2)


@partial(jax.jit, donate_argnums=0)
def step(state: FactorState, data: ALSData, config: ALSConfig):
    """One sweep: all users in one batched solve, then all items. Returns ``(state, info)`` with
    ``loss`` (``L`` after the sweep), ``rmse`` (training) and ``cholesky_retries`` (number of half
    steps that needed jitter). The loss comes from the item systems (:func:`update_side`);
    :func:`objective` computes the same from the ratings."""
    p, b_u, retried_u, _ = update_side(data.user_chunks, data.user_counts, state.user_factors,
                                       state.item_factors, state.item_bias, data.mu, config)
    q, c_i, retried_i, sse = update_side(data.item_chunks, data.item_counts, state.item_factors,
                                         p, b_u, data.mu, config)
    state = FactorState(p, q, b_u, c_i)
    retries = retried_u.astype(jnp.int32) + retried_i.astype(jnp.int32)
    return state, {"loss": sse + penalty(state, data, config), "rmse": jnp.sqrt(sse / data.ratings.values.shape[0]),
                   "cholesky_retries": retries}
