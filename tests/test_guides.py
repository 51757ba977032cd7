"""The Gaussian guides recover posteriors they can represent exactly, and their densities are
those of the constrained sites (the change of variables is in the ELBO)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.optim as optim
import pytest
from numpyro.infer import SVI, Trace_ELBO

from bayesmf.errors import ConfigError
from bayesmf.posterior.guides import COV_FACTOR, LOC, SCALE, GaussianGuide, latent_sites


def _fit(model, rank, steps=4000, lr=0.02, seed=0):
    q = GaussianGuide(latent_sites(model), rank=rank)
    # a decaying step, so the last iterate sits at the optimum rather than in Adam's noise around it
    svi = SVI(model, q, optim.Adam(lambda i: lr * 0.5 ** (i / 1000)), Trace_ELBO(num_particles=8))
    key = jax.random.PRNGKey(seed)
    state = svi.init(key, init_params=q.init_params(key, init_scale=0.1))
    state, _ = jax.jit(lambda s: jax.lax.scan(lambda st, _: svi.update(st), s, None, length=steps))(state)
    return q, svi.get_params(state)


LOG_Y = np.array([[0.5, 1.5, 1.0, 2.0], [-1.0, 0.0, 0.5, 0.5], [2.0, 2.5, 3.0, 2.5]])  # 3 x 4


def _lognormal_model():
    # log s_j ~ N(0, 1), log y_ij | s_j ~ N(log s_j, 1) for 4 observations each (3 sites in one
    # vector: a Jacobian per element), x ~ N(1, 2^2) unobserved: the posterior of (log s, x) is
    # Gaussian, N(sum_i log y_ij / 5, 1/5) and N(1, 4), independent
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))
    numpyro.sample("x", dist.Normal(1.0, 2.0))
    numpyro.sample("y", dist.LogNormal(jnp.log(s)[:, None], 1.0).to_event(2), obs=jnp.exp(jnp.asarray(LOG_Y)))


def _correlated_model():
    # a ~ N(0, I_2), y = a_0 + a_1 + N(0, 0.5^2): posterior precision I + 4 1 1^T, covariance
    # I - (4/9) 1 1^T = diag(1/9) + w w^T with w = (2/3)(1, -1), mean (0.8, 0.8)
    a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(a[0] + a[1], 0.5), obs=1.8)


def test_sites_come_from_an_abstract_trace_in_model_order():
    sites = latent_sites(_lognormal_model)
    assert [(s.name, s.shape) for s in sites] == [("s", (3,)), ("x", ())]
    assert GaussianGuide(sites).dim == 4


@pytest.mark.slow
def test_mean_field_recovers_a_gaussian_posterior_through_the_log_transform():
    q, params = _fit(_lognormal_model, rank=0)
    # unconstrained coordinates: (log s_0..2, x); exact posterior means sum_i log y_ij / 5 and 1,
    # standard deviations sqrt(1/5) and 2
    mean = np.append(LOG_Y.sum(axis=1) / 5, 1.0)
    sd = np.array([np.sqrt(1 / 5)] * 3 + [2.0])
    assert np.all(np.abs(params[LOC] - mean) < 0.05 * sd)
    np.testing.assert_allclose(params[SCALE], sd, rtol=0.06)
    draws = q.sample(jax.random.PRNGKey(1), params, 20000)
    # E[s_j] = exp(m_j + v/2) for the log-normal posterior of s_j
    np.testing.assert_allclose(np.mean(draws["s"], axis=0), np.exp(mean[:3] + 0.1), rtol=0.04)
    assert draws["s"].shape == (20000, 3) and np.all(draws["s"] > 0)


@pytest.mark.slow
def test_low_rank_guide_recovers_a_correlated_posterior_mean_field_cannot():
    exact_cov = np.linalg.inv(np.eye(2) + 4.0 * np.ones((2, 2)))  # [[5, -4], [-4, 5]] / 9
    exact_mean = exact_cov @ np.array([4 * 1.8, 4 * 1.8])
    q, params = _fit(_correlated_model, rank=1, steps=6000)
    S, W = np.diag(params[SCALE]), params[COV_FACTOR]
    cov = S @ (np.eye(2) + W @ W.T) @ S
    np.testing.assert_allclose(params[LOC], exact_mean, atol=0.05)
    np.testing.assert_allclose(cov, exact_cov, atol=0.05)
    # mean-field: the same means, variances the inverse of the precision's diagonal, 1/5 < 5/9
    _, mf = _fit(_correlated_model, rank=0)
    np.testing.assert_allclose(mf[LOC], exact_mean, atol=0.05)
    np.testing.assert_allclose(mf[SCALE] ** 2, [0.2, 0.2], atol=0.03)


def test_starting_parameters_are_the_unconstrained_values_given():
    q = GaussianGuide(latent_sites(_lognormal_model), rank=2)
    params = q.init_params(jax.random.PRNGKey(0), {"s": 2.0})
    np.testing.assert_allclose(params[LOC][:3], np.log(2.0), rtol=1e-6)
    assert -2 < params[LOC][3] < 2  # no value given: NumPyro's uniform start
    assert params[COV_FACTOR].shape == (4, 2) and not np.any(params[COV_FACTOR])
    np.testing.assert_allclose(params[SCALE], 0.01)
    # SVI takes them as constrained values: the state holds the same parameters
    svi = SVI(_lognormal_model, q, optim.Adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(1), init_params=params)
    for name, value in svi.get_params(state).items():
        np.testing.assert_allclose(value, params[name], rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="rank must be >= 0, got -1"):
        GaussianGuide(latent_sites(_lognormal_model), rank=-1)


def test_supports_that_change_shape_are_refused():
    def simplex_model():
        numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))

    with pytest.raises(ConfigError, match="site 'p'.*changes shape"):
        latent_sites(simplex_model)
