r"""The Bayesian factorization machine as a NumPyro model, and NUTS and SVI on it.

:func:`fm_model` is the model that :mod:`bayesmf.posterior.fm_gibbs` samples, written once more
as a NumPyro function (Gaussian likelihood) with the same parametrisation and constants
(:class:`~bayesmf.posterior.fm_gibbs.FMPrior`): for each group ``g`` and factor column ``f``

.. math::
    \lambda^w_g,\ \lambda^v_{gf} \sim \mathrm{Gamma}(\alpha_\lambda, \beta_\lambda)\ \text{(rate)},\qquad
    \mu^w_g \mid \lambda^w_g \sim \mathcal N(0, 1/(\gamma_0 \lambda^w_g)),\qquad
    \mu^v_{gf} \mid \lambda^v_{gf} \sim \mathcal N(0, 1/(\gamma_0 \lambda^v_{gf})),

    w_j \sim \mathcal N(\mu^w_{g(j)}, 1/\lambda^w_{g(j)}),\qquad
    v_{jf} \sim \mathcal N(\mu^v_{g(j)f}, 1/\lambda^v_{g(j)f}),\qquad
    w_0 \sim \mathcal N(m_0, s_0^2),\qquad \alpha \sim \mathrm{Gamma}(a_0, b_0),

    y_r \sim \mathcal N(f(x_r), 1/\alpha),

``w0`` fixed at the data's centre without ``offset_prior`` and ``alpha`` at ``prior.alpha``
without ``noise_prior``, as in the sampler. The prediction ``f(x_r)`` is computed by relation
blocks (:func:`~bayesmf.posterior.fm_gibbs.predict_centred`: per block-row sums of ``X_b w``,
``X_b V`` and ``X_b^{\circ 2} |v|^2``, gathered by rating), never from a dense design matrix:
O(nnz K + block entries K) per log density and gradient. The sites keep the sampler's names
(``w0``, ``w``, ``V``, ``mu_w``, ``lambda_w``, ``mu_v``, ``lambda_v``, ``alpha``: centred
coordinates, no deterministic sites), so the draws of every inference are stored alike.

The ordered-probit likelihood has no NumPyro form here (its Gibbs sampler augments the ratings
with latent values): :func:`fm_model` raises :class:`~bayesmf.errors.ConfigError` for it.

References
----------
Freudenthaler, C., Schmidt-Thieme, L. and Rendle, S. (2011). Bayesian factorization machines.
Rendle, S. (2013). Scaling factorization machines to relational data. VLDB.
Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn sampler. JMLR.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import ConfigError
from bayesmf.posterior.fm_gibbs import FMData, FMPrior, predict_centred

__all__ = ["HYPER_SITES", "fm_model", "latent_fm_sites", "run_nuts", "run_svi"]

# the hyperparameter sites, NUTS's dense block with dense_mass="hyper"
HYPER_SITES = ("lambda_w", "mu_w", "lambda_v", "mu_v", "w0", "alpha")


def fm_model(data: FMData, prior: FMPrior, likelihood: bool = True):
    """NumPyro model of the Bayesian FM (module docstring) over the ratings of ``data``
    (:func:`~bayesmf.posterior.fm_gibbs.prepare`: the relation blocks, each column's group and
    the targets ``y - centre``). ``likelihood=False`` leaves out the observation site ``y`` (the
    prior alone).

    Sites: ``lambda_w``, ``mu_w`` (G,), ``lambda_v``, ``mu_v`` (G, K), ``w`` (F,), ``V`` (F, K),
    ``w0`` with ``offset_prior``, ``alpha`` with ``noise_prior``, the observed ``y`` (nnz,).
    """
    import numpyro
    import numpyro.distributions as dist

    if prior.ordinal:
        raise ConfigError("the ordinal likelihood has no NumPyro model (its latent values are a Gibbs "
                          "augmentation): use inference='gibbs'")
    G, K = data.group_sizes.shape[0], prior.rank
    shape, rate, gamma0 = prior.hyper_shape, prior.hyper_rate, prior.gamma0
    lambda_w = numpyro.sample("lambda_w", dist.Gamma(shape, rate).expand([G]).to_event(1))
    mu_w = numpyro.sample("mu_w", dist.Normal(0.0, jax.lax.rsqrt(gamma0 * lambda_w)).to_event(1))
    lambda_v = numpyro.sample("lambda_v", dist.Gamma(shape, rate).expand([G, K]).to_event(2))
    mu_v = numpyro.sample("mu_v", dist.Normal(0.0, jax.lax.rsqrt(gamma0 * lambda_v)).to_event(2))
    g = data.groups
    w = numpyro.sample("w", dist.Normal(mu_w[g], jax.lax.rsqrt(lambda_w[g])).to_event(1))
    V = numpyro.sample("V", dist.Normal(mu_v[g], jax.lax.rsqrt(lambda_v[g])).to_event(2))
    w0 = data.centre
    if prior.offset_prior is not None:
        w0 = numpyro.sample("w0", dist.Normal(*prior.offset_prior))
    alpha = prior.alpha
    if prior.noise_prior is not None:
        alpha = numpyro.sample("alpha", dist.Gamma(*prior.noise_prior))
    if likelihood:
        f = predict_centred(data, w0, w, V)
        numpyro.sample("y", dist.Normal(f, jax.lax.rsqrt(alpha * jnp.ones_like(f))).to_event(1), obs=data.y)


def latent_fm_sites(data: FMData, prior: FMPrior):
    """The latent sites of :func:`fm_model` (:func:`~bayesmf.posterior.guides.latent_sites`:
    an abstract trace, nothing computed)."""
    from bayesmf.posterior.guides import latent_sites

    return latent_sites(fm_model, data, prior)


def _all_sites(latent: dict, data: FMData, prior: FMPrior, shape: tuple) -> dict:
    """The sampler's sites from draws ``latent`` ``{site: (n, ...)}`` reshaped to ``shape + site
    shape``: ``w0`` at the centre and ``alpha`` at ``prior.alpha`` where they are fixed."""
    out = {name: np.asarray(v).reshape(*shape, *np.shape(v)[1:]) for name, v in latent.items()}
    dtype = out["V"].dtype
    if "w0" not in out:
        out["w0"] = np.full(shape, float(data.centre), dtype)
    if "alpha" not in out:
        out["alpha"] = np.full(shape, prior.alpha, dtype)
    return out


def _potential(data: FMData, prior: FMPrior):
    """Minus the log joint on the unconstrained scale, jitted (NumPyro's ``potential_energy``)."""
    from numpyro.infer.util import potential_energy

    return jax.jit(lambda z: potential_energy(fm_model, (data, prior), {}, z))


def run_nuts(data: FMData, prior: FMPrior, key, *, n_warmup: int, n_samples: int, chains: int,
             start: dict, warm_draws: dict | None = None, target_accept: float = 0.8, max_tree_depth: int = 8,
             dense_mass: bool | str = "hyper", adapt_mass_matrix: bool | None = None, progress: bool = False):
    """NumPyro NUTS on :func:`fm_model` (its jitted potential,
    :func:`~bayesmf.posterior.numpyro_inference.sample_nuts`), as
    :func:`bayesmf.posterior.numpyro_inference.run_nuts` runs it on BPMF: with ``warm_draws``
    (``{site: (n, ...)}``, e.g. a short Gibbs run of the same model) the chains start at those
    draws and the inverse mass matrix is their variance per unconstrained coordinate, kept
    through the warm-up (``adapt_mass_matrix`` overrides); without, every chain starts at
    ``start`` (``{site: value}``, e.g. the sampler's initial state) and NumPyro adapts a mass
    matrix from the identity, dense over the hyperparameter sites with ``dense_mass="hyper"``.

    Returns ``(draws, stats)``: ``{site: (chains, n_samples, ...)}`` with the sampler's sites
    (:data:`bayesmf.posterior.fm_model.SITES`) and the sample stats per chain and draw.
    """
    from bayesmf.posterior.guides import unconstrain
    from bayesmf.posterior.numpyro_inference import sample_nuts, warm_start

    sites = latent_fm_sites(data, prior)
    names = [site.name for site in sites]
    if dense_mass == "hyper":
        dense_mass = [tuple(name for name in HYPER_SITES if name in names)]
    if warm_draws is not None:
        adapt_mass_matrix = False if adapt_mass_matrix is None else adapt_mass_matrix
        starts, dense_mass, inverse_mass = warm_start(sites, {name: warm_draws[name] for name in names}, chains,
                                                      dense_mass, adapt_mass_matrix)
    else:
        adapt_mass_matrix = True if adapt_mass_matrix is None else adapt_mass_matrix
        starts, inverse_mass = [unconstrain(sites, {name: start[name] for name in names})] * chains, None
    latent, stats = sample_nuts(_potential(data, prior), sites, starts, key, n_warmup=n_warmup, n_samples=n_samples,
                                target_accept=target_accept, max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                                inverse_mass=inverse_mass, adapt_mass_matrix=adapt_mass_matrix, progress=progress)
    return _all_sites(latent, data, prior, (chains, n_samples)), stats


def run_svi(data: FMData, prior: FMPrior, key, *, steps: int, n_samples: int, start: dict, guide: str = "meanfield",
            guide_rank: int = 10, learning_rate: float = 0.01, progress: bool = False, chunk: int = 100):
    """NumPyro SVI (Adam, ``Trace_ELBO``, full batch) on :func:`fm_model` with a mean-field or
    low-rank-plus-diagonal Gaussian guide on the unconstrained coordinates
    (:class:`~bayesmf.posterior.guides.GaussianGuide`), its means starting at ``start``
    (``{site: value}``); the steps run ``chunk`` at a time in one jitted ``lax.scan``
    (:func:`~bayesmf.posterior.numpyro_inference.svi_steps`).

    Returns ``(draws, losses)``: ``n_samples`` draws from the guide as ``{site: (1,
    n_samples, ...)}`` and the ELBO loss of every step.
    """
    import numpyro.optim as optim
    from numpyro.infer import SVI, Trace_ELBO

    from bayesmf.posterior.guides import GaussianGuide
    from bayesmf.posterior.numpyro_inference import svi_steps

    if guide not in ("meanfield", "lowrank"):
        raise ConfigError(f"svi guide must be 'meanfield' or 'lowrank', got {guide!r}")
    sites = latent_fm_sites(data, prior)
    q = GaussianGuide(sites, rank=guide_rank if guide == "lowrank" else 0)
    k_init, k_fit, k_draw = jax.random.split(key, 3)
    svi = SVI(fm_model, q, optim.Adam(learning_rate), Trace_ELBO())
    values = {site.name: start[site.name] for site in sites}
    state = jax.jit(lambda k, params: svi.init(k, data, prior, init_params=params))(k_init,
                                                                                     q.init_params(k_init, values))

    @jax.jit
    def run_chunk(state, keys):
        return jax.lax.scan(lambda st, _k: svi.update(st, data, prior), state, keys)

    state, losses = svi_steps(run_chunk, state, k_fit, steps, chunk, learning_rate, "BayesFM SVI", progress)
    latent = jax.jit(q.sample, static_argnums=2)(k_draw, svi.get_params(state), n_samples)
    return _all_sites(latent, data, prior, (1, n_samples)), losses
