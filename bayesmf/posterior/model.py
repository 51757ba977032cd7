r"""Bayesian probabilistic matrix factorization (Salakhutdinov & Mnih, ICML 2008), written once.

The model, for rank ``D`` and ratings ``r_ij`` with a global offset ``m``:

.. math::

    r_{ij} \mid m, U, V &\sim \mathcal N(m + u_i^\top v_j,\ \alpha^{-1}),
    \qquad m \sim \mathcal N(m_0, s_0^2) \\
    u_i \mid \mu_U, \Lambda_U &\sim \mathcal N(\mu_U, \Lambda_U^{-1}), \qquad
    v_j \mid \mu_V, \Lambda_V \sim \mathcal N(\mu_V, \Lambda_V^{-1}) \\
    \Lambda_U &\sim \mathcal W(W_0, \nu_0), \qquad \mu_U \mid \Lambda_U \sim \mathcal N(\mu_0, (\beta_0 \Lambda_U)^{-1})

and the same Normal-Wishart for ``(mu_V, Lambda_V)``. Defaults are those of the authors' released
Matlab code (``bayespmf.m``): ``alpha = 2``, ``mu0 = 0``, ``beta0 = 2``, ``nu0 = D``, ``W0 = I``.
The offset is a parameter of the model with the Normal prior ``offset_prior = (m0, s0)``
(the estimator's default is data-scaled: the training ratings' mean and standard deviation, wide
against the offset's posterior spread of about ``sd / sqrt(nnz)``); ``offset_prior=None`` fixes
``m`` at ``global_mean``, the model as the authors' code has it (a plug-in constant, which
mis-calibrates predictive intervals when the data say little about ``m``).
Options: ``alpha`` unknown with a ``Gamma(a0, b0)`` prior (shape/rate); user and item biases,
``r_ij ~ N(m + b_i + c_j + u_i' v_j, 1/alpha)`` with ``b_i ~ N(0, 1/lambda_b)``,
``c_j ~ N(0, 1/lambda_c)`` and ``lambda_b, lambda_c ~ Gamma(a_b, b_b)`` (``bias_prior``).

Noise models (``noise``): ``"gaussian"`` as above; ``"student_t"``,
``r_ij = mean_ij + e_ij`` with ``e_ij | w_ij ~ N(0, 1/(alpha w_ij))`` and
``w_ij ~ Gamma(nu/2, nu/2)`` (``nu = noise_df``), i.e. ``e_ij ~ t_nu / sqrt(alpha)``: the Gibbs
sampler draws the ``w_ij``, the NumPyro model integrates them out (a ``StudentT`` likelihood: the
same marginal model for the ratings, so the same posterior of every other parameter);
``"heteroscedastic"``, ``r_ij ~ N(mean_ij, 1/(alpha tau_i kappa_j))`` with per-user and per-item
precision factors ``tau_i ~ Gamma(a_u, a_u)``, ``kappa_j ~ Gamma(a_v, a_v)``
(``precision_shape``; mean 1, so ``alpha`` keeps the overall scale), sites ``tau`` and ``kappa``.

Likelihoods (``likelihood``): ``"gaussian"`` (with the noise models above) or ``"ordinal"``, the
ordered probit of :mod:`bayesmf.posterior.ordinal`: ``y_ij = k`` iff ``c_{k-1} < z_ij <= c_k``,
``z_ij ~ N(m + b_i + c_j + u_i' v_j, 1)`` over ``n_categories`` rating categories, ``c_0 = 0``
and log cutpoint gaps ``~ N(gap_prior)``; ``alpha`` is then 1 (the latent scale) and the
offset ``m`` carries the level. Gibbs only (the latent ``z`` makes it conjugate).

:func:`bpmf_model` is the NumPyro version of this model and the single source of truth for NUTS
and SVI; the Gibbs sampler (:mod:`bayesmf.posterior.gibbs`) samples exactly its full conditionals.
Three parameterisations of the same distribution (``parameterization``), which differ only in
the coordinates a sampler moves in:

* ``"centered"``: NumPyro's ``Wishart(concentration=nu0, scale_matrix=W0)`` (mean
  ``nu0 W0``), ``mu`` and the rows as multivariate normal sites;
* ``"noncentered"``: ``Lambda_U = L L^T`` with ``L = sqrt(w0) A`` and Bartlett's (1933)
  decomposition of the Wishart: ``A`` lower triangular, ``A_dd^2 ~ chi2(nu0 - d)``
  (``d = 0..D-1``) and ``A_de ~ N(0, 1)`` below the diagonal, all independent. This gives ``L``,
  the Cholesky factor every later step needs, without a factorisation, and replaces the
  positive-definite constraint transform (many small matrix ops per gradient) by ``D``
  log-transformed positive scalars. Then ``mu_U = mu0 + (sqrt(beta0) L)^{-T} z_mu`` and
  ``u_i = mu_U + L^{-T} z_i`` with ``z ~ N(0, I)``: covariances ``(beta0 Lambda)^{-1}`` and
  ``Lambda^{-1}`` as in the model, without the funnel that centred hierarchical parameters give
  HMC when the data say little about each row;
* ``"bartlett"``: ``Lambda`` from Bartlett's variables as above, ``mu`` and the rows centred
  (sites in the factors' own coordinates, :class:`~bayesmf.posterior.distributions.PrecisionCholeskyNormal`
  given ``L``). When every row has many ratings its posterior is narrow and nearly independent
  of ``Lambda``; non-centred, every ``z_i`` would have to move with ``L`` (the "inverse funnel",
  Betancourt & Girolami 2015), which is what HMC then struggles with. NUTS and SVI both run in
  these coordinates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from bayesmf.errors import ConfigError
from bayesmf.validate import check_positive_int

PARAMETERIZATIONS = ("centered", "noncentered", "bartlett")
NOISE_MODELS = ("gaussian", "student_t", "heteroscedastic")
LIKELIHOODS = ("gaussian", "ordinal")


class Prior(NamedTuple):
    """Hyperparameters of BPMF (see the module docstring). ``noise_prior`` is ``None`` for a
    fixed ``alpha`` or ``(a0, b0)`` for ``alpha ~ Gamma(a0, b0)`` (shape, rate)."""

    rank: int
    alpha: float = 2.0
    mu0: float = 0.0
    beta0: float = 2.0
    nu0: float | None = None  # None -> rank
    w0: float = 1.0  # W0 = w0 * I
    noise_prior: tuple[float, float] | None = None
    bias_prior: tuple[float, float] | None = None  # None: no biases
    offset_prior: tuple[float, float] | None = None  # (m0, s0) of m ~ N(m0, s0^2); None: m fixed
    noise: str = "gaussian"  # one of NOISE_MODELS (module docstring)
    noise_df: float = 4.0  # Student-t degrees of freedom nu (noise="student_t")
    precision_shape: tuple[float, float] = (2.0, 2.0)  # (a_u, a_v): tau_i ~ Gamma(a_u, a_u), kappa_j ~ Gamma(a_v, a_v)
    likelihood: str = "gaussian"  # one of LIKELIHOODS: "ordinal" is the ordered probit (module docstring)
    n_categories: int = 0  # K rating categories (likelihood="ordinal")
    gap_prior: tuple[float, float] = (0.0, 1.0)  # (m_g, s_g): log cutpoint gaps ~ N(m_g, s_g^2)

    @property
    def gaussian(self) -> bool:
        """One noise precision ``alpha`` for every rating (the sampler's fast path)."""
        return self.noise == "gaussian"

    @property
    def ordinal(self) -> bool:
        """The ordered-probit likelihood (:mod:`bayesmf.posterior.ordinal`)."""
        return self.likelihood == "ordinal"

    @property
    def has_biases(self) -> bool:
        return self.bias_prior is not None

    @property
    def learns_offset(self) -> bool:
        return self.offset_prior is not None

    @property
    def nu(self) -> float:
        return float(self.rank if self.nu0 is None else self.nu0)

    def validate(self) -> Prior:
        check_positive_int("rank", self.rank)
        for name in ("alpha", "beta0", "w0"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive precision/scale, got {value!r}")
        if self.nu <= self.rank - 1:
            raise ConfigError(f"nu0 must exceed rank - 1 = {self.rank - 1} for a proper Wishart, got {self.nu}")
        for name in ("noise_prior", "bias_prior"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) <= 0):
                raise ConfigError(f"{name} must be a positive (shape, rate) pair, got {value!r}")
        if self.noise not in NOISE_MODELS:
            raise ConfigError(f"noise must be one of {NOISE_MODELS}, got {self.noise!r}")
        if self.noise == "student_t":
            df = self.noise_df
            if isinstance(df, bool) or not isinstance(df, (int, float, np.number)) or not np.isfinite(df) or df <= 0:
                raise ConfigError(f"noise_df (Student-t degrees of freedom) must be a finite number > 0, got {df!r}")
        if self.noise == "heteroscedastic":
            value = self.precision_shape
            if len(value) != 2 or not np.all(np.isfinite(value)) or min(value) <= 0:
                raise ConfigError(f"precision_shape must be a finite positive (user, item) pair of Gamma shapes, "
                                  f"got {value!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.ordinal:
            if self.noise != "gaussian" or self.noise_prior is not None or self.alpha != 1.0:
                raise ConfigError("likelihood='ordinal' fixes the latent noise at N(0, 1): it needs noise='gaussian', "
                                  f"alpha=1 and no noise_prior (got noise={self.noise!r}, alpha={self.alpha!r}, "
                                  f"noise_prior={self.noise_prior!r})")
            if isinstance(self.n_categories, bool) or int(self.n_categories) != self.n_categories \
                    or self.n_categories < 2:
                raise ConfigError(f"likelihood='ordinal' needs n_categories >= 2, got {self.n_categories!r}")
            from bayesmf.posterior.ordinal import check_gap_prior

            check_gap_prior(self.gap_prior)
        if self.offset_prior is not None:
            value = self.offset_prior
            if len(value) != 2 or not np.all(np.isfinite(value)) or value[1] <= 0:
                raise ConfigError(f"offset_prior must be a finite (mean, scale) pair with scale > 0, got {value!r}")
        return self

    def w0_matrix(self, dtype=jnp.float32):
        return self.w0 * jnp.eye(self.rank, dtype=dtype)


def bpmf_model(
    users,
    items,
    ratings,
    n_users: int,
    n_items: int,
    prior: Prior,
    global_mean: float = 0.0,
    likelihood_scale: float = 1.0,
    parameterization: str = "noncentered",
    layout=None,
):
    """NumPyro model of BPMF over the observed triples (index arrays ``users``, ``items`` and the
    raw ``ratings``, all shape (nnz,)). ``ratings=None`` samples the prior predictive.

    ``likelihood_scale`` multiplies the log-likelihood: SVI passes a minibatch of ratings with
    ``nnz / batch`` here, which makes the minibatch ELBO an unbiased estimate of the full one
    (drawing the minibatch indices itself with one cheap ``randint``, where NumPyro's
    subsampled plate would permute all nnz indices at every step).

    ``parameterization``: one of :data:`PARAMETERIZATIONS` (module docstring).

    ``layout``: the same ratings packed by :func:`bayesmf.engines.residuals.rating_layout` with
    targets ``ratings - global_mean``
    (:func:`~bayesmf.posterior.numpyro_inference.likelihood_layout`, built once per fit by NUTS
    and full-batch SVI); the caller keeps it consistent with ``ratings`` and ``global_mean``,
    which the likelihood then no longer reads (only ``nnz = users.shape[0]``). The likelihood is then the
    same Gaussian log density written through the sum of squares,
    ``nnz/2 log(alpha / 2 pi) - alpha/2 sum (r - mean)^2``, as a factor site ``r`` whose gradient
    needs no scatter-adds (:func:`~bayesmf.engines.residuals.sum_of_squares`); full-batch only.

    ``global_mean``: the offset ``m`` when ``prior.offset_prior`` is None, else only the centring
    of the layout's targets.

    Sites: ``Lambda_U``, ``mu_U``, ``U`` (n_users, D) and the same for ``V`` (some of them
    deterministic functions of the sites of :func:`_bartlett_side` unless ``"centered"``); ``alpha``
    and ``offset`` when they have a prior; ``b_U``, ``b_V``, ``bias_precision_U``,
    ``bias_precision_V`` with biases; ``tau`` (n_users,), ``kappa`` (n_items,) with
    heteroscedastic noise; ``r`` the likelihood (the packed ``layout`` is for Gaussian noise only).
    Without ``layout`` the likelihood is
    one vectorised expression over ratings: a gather of factor rows and a row-wise dot product.
    """
    import numpyro
    import numpyro.distributions as dist

    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    D = prior.rank
    factors = {}
    for side, n in (("U", n_users), ("V", n_items)):
        if parameterization != "centered":
            factors[side] = _bartlett_side(side, n, prior, centred_rows=parameterization == "bartlett")
            continue
        lam = numpyro.sample(f"Lambda_{side}", dist.Wishart(prior.nu, scale_matrix=prior.w0_matrix()))
        mu = numpyro.sample(
            f"mu_{side}", dist.MultivariateNormal(jnp.full(D, prior.mu0), precision_matrix=prior.beta0 * lam)
        )
        with numpyro.plate(f"{side}_rows", n):
            factors[side] = numpyro.sample(side, dist.MultivariateNormal(mu, precision_matrix=lam))
    bias = {}
    for side, n in (("U", n_users), ("V", n_items)):
        if prior.has_biases:
            lam_b = numpyro.sample(f"bias_precision_{side}", dist.Gamma(*prior.bias_prior))
            scale = 1.0 / jnp.sqrt(lam_b)
            bias[side] = numpyro.sample(f"b_{side}", dist.Normal(0.0, scale).expand([n]).to_event(1))
    if prior.noise_prior is None:
        alpha = prior.alpha
    else:
        alpha = numpyro.sample("alpha", dist.Gamma(*prior.noise_prior))
    offset = global_mean
    if prior.learns_offset:
        offset = numpyro.sample("offset", dist.Normal(*prior.offset_prior))
    if prior.noise == "heteroscedastic":
        a_u, a_v = prior.precision_shape
        tau = numpyro.sample("tau", dist.Gamma(a_u, a_u).expand([n_users]).to_event(1))
        kappa = numpyro.sample("kappa", dist.Gamma(a_v, a_v).expand([n_items]).to_event(1))
    if layout is not None:
        if not prior.gaussian:
            raise ConfigError(f"layout is the Gaussian likelihood's; noise={prior.noise!r} needs layout=None")
        if ratings is None or likelihood_scale != 1.0:
            raise ConfigError("layout is the full set of observed ratings: not for prior predictive draws or "
                              f"minibatches (ratings={'None' if ratings is None else 'given'}, "
                              f"likelihood_scale={likelihood_scale!r})")
        shift = offset - global_mean if prior.learns_offset else None  # targets are r - global_mean
        numpyro.factor("r", _gaussian_log_likelihood(layout, factors, bias, alpha, users.shape[0], shift))
        return
    with numpyro.plate("ratings", users.shape[0]), numpyro.handlers.scale(scale=likelihood_scale):
        mean = offset + jnp.sum(factors["U"][users] * factors["V"][items], axis=-1)
        if prior.has_biases:  # no per-rating gathers of zero biases (at every gradient) without them
            mean = mean + bias["U"][users] + bias["V"][items]
        if prior.noise == "student_t":
            noise = dist.StudentT(prior.noise_df, mean, 1.0 / jnp.sqrt(alpha))
        elif prior.noise == "heteroscedastic":
            noise = dist.Normal(mean, 1.0 / jnp.sqrt(alpha * tau[users] * kappa[items]))
        else:
            noise = dist.Normal(mean, 1.0 / jnp.sqrt(alpha))
        numpyro.sample("r", noise, obs=ratings)


def _gaussian_log_likelihood(layout, factors, bias, alpha, nnz: int, shift=None):
    """``sum log N(y_ij | shift + b_i + c_j + u_i.v_j, 1/alpha)`` over ``layout``'s targets; the
    biases enter as two extra columns, ``[u_i, b_i, 1] . [v_j, 1, shift + c_j]``, and a shift
    without biases as one, ``[u_i, 1] . [v_j, shift]``."""
    from bayesmf.engines.residuals import sum_of_squares

    U, V = factors["U"], factors["V"]
    if bias:
        U = jnp.concatenate([U, bias["U"][:, None], jnp.ones_like(U[:, :1])], axis=1)
        c = bias["V"] if shift is None else shift + bias["V"]
        V = jnp.concatenate([V, jnp.ones_like(V[:, :1]), c[:, None]], axis=1)
    elif shift is not None:
        U = jnp.concatenate([U, jnp.ones_like(U[:, :1])], axis=1)
        V = jnp.concatenate([V, jnp.broadcast_to(shift, V[:, :1].shape).astype(V.dtype)], axis=1)
    return 0.5 * nnz * jnp.log(alpha / (2 * np.pi)) - 0.5 * alpha * sum_of_squares(layout, U, V)


def _bartlett_side(side: str, n: int, prior: Prior, centred_rows: bool):
    """One side's ``(Lambda, mu, rows)`` with ``Lambda`` from Bartlett's variables and ``mu`` and
    the rows non-centred (``z``) or, with ``centred_rows``, centred (module docstring).

    Sample sites ``bartlett_chi2_{side}`` (D,), ``bartlett_normal_{side}`` (D(D-1)/2,), then
    ``z_mu_{side}`` (D,) and ``z_{side}`` (n, D) with deterministic ``mu_{side}`` and ``{side}``,
    or, centred, ``mu_{side}`` (D,) and ``{side}`` (n, D) themselves; deterministic
    ``Lambda_{side}``. Returns the rows.
    """
    import numpyro
    import numpyro.distributions as dist

    from bayesmf.posterior.distributions import PrecisionCholeskyNormal, unwhiten

    D = prior.rank
    chi2 = numpyro.sample(f"bartlett_chi2_{side}", dist.Chi2(prior.nu - jnp.arange(D)).to_event(1))
    below = numpyro.sample(f"bartlett_normal_{side}", dist.Normal(0.0, 1.0).expand([D * (D - 1) // 2]).to_event(1))
    chol = np.sqrt(prior.w0) * (jnp.zeros((D, D)).at[np.tril_indices(D, -1)].set(below) + jnp.diag(jnp.sqrt(chi2)))
    numpyro.deterministic(f"Lambda_{side}", chol @ chol.T)
    if centred_rows:
        mu = numpyro.sample(f"mu_{side}", PrecisionCholeskyNormal(jnp.full(D, prior.mu0), np.sqrt(prior.beta0) * chol))
        return numpyro.sample(side, PrecisionCholeskyNormal(jnp.broadcast_to(mu, (n, D)), chol).to_event(1))
    z_mu = numpyro.sample(f"z_mu_{side}", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    z = numpyro.sample(f"z_{side}", dist.Normal(0.0, 1.0).expand([n, D]).to_event(2))
    # rows u_i = mu + L^{-T} z_i and mu = mu0 + (sqrt(beta0) L)^{-T} z_mu
    mu = numpyro.deterministic(f"mu_{side}", unwhiten(z_mu, prior.mu0, np.sqrt(prior.beta0) * chol))
    return numpyro.deterministic(side, unwhiten(z, mu, chol))
