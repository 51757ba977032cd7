r"""The ordered-probit likelihood (Albert & Chib 1993) as pure JAX functions over the noise-free
prediction ``f`` and the ratings' category indices, for any model that predicts ``f`` (BPMF,
the factorization machine).

**Model.** With ``K`` categories ``k = 0..K-1`` (the rating levels of the training scale in
increasing order, :func:`encode_levels`) and cutpoints ``c_0 < c_1 < ... < c_{K-2}``
(``c_{-1} = -inf``, ``c_{K-1} = +inf``):

.. math::
    y_r = k \iff c_{k-1} < z_r \le c_k,\qquad z_r \sim \mathcal N(f_r, 1),\qquad
    P(y_r = k \mid f_r, c) = \Phi(c_k - f_r) - \Phi(c_{k-1} - f_r).

**Identification.** The latent scale is fixed by the unit noise variance and the location by
``c_0 = 0``: the level lives in ``f`` (a model's offset ``m``). myFM instead leaves ``c_0`` free
(its ``fix_gamma0`` is false) with a ``N(0, 1/reg_0)`` prior next to its offset's
``N(0, 1/reg_0)``, so that only ``c - w_0`` is determined by the data and the pair drifts along
that ridge; the predictive distribution depends on ``c - f`` alone, so the two give the same
predictions up to the priors' pull on that one direction.

**Prior on the cutpoints.** The ``K - 2`` free gaps ``d_k = c_k - c_{k-1}`` (``k = 1..K-2``) are
i.i.d. log-normal, ``a_k = log d_k ~ N(m_g, s_g^2)`` (``gap_prior = (m_g, s_g)``, default
``(0, 1)``: a gap of one noise sd a priori, 95% of the mass between 0.14 and 7). Proper, so the
posterior is proper and simulation-based calibration applies; positive gaps keep the order.

**Sampler.** One block ``(c, z) | f`` per sweep (:func:`sample_ordinal`):

1. ``c | f, y`` with ``z`` integrated out, target
   ``log p(a | f, y) = sum_r log(Phi(c_{y_r} - f_r) - Phi(c_{y_r - 1} - f_r)) + sum_k log N(a_k; m_g, s_g^2)``,
   by an independence Metropolis-Hastings step in ``a``: the proposal a multivariate Student-t
   (5 degrees of freedom) centred at the conditional mode with scale the inverse of a
   Gauss-Newton precision there — myFM's ``OprobitSampler`` scheme (there with the same
   ``N(0, 1)`` prior on each log gap, the exact Hessian, and the mode searched from the
   current cutpoints until converged), a Laplace-approximation proposal that is accepted nearly always
   when the data are many, so the cutpoints move by their whole posterior spread each sweep
   (:func:`sample_cutpoints_mh`). The mode is found by a fixed number of damped Gauss-Newton
   steps from a start computed from ``(f, y)`` alone (:func:`moment_start`), so the proposal
   never depends on the current cutpoints and the step is an exact independence sampler
   whether or not the iterations have fully converged;
2. ``z_r | c, f, y ~ N(f_r, 1)`` truncated to ``(c_{y_r - 1}, c_{y_r}]`` (:func:`sample_latent`).

Given ``z`` the model is a Gaussian regression with noise precision 1, which the conjugate
sampler of the rest of the model runs unchanged with ``z`` as its targets.
:func:`sample_cutpoints` is Albert & Chib's own step, ``c | z`` (each ``c_k`` on the interval
left free by the latent values of its two categories); with many ratings that interval is tiny
and the chain barely moves (Cowles 1996), which is why the sampler uses the collapsed step.
benchmarks/RESULTS.md compares the two.

Numerics: ``log(Phi(b) - Phi(a))`` in log space on the side of the smaller tail
(:func:`log_interval_probability`); truncated-normal draws by the inverse CDF on the lower-tail
side of the interval, refined by Newton steps on ``log Phi`` so that intervals many standard
deviations out still give draws inside them.

References
----------
Albert, J. H. and Chib, S. (1993). Bayesian analysis of binary and polychotomous response data.
JASA 88(422). Cowles, M. K. (1996). Accelerating Monte Carlo Markov chain convergence for
cumulative-link generalized linear models. Statistics and Computing 6. Ohtsuki, T. myFM
(``OProbitSampler.hpp``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr, ndtri

from bayesmf.data.levels import encode_levels, rating_levels  # noqa: F401  (re-exported)
from bayesmf.errors import ConfigError

# finite stand-ins for the infinite outer cutpoints (gradients of log_ndtr stay finite)
_BIG = 1e3
_LOG_2PI = math.log(2.0 * math.pi)  # a Python float: weakly typed, keeps float32 arrays float32 under x64
T_DF = 5.0  # degrees of freedom of the cutpoints' independence proposal
NEWTON_STEPS = 6


def check_gap_prior(gap_prior) -> tuple[float, float]:
    """``gap_prior`` as a ``(mean, sd)`` pair of floats, sd > 0 (:class:`ConfigError` otherwise)."""
    try:
        m, s = (float(x) for x in gap_prior)
    except (TypeError, ValueError):
        raise ConfigError(f"gap_prior must be a (mean, sd) pair of the log cutpoint gaps, got {gap_prior!r}") from None
    if not (np.isfinite(m) and np.isfinite(s) and s > 0):
        raise ConfigError(f"gap_prior must be finite with sd > 0, got {gap_prior!r}")
    return m, s


# --- cutpoints ---------------------------------------------------------------------------------
def cutpoints_from_log_gaps(a):
    """``c = (0, cumsum(exp(a)))``: (K - 1,) cutpoints from the (K - 2,) log gaps."""
    return jnp.concatenate([jnp.zeros(a.shape[:-1] + (1,), a.dtype), jnp.cumsum(jnp.exp(a), axis=-1)], axis=-1)


def log_gaps(cutpoints):
    """Inverse of :func:`cutpoints_from_log_gaps` (``c_0`` dropped): ``log(c_k - c_{k-1})``."""
    return jnp.log(jnp.diff(cutpoints, axis=-1))


def initial_cutpoints(n_categories: int, dtype=jnp.float32):
    """Gaps of one noise sd: ``c_k = k``, the prior's median (a sampler's start)."""
    return jnp.arange(n_categories - 1, dtype=dtype)


def category_bounds(y_cat, cutpoints):
    """``(c_{y-1}, c_y)`` per rating, with :data:`_BIG` standing for the infinite outer ends."""
    dtype = cutpoints.dtype
    ext = jnp.concatenate([jnp.full((1,), -_BIG, dtype), cutpoints, jnp.full((1,), _BIG, dtype)])
    return ext[y_cat], ext[y_cat + 1]


def log_interval_probability(lo, hi):
    r"""``log(Phi(hi) - Phi(lo))`` for ``lo < hi``, elementwise and stable in both tails: on the
    side where the interval is nearer the lower tail, ``log Phi(hi) + log(1 - exp(log Phi(lo) -
    log Phi(hi)))``, else the same for ``(-hi, -lo)`` (``Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)``)."""
    flip = lo + hi > 0
    a, b = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    lb, la = log_ndtr(b), log_ndtr(a)
    diff = jnp.minimum(la - lb, -1e-30)
    return lb + jnp.log(-jnp.expm1(diff))


def cutpoint_log_posterior(a, f, y_cat, gap_prior):
    """Unnormalised ``log p(a | f, y)`` of the log gaps (module docstring, step 1); a scalar."""
    lo, hi = category_bounds(y_cat, cutpoints_from_log_gaps(a))
    m, s = gap_prior
    return jnp.sum(log_interval_probability(lo - f, hi - f)) - 0.5 * jnp.sum(((a - m) / s) ** 2)


def _interval_derivatives(a, b):
    r"""``l = log(Phi(b) - Phi(a))`` and its first and second derivatives in ``a`` and ``b``,
    elementwise, from the stable ratios ``r_a = phi(a)/Z``, ``r_b = phi(b)/Z`` (``Z = e^l``):
    ``l_a = -r_a``, ``l_b = r_b``, ``l_aa = a r_a - r_a^2``, ``l_bb = -b r_b - r_b^2``,
    ``l_ab = r_a r_b``."""
    ell = log_interval_probability(a, b)
    half_log_2pi = 0.5 * _LOG_2PI

    def ratio(x):  # flushed to 0 below e^-60: subnormal floats make the sums below many times slower
        log_r = -0.5 * x * x - half_log_2pi - ell
        return jnp.where(log_r > -60.0, jnp.exp(jnp.maximum(log_r, -60.0)), 0.0)

    ra, rb = ratio(a), ratio(b)
    return ell, -ra, rb, a * ra - ra * ra, -b * rb - rb * rb, ra * rb


def _gradient_and_precision(a, f, y_cat, gap_prior):
    r"""Gradient of :func:`cutpoint_log_posterior` in the log gaps ``a`` (K - 2,) and a positive
    definite precision (K - 2, K - 2) for the Newton steps and the proposal: the Gauss-Newton
    form ``J^T (-H_c) J + I / s_g^2``, with ``H_c`` the likelihood's Hessian in the cutpoints
    (tridiagonal, negative definite: the ordered probit is log-concave in them) and
    ``J_jk = dc_j / da_k = e^{a_k} [k < j]`` (gaps numbered from 1). One pass over the ratings:
    per-rating derivatives (:func:`_interval_derivatives`) summed by category."""
    cutpoints = cutpoints_from_log_gaps(a)
    K1 = cutpoints.shape[0]
    lo, hi = category_bounds(y_cat, cutpoints)
    _, d_a, d_b, d_aa, d_bb, d_ab = _interval_derivatives(lo - f, hi - f)
    # sums by category, one product with the one-hot categories per derivative: stacking the five
    # first (or a scatter-add) makes XLA:CPU evaluate every derivative's expression per entry
    onehot = (y_cat[:, None] == jnp.arange(K1 + 1)[None, :]).astype(f.dtype)
    s_a, s_b, s_aa, s_bb, s_ab = (d @ onehot for d in (d_a, d_b, d_aa, d_bb, d_ab))
    # category k has lower cutpoint c_{k-1} and upper c_k
    grad_c = s_b[:K1] + s_a[1:]
    diag = s_bb[:K1] + s_aa[1:]
    off = s_ab[1:K1]
    hess_c = jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)
    gaps = jnp.exp(a)
    J = jnp.where(jnp.arange(K1)[:, None] > jnp.arange(a.shape[0])[None, :], gaps[None, :], 0.0)
    m, s = gap_prior
    grad = J.T @ grad_c - (a - m) / s**2
    precision = -(J.T @ hess_c @ J) + jnp.eye(a.shape[0], dtype=a.dtype) / s**2
    return grad, precision


def moment_start(f, y_cat, n_categories: int):
    r"""Log gaps matching the categories' shares under ``z ~ N(mean f, 1 + var f)``:
    ``c_k = sd Phi^{-1}(F_k)`` with ``F_k`` the share of ratings in categories ``<= k`` (floored
    at half a rating). A function of ``(f, y)`` only, so that the Metropolis-Hastings proposal
    built from it does not depend on the chain's current cutpoints."""
    n = f.shape[0]
    counts = jax.ops.segment_sum(jnp.ones_like(f), y_cat, n_categories)
    share = jnp.clip(jnp.cumsum(counts)[:-1] / n, 0.5 / n, 1.0 - 0.5 / n)
    c = jnp.sqrt(1.0 + jnp.var(f)) * ndtri(share)
    return jnp.log(jnp.maximum(jnp.diff(c), 1e-3))


def _mode_and_precision(a, f, y_cat, gap_prior, steps: int):
    """Damped Gauss-Newton iterations (step halved, then dropped, when it would lower the
    target) from ``a``; returns the point reached and the precision there."""
    def newton(_, x):
        grad, precision = _gradient_and_precision(x, f, y_cat, gap_prior)
        step = jnp.clip(jnp.linalg.solve(precision, grad), -2.0, 2.0)  # at most a factor e^2 per gap
        t0 = cutpoint_log_posterior(x, f, y_cat, gap_prior)
        full, half = x + step, x + 0.5 * step
        take_full = cutpoint_log_posterior(full, f, y_cat, gap_prior) >= t0
        take_half = cutpoint_log_posterior(half, f, y_cat, gap_prior) >= t0
        return jnp.where(take_full, full, jnp.where(take_half, half, x))

    mode = jax.lax.fori_loop(0, steps, newton, a)
    return mode, _gradient_and_precision(mode, f, y_cat, gap_prior)[1]


def _log_t_density(x, mode, chol, df):
    """Log density (up to constants shared by every point) of the multivariate t with location
    ``mode`` and scale ``(L L^T)^{-1}``, ``L = chol`` the precision's Cholesky factor."""
    w = (x - mode) @ chol
    return -0.5 * (df + x.shape[0]) * jnp.log1p(jnp.sum(w * w) / df)


def sample_cutpoints_mh(key, cutpoints, f, y_cat, gap_prior=(0.0, 1.0), steps: int = NEWTON_STEPS,
                        df: float = T_DF):
    r"""One independence Metropolis-Hastings draw of the cutpoints from ``p(c | f, y)`` (``z``
    integrated out; module docstring, step 1).

    Parameters
    ----------
    key : PRNG key
    cutpoints : (K - 1,) the current cutpoints (``c_0 = 0``).
    f : (n,) noise-free predictions; y_cat : (n,) int category indices.
    gap_prior : ``(m_g, s_g)`` of the log gaps.

    Returns
    -------
    (cutpoints (K - 1,), accepted (bool scalar)). With ``K = 2`` there is nothing to draw.
    """
    if cutpoints.shape[0] < 2:
        return cutpoints, jnp.asarray(True)
    dtype = cutpoints.dtype
    f = f.astype(dtype)
    a0 = log_gaps(cutpoints)
    # the proposal is a function of (f, y) alone: Newton from a start that ignores the chain's state
    mode, precision = _mode_and_precision(moment_start(f, y_cat, cutpoints.shape[0] + 1), f, y_cat, gap_prior, steps)
    chol = jnp.linalg.cholesky(precision)
    k_z, k_g, k_u = jax.random.split(key, 3)
    n = a0.shape[0]
    z = jax.random.normal(k_z, (n,), dtype)
    g = jax.random.gamma(k_g, df / 2.0, dtype=dtype) * 2.0 / df  # chi2(df) / df
    proposal = mode + jax.scipy.linalg.solve_triangular(chol, z, lower=True, trans=1) / jnp.sqrt(g)

    def log_weight(x):  # target over proposal
        return cutpoint_log_posterior(x, f, y_cat, gap_prior) - _log_t_density(x, mode, chol, df)

    log_ratio = log_weight(proposal) - log_weight(a0)
    accept = jnp.log(jax.random.uniform(k_u, (), dtype)) < log_ratio
    accept = accept & jnp.all(jnp.isfinite(proposal))
    return jnp.where(accept, cutpoints_from_log_gaps(proposal), cutpoints), accept


def sample_cutpoints(key, z, y_cat, cutpoints, gap_prior=(0.0, 1.0)):
    r"""Albert & Chib's cutpoint step given the latent values: for ``k = 1..K-2`` in turn,
    ``c_k | z, c_{-k}`` has the density of the gap prior restricted to
    ``(max(c_{k-1}, max_{y=k} z), min(c_{k+1}, min_{y=k+1} z))``; drawn by an independence
    Metropolis step with a uniform proposal on that interval (accepted with the prior's ratio,
    ``lognormal(d_k) lognormal(d_{k+1})`` in the two gaps ``c_k`` sits between; exactly the
    uniform conditional of Albert & Chib under a flat prior). Returns (cutpoints, share accepted).
    Slow mixing with many ratings (module docstring); kept as the reference scheme."""
    K1 = cutpoints.shape[0]
    if K1 < 2:
        return cutpoints, jnp.asarray(1.0, cutpoints.dtype)
    dtype = cutpoints.dtype
    z = z.astype(dtype)
    n_cat = K1 + 1
    top = jax.ops.segment_max(z, y_cat, n_cat)  # -inf for an empty category
    bottom = jax.ops.segment_min(z, y_cat, n_cat)
    m, s = gap_prior
    keys = jax.random.split(key, 2 * K1)

    def log_gap_density(d):
        return jnp.where(d > 0, -jnp.log(jnp.maximum(d, 1e-30)) - 0.5 * ((jnp.log(jnp.maximum(d, 1e-30)) - m) / s) ** 2,
                         -jnp.inf)

    accepted = jnp.zeros((), dtype)
    for k in range(1, K1):  # a loop over categories (K is small and static)
        left = jnp.maximum(cutpoints[k - 1], top[k])
        right = bottom[k + 1] if k + 1 == K1 else jnp.minimum(cutpoints[k + 1], bottom[k + 1])
        right = jnp.minimum(right, left + 50.0)  # the top category's gap may be unbounded by data
        new = left + (right - left) * jax.random.uniform(keys[2 * k], (), dtype)

        def log_prior(c, below, above):
            out = log_gap_density(c - below)
            return out if above is None else out + log_gap_density(above - c)

        neighbours = (cutpoints[k - 1], cutpoints[k + 1] if k + 1 < K1 else None)
        log_ratio = log_prior(new, *neighbours) - log_prior(cutpoints[k], *neighbours)
        ok = jnp.log(jax.random.uniform(keys[2 * k + 1], (), dtype)) < log_ratio
        ok = ok & (right > left)
        cutpoints = cutpoints.at[k].set(jnp.where(ok, new, cutpoints[k]))
        accepted = accepted + ok.astype(dtype)
    return cutpoints, accepted / (K1 - 1)


# --- latent values -----------------------------------------------------------------------------
def _log_ndtri(log_p, iterations: int = 3):
    """``x`` with ``log Phi(x) = log_p`` (``log_p <= log 1/2``): ``ndtri`` where ``Phi`` is
    representable, an asymptotic start beyond, then Newton steps on the concave ``log Phi``."""
    tiny = log_p < -60.0
    p = jnp.exp(jnp.where(tiny, -1.0, log_p))
    t = -2.0 * jnp.where(tiny, log_p, -61.0)
    x = jnp.where(tiny, -jnp.sqrt(t - jnp.log(t) - _LOG_2PI), ndtri(p))

    def newton(_, x):
        lp = log_ndtr(x)
        # d log Phi / dx = phi(x) / Phi(x)
        slope = jnp.exp(-0.5 * x * x - 0.5 * _LOG_2PI - lp)
        return x - (lp - log_p) / slope

    return jax.lax.fori_loop(0, iterations, newton, x)


def truncated_normal(key, lo, hi, dtype=jnp.float32):
    r"""Standard normal draws truncated to ``(lo, hi)`` elementwise (``lo < hi``, either end
    may be :data:`_BIG`-infinite). Inverse CDF on the side of the interval nearer the lower tail
    (flipping ``(lo, hi) -> (-hi, -lo)`` otherwise): ``u ~ U(0, 1)``,
    ``log p = log(Phi(a) + u (Phi(b) - Phi(a)))`` in log space, ``x = Phi^{-1}(p)`` by
    :func:`_log_ndtri`, clipped into the interval against rounding."""
    lo, hi = lo.astype(dtype), hi.astype(dtype)
    flip = lo + hi > 0
    a, b = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    u = jax.random.uniform(key, lo.shape, dtype, minval=1e-7, maxval=1.0)
    la = log_ndtr(a)
    log_mass = log_interval_probability(a, b)
    # log(Phi(a) + u (Phi(b) - Phi(a)))
    log_p = jnp.logaddexp(la, jnp.log(u) + log_mass)
    x = jnp.clip(_log_ndtri(jnp.minimum(log_p, log_ndtr(b))), a, b)
    return jnp.where(flip, -x, x)


def sample_latent(key, f, y_cat, cutpoints):
    """``z_r ~ N(f_r, 1)`` truncated to ``(c_{y_r - 1}, c_{y_r}]``, every rating at once (n,)."""
    lo, hi = category_bounds(y_cat, cutpoints)
    dtype = cutpoints.dtype
    f = f.astype(dtype)
    return f + truncated_normal(key, lo - f, hi - f, dtype)


def sample_ordinal(key, f, y_cat, cutpoints, gap_prior=(0.0, 1.0)):
    """The sampler's block ``(c, z) | f`` (module docstring): the cutpoints by
    :func:`sample_cutpoints_mh`, then the latent values by :func:`sample_latent` given them.
    Returns ``(z (n,), cutpoints (K - 1,), accepted)``."""
    k_c, k_z = jax.random.split(key)
    cutpoints, accepted = sample_cutpoints_mh(k_c, cutpoints, f, y_cat, gap_prior)
    return sample_latent(k_z, f, y_cat, cutpoints), cutpoints, accepted


# --- predictive --------------------------------------------------------------------------------
def category_probabilities(f, cutpoints, f_var=0.0):
    r"""``P(y = k) = Phi((c_k - f)/s) - Phi((c_{k-1} - f)/s)``, ``s = sqrt(1 + f_var)`` (a
    prediction ``f`` known only up to a Gaussian spread ``f_var`` integrates to this); ``f``
    (n,), cutpoints (K - 1,); returns (n, K)."""
    scale = jnp.sqrt(1.0 + f_var)
    cdf = ndtr((cutpoints[None, :] - f[:, None]) / jnp.reshape(scale, (-1, 1)))
    ones = jnp.ones_like(cdf[:, :1])
    return jnp.diff(jnp.concatenate([0.0 * ones, cdf, ones], axis=1), axis=1)


@jax.jit
def class_probabilities(f_draws, cutpoint_draws, f_var=0.0):
    """Posterior predictive category probabilities averaged over draws: ``f_draws`` (S, n),
    ``cutpoint_draws`` (S, K - 1), ``f_var`` a scalar, (n,) or per draw (S, n) extra spread of
    ``f`` (:func:`category_probabilities`); returns (n, K). A scan over draws: memory O(n K)."""
    def body(total, draw):
        f, c, v = draw
        return total + category_probabilities(f, c, v), None

    zeros = jnp.zeros((f_draws.shape[1], cutpoint_draws.shape[1] + 1), f_draws.dtype)
    spread = jnp.broadcast_to(jnp.asarray(f_var, f_draws.dtype), f_draws.shape)
    total, _ = jax.lax.scan(body, zeros, (f_draws, cutpoint_draws, spread))
    return total / f_draws.shape[0]
