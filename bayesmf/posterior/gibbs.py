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

   (the sums are the degree-bucketed Gram matrices of :mod:`bayesmf.engines.blocks`; a user
   without ratings is drawn from the prior), then every item row the same way given the new U;
3. ``alpha | U, V ~ Gamma(a_0 + nnz/2, b_0 + SSE/2)`` when alpha has a Gamma prior.

Wishart draws use the Bartlett decomposition: with ``W = L L^T`` and lower-triangular ``A``,
``A_kk = sqrt(chi2(nu - k))`` (k = 0..D-1), ``A_kl ~ N(0, 1)`` below the diagonal,
``L A A^T L^T ~ W(W, nu)``.

State, data and info are NamedTuples (pytrees), so ``step`` can be jitted, vmapped over chains
and scanned. Shapes: ``U`` (n_users, D), ``V`` (n_items, D), ``mu_*`` (D,), ``Lambda_*`` (D, D).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines.blocks import Blocks, blocks_for, gram_rhs
from bayesmf.engines.linalg import all_finite, sample_gaussian
from bayesmf.posterior.model import Prior


class GibbsData(NamedTuple):
    """Training ratings laid out for the sampler; ``residual`` is ``r - m`` per rating."""

    user_blocks: Blocks
    item_blocks: Blocks
    users: jnp.ndarray
    items: jnp.ndarray
    residual: jnp.ndarray


class GibbsState(NamedTuple):
    U: jnp.ndarray
    V: jnp.ndarray
    mu_U: jnp.ndarray
    Lambda_U: jnp.ndarray
    mu_V: jnp.ndarray
    Lambda_V: jnp.ndarray
    alpha: jnp.ndarray  # scalar noise precision


class GibbsInfo(NamedTuple):
    train_rmse: jnp.ndarray
    alpha: jnp.ndarray
    finite: jnp.ndarray  # False when a factorisation failed (NaN) in this sweep


def prepare(ratings, global_mean: float, dtype=np.float32) -> GibbsData:
    """Lay out a :class:`~bayesmf.data.Ratings` for the sampler (host-side, once per fit)."""
    residual = (ratings.values - global_mean).astype(dtype)
    return GibbsData(
        user_blocks=blocks_for(ratings, "user", residual, dtype),
        item_blocks=blocks_for(ratings, "item", residual, dtype),
        users=jnp.asarray(ratings.users),
        items=jnp.asarray(ratings.items),
        residual=jnp.asarray(residual),
    )


def init(key, prior: Prior, n_users: int, n_items: int, U=None, V=None, dtype=jnp.float32) -> GibbsState:
    """Initial state: given factors (e.g. the PMF MAP solution), else small random ones;
    hyperparameters at their prior means (``Lambda = nu0 W0``, ``mu = mu0``)."""
    D = prior.rank
    ku, kv = jax.random.split(key)
    if U is None:
        U = 0.1 * jax.random.normal(ku, (n_users, D), dtype)
    if V is None:
        V = 0.1 * jax.random.normal(kv, (n_items, D), dtype)
    lam = prior.nu * prior.w0_matrix(dtype)
    mu = jnp.full((D,), prior.mu0, dtype)
    return GibbsState(jnp.asarray(U, dtype), jnp.asarray(V, dtype), mu, lam, mu, lam, jnp.asarray(prior.alpha, dtype))


def sample_wishart(key, scale, df):
    """One draw of ``Wishart(scale, df)`` (mean ``df * scale``) by the Bartlett decomposition."""
    D = scale.shape[-1]
    k_diag, k_off = jax.random.split(key)
    # chi2(df - k) = 2 Gamma((df - k) / 2)
    chi2 = 2.0 * jax.random.gamma(k_diag, (df - jnp.arange(D, dtype=scale.dtype)) / 2.0)
    A = jnp.tril(jax.random.normal(k_off, (D, D), scale.dtype), -1) + jnp.diag(jnp.sqrt(chi2))
    LA = jnp.linalg.cholesky(scale) @ A
    return LA @ LA.T


def sample_normal_wishart(key, X, prior: Prior):
    """Draw ``(mu, Lambda)`` from the Normal-Wishart posterior given rows ``X`` (N, D)."""
    N, D = X.shape
    dtype = X.dtype
    xbar = X.mean(axis=0)
    centred = X - xbar
    scatter = centred.T @ centred
    beta_n = prior.beta0 + N
    nu_n = prior.nu + N
    mu0 = jnp.full((D,), prior.mu0, dtype)
    mu_n = (prior.beta0 * mu0 + N * xbar) / beta_n
    diff = mu0 - xbar
    w_inv = jnp.eye(D, dtype=dtype) / prior.w0 + scatter + (prior.beta0 * N / beta_n) * jnp.outer(diff, diff)
    w_n = jnp.linalg.inv(w_inv)
    w_n = 0.5 * (w_n + w_n.T)  # keep it exactly symmetric for the Cholesky
    k_lam, k_mu = jax.random.split(key)
    lam = sample_wishart(k_lam, w_n, nu_n)
    mu, _ = sample_gaussian(k_mu, (beta_n * lam)[None], (beta_n * lam @ mu_n)[None])
    return mu[0], lam


def conditional_rows(key, other, blocks: Blocks, n_rows: int, mu, lam, alpha, jitter=0.0):
    """Draw every row of one side from ``N(P_i^{-1} h_i, P_i^{-1})`` (see module docstring).

    Returns (draws, conditional means), both (n_rows, D).
    """
    gram, rhs = gram_rhs(blocks, other, n_rows)
    precision = lam[None] + alpha * gram
    shift = (lam @ mu)[None] + alpha * rhs
    return sample_gaussian(key, precision, shift, jitter)


def residual_sse(U, V, data: GibbsData):
    """Sum of squared training residuals ``sum (r - m - u.v)^2`` (one gather, no loop)."""
    pred = jnp.sum(U[data.users] * V[data.items], axis=-1)
    return jnp.sum((data.residual - pred) ** 2)


def step(key, state: GibbsState, data: GibbsData, prior: Prior, jitter=0.0) -> tuple[GibbsState, GibbsInfo]:
    """One full Gibbs sweep (hyperparameters, users, items, noise). ``prior`` must be static
    (close over it with ``functools.partial`` before jitting)."""
    k_hu, k_hv, k_u, k_v, k_a = jax.random.split(key, 5)
    n_users, n_items = state.U.shape[0], state.V.shape[0]
    mu_u, lam_u = sample_normal_wishart(k_hu, state.U, prior)
    mu_v, lam_v = sample_normal_wishart(k_hv, state.V, prior)
    U, _ = conditional_rows(k_u, state.V, data.user_blocks, n_users, mu_u, lam_u, state.alpha, jitter)
    V, _ = conditional_rows(k_v, U, data.item_blocks, n_items, mu_v, lam_v, state.alpha, jitter)
    sse = residual_sse(U, V, data)
    nnz = data.residual.shape[0]
    if prior.noise_prior is None:
        alpha = state.alpha
    else:
        a0, b0 = prior.noise_prior
        alpha = jax.random.gamma(k_a, a0 + nnz / 2.0) / (b0 + sse / 2.0)
        alpha = alpha.astype(state.alpha.dtype)
    new = GibbsState(U, V, mu_u, lam_u, mu_v, lam_v, alpha)
    info = GibbsInfo(jnp.sqrt(sse / nnz), alpha, all_finite(U, V, lam_u, lam_v))
    return new, info


@functools.partial(jax.jit, static_argnames=("prior",))
def chain_step(keys, states: GibbsState, jitter, data: GibbsData, prior: Prior):
    """:func:`step` for a batch of chains (leading axis of ``keys`` and ``states``), jitted once
    per data shape and prior (the prior is hashable and static)."""
    return jax.vmap(functools.partial(step, data=data, prior=prior, jitter=jitter))(keys, states)


@jax.jit
def pair_predictions(states: GibbsState, users, items, global_mean):
    """Noise-free predictions ``m + u_i . v_j`` at index pairs for every chain: (chains, n)."""
    return global_mean + jnp.sum(states.U[:, users] * states.V[:, items], axis=-1)
