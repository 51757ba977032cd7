"""Batched small linear algebra shared by the engines (pure JAX, jit- and vmap-friendly).

All functions take a leading batch axis ``n`` over rows (users or items) and act on ``k x k``
symmetric positive-definite systems, ``k`` = rank. They never loop in Python over rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

# Full float32 products for the engines' Gram matrices, row sums and dot products: on GPUs the
# default would use TF32 (10-bit mantissa), ~1e-3 relative error in every Gram matrix and row sum
# that the solvers and the reported losses then inherit.
EXACT = jax.lax.Precision.HIGHEST


def standard_normal(key, shape, dtype=jnp.float32):
    """``N(0, 1)`` variates of ``shape``, drawn as one flat vector and reshaped.

    Same distribution as ``jax.random.normal(key, shape)`` (not the same numbers): XLA:CPU compiles
    the threefry sampler of a flat shape several times faster than that of a 2-D or 3-D one, and
    a Gibbs sweep has one such call site per block of variates.
    """
    size = math.prod(shape)
    return jax.random.normal(key, (size,), dtype).reshape(shape)


def standard_gamma(key, shape_params):
    """Standard ``Gamma(a, 1)`` variates, one per entry of ``shape_params`` (any shape, ``a > 0``).

    Marsaglia & Tsang (2000), exact for ``a >= 1``: with ``d = a - 1/3``, ``c = 1 / sqrt(9 d)``,
    propose ``v = (1 + c z)^3``, ``z ~ N(0, 1)``, and accept ``d v`` when ``v > 0`` and
    ``log u < z^2 / 2 + d - d v + d log v``, ``u ~ U(0, 1)``; the acceptance rate is above 0.95 for
    every ``a >= 1``. Entries with ``a < 1`` draw ``Gamma(a + 1)`` and multiply by ``u'^(1/a)``
    (Marsaglia & Tsang's boost). Every entry proposes in each round of one ``while_loop`` until all
    have accepted (a few rounds); a round's ``z`` (Box-Muller), ``u`` and ``u'`` come from one
    flat uniform draw keyed by ``fold_in(key, round)``, and ``u'`` is taken from the round that
    accepted (independent of that round's acceptance, so the boost stays exact).

    Numerics: with ``w = c z`` the bound is written ``d (3 log1p(w) - w (3 + 3 w + w^2))``, the
    same quantity without subtracting ``d v`` from ``d`` — in float32 at the noise precision's
    shape ``a = a0 + nnz / 2`` (tens or hundreds of thousands) that difference carries rounding
    errors comparable to the bound itself (~z^2 / 2), so differently fused copies of the test can
    disagree: one accepting while another leaves the value unset, which returns 0 (and a Gibbs
    sweep would then draw the factors from their prior). The loop also keeps a single record of
    acceptance, the value itself (NaN until accepted).

    Why not ``jax.random.gamma``: on XLA:CPU it compiles and runs several times slower for a
    sweep's shapes than this loop with one uniform call site (benchmarks/RESULTS.md, section 9;
    the measurements: benchmarks/archive/2026-notes.md, "Gamma variates without jax.random.gamma").
    """
    a = jnp.asarray(shape_params)
    dtype = a.dtype if jnp.issubdtype(a.dtype, jnp.floating) else jnp.float32
    a = a.astype(dtype).reshape(-1)
    n = a.shape[0]
    boosted = a < 1
    d = jnp.where(boosted, a + 1, a) - 1.0 / 3.0
    c = jax.lax.rsqrt(9.0 * d)
    # an invalid shape (NaN, inf, <= 0) gives NaN, as jax.random.gamma does, instead of a loop
    # that never accepts
    valid = jnp.isfinite(a) & (a > 0)

    def pending(x):
        return valid & jnp.isnan(x)

    def propose(carry):
        round_, x, boost_u = carry
        u = jax.random.uniform(jax.random.fold_in(key, round_), (4 * n,), dtype).reshape(4, n)
        # logs of 1 - u, in (0, 1] on the uniform's grid of 2^-23: |z| <= 5.6, where a floor at
        # the smallest normal float put a point mass at |z| = 13.2 with probability 2^-23
        z = jnp.sqrt(-2.0 * jnp.log1p(-u[0])) * jnp.cos(2.0 * jnp.pi * u[1])
        w = c * z
        positive = w > -1  # v = (1 + w)^3 > 0
        w_safe = jnp.where(positive, w, 0.0)
        log_bound = 0.5 * z * z + d * (3.0 * jnp.log1p(w_safe) - w_safe * (3.0 + w_safe * (3.0 + w_safe)))
        take = pending(x) & positive & (jnp.log1p(-u[2]) < log_bound)
        return round_ + 1, jnp.where(take, d * (1.0 + w_safe) ** 3, x), jnp.where(take, u[3], boost_u)

    start = (jnp.asarray(0, jnp.uint32), jnp.full(n, jnp.nan, dtype), jnp.ones(n, dtype))
    _, x, boost_u = jax.lax.while_loop(lambda carry: jnp.any(pending(carry[1])), propose, start)
    x = jnp.where(boosted, x * boost_u ** (1.0 / jnp.where(boosted, a, 1.0)), x)
    return x.reshape(jnp.shape(shape_params))


# Systems of at most this size, in batches of at least this many rows, can go to the unrolled kernel
# (:func:`_bordered_cholesky`, :func:`_back_substitute`) instead of XLA's batched LAPACK calls,
# whose per-row call overhead dominates small systems. But the unrolled graph compiles several
# times slower per call site, so it pays only where a compiled function runs hundreds of times:
# the Gibbs sweep (:func:`sample_gaussian` decides by size), not the tens of sweeps of ALS, PMF
# MAP or a fold-in (:func:`solve_spd` defaults to LAPACK). Small batches keep LAPACK everywhere:
# the per-row saving there does not pay back the compile time within a fit. Timings:
# benchmarks/RESULTS.md, "Unrolled Cholesky for the Gibbs draws".
UNROLLED_MAX_SIZE = 16
UNROLLED_MIN_ROWS = 2048


def _use_unrolled(precision, unrolled: bool | None) -> bool:
    """``unrolled`` when given, else the size rule above (static shapes, decided at trace time)."""
    if unrolled is not None:
        return unrolled
    return unrolled_by_size(math.prod(precision.shape[:-2]), precision.shape[-1])


def unrolled_by_size(n_rows: int, size: int) -> bool:
    """The size rule of :func:`sample_gaussian` for ``n_rows`` systems of ``size x size``."""
    return size <= UNROLLED_MAX_SIZE and n_rows >= UNROLLED_MIN_ROWS


def _jittered(precision, jitter):
    """``precision + jitter * I``; ``jitter`` may be traced (the sampler retries a failed sweep with
    jitter > 0)."""
    return precision + jitter * jnp.eye(precision.shape[-1], dtype=precision.dtype)


def _bordered_cholesky(precision, shift):
    """Cholesky factor ``L`` of every ``P`` and ``w = L^-1 h``, batch axes last.

    Factorises the bordered matrix ``[[P, h], [h^T, *]]`` by columns (left-looking): its last row
    below the ``k x k`` block is ``w^T``, since ``L w = h``, so the forward solve comes with the
    factorisation. Every operation acts on whole vectors over the rows (batch axes last, so the
    innermost loop runs over rows and vectorises). ``precision`` (..., k, k), ``shift`` (..., k)
    -> ``L`` (k, k, ...) lower triangular, ``w`` (k, ...). A non-PD matrix gives NaN, as
    :func:`jnp.linalg.cholesky` does.
    """
    k = precision.shape[-1]
    bordered = jnp.concatenate([jnp.moveaxis(precision, (-2, -1), (0, 1)), jnp.moveaxis(shift, -1, 0)[None]])
    factor = jnp.zeros_like(bordered)  # (k + 1, k, ...)
    for j in range(k):  # unrolled over the rank, never over rows
        column = bordered[j:, j]
        if j:
            column = column - jnp.sum(factor[j:, :j] * factor[j, :j][None], axis=1)
        # a static-offset update, not .at[].set (a scatter: slower to compile and to run)
        update = (column * jax.lax.rsqrt(column[0]))[:, None]
        factor = jax.lax.dynamic_update_slice(factor, update, (j, j) + (0,) * (factor.ndim - 2))
    return factor[:k], factor[k]


def _back_substitute(factor, b):
    """Solve ``L^T x = b`` for ``L`` (k, k, ...) lower triangular and ``b`` (k, ...), batch axes last:
    ``x_i = (b_i - sum_{m > i} L_mi x_m) / L_ii`` from the last row up."""
    k = factor.shape[0]
    x = [None] * k
    for i in reversed(range(k)):
        s = b[i]
        if i < k - 1:
            s = s - jnp.sum(factor[i + 1:, i] * jnp.stack(x[i + 1:]), 0)
        x[i] = s / factor[i, i]
    return jnp.stack(x)


def cholesky(precision, jitter: float = 0.0):
    """Lower Cholesky factors of ``precision + jitter * I``; shape (n, k, k).

    A failed factorisation shows up as NaN entries (JAX does not raise inside jit); callers
    check :func:`all_finite` and retry once with jitter on the host.
    """
    return jnp.linalg.cholesky(_jittered(precision, jitter))


def solve_spd(precision, rhs, jitter: float = 0.0, unrolled: bool | None = False):
    """Solve ``precision @ x = rhs`` for SPD ``precision`` (n, k, k), ``rhs`` (n, k) -> (n, k).

    ``unrolled``: the unrolled kernel (True), XLA's LAPACK calls (False, the default: see
    :data:`UNROLLED_MAX_SIZE` for why), or decide by size (None)."""
    if _use_unrolled(precision, unrolled):
        factor, half = _bordered_cholesky(_jittered(precision, jitter), rhs)
        return jnp.moveaxis(_back_substitute(factor, half), 0, -1)
    chol = cholesky(precision, jitter)
    return cho_solve((chol, True), rhs[..., None])[..., 0]


class GaussianFactor(NamedTuple):
    """Cholesky factor ``L`` of every precision ``P = L L^T`` and ``w = L^-1 h``
    (:func:`factor_gaussian`): ``L`` (k, k, n), ``w`` (k, n) with ``batch_last`` (the unrolled
    kernel), else ``L`` (n, k, k), ``w`` (n, k)."""

    chol: jnp.ndarray
    half: jnp.ndarray
    batch_last: bool


def factor_gaussian(precision, shift, jitter: float = 0.0, unrolled: bool | None = None) -> GaussianFactor:
    """:class:`GaussianFactor` of ``N(P^-1 h, P^-1)`` for each row, ``P`` = ``precision``
    (n, k, k), ``h`` = ``shift`` (n, k); ``unrolled`` as in :func:`solve_spd`, by default (None)
    decided by size."""
    if _use_unrolled(precision, unrolled):
        return GaussianFactor(*_bordered_cholesky(_jittered(precision, jitter), shift), True)
    chol = cholesky(precision, jitter)
    return GaussianFactor(chol, solve_triangular(chol, shift[..., None], lower=True)[..., 0], False)


def last_pivot(factor: GaussianFactor):
    r"""``(s, r)`` (n,) of the last coordinate: with ``P = [[B, p], [p^T, d]]`` and ``h = [h_1; h_2]``,
    ``s = d - p^T B^{-1} p = L_kk^2`` (the Schur complement: the precision of the last coordinate
    with the others integrated out) and ``r = h_2 - p^T B^{-1} h_1 = w_k L_kk`` (its information),
    so that coordinate's marginal is ``N(r / s, 1 / s)``."""
    L_kk = factor.chol[-1, -1] if factor.batch_last else factor.chol[:, -1, -1]
    w_k = factor.half[-1] if factor.batch_last else factor.half[:, -1]
    return L_kk * L_kk, w_k * L_kk


def with_last_pivot(factor: GaussianFactor, s_new) -> GaussianFactor:
    """The factor of ``P`` with its last diagonal entry changed so that :func:`last_pivot`'s ``s``
    becomes ``s_new`` (n,) (``h`` unchanged): only ``L_kk`` and ``w_k`` depend on that entry."""
    _, r = last_pivot(factor)
    L_kk = jnp.sqrt(s_new)
    if factor.batch_last:
        k = factor.chol.shape[0]
        chol = jax.lax.dynamic_update_slice(factor.chol, L_kk[None, None], (k - 1, k - 1) + (0,) * L_kk.ndim)
        half = jax.lax.dynamic_update_slice(factor.half, (r / L_kk)[None], (k - 1,) + (0,) * L_kk.ndim)
        return GaussianFactor(chol, half, True)
    return GaussianFactor(factor.chol.at[:, -1, -1].set(L_kk), factor.half.at[:, -1].set(r / L_kk), False)


def draw_from_factor(factor: GaussianFactor, z):
    """``(x, mean)`` (n, k) of :func:`sample_gaussian` from its factor and standard normals ``z`` (n, k)."""
    if factor.batch_last:
        x = _back_substitute(factor.chol, factor.half + jnp.moveaxis(z, -1, 0))
        mean = _back_substitute(factor.chol, factor.half)
        return jnp.moveaxis(x, 0, -1), jnp.moveaxis(mean, 0, -1)
    half = factor.half[..., None]
    x = solve_triangular(factor.chol, half + z[..., None], lower=True, trans=1)[..., 0]
    mean = solve_triangular(factor.chol, half, lower=True, trans=1)[..., 0]
    return x, mean


def sample_gaussian(key, precision, shift, jitter: float = 0.0, unrolled: bool | None = None, normals=None):
    """Draw ``x ~ N(P^-1 h, P^-1)`` for each row, with ``P`` = ``precision`` (n, k, k), ``h`` = ``shift``.

    With ``P = L L^T``: mean ``m = L^-T L^-1 h`` and ``x = m + L^-T z``, ``z ~ N(0, I)``, because
    ``Cov(L^-T z) = L^-T L^-1 = P^-1``; computed as ``x = L^-T (L^-1 h + z)`` (two triangular
    solves). Returns (x, mean), both (n, k); under ``jit`` an unused ``mean`` costs nothing.
    ``unrolled``: as in :func:`solve_spd`, but by default (None) decided by size; both kernels
    use the same ``z`` and agree to rounding. ``normals`` (n, k): the ``z`` to use instead of
    drawing them from ``key`` (the sharded sampler's rows, :mod:`bayesmf.engines.sharding`).
    """
    z = standard_normal(key, shift.shape, shift.dtype) if normals is None else normals
    return draw_from_factor(factor_gaussian(precision, shift, jitter, unrolled), z)


def conjugate_gradient(matvec, rhs, x0, steps: int):
    """``steps`` iterations of conjugate gradient on each row's SPD system, from ``x0``.

    ``matvec(p)`` maps (n, k) -> (n, k) applying each row's matrix. Fixed iteration count (as in
    Takacs et al. 2011 and implicit's CG-ALS): warm-started from the previous factors a few steps
    suffice, and a fixed count keeps the whole sweep one compiled loop.
    """
    r = rhs - matvec(x0)
    p = r
    rs = jnp.sum(r * r, axis=-1)

    def body(_, carry):
        x, r, p, rs = carry
        ap = matvec(p)
        alpha = rs / jnp.maximum(jnp.sum(p * ap, axis=-1), 1e-30)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rs_new = jnp.sum(r * r, axis=-1)
        p = r + (rs_new / jnp.maximum(rs, 1e-30))[:, None] * p
        return x, r, p, rs_new

    x, *_ = jax.lax.fori_loop(0, steps, body, (x0, r, p, rs))
    return x


def nnls(gram, rhs, x0, steps: int = 50):
    """Nonnegative least squares ``min_{x >= 0} 1/2 x^T G x - b^T x`` per row, by projected
    coordinate descent (``steps`` full passes over the ``k`` coordinates).

    Each coordinate update is exact for the 1-D problem then clipped at zero, so the objective
    never increases; the fixed point satisfies the KKT conditions. Shapes: ``gram`` (n, k, k),
    ``rhs`` (n, k), ``x0`` (n, k) nonnegative.
    """
    k = gram.shape[-1]
    diag = jnp.maximum(jnp.diagonal(gram, axis1=-2, axis2=-1), 1e-12)

    def coordinate(i, x):
        grad_i = jnp.einsum("nk,nk->n", gram[:, i, :], x) - rhs[:, i]
        return x.at[:, i].set(jnp.maximum(x[:, i] - grad_i / diag[:, i], 0.0))

    def sweep(_, x):
        return jax.lax.fori_loop(0, k, coordinate, x)

    return jax.lax.fori_loop(0, steps, sweep, jnp.maximum(x0, 0.0))


def all_finite(*arrays) -> jnp.ndarray:
    """Scalar bool: every element of every array is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))
