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

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines import linalg, sharding
from bayesmf.engines.chunks import Chunks
from bayesmf.engines.config import engine_config
from bayesmf.engines.driver import Kernel
from bayesmf.engines.sparse import RatingArrays, entry_dot

# Relative jitter of the retry of a sweep whose Cholesky factorisation failed (scaled by each row's
# mean diagonal, plus an absolute floor for all-zero rows); the driver decides when to retry.
RETRY_JITTER = 1e-4

SYSTEMS_BUDGET = 1 << 30
"""Bytes of per-chunk normal equations (``n_chunks x C x (k + 1) x k`` floats, ``C`` the chunks'
local rows) above which :func:`update_side` solves each chunk's rows inside the pass that builds
them instead of putting every row's system in row order first. The per-chunk solve also solves
the chunks' padding rows (a chunk has room for as many rows as virtual rows), so on data that fit
it is slower; above the budget the side's systems would not fit in memory otherwise."""


class FactorState(NamedTuple):
    """Factors and biases of both sides (biases stay zero when a model has none)."""

    user_factors: jnp.ndarray  # (n_users, k)
    item_factors: jnp.ndarray  # (n_items, k)
    user_bias: jnp.ndarray  # (n_users,)
    item_bias: jnp.ndarray  # (n_items,)


class ALSInfo(NamedTuple):
    """Diagnostics of one ALS sweep."""

    loss: jnp.ndarray
    """``L`` of the module docstring after the sweep (from the item systems)."""
    rmse: jnp.ndarray
    """Training RMSE after the sweep."""
    finite: jnp.ndarray
    """False when a Cholesky factorisation failed (the driver then retries with jitter)."""


class ALSData(NamedTuple):
    """Everything a sweep reads: both chunked layouts, counts per row, the ratings and ``mu``."""

    user_chunks: Chunks
    item_chunks: Chunks
    user_counts: jnp.ndarray  # (n_users,) float
    item_counts: jnp.ndarray  # (n_items,) float
    ratings: RatingArrays
    mu: jnp.ndarray  # scalar


@engine_config("biases", "nonnegative", "nnls_steps", "jitter", "systems_budget")
class ALSConfig:
    """ALS settings: ``reg``, ``bias_reg`` (traced), ``biases``, ``nonnegative``, ``nnls_steps``,
    ``jitter`` (static; the relative diagonal jitter of every solve, 0 but in the driver's
    retry) and ``systems_budget`` (static; bytes, :data:`SYSTEMS_BUDGET`)."""

    reg: float
    bias_reg: float
    biases: bool
    nonnegative: bool = False
    nnls_steps: int = 20
    jitter: float = 0.0
    systems_budget: int = SYSTEMS_BUDGET


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


def solve_spd_jittered(precision, rhs, jitter: float = 0.0):
    """:func:`~bayesmf.engines.linalg.solve_spd` of ``precision + s I`` per row, ``s = jitter
    tr(P) / d + 1e-6`` (a relative jitter with an absolute floor for all-zero rows); ``s = 0``
    when ``jitter`` (a Python float) is 0. Returns ``(x, finite)``: ``finite`` is False when a
    factorisation failed (NaN from a matrix not positive definite); the driver decides on a retry
    (:mod:`bayesmf.engines.driver`)."""
    if jitter:
        d = precision.shape[-1]
        scale = jitter * jnp.trace(precision, axis1=-2, axis2=-1) / d + 1e-6
        precision = precision + scale[:, None, None] * jnp.eye(d, dtype=precision.dtype)
    x = linalg.solve_spd(precision, rhs)
    return x, linalg.all_finite(x)


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


def _row_solve(precision, rhs, x0, config: ALSConfig):
    """``(x, finite)``: the rows' exact or nonnegative solutions (:func:`solve_spd_jittered`,
    :func:`solve_nonnegative` warm-started at ``x0``)."""
    if config.nonnegative:
        return solve_nonnegative(precision, rhs, x0, config.nnls_steps, config.biases), jnp.asarray(True)
    return solve_spd_jittered(precision, rhs, config.jitter)


def update_side(chunks, counts, own_factors, other_factors, other_bias, mu, config: ALSConfig):
    """Exact minimisation of the objective over one side's factors (and biases).

    Returns ``(factors (n, k), bias (n,), finite, sse)``; ``bias`` is zero when ``config.biases``
    is off; ``sse`` is the sum of squared errors after the update, ``sum_r (y_r.y_r - 2 x_r.b_r
    + x_r^T G_r x_r)`` from the row systems already built (``G_r``, ``b_r`` without the penalty),
    so reporting the loss costs no extra pass over the ratings. When the side's systems exceed
    :attr:`ALSConfig.systems_budget` each chunk's rows are solved inside the pass that builds their systems
    (:func:`~bayesmf.engines.chunks.gram_rhs_chunks`' ``finish``), so that they are never all
    held at once; the solutions are the same. With ``chunks`` a
    :class:`~bayesmf.engines.sharding.ShardedChunks` (inside :func:`~bayesmf.engines.sharding.call`)
    each device solves its own rows and the rows are all-gathered (:mod:`bayesmf.engines.sharding`).
    """
    n_rows, k = own_factors.shape
    dtype = own_factors.dtype
    reg = jnp.full((k,), config.reg, dtype)
    other = other_factors
    if config.biases:  # augment with the constant column that carries this side's bias
        other = jnp.concatenate([other_factors, jnp.ones((other_factors.shape[0], 1), dtype)], axis=1)
        reg = jnp.concatenate([reg, jnp.full((1,), config.bias_reg, dtype)])
    d = other.shape[-1]
    bias_in = other_bias if config.biases else None

    def precision(gram, n):
        # n_r * reg on the diagonal; the identity added to rows without ratings makes their solution 0
        diag = n[:, None] * reg[None, :] + (n == 0)[:, None].astype(dtype)
        return gram + diag[:, :, None] * jnp.eye(d, dtype=dtype)

    plain = chunks.chunks if sharding.is_sharded(chunks) else chunks
    n_systems = plain.rows.size * d * (d + 1) * np.dtype(dtype).itemsize
    if n_systems > config.systems_budget:
        # per global row, one past the end for the chunks' padding rows (count 0, factors 0)
        counts_ext = jnp.concatenate([counts.astype(dtype), jnp.zeros((1,), dtype)])
        own_ext = jnp.concatenate([own_factors, jnp.zeros((1, k), dtype)])

        def solve_chunk(rows, product, yy):
            gram, rhs = product[:, :d, :d], product[:, d, :d]
            x, finite = _row_solve(precision(gram, counts_ext[rows]), rhs, own_ext[rows], config)
            quad = -2 * jnp.sum(x * rhs) + jnp.einsum("nk,nkl,nl->", x, gram, x, precision=linalg.EXACT)
            return x, finite, yy + quad

        x, finite, sse = sharding.chunk_map(chunks, other, bias_in, mu, solve_chunk)
        x = sharding.rows_in_order(chunks, x)
        sse = jnp.maximum(sharding.total(chunks, sse), 0.0)  # the expanded square can round below 0
        finite = jnp.all(finite)
    else:
        gram, rhs, yy = sharding.row_stats(chunks, other, bias_in, mu)
        local_counts = sharding.local(chunks, counts)
        x, finite = _row_solve(precision(gram, local_counts), rhs, sharding.local(chunks, own_factors), config)
        sse = sharding.squared_error(chunks, x, gram, rhs, yy)
        x = sharding.gather_rows(chunks, x)
    bias = x[:, k] if config.biases else jnp.zeros((n_rows,), dtype)
    return x[:, :k], bias, sharding.all_true(chunks, finite), sse


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


@jax.jit
def sweep(state: FactorState, data: ALSData, config: ALSConfig) -> tuple[FactorState, ALSInfo]:
    """One sweep: all users in one batched solve, then all items. The loss comes from the item
    systems (:func:`update_side`); :func:`objective` computes the same from the ratings."""
    p, b_u, finite_u, _ = update_side(data.user_chunks, data.user_counts, state.user_factors,
                                      state.item_factors, state.item_bias, data.mu, config)
    q, c_i, finite_i, sse = update_side(data.item_chunks, data.item_counts, state.item_factors,
                                        p, b_u, data.mu, config)
    state = FactorState(p, q, b_u, c_i)
    return state, ALSInfo(sse + penalty(state, data, config), jnp.sqrt(sse / data.ratings.values.shape[0]),
                          finite_u & finite_i)


def _sweep_on_mesh(state: FactorState, config: ALSConfig, data: ALSData):
    return sweep.__wrapped__(state, data, config)


def build_kernel(data: ALSData, config: ALSConfig) -> Kernel:
    """The ALS :class:`~bayesmf.engines.driver.Kernel`: ``init`` is :func:`init_factors`,
    ``step(key, state)`` one :func:`sweep` (deterministic: ``key`` is unused), ``retry`` the
    sweep with relative jitter :data:`RETRY_JITTER` on every solve. With ``data`` from
    :func:`shard` the sweep runs over its mesh (:func:`bayesmf.engines.sharding.call`)."""
    jittered = dataclasses.replace(config, jitter=RETRY_JITTER)
    if sharding.mesh_of(data) is not None:
        def step(_key, state, config=config):
            return sharding.call(_sweep_on_mesh, state, config, data=data)

        return Kernel(init=init_factors, step=step, retry=lambda key, state: step(key, state, jittered),
                      jitter=RETRY_JITTER)
    return Kernel(init=init_factors, step=lambda _key, state: sweep(state, data, config),
                  retry=lambda _key, state: sweep(state, data, jittered), jitter=RETRY_JITTER)


def shard(data: ALSData, mesh) -> ALSData:
    """``data`` with both sides' chunks split over the one-axis ``mesh`` and the rest replicated
    (:func:`bayesmf.engines.sharding.shard_data`)."""
    return sharding.shard_data(data, mesh, {"user_chunks": data.item_counts.shape[0],
                                            "item_chunks": data.user_counts.shape[0]})
