r"""Blocked Gibbs sampler for BPMF: pure ``init``/``step`` functions over a pytree state.

One sweep draws, in order (each from its exact full conditional under
:func:`bayesmf.posterior.model.bpmf_model`):

1. ``(mu_U, Lambda_U) | U`` and ``(mu_V, Lambda_V) | V`` — Normal-Wishart posteriors. With
   ``N`` rows, ``xbar`` their mean and ``S = sum_i (x_i - xbar)(x_i - xbar)^T``:

   .. math::
      \beta_N = \beta_0 + N,\quad \nu_N = \nu_0 + N,\quad
      \mu_N = (\beta_0 \mu_0 + N \bar x) / \beta_N, \\
      W_N^{-1} = W_0^{-1} + S + \tfrac{\beta_0 N}{\beta_N} (\mu_0 - \bar x)(\mu_0 - \bar x)^\top, \\
      \Lambda \sim \mathcal W(W_N, \nu_N),\qquad \mu \mid \Lambda \sim \mathcal N(\mu_N, (\beta_N \Lambda)^{-1}).

2. every user row at once, ``u_i | V, mu_U, Lambda_U ~ N(P_i^{-1} h_i, P_i^{-1})`` with

   .. math::
      P_i = \Lambda_U + \alpha \sum_{j \in N(i)} v_j v_j^\top,\qquad
      h_i = \Lambda_U \mu_U + \alpha \sum_{j \in N(i)} (r_{ij} - m) v_j

   (the sums are the chunked Gram matrices of :mod:`bayesmf.engines.chunks`; a user
   without ratings is drawn from the prior), then every item row the same way given the new U;
3. the offset ``m | U, V ~ N(mu_m, 1/P_m)`` when it has a prior ``N(m_0, s_0^2)``:
   ``P_m = 1/s_0^2 + alpha nnz`` and ``mu_m = (m_0/s_0^2 + alpha sum_ij (r_ij - u_i.v_j)) / P_m``;
   the sum of residuals comes from the item half step too (its targets' sum minus
   ``sum_j v_j . sum_{i in N(j)} u_i``, :func:`~bayesmf.engines.chunks.residual_sum`);
4. ``alpha | U, V ~ Gamma(a_0 + nnz/2, b_0 + SSE/2)`` when alpha has a Gamma prior; the SSE
   comes from the item half step's systems (``yy - 2 x.b + x^T G x`` summed over items), not
   from another pass over the ratings, updated for the new offset
   (``SSE - 2 Delta R + nnz Delta^2``, ``Delta`` the offset's change, ``R`` the residuals' sum).

The ratings are stored centred at a constant ``c`` (``GibbsData.centre``, the training mean):
the targets of a half step are ``r_ij - c`` minus the shift ``m - c`` (and the other side's
biases), which keeps float32 sums of residuals small.

5. a move along the likelihood's invariance ``u_i -> A u_i``, ``v_j -> A^{-1} v_j`` that carries
   the hyperparameters with it (:func:`rescale_move`), so that the scale the factors share
   between the two sides mixes in one step instead of by a random walk of the blocked updates;
   with biases, two along ``u_i -> u_i + x``, ``c_j -> c_j - x.v_j`` (and the same with the sides
   swapped; :func:`shift_move`), the means the factors share with the biases, and with a learned
   offset two more along ``m -> m + d``, ``b -> b - d`` (:func:`translate_move`), the level the
   offset shares with the biases. The rescaling is made :data:`RESCALE_REPEATS` times (it costs
   ``O(D^3)`` each), each with its own random axes. With biases the sweep also *starts* with
   both shifts drawn jointly with the offset's translation and with the bias precision
   integrated out (:func:`collapsed_shift_move`; the conjugate draw of the bias precisions,
   before the rows, completes that block), and each side's half step draws its bias precision
   again with that side's rows and biases integrated out, then the rows and biases given it (one
   block on the three, :func:`marginal_bias_precision`; from the half step's own systems, so
   without another pass over the ratings).

With biases, each user's ``(u_i, b_i)`` is drawn jointly: it is the same Gaussian conditional on
the augmented vector ``x_i = [u_i; b_i]`` with item features ``[v_j; 1]``, targets
``r_ij - m - c_j`` and prior precision ``blockdiag(Lambda_U, lambda_b)`` (``u_i`` and ``b_i``
are independent a priori, and the likelihood is linear in ``x_i``); items likewise. The bias
precisions are conjugate: ``lambda_b | b ~ Gamma(a_b + n/2, b_b + |b|^2 / 2)``.

Noise models (``prior.noise``, :mod:`bayesmf.posterior.model`): each rating has the precision
``alpha w_ij``; ``w = 1`` for ``"gaussian"``. The others add one step at the *start* of the sweep,
from the residuals ``e_ij = r_ij - m - b_i - c_j - u_i.v_j`` of the current state (one gather
pass over the ratings, O(nnz D), which the Gaussian model never pays):

* ``"student_t"``: ``w_ij ~ Gamma(nu/2, nu/2)`` a priori (``e_ij ~ t_nu / sqrt(alpha)``
  marginally), so ``w_ij | rest ~ Gamma((nu + 1)/2, (nu + alpha e_ij^2)/2)``, drawn afresh each
  sweep (not kept in the state: nothing else depends on the previous draw);
* ``"heteroscedastic"``: ``w_ij = tau_i kappa_j`` with ``tau_i ~ Gamma(a_u, a_u)``,
  ``kappa_j ~ Gamma(a_v, a_v)`` (mean 1: ``alpha`` keeps the overall scale), so
  ``tau_i | rest ~ Gamma(a_u + n_i/2, a_u + alpha/2 sum_j kappa_j e_ij^2)`` and then
  ``kappa_j | rest ~ Gamma(a_v + n_j/2, a_v + alpha/2 sum_i tau_i e_ij^2)`` with the new ``tau``.

Given ``w`` every later conditional is the one above with weighted sums: ``P_i = Lambda_U + alpha
sum_j w_ij v_j v_j^T``, ``h_i = Lambda_U mu_U + alpha sum_j w_ij (r_ij - m) v_j``
(:func:`~bayesmf.engines.chunks.gram_rhs` with ``weights``), ``P_m = 1/s_0^2 + alpha sum w``
with the weighted residual sum, and ``alpha ~ Gamma(a_0 + nnz/2, b_0 + sum w e^2 / 2)``. The
training RMSE of :class:`GibbsInfo` is then that of the sweep's starting state (unweighted).

Ordinal likelihood (``prior.likelihood == "ordinal"``, :mod:`bayesmf.posterior.ordinal`): the
sweep starts with the block ``(c, z) | f`` from the state's predictions (cutpoints by an
independence Metropolis-Hastings step with ``z`` integrated out, then the truncated-normal latent
values); every later conditional is the Gaussian one above with ``alpha = 1`` and the targets
``z_ij`` in place of the ratings (laid into both sides' chunks through their rating index).
``z`` is not kept in the state: nothing depends on the previous draw.

Wishart draws use the Bartlett decomposition: with ``W = L L^T`` and lower-triangular ``A``,
``A_kk = sqrt(chi2(nu - k))`` (k = 0..D-1), ``A_kl ~ N(0, 1)`` below the diagonal,
``L A A^T L^T ~ W(W, nu)``.

State, data and info are NamedTuples (pytrees), so ``step`` can be jitted, vmapped over chains
and scanned. Shapes: ``U`` (n_users, D), ``V`` (n_items, D), ``mu_*`` (D,), ``Lambda_*`` (D, D).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from bayesmf.engines import sharding
from bayesmf.engines.chunks import Chunks, gram_chunks_for
from bayesmf.engines.driver import Kernel
from bayesmf.engines.linalg import (
    all_finite,
    draw_from_factor,
    factor_gaussian,
    last_pivot,
    standard_gamma,
    standard_normal,
    unrolled_by_size,
    with_last_pivot,
)
from bayesmf.posterior import ordinal
from bayesmf.posterior.model import Prior


class GibbsData(NamedTuple):
    """Training ratings laid out for the sampler; ``residual`` is ``r - centre`` per rating."""

    user_chunks: Chunks
    item_chunks: Chunks
    users: jnp.ndarray
    items: jnp.ndarray
    residual: jnp.ndarray
    centre: jnp.ndarray | float = 0.0  # the constant the stored values are centred at
    category: jnp.ndarray | None = None  # (nnz,) int32 category of each rating (likelihood="ordinal")


class GibbsState(NamedTuple):
    """One chain's state: every quantity of the model (a leading chain axis when batched)."""

    U: jnp.ndarray
    """(n_users, D) user factors."""
    V: jnp.ndarray
    """(n_items, D) item factors."""
    mu_U: jnp.ndarray
    """(D,) mean of the user rows."""
    Lambda_U: jnp.ndarray
    """(D, D) precision of the user rows."""
    mu_V: jnp.ndarray
    """(D,) mean of the item rows."""
    Lambda_V: jnp.ndarray
    """(D, D) precision of the item rows."""
    alpha: jnp.ndarray
    """Scalar noise precision."""
    b_U: jnp.ndarray
    """(n_users,) user biases (zeros and never sampled without biases)."""
    b_V: jnp.ndarray
    """(n_items,) item biases."""
    bias_precision_U: jnp.ndarray
    """Scalar precision of the user biases."""
    bias_precision_V: jnp.ndarray
    """Scalar precision of the item biases."""
    offset: jnp.ndarray
    """Scalar global offset ``m`` (the centre, never sampled, when it has no prior)."""
    tau: jnp.ndarray | None = None
    """(n_users,) noise precision factors, ``noise="heteroscedastic"`` only."""
    kappa: jnp.ndarray | None = None
    """(n_items,) noise precision factors, ``noise="heteroscedastic"`` only."""
    cutpoints: jnp.ndarray | None = None
    """(K - 1,) cutpoints of the ordered probit, ``likelihood="ordinal"`` only (``c_0 = 0``)."""


class GibbsInfo(NamedTuple):
    """Diagnostics of one sweep (per chain when batched)."""

    train_rmse: jnp.ndarray
    """Training RMSE of the sweep's noise-free predictions."""
    alpha: jnp.ndarray
    """The noise precision drawn."""
    finite: jnp.ndarray
    """False when a factorisation failed (NaN) in this sweep (the driver then retries it with
    jitter)."""
    rescale_accept: jnp.ndarray
    """Share of the rescaling move's D coordinates accepted (0 when off)."""
    cutpoint_accept: jnp.ndarray
    """Whether the cutpoints' Metropolis-Hastings proposal was accepted (ordinal only; else 0)."""


def prepare(ratings, global_mean: float, rank: int, dtype=np.float32, rating_index: bool = False,
            category=None) -> GibbsData:
    """Lay out a :class:`~bayesmf.data.Ratings` for the sampler (host-side, once per fit); the
    chunk size is chosen for ``rank + 1`` gathered columns (the bias column). ``rating_index``:
    record each chunk slot's rating (needed by the non-Gaussian noise models' weights and the
    ordinal likelihood's latent targets). ``category`` (nnz,): the ratings' category indices
    (:func:`bayesmf.posterior.ordinal.encode_levels`) for ``likelihood="ordinal"``; the values
    are then only the targets of the starting point estimate (each sweep replaces them)."""
    residual = (ratings.values - global_mean).astype(dtype, copy=False)
    return GibbsData(
        user_chunks=gram_chunks_for(ratings, "user", rank + 1, residual, dtype, rating_index),
        item_chunks=gram_chunks_for(ratings, "item", rank + 1, residual, dtype, rating_index),
        users=jnp.asarray(ratings.users),
        items=jnp.asarray(ratings.items),
        residual=jnp.asarray(residual),
        centre=jnp.asarray(global_mean, dtype),
        category=None if category is None else jnp.asarray(category, jnp.int32),
    )


def init(key, prior: Prior, n_users: int, n_items: int, U=None, V=None, dtype=jnp.float32,
         offset: float = 0.0, cutpoints=None) -> GibbsState:
    """Initial state: given factors (e.g. the PMF MAP solution), else small random ones;
    hyperparameters at their prior means (``Lambda = nu0 W0``, ``mu = mu0``); the offset at
    ``offset`` (the data's centre, :func:`prepare`); ordinal: ``cutpoints`` (K - 1,), default
    :func:`~bayesmf.posterior.ordinal.initial_cutpoints`."""
    D = prior.rank
    ku, kv = jax.random.split(key)
    if U is None:
        U = 0.1 * standard_normal(ku, (n_users, D), dtype)
    if V is None:
        V = 0.1 * standard_normal(kv, (n_items, D), dtype)
    lam = prior.nu * prior.w0_matrix(dtype)
    mu = jnp.full((D,), prior.mu0, dtype)
    one = jnp.asarray(1.0, dtype)
    tau = kappa = None
    if prior.noise == "heteroscedastic":  # at their prior means
        tau, kappa = jnp.ones(n_users, dtype), jnp.ones(n_items, dtype)
    if prior.ordinal:
        cutpoints = ordinal.initial_cutpoints(prior.n_categories, dtype) if cutpoints is None else cutpoints
        cutpoints = jnp.asarray(cutpoints, dtype)
    else:
        cutpoints = None
    return GibbsState(jnp.asarray(U, dtype), jnp.asarray(V, dtype), mu, lam, mu, lam, jnp.asarray(prior.alpha, dtype),
                      jnp.zeros(n_users, dtype), jnp.zeros(n_items, dtype), one, one, jnp.asarray(offset, dtype),
                      tau, kappa, cutpoints)


def wishart_chi2_shapes(df, D: int, dtype=jnp.float32):
    """Gamma shapes ``(df - k) / 2``, k = 0..D-1, of the Bartlett diagonal (``chi2(m) = 2 Gamma(m/2)``)."""
    return (df - jnp.arange(D, dtype=dtype)) / 2.0


def bartlett_factor(normals, gamma_draws):
    """Bartlett's lower-triangular ``A`` (D, D) of a ``Wishart(I, nu)`` draw ``A A^T``: standard
    normals below the diagonal (from ``normals``, D * D of them, the rest unused) and
    ``sqrt(chi2)`` on it, ``chi2 = 2 * gamma_draws`` with shapes :func:`wishart_chi2_shapes`."""
    D = gamma_draws.shape[-1]
    return jnp.tril(normals.reshape(D, D), -1) + jnp.diag(jnp.sqrt(2.0 * gamma_draws))


def sample_wishart(key, scale, df, gamma_draws=None):
    """One draw of ``Wishart(scale, df)`` (mean ``df * scale``) by the Bartlett decomposition.

    ``gamma_draws`` (D,): standard Gamma variates with shapes :func:`wishart_chi2_shapes` drawn
    by the caller (the sampler draws every Gamma variate of a sweep in one call: each separate
    Gamma call site adds its own XLA compilation); drawn here when None.
    """
    D = scale.shape[-1]
    k_diag, k_off = jax.random.split(key)
    if gamma_draws is None:
        gamma_draws = standard_gamma(k_diag, wishart_chi2_shapes(df, D, scale.dtype))
    A = bartlett_factor(standard_normal(k_off, (D * D,), scale.dtype), gamma_draws)
    LA = jnp.linalg.cholesky(scale) @ A
    return LA @ LA.T


def normal_wishart_posterior(X, prior: Prior):
    """``(mu_N, C_N, beta_N)`` of the Normal-Wishart posterior given rows ``X`` (N, D) (module
    docstring), with ``C_N`` the lower Cholesky factor of ``W_N^{-1}`` (``W_N`` itself is never
    formed: :func:`draw_normal_wishart` needs only this factor); ``nu_N = nu_0 + N``."""
    N, D = X.shape
    dtype = X.dtype
    xbar = X.mean(axis=0)
    centred = X - xbar
    scatter = centred.T @ centred
    beta_n = prior.beta0 + N
    mu0 = jnp.full((D,), prior.mu0, dtype)
    mu_n = (prior.beta0 * mu0 + N * xbar) / beta_n
    diff = mu0 - xbar
    w_inv = jnp.eye(D, dtype=dtype) / prior.w0 + scatter + (prior.beta0 * N / beta_n) * jnp.outer(diff, diff)
    return mu_n, jnp.linalg.cholesky(w_inv), jnp.asarray(beta_n, dtype)


def draw_normal_wishart(key, mu_n, w_inv_chol, beta_n, gamma_draws):
    r"""``Lambda ~ W(W_N, nu_N)`` and ``mu | Lambda ~ N(mu_N, (beta_N Lambda)^-1)`` from the
    factor ``C`` of ``W_N^{-1} = C C^T`` (:func:`normal_wishart_posterior`) and the caller's
    standard Gamma variates with shapes :func:`wishart_chi2_shapes` of ``nu_N``.

    ``W_N = F F^T`` with ``F = C^{-T}``, so Bartlett gives ``Lambda = X X^T``, ``X = C^{-T} A``
    (one triangular solve; no inverse of ``W_N^{-1}``). Then
    ``Lambda^{-1} = C A^{-T} A^{-1} C^T``, so ``mu = mu_N + C A^{-T} z / sqrt(beta_N)`` with
    ``z ~ N(0, I)`` has covariance ``(beta_N Lambda)^{-1}``. vmap-able over a leading axis of sides.
    """
    D = mu_n.shape[-1]
    normals = standard_normal(key, (D * D + D,), mu_n.dtype)
    A = bartlett_factor(normals[: D * D], gamma_draws)
    X = solve_triangular(w_inv_chol, A, lower=True, trans=1)
    y = solve_triangular(A, normals[D * D:], lower=True, trans=1)
    return mu_n + (w_inv_chol @ y) / jnp.sqrt(beta_n), X @ X.T


def sample_normal_wishart(key, X, prior: Prior):
    """Draw ``(mu, Lambda)`` from the Normal-Wishart posterior given rows ``X`` (N, D) (one side on
    its own; :func:`step` draws both sides at once)."""
    N, D = X.shape
    k_gamma, k_draw = jax.random.split(key)
    gamma_draws = standard_gamma(k_gamma, wishart_chi2_shapes(prior.nu + N, D, X.dtype))
    return draw_normal_wishart(k_draw, *normal_wishart_posterior(X, prior), gamma_draws)


def conditional_rows(key, other, chunks: Chunks, mu, lam, alpha, jitter=0.0, other_bias=None,
                     prior_precision=None, prior_shift=None, shift=0.0, sums: bool = False, weights=None):
    """Draw every row of one side from ``N(P_i^{-1} h_i, P_i^{-1})`` (see module docstring):
    ``P_i = P0 + alpha G_i``, ``h_i = h0 + alpha b_i`` with the prior ``P0 = Lambda``,
    ``h0 = Lambda mu`` unless ``prior_precision``/``prior_shift`` are given (the augmented
    bias case). The targets are the stored residuals minus ``shift`` (the offset's distance
    from the data's centre) and minus ``other_bias`` of each rating's column when given.

    Returns (draws, conditional means, SSE, R): the draws and means (n_rows, D), the sum of
    squared residuals of every rating given the draws, and (with ``sums``; else 0) the sum of
    those residuals. ``weights`` (nnz,): each rating's precision multiplier ``w_ij`` (noise
    models, module docstring); every sum, SSE and R included, is then weighted.

    ``chunks`` a :class:`~bayesmf.engines.sharding.ShardedChunks` (inside
    :func:`~bayesmf.engines.sharding.call`): each device draws its own rows with those rows' share
    of the normals one device would draw, the rows are all-gathered and the sums added per
    chunk (:mod:`bayesmf.engines.sharding`); the conditional means are then not formed (None).
    """
    return _conditional_rows(key, other, chunks, mu, lam, alpha, jitter, other_bias, prior_precision, prior_shift,
                             shift, sums, weights)[:4]


def _conditional_rows(key, other, chunks, mu, lam, alpha, jitter, other_bias, prior_precision, prior_shift, shift,
                      sums, weights, last_prior=None):
    """:func:`conditional_rows`, returning also the prior precision ``P0`` it drew with.
    ``last_prior``: a function ``(s, r, rated) -> p`` of per-row arrays (n_rows,) in row order
    that chooses the last diagonal entry ``p`` of ``P0`` (a bias precision) after the rows'
    systems are formed and before the rows are drawn: ``s`` and ``r`` are each row's precision
    and information of its last coordinate with the others integrated out
    (:func:`~bayesmf.engines.linalg.last_pivot`) at ``p = 0``, ``rated`` whether the row has
    ratings. The systems are factorised once: ``p`` changes only their last pivot."""
    stats = sharding.row_stats(chunks, other, other_bias, shift, sums=sums, weights=weights)
    gram, rhs, yy = stats[:3]
    p0 = lam if prior_precision is None else prior_precision
    h0 = lam @ mu if prior_shift is None else prior_shift
    precision, h = p0[None] + alpha * gram, h0[None] + alpha * rhs
    if sharding.is_sharded(chunks):
        normals = standard_normal(key, (chunks.n_rows, h.shape[-1]), h.dtype)  # one device's stream
        factor = factor_gaussian(precision, h, jitter, unrolled_by_size(*normals.shape))
        z = sharding.local(chunks, normals)
    else:
        factor, z = factor_gaussian(precision, h, jitter), standard_normal(key, h.shape, h.dtype)
    if last_prior is not None:
        s, r = last_pivot(factor)
        old = p0[-1, -1]
        rated = (gram[:, -1, -1] > 0).astype(s.dtype)
        full = sharding.gather_rows(chunks, jnp.stack([s - old, r, rated], axis=1))  # every row, in row order
        new = last_prior(full[:, 0], full[:, 1], full[:, 2] > 0).astype(p0.dtype)
        factor = with_last_pivot(factor, s + (new - old))
        p0 = p0.at[-1, -1].set(new)
    x, mean = draw_from_factor(factor, z)
    total = sharding.residual_sum(chunks, x, *stats[3:]) if sums else jnp.zeros((), x.dtype)
    sse = sharding.squared_error(chunks, x, gram, rhs, yy)
    if sharding.is_sharded(chunks):
        x, mean = _prior_rows(chunks, sharding.gather_rows(chunks, x), p0, h0, normals, jitter), None
    return x, mean, sse, total, p0


def _prior_rows(chunks, x, p0, h0, normals, jitter):
    """``x`` (n_rows, D) with the rows without ratings (in no chunk of a sharded layout) drawn from
    the prior ``N(P0^{-1} h0, P0^{-1})`` with their normals, as the unsharded draw gives them."""
    chol = jnp.linalg.cholesky(p0 + jitter * jnp.eye(p0.shape[0], dtype=p0.dtype))
    half = solve_triangular(chol, h0, lower=True)
    prior = solve_triangular(chol, half[:, None] + normals.T, lower=True, trans=1).T
    return jnp.where(sharding.empty_rows(chunks)[:, None], prior, x)


def rows_with_biases(key, other, other_bias, chunks, mu, lam, bias_precision, alpha, jitter, shift=0.0,
                     sums: bool = False, weights=None, collapse=None):
    """Joint draw of ``(x_i, bias_i)`` for every row given the other side's factors and biases.
    ``collapse``: ``(normals, prior)``, two standard normals and the model, to draw the bias
    precision first with the rows and biases integrated out (:func:`marginal_bias_precision`;
    ``bias_precision`` is then its current value), making ``(lambda, x, bias)`` one block.
    Returns (factors, biases, SSE, residual sum, bias precision) (:func:`conditional_rows`)."""
    D = other.shape[-1]
    features = jnp.concatenate([other, jnp.ones((other.shape[0], 1), other.dtype)], axis=1)
    p0 = jnp.zeros((D + 1, D + 1), other.dtype).at[:D, :D].set(lam).at[D, D].set(bias_precision)
    h0 = jnp.concatenate([lam @ mu, jnp.zeros((1,), other.dtype)])
    last_prior = None
    if collapse is not None:
        normals, prior = collapse
        last_prior = functools.partial(marginal_bias_precision, normals, current=bias_precision,
                                       bias_prior=prior.bias_prior)
    x, _, sse, total, p0 = _conditional_rows(key, features, chunks, mu, lam, alpha, jitter, other_bias, p0, h0,
                                             shift, sums, weights, last_prior)
    return x[:, :D], x[:, D], sse, total, p0[D, D]


def metropolis_accept(normal, log_ratio):
    """Metropolis-Hastings acceptance with probability ``min(1, exp(log_ratio))`` from a standard
    normal variate (the sampler's one call site for normals): ``Phi(normal)`` is uniform, and
    ``u < exp(min(log_ratio, 0))`` is ``log u < log_ratio`` (``ndtr`` compiles to far fewer
    operations than ``log Phi``)."""
    return jax.scipy.special.ndtr(normal) < jnp.exp(jnp.minimum(log_ratio, 0.0))


def marginal_bias_precision(normals, s, r, rated, current, bias_prior):
    r"""One side's bias precision ``lambda`` drawn with that side's rows and biases integrated
    out, given everything else (``rows_with_biases(collapse=...)`` then draws the rows and biases
    given it: one Gibbs block on the three).

    Row ``i``'s ``(x_i, b_i)`` is Gaussian given the rest with precision ``P_i(\lambda) =
    P_i(0) + \lambda e e^\top`` (``e`` the bias coordinate) and information ``h_i`` (free of
    ``lambda``: the biases' prior mean is 0). Integrating ``(x_i, b_i)`` out of prior times
    likelihood leaves ``|\lambda e e^\top + \cdot|^{1/2} |P_i(\lambda)|^{-1/2}
    \exp(h_i^\top P_i(\lambda)^{-1} h_i / 2)``; with ``s_i``, ``r_i`` the Schur complement and
    information of the bias coordinate at ``lambda = 0`` (the bias's precision and information
    with ``x_i`` integrated out), ``|P_i(\lambda)| \propto s_i + \lambda`` and
    ``h_i^\top P_i^{-1} h_i = \text{const} + r_i^2 / (s_i + \lambda)``, so with a
    ``Gamma(a_b, b_b)`` prior and ``t = \log\lambda``

    .. math::
        \log p(t \mid \cdot) = a_b t - b_b e^t + \sum_{i\ \text{rated}} \Big(\tfrac t2
        - \tfrac12 \log(s_i + e^t) + \frac{r_i^2}{2 (s_i + e^t)}\Big) + \text{const}

    (a row without ratings has ``s_i = r_i = 0``: its terms cancel). ``t`` is drawn by an
    independence Metropolis-Hastings step from ``N(t_*, 1.2^2 / H)``, ``t_*`` four Newton steps
    towards the mode from the conjugate guess ``(a_b + m/2) / (b_b + \sum_i (r_i/s_i)^2 / 2)``
    (``m`` rated rows) and ``H`` the curvature of the last step: the proposal depends only on what
    the block conditions on, so the independence ratio is exact. ``current``: the state's ``lambda``.
    ``normals`` (2,): the proposal's and the acceptance's. With the rows integrated out,
    ``lambda`` no longer alternates with the biases of rarely rated rows (prior-dominated,
    ``|b|^2 \propto 1/\lambda``) nor with the split of a row's effect between its bias and
    its factor's component along the other side's mean row.
    """
    a_b, b_b = bias_prior
    w = rated.astype(s.dtype)
    s = jnp.where(rated, jnp.maximum(s, 1e-12), 1.0)
    r2 = jnp.where(rated, r * r, 0.0)
    m = jnp.sum(w)

    def newton(_, carry):  # one Newton step on t, gradient and curvature in closed form
        t, _ = carry
        lam = jnp.exp(t)
        iq = 1.0 / (s + lam)
        grad = a_b + 0.5 * m - b_b * lam - 0.5 * lam * jnp.sum(w * iq * (1.0 + r2 * iq))
        curv = -b_b * lam - 0.5 * lam * jnp.sum(w * iq * iq * (s + r2 * (s - lam) * iq))
        curv = jnp.minimum(curv, -1e-3)
        return t - grad / curv, curv

    t0 = jnp.log((a_b + 0.5 * m) / (b_b + 0.5 * jnp.sum(r2 / (s * s))))
    t, curv = jax.lax.fori_loop(0, 4, newton, (t0, jnp.asarray(-1.0, s.dtype)))
    sd = 1.2 / jnp.sqrt(-curv)
    t_new = t + sd * normals[0]
    points = jnp.stack([t_new, jnp.log(current)])
    q = s[None] + jnp.exp(points)[:, None]
    log_target = (a_b + 0.5 * m) * points - b_b * jnp.exp(points) + 0.5 * jnp.sum(w * (r2 / q - jnp.log(q)), axis=1)
    log_weight = log_target + 0.5 * ((points - t) / sd) ** 2  # target over proposal
    accept = metropolis_accept(normals[1], log_weight[0] - log_weight[1])
    return jnp.exp(jnp.where(accept, t_new, points[1]))


def _bias_precision(gamma_draw, bias, prior: Prior):
    """``lambda_b | b ~ Gamma(a_b + n/2, b_b + |b|^2/2)`` from a standard Gamma(a_b + n/2) variate."""
    _, b = prior.bias_prior
    return (gamma_draw / (b + 0.5 * jnp.sum(bias**2))).astype(bias.dtype)


def _gamma_shapes(prior: Prior, n_users: int, n_items: int, nnz: int, dtype):
    """Shapes of every Gamma variate one sweep needs, in one vector: the Bartlett diagonals of
    both Wishart draws (D each), then the two bias precisions and the noise precision. The last
    three are drawn (with shape placeholders) even when the prior has no biases or a fixed noise,
    so that the layout of the vector does not depend on the prior."""
    D = prior.rank
    a_b = prior.bias_prior[0] if prior.has_biases else 1.0
    a_0 = prior.noise_prior[0] if prior.noise_prior is not None else 1.0
    return jnp.concatenate([
        wishart_chi2_shapes(prior.nu + n_users, D, dtype), wishart_chi2_shapes(prior.nu + n_items, D, dtype),
        jnp.asarray([a_b + n_users / 2.0, a_b + n_items / 2.0, a_0 + nnz / 2.0], dtype)])


def rating_predictions(U, V, data: GibbsData, b_U=None, b_V=None, shift=0.0):
    """Noise-free predictions relative to the centre, ``m - centre + b_i + c_j + u.v``, per
    rating (nnz,) (gathers, no loop), ``shift = m - centre``."""
    pred = shift + jnp.sum(U[data.users] * V[data.items], axis=-1)
    if b_U is not None:
        pred = pred + b_U[data.users] + b_V[data.items]
    return pred


def rating_residuals(U, V, data: GibbsData, b_U=None, b_V=None, shift=0.0):
    """Training residuals ``r - m - b_i - c_j - u.v`` per rating (nnz,), ``shift = m - centre``."""
    return data.residual - rating_predictions(U, V, data, b_U, b_V, shift)


def latent_targets(key, state: GibbsState, data: GibbsData, prior: Prior, shift):
    """The ordinal likelihood's block at the start of a sweep: ``(c, z) | f``
    (:func:`bayesmf.posterior.ordinal.sample_ordinal`) from the state's predictions ``f``, then
    ``data`` with ``z - centre`` as every rating's target (in both sides' chunks, through their
    rating index). Returns (data, new cutpoints, accepted)."""
    biases = (state.b_U, state.b_V) if prior.has_biases else (None, None)
    f = data.centre + rating_predictions(state.U, state.V, data, *biases, shift)
    z, cutpoints, accepted = ordinal.sample_ordinal(key, f, data.category, state.cutpoints, prior.gap_prior)
    target = (z - data.centre).astype(data.residual.dtype)
    padded = jnp.concatenate([target, jnp.zeros((1,), target.dtype)])  # padding slots hold rating nnz

    def relayout(chunks):
        if sharding.is_sharded(chunks):  # this device's chunks (their padding holds rating nnz too)
            return dataclasses.replace(chunks, chunks=relayout(chunks.chunks))
        return chunks._replace(vals=padded[chunks.rating])

    data = data._replace(residual=target, user_chunks=relayout(data.user_chunks),
                         item_chunks=relayout(data.item_chunks))
    return data, cutpoints, accepted


def residual_sse(U, V, data: GibbsData, b_U=None, b_V=None, shift=0.0):
    """Sum of squared training residuals ``sum (r - m - b_i - c_j - u.v)^2``."""
    return jnp.sum(rating_residuals(U, V, data, b_U, b_V, shift) ** 2)


def noise_weights(key, state: GibbsState, data: GibbsData, prior: Prior, shift):
    """The noise step at the start of a sweep (module docstring), for a non-Gaussian ``prior``:
    returns (per-rating weights ``w`` (nnz,), new ``tau``, new ``kappa`` (None unless
    heteroscedastic), the unweighted SSE of the state's residuals)."""
    dtype = state.U.dtype
    biases = (state.b_U, state.b_V) if prior.has_biases else (None, None)
    e = rating_residuals(state.U, state.V, data, *biases, shift)
    sq = e * e
    if prior.noise == "student_t":
        nu = float(prior.noise_df)
        g = standard_gamma(key, jnp.full(e.shape, (nu + 1.0) / 2.0, dtype))
        return (2.0 * g / (nu + state.alpha * sq)).astype(dtype), None, None, jnp.sum(sq)
    n_users, n_items = state.tau.shape[0], state.kappa.shape[0]
    a_u, a_v = (float(a) for a in prior.precision_shape)
    ones = jnp.ones_like(e)
    n_u = jax.ops.segment_sum(ones, data.users, n_users)
    n_v = jax.ops.segment_sum(ones, data.items, n_items)
    # one Gamma call for both sides: kappa's standard variates do not depend on tau
    g = standard_gamma(key, jnp.concatenate([a_u + n_u / 2.0, a_v + n_v / 2.0]))
    scaled = 0.5 * state.alpha * sq
    tau = g[:n_users] / (a_u + jax.ops.segment_sum(state.kappa[data.items] * scaled, data.users, n_users))
    kappa = g[n_users:] / (a_v + jax.ops.segment_sum(tau[data.users] * scaled, data.items, n_items))
    tau, kappa = tau.astype(dtype), kappa.astype(dtype)
    return tau[data.users] * kappa[data.items], tau, kappa, jnp.sum(sq)


# Rescaling moves per sweep (:func:`rescale_move`): they cost O(D^3) each, the sweep O(nnz D^2).
# One random set of axes per sweep moves the scale along the factors' mean only through its
# projections on them; several sets travel it (benchmarks/RESULTS.md has the measurements).
RESCALE_REPEATS = 20


def step(key, state: GibbsState, data: GibbsData, prior: Prior, jitter=0.0,
         rescale: bool = True) -> tuple[GibbsState, GibbsInfo]:
    """One full Gibbs sweep (hyperparameters, users, items, offset, noise, and with ``rescale``
    the invariance moves and collapsed blocks of the module docstring, item 5). ``prior`` and
    ``rescale`` must be static (close over them with ``functools.partial`` before jitting)."""
    k_hyper, k_u, k_v, k_gamma, k_offset, k_move = jax.random.split(key, 6)
    if rescale and prior.has_biases:  # first: the bias precisions drawn below complete its block
        state = collapsed_shift_move(jax.random.fold_in(key, 3), state, prior)
    n_users, n_items = state.U.shape[0], state.V.shape[0]
    nnz = data.residual.shape[0]
    D, dtype = prior.rank, state.U.dtype
    # every Gamma variate of the sweep in one call, and one vmapped Normal-Wishart draw for both
    # sides: this keeps the compiled sweep small (each sampler call site is compiled on its own)
    gammas = standard_gamma(k_gamma, _gamma_shapes(prior, n_users, n_items, nnz, dtype))
    post_u, post_v = normal_wishart_posterior(state.U, prior), normal_wishart_posterior(state.V, prior)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), post_u, post_v)
    mus, lams = jax.vmap(draw_normal_wishart)(jax.random.split(k_hyper), *stacked,
                                               jnp.stack([gammas[:D], gammas[D:2 * D]]))
    mu_u, mu_v, lam_u, lam_v = mus[0], mus[1], lams[0], lams[1]
    b_u, b_v, prec_u, prec_v = state.b_U, state.b_V, state.bias_precision_U, state.bias_precision_V
    learn = prior.learns_offset
    shift = (state.offset - data.centre).astype(dtype)
    w, tau, kappa, weight_total = None, state.tau, state.kappa, nnz
    cutpoints, cut_accept = state.cutpoints, jnp.zeros((), dtype)
    if prior.ordinal:  # its own key, as the noise step's
        data, cutpoints, cut_accept = latent_targets(jax.random.fold_in(key, 11), state, data, prior, shift)
        cut_accept = cut_accept.astype(dtype)
    if not prior.gaussian:  # its own key: the Gaussian sweep's random streams stay as they were
        w, tau, kappa, start_sse = noise_weights(jax.random.fold_in(key, 7), state, data, prior, shift)
        weight_total = jnp.sum(w)
    if prior.has_biases:
        prec_u = _bias_precision(gammas[2 * D], b_u, prior)
        prec_v = _bias_precision(gammas[2 * D + 1], b_v, prior)
        collapse = [None, None]
        if rescale:  # each side's bias precision drawn again with its rows integrated out
            normals = standard_normal(jax.random.fold_in(key, 5), (2, 2), dtype)
            collapse = [(normals[0], prior), (normals[1], prior)]
        U, b_u, _, _, prec_u = rows_with_biases(k_u, state.V, b_v, data.user_chunks, mu_u, lam_u, prec_u,
                                                state.alpha, jitter, shift, weights=w, collapse=collapse[0])
        V, b_v, sse, total, prec_v = rows_with_biases(k_v, U, b_u, data.item_chunks, mu_v, lam_v, prec_v,
                                                      state.alpha, jitter, shift, sums=learn, weights=w,
                                                      collapse=collapse[1])
    else:
        U = conditional_rows(k_u, state.V, data.user_chunks, mu_u, lam_u, state.alpha, jitter, shift=shift,
                             weights=w)[0]
        V, _, sse, total = conditional_rows(k_v, U, data.item_chunks, mu_v, lam_v, state.alpha, jitter,
                                            shift=shift, sums=learn, weights=w)
    offset = state.offset
    if learn:
        offset, sse = _draw_offset(k_offset, state.offset, data.centre, shift, total, sse, weight_total,
                                   state.alpha, prior)
    if prior.noise_prior is None:
        alpha = state.alpha
    else:
        # alpha | U, V ~ Gamma(a0 + nnz/2, b0 + SSE/2): the standard variate drawn above / rate
        alpha = (gammas[2 * D + 2] / (prior.noise_prior[1] + sse / 2.0)).astype(state.alpha.dtype)
    new = GibbsState(U, V, mu_u, lam_u, mu_v, lam_v, alpha, b_u, b_v, prec_u, prec_v, offset, tau, kappa, cutpoints)
    rmse = jnp.sqrt((sse if prior.gaussian else start_sse) / nnz)  # unweighted (module docstring)
    accepted = jnp.zeros((), dtype)
    if rescale and rescale_applies(prior):
        new, accepted = rescale_move(k_move, new, prior, RESCALE_REPEATS)
    if rescale and prior.has_biases:
        new = shift_move(jax.random.fold_in(k_move, 2), new, prior)
        if prior.learns_offset:
            new = translate_move(jax.random.fold_in(k_move, 1), new, prior)
    info = GibbsInfo(rmse, alpha, all_finite(new.U, new.V, new.Lambda_U, new.Lambda_V, new.b_U, new.b_V, new.offset),
                     accepted, cut_accept)
    return new, info


def shift_move(key, state: GibbsState, prior: Prior) -> GibbsState:
    r"""Two group moves along translations of the factors that the biases absorb: first
    ``u_i -> u_i + x``, ``mu_U -> mu_U + x`` and ``c_j -> c_j - x.v_j`` (every ``u_i.v_j + c_j`` is
    unchanged, and so is every ``N(u_i; mu_U, Lambda_U^-1)``), then the same with the sides
    swapped. Only ``mu_U``'s prior and the item biases' prior change (Jacobian 1, Haar measure
    uniform), so ``x`` is drawn exactly from the Gaussian

    .. math::
        \pi(x) \propto \exp\Big(-\frac{\beta_0}{2} (\mu_U + x - \mu_0)^\top \Lambda_U (\mu_U + x - \mu_0)
        - \frac{\lambda_c}{2} \sum_j (c_j - x^\top v_j)^2\Big),\quad
        P = \beta_0 \Lambda_U + \lambda_c V^\top V,\ h = \lambda_c V^\top c - \beta_0 \Lambda_U (\mu_U - \mu_0).

    The means of the factors otherwise trade off with the biases and the offset only through
    the blocked conditionals, a slow random walk."""
    D, dtype = prior.rank, state.U.dtype
    z = standard_normal(key, (2, D), dtype)
    mu0 = jnp.full((D,), prior.mu0, dtype)
    x_side = (("U", "V", "b_V", "bias_precision_V"), ("V", "U", "b_U", "bias_precision_U"))
    for k, (side, other, other_bias, other_precision) in enumerate(x_side):
        rows, mu, lam = getattr(state, side), getattr(state, f"mu_{side}"), getattr(state, f"Lambda_{side}")
        F, c, lam_c = getattr(state, other), getattr(state, other_bias), getattr(state, other_precision)
        precision = prior.beta0 * lam + lam_c * (F.T @ F)
        h = lam_c * (F.T @ c) - prior.beta0 * (lam @ (mu - mu0))
        chol = jnp.linalg.cholesky(precision)
        mean = jax.scipy.linalg.cho_solve((chol, True), h)
        x = mean + solve_triangular(chol, z[k], lower=True, trans=1)
        state = state._replace(**{side: rows + x, f"mu_{side}": mu + x, other_bias: c - F @ x})
    return state


def collapsed_shift_move(key, state: GibbsState, prior: Prior, sides: tuple = ("U", "V")) -> GibbsState:
    r"""The translations of :func:`shift_move` and :func:`translate_move` drawn jointly, with the
    other side's bias precision integrated out; then (in :func:`step`, which calls it first) that
    precision is drawn from its conditional given the moved biases. Biases only.

    User side (the item side is the same with the sides swapped): ``z = (x, d)`` acts by

    .. math::
        u_i \to u_i + x,\quad \mu_U \to \mu_U + x,\quad c_j \to c_j - x^\top v_j - d,\quad m \to m + d

    (``d`` only with a learned offset). Every ``m + b_i + c_j + u_i^\top v_j`` and every
    ``N(u_i; \mu_U, \Lambda_U^{-1})`` is unchanged, and the action is a translation of the
    state for fixed ``V`` (Jacobian 1, Haar measure Lebesgue on ``R^{D+1}``), so by Liu &
    Sabatti (2000) a Metropolis-Hastings step on ``z`` whose target is the posterior along the
    orbit leaves the posterior invariant. With ``F = [V, 1]`` (n, D+1) and
    ``lambda_c ~ Gamma(a_b, b_b)`` integrated out of ``prod_j N(c_j; 0, 1/lambda_c)``,
    that target is

    .. math::
        \log\pi(z) = -\tfrac12 (z - z_p)^\top P_0 (z - z_p)
        - (a_b + \tfrac n2) \log\big(b_b + \tfrac12 |c - F z|^2\big) + \text{const},

    with ``P_0 = blockdiag(beta_0 Lambda_U, 1/s_0^2)`` and ``z_p = -(mu_U - mu_0, m - m_0)``.
    The proposal is ``N(z_*, P^{-1})``, ``P = P_0 + \hat\lambda F^\top F``, at the fixed point
    ``z_* = P^{-1}(P_0 z_p + \hat\lambda F^\top c)``, ``\hat\lambda = (a_b + n/2) / (b_b + |c - F z_*|^2/2)``
    (three iterations from ``\hat\lambda`` at ``z = 0``: the Gaussian that matches the target's
    mode for large ``n``). The proposal depends on the state, so the reverse proposal is built
    from the moved state (the same formulas with ``c - F z'``, ``z_p - z'``) and the move ``z'`` is
    accepted with probability
    ``min(1, pi(z') q_{theta'}(-z') / (pi(0) q_theta(z')))``, which is detailed balance along the orbit.
    ``sides``: the factor sides shifted, in order (one alone in the tests).

    Composed with the draw ``lambda_c | c ~ Gamma(a_b + n/2, b_b + |c|^2/2)`` this is a
    partially collapsed Gibbs block (van Dyk & Park 2008) on ``(z, lambda_c)``: ``lambda_c``,
    which sets how far ``x`` may travel, and ``|c|^2``, which ``x`` sets, no longer alternate, and
    ``x`` along the items' mean moves the offset with it instead of against the biases' prior.
    The item-side move neither reads ``lambda_c`` nor changes ``c``, so both moves may precede
    both precision draws. Returns the moved state (the bias precisions are left as they were).
    """
    k = prior.rank + 1 if prior.learns_offset else prior.rank
    normals = standard_normal(key, (len(sides), k + 1), state.U.dtype)
    for s, side in enumerate(sides):
        state = _collapsed_shift_side(normals[s], state, prior, side)
    return state


def _collapsed_shift_side(normals, state: GibbsState, prior: Prior, side: str) -> GibbsState:
    """One side of :func:`collapsed_shift_move` from its ``k + 1`` standard normals (``k`` the
    dimension of ``z``; the last one makes the uniform variate of the acceptance)."""
    D, dtype = prior.rank, state.U.dtype
    a_b, b_b = prior.bias_prior
    learn = prior.learns_offset
    k = D + 1 if learn else D
    other = "V" if side == "U" else "U"
    other_bias = f"b_{other}"
    rows, mu, lam = getattr(state, side), getattr(state, f"mu_{side}"), getattr(state, f"Lambda_{side}")
    F, c = getattr(state, other), getattr(state, other_bias)
    shape = a_b + c.shape[0] / 2.0
    zp = jnp.full((D,), prior.mu0, dtype) - mu
    P0 = prior.beta0 * lam
    if learn:
        m0, s0 = prior.offset_prior
        F = jnp.concatenate([F, jnp.ones((F.shape[0], 1), dtype)], axis=1)
        zp = jnp.concatenate([zp, jnp.reshape(m0 - state.offset, (1,)).astype(dtype)])
        P0 = jnp.zeros((k, k), dtype).at[:D, :D].set(P0).at[D, D].set(1.0 / s0**2)
    FtF, Ftc, S0 = F.T @ F, F.T @ c, b_b + 0.5 * jnp.sum(c * c)

    def log_target(z):  # log pi(z) - log pi(0)
        Fz = F @ z
        dS = 0.5 * jnp.sum(Fz * Fz) - jnp.sum(Fz * c)  # |c - Fz|^2/2 - |c|^2/2
        return -0.5 * z @ P0 @ z + z @ P0 @ zp - shape * jnp.log1p(dS / S0)

    def proposal(zp_, Ftc_, S0_, c_):  # (mean, Cholesky factor of the precision) at a state
        def refine(_, lam_hat):
            chol = jnp.linalg.cholesky(P0 + lam_hat * FtF)
            r = c_ - F @ jax.scipy.linalg.cho_solve((chol, True), P0 @ zp_ + lam_hat * Ftc_)
            return shape / (b_b + 0.5 * jnp.sum(r * r))

        lam_hat = jax.lax.fori_loop(0, 3, refine, shape / S0_)
        chol = jnp.linalg.cholesky(P0 + lam_hat * FtF)
        return jax.scipy.linalg.cho_solve((chol, True), P0 @ zp_ + lam_hat * Ftc_), chol

    def log_q(z, mean, chol):
        w = chol.T @ (z - mean)
        return -0.5 * jnp.sum(w * w) + jnp.sum(jnp.log(jnp.diagonal(chol)))

    mean, chol = proposal(zp, Ftc, S0, c)
    z = mean + solve_triangular(chol, normals[:k], lower=True, trans=1)
    c_new = c - F @ z
    mean_back, chol_back = proposal(zp - z, Ftc - FtF @ z, b_b + 0.5 * jnp.sum(c_new * c_new), c_new)
    log_ratio = log_target(z) + log_q(-z, mean_back, chol_back) - log_q(z, mean, chol)
    z = jnp.where(metropolis_accept(normals[k], log_ratio), z, jnp.zeros_like(z))
    moved = {side: rows + z[:D], f"mu_{side}": mu + z[:D], other_bias: c - F @ z}
    if learn:
        moved["offset"] = (state.offset + z[D]).astype(state.offset.dtype)
    return state._replace(**moved)


def translate_move(key, state: GibbsState, prior: Prior) -> GibbsState:
    r"""Two group moves along the likelihood's translations: ``m -> m + d``, ``b_i -> b_i - d``
    for every user, then the same with the item biases. Only the priors of ``m`` and of the
    biases change (Jacobian 1, Haar measure uniform), so ``d`` is drawn exactly from

    .. math::
        \pi(d) \propto \exp\Big(-\frac{(m + d - m_0)^2}{2 s_0^2} - \frac{\lambda_b}{2} \sum_i (b_i - d)^2\Big)
        = \mathcal N\Big(\frac{\lambda_b \sum_i b_i - (m - m_0)/s_0^2}{P},\ \frac1P\Big),\quad
        P = \frac1{s_0^2} + n \lambda_b.

    Without it the offset moves only by its conditional spread given the biases (``~sd/sqrt(nnz)``)
    per sweep, a random walk along a ridge much longer than that."""
    m0, s0 = prior.offset_prior
    z = standard_normal(key, (2,), state.U.dtype)
    offset, biases = state.offset, {}
    for k, side in enumerate(("b_U", "b_V")):
        b = getattr(state, side)
        lam = state.bias_precision_U if side == "b_U" else state.bias_precision_V
        precision = 1.0 / s0**2 + b.shape[0] * lam
        d = (lam * jnp.sum(b) - (offset - m0) / s0**2) / precision + z[k] / jnp.sqrt(precision)
        offset, biases[side] = offset + d, b - d
    return state._replace(offset=offset.astype(state.offset.dtype), **biases)


def rescale_applies(prior: Prior) -> bool:
    """The move leaves the posterior invariant when the mean's prior is centred at 0 (``mu0 = 0``,
    the default): otherwise ``N(mu; mu0, (beta0 Lambda)^-1)`` is not invariant under ``mu -> A mu``."""
    return prior.mu0 == 0.0


def rescale_move(key, state: GibbsState, prior: Prior, repeats: int = 1):
    r"""A group move (Liu & Sabatti 2000) along the likelihood's invariance: with
    ``A = Q diag(c) Q^T`` for a uniformly random rotation ``Q`` (independent of the state),

    .. math::
        u_i \to A u_i,\ \mu_U \to A \mu_U,\ \Lambda_U \to A^{-1} \Lambda_U A^{-1},\qquad
        v_j \to A^{-1} v_j,\ \mu_V \to A^{-1} \mu_V,\ \Lambda_V \to A \Lambda_V A.

    Every ``u_i . v_j`` (so the likelihood), every ``N(u_i; mu_U, Lambda_U^-1)`` term with its
    Jacobian, and ``mu | Lambda`` (``mu0 = 0``) are unchanged, and the Wisharts' determinant
    factors cancel between the sides (one ``nu0``), so the target of ``a = log c`` (uniform
    Haar measure) is, per coordinate ``d``, ``exp(-(p_d e^{-2a} + q_d e^{2a}) / 2)`` with
    ``p_d = (Q^T Lambda_U Q)_dd / w0`` and ``q_d = (Q^T Lambda_V Q)_dd / w0``: only the priors.
    With ``t = a + log(q/p) / 4`` it is ``exp(-k cosh 2t)``, ``k = sqrt(p q)``, sampled by an
    independence Metropolis step from ``N(0, 1 / (4k))`` (its Laplace approximation) started at
    the identity (``a = 0``), each coordinate accepted on its own (the target factorises).

    ``repeats`` such moves, each with its own rotation, are made in a row. As the target of
    each depends on the state only through ``(Lambda_U, Lambda_V)``, the moves run on those two
    matrices alone and their product ``M = A_1 ... A_R`` (a product of symmetric matrices, not
    itself symmetric) is applied to the factors once: ``U -> U M``, ``mu_U -> M^T mu_U``,
    ``V -> V M^{-1}``, ``mu_V -> M^{-T} mu_V`` — the same state as the ``R`` moves one after the
    other (each leaves the posterior invariant, so their composition does), at ``O(R D^3)``
    plus one ``O((n_users + n_items) D^2)`` product. A single random ``Q`` scales only ``D`` of
    the ``D (D + 1) / 2`` directions of the symmetric part of the group, and a direction that is
    not among its axes (the factors' mean, say) only through its projections on them; several
    rotations per sweep travel every direction.
    Returns ``(state, share of coordinates accepted)``.
    """
    D, dtype = prior.rank, state.U.dtype
    normals = standard_normal(key, (repeats, D * D + 2 * D), dtype)

    def one(carry, nz):
        lam_u, lam_v, M, M_inv, accepted = carry
        q_mat, r_mat = jnp.linalg.qr(nz[: D * D].reshape(D, D))
        Q = q_mat * jnp.sign(jnp.diagonal(r_mat))[None, :]  # Haar-distributed rotation
        p = jnp.diagonal(Q.T @ lam_u @ Q) / prior.w0
        q = jnp.diagonal(Q.T @ lam_v @ Q) / prior.w0
        k = jnp.sqrt(p * q)
        t0 = 0.25 * jnp.log(q / p)
        t1 = nz[D * D: D * D + D] / jnp.sqrt(4.0 * k)

        def log_ratio(t):  # log target minus log proposal, up to a constant
            return -k * jnp.cosh(2.0 * t) + 2.0 * k * t * t

        accept = metropolis_accept(nz[D * D + D:], log_ratio(t1) - log_ratio(t0))
        c = jnp.exp(jnp.where(accept, t1 - t0, 0.0))
        A, A_inv = (Q * c[None, :]) @ Q.T, (Q / c[None, :]) @ Q.T
        lam_u, lam_v = A_inv @ lam_u @ A_inv, A @ lam_v @ A
        lam_u, lam_v = 0.5 * (lam_u + lam_u.T), 0.5 * (lam_v + lam_v.T)
        return (lam_u, lam_v, M @ A, M_inv @ A_inv, accepted + jnp.mean(accept.astype(dtype))), None

    eye = jnp.eye(D, dtype=dtype)
    start = (state.Lambda_U, state.Lambda_V, eye, eye, jnp.zeros((), dtype))
    (lam_u, lam_v, M, M_inv, accepted), _ = jax.lax.scan(one, start, normals)
    moved = state._replace(U=state.U @ M, mu_U=M.T @ state.mu_U, Lambda_U=lam_u,
                           V=state.V @ M_inv, mu_V=M_inv.T @ state.mu_V, Lambda_V=lam_v)
    return moved, accepted / repeats


def _draw_offset(key, offset, centre, shift, total, sse, nnz, alpha, prior: Prior):
    """``m | rest ~ N(mu_m, 1/P_m)`` (module docstring) from ``total``, the sum of the residuals
    ``r - m - b_i - c_j - u.v`` at the current offset, written relative to ``centre`` (float32
    sums of ratings stay small). Returns the new offset and the SSE at it,
    ``SSE - 2 Delta R + nnz Delta^2``. With per-rating weights (noise models) ``nnz`` is their
    sum and ``total``, ``sse`` the weighted sums."""
    m0, s0 = prior.offset_prior
    dtype = sse.dtype
    precision = 1.0 / s0**2 + alpha * nnz
    data_sum = total + nnz * shift  # sum of r - centre - b_i - c_j - u.v
    mean_shift = ((m0 - centre) / s0**2 + alpha * data_sum) / precision
    new_shift = mean_shift + standard_normal(key, (), dtype) / jnp.sqrt(precision)
    delta = new_shift - shift
    sse = jnp.maximum(sse - 2.0 * delta * total + nnz * delta * delta, 0.0)
    return (centre + new_shift).astype(offset.dtype), sse


# The prior's numbers that are scaled to the data (the noise precision or its "auto" prior, the
# "auto" offset, factor-scale and bias priors) are traced arguments of the compiled sweep; the rest
# of the prior (rank, noise model, which parts exist) is static. Data sets with the same shapes
# (cross-validation folds, a grid over another setting) then share one compiled sweep.
_TRACED_PRIOR_FIELDS = ("alpha", "noise_prior", "offset_prior", "w0", "bias_prior")


def _split_prior(prior: Prior):
    """``(structure, values)``: the hashable prior with the traced numbers replaced by
    placeholders (whether a pair exists is kept), and those numbers as Python floats (weakly
    typed when traced)."""
    def floats(v):
        return None if v is None else float(v) if np.ndim(v) == 0 else tuple(float(x) for x in v)

    values = {name: floats(getattr(prior, name)) for name in _TRACED_PRIOR_FIELDS}
    placeholder = {name: v if v is None else 1.0 if isinstance(v, float) else (1.0,) * len(v)
                   for name, v in values.items()}
    return prior._replace(**placeholder), values


def _join_prior(structure: Prior, values: dict) -> Prior:
    return structure._replace(**values)  # pairs stay tuples through jit (tuples are pytrees)


@functools.partial(jax.jit, static_argnames=("structure", "rescale"))
def _chain_step(keys, states, jitter, data, structure, values, rescale):
    prior = _join_prior(structure, values)
    return jax.vmap(functools.partial(step, data=data, prior=prior, jitter=jitter, rescale=rescale))(keys, states)


def chain_step(keys, states: GibbsState, jitter, data: GibbsData, prior: Prior, rescale: bool = True):
    """:func:`step` for a batch of chains (leading axis of ``keys`` and ``states``), jitted once
    per data shape and prior structure (the data-scaled noise and offset priors are traced)."""
    structure, values = _split_prior(prior)
    return _chain_step(keys, states, jitter, data, structure, values, rescale)


# The jitter of the retry of a sweep whose factorisation failed (added to every precision matrix).
RETRY_JITTER = 1e-5


@functools.partial(jax.jit, static_argnames=("structure", "rescale"))
def _chains_sweep(key, states, jitter, data, structure, values, rescale):
    keys = jax.random.split(key, jax.tree_util.tree_leaves(states)[0].shape[0])
    prior = _join_prior(structure, values)
    return jax.vmap(functools.partial(step, data=data, prior=prior, jitter=jitter, rescale=rescale))(keys, states)


def chains_sweep(key, states: GibbsState, jitter, data: GibbsData, prior: Prior, rescale: bool = True):
    """:func:`chain_step` with the chains' keys ``split(key, chains)`` drawn in the same call."""
    structure, values = _split_prior(prior)
    return _chains_sweep(key, states, jitter, data, structure, values, rescale)


def build_kernel(data: GibbsData, prior: Prior, rescale: bool = True) -> Kernel:
    """The Gibbs sampler as a :class:`~bayesmf.engines.driver.Kernel` over a batch of chains.

    Parameters
    ----------
    data : GibbsData
        From :func:`prepare`.
    prior : Prior
        The model (the sweep compiles once per data shape and prior structure).
        ``data`` from :func:`shard`: every sweep runs over its mesh.
    rescale : bool
        End every sweep with the invariance moves (module docstring, item 5).

    Returns
    -------
    Kernel
        ``init`` is :func:`init` (one chain; broadcast it over chains); ``step(key, states)``
        one sweep of every chain, chain ``c`` keyed by ``split(key, chains)[c]``; ``retry`` the
        same sweep with :data:`RETRY_JITTER` added to every precision matrix.
    """
    if sharding.mesh_of(data) is not None:
        structure, values = _split_prior(prior)

        def sweep(key, states, jitter):
            return sharding.call(_chains_sweep_on_mesh, key, states, jitter, values, data=data,
                                 structure=structure, rescale=rescale)
    else:
        def sweep(key, states, jitter):
            return chains_sweep(key, states, jitter, data, prior, rescale)

    return Kernel(
        init=lambda key, n_users, n_items, **options: init(key, prior, n_users, n_items, **options),
        step=lambda key, states: sweep(key, states, 0.0),
        retry=lambda key, states: sweep(key, states, RETRY_JITTER),
        jitter=RETRY_JITTER)


def _chains_sweep_on_mesh(key, states, jitter, values, data, structure, rescale):
    return _chains_sweep.__wrapped__(key, states, jitter, data, structure, values, rescale)


def shard(data: GibbsData, mesh) -> GibbsData:
    """``data`` with both sides' chunks split over the one-axis ``mesh`` and the ratings replicated
    (:func:`bayesmf.engines.sharding.shard_data`): :func:`build_kernel` then runs every sweep over
    the mesh, with the same numbers for any number of devices (:mod:`bayesmf.engines.sharding`)."""
    n_users, n_items = data.user_chunks.slot.shape[0], data.item_chunks.slot.shape[0]
    return sharding.shard_data(data, mesh, {"user_chunks": n_items, "item_chunks": n_users})


@jax.jit
def pair_predictions(states: GibbsState, users, items):
    """Noise-free predictions ``m + b_i + c_j + u_i . v_j`` at index pairs per chain: (chains, n)."""
    dot = jnp.sum(states.U[:, users] * states.V[:, items], axis=-1)
    return states.offset[:, None] + states.b_U[:, users] + states.b_V[:, items] + dot


def divergence_hint(states: GibbsState) -> str:
    r"""What a chain's last finite state says about a sweep that turned non-finite (the driver's
    ``diverged_hint``, :func:`bayesmf.engines.driver.run`): per side, the largest factor entry
    and the extreme eigenvalues of ``Lambda``, and the bound

    .. math::
        \kappa = \frac{\lambda_{\max}(\Lambda_U) + \alpha \max_j |v_j|^2}{\lambda_{\min}(\Lambda_U)}

    (and the same with the sides swapped) on the condition number of the precision
    ``Lambda_U + alpha v_j v_j^T`` of a row with one rating. When ``kappa`` reaches ``1e-3 / eps``
    of the working precision the rows' Cholesky factorisations are at the edge of what it
    resolves, and the text says how a chain gets there: far from the posterior (from a start
    far from the ratings' scale, say), where the scatter of the rows dwarfs ``W0^{-1}``, the
    likelihood and the Normal-Wishart prior are nearly invariant under ``u -> A u``,
    ``v -> A^{-1} v``, and the factors' scales drift along that ridge (the rescaling move
    travels it exactly: its target is flat there) until they leave the working precision.
    ``states`` has a leading chain axis; the chain with the largest ``kappa`` is reported."""
    U, V, lam_u, lam_v, alpha = (np.asarray(jax.device_get(a), np.float64) for a in
                                 (states.U, states.V, states.Lambda_U, states.Lambda_V, states.alpha))
    eig_u, eig_v = np.linalg.eigvalsh(lam_u), np.linalg.eigvalsh(lam_v)  # (chains, D)
    big_u, big_v = np.max(np.sum(U * U, axis=-1), axis=-1), np.max(np.sum(V * V, axis=-1), axis=-1)
    alpha = np.reshape(alpha, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.maximum((eig_u[:, -1] + alpha * big_v) / eig_u[:, 0], (eig_v[:, -1] + alpha * big_u) / eig_v[:, 0])
    c = int(np.nanargmax(np.where(np.isfinite(kappa), kappa, np.inf))) if np.size(kappa) else 0
    text = (f"In the state before it (chain {c}): max |U| {np.sqrt(big_u[c]):.3g}, max |V| {np.sqrt(big_v[c]):.3g}, "
            f"eigenvalues of Lambda_U {eig_u[c, 0]:.3g} to {eig_u[c, -1]:.3g}, of Lambda_V {eig_v[c, 0]:.3g} to "
            f"{eig_v[c, -1]:.3g}; a row's precision has a condition number up to about {kappa[c]:.3g}.")
    if not kappa[c] >= 1e-3 / np.finfo(states.U.dtype).eps:
        return text
    return (f"{text} That is past what {np.dtype(states.U.dtype).name} resolves: the factors' scales drifted "
            "along u -> A u, v -> A^-1 v, which happens to a chain far from the posterior (a start far from the "
            "ratings' scale: the prior W0 = w0 I is then negligible and nothing holds the scales). Start from the "
            "PMF MAP (init='map', with more sweeps: GibbsConfig(start=MAPConfig(n_iter=10))), use w0='auto' "
            "(the ratings' unit) or w0 near the factors' expected precision, or fit in float64.")
