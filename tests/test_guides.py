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
from bayesmf.posterior.guides import GaussianGuide, latent_sites


def _fit(model, rank, steps=4000, lr=0.02, seed=0):
    q = GaussianGuide(latent_sites(model), rank=rank)
    # a decaying step, so the last iterate sits at the optimum rather than in Adam's noise around it
    svi = SVI(model, q, optim.Adam(lambda i: lr * 0.5 ** (i / 1000)), Trace_ELBO(num_particles=8))
    key = jax.random.PRNGKey(seed)
    state = svi.init(key, init_params=q.init_params(key, init_scale=0.1))
    state, _ = jax.jit(lambda s: jax.lax.scan(lambda st, _: svi.update(st), s, None, length=steps))(state)
    return q, svi.get_params(state)


def _lognormal_model():
    # log s ~ N(0, 1), log y_i | s ~ N(log s, 1) for 4 observations, x ~ N(1, 2^2) unobserved:
    # the posterior of (log s, x) is Gaussian, N(sum log y / 5, 1/5) and N(1, 4), independent
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(1.0, 2.0))
    with numpyro.plate("obs", 4):
        numpyro.sample("y", dist.LogNormal(jnp.log(s), 1.0), obs=jnp.exp(jnp.array([0.5, 1.5, 1.0, 2.0])))


def _correlated_model():
    # a ~ N(0, I_2), y = a_0 + a_1 + N(0, 0.5^2): posterior precision I + 4 1 1^T, covariance
    # I - (4/9) 1 1^T = diag(1/9) + w w^T with w = (2/3)(1, -1), mean (0.8, 0.8)
    a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(a[0] + a[1], 0.5), obs=1.8)


def test_sites_come_from_an_abstract_trace_in_model_order():
    sites = latent_sites(_lognormal_model)
    assert [(s.name, s.shape) for s in sites] == [("s", ()), ("x", ())]
    assert GaussianGuide(sites).dim == 2


def test_mean_field_recovers_a_gaussian_posterior_through_the_log_transform():
    q, params = _fit(_lognormal_model, rank=0)
    # unconstrained coordinates: (log s, x); exact posterior means (0 + sum log y) / 5 = 1.0 and
    # 1, standard deviations sqrt(1/5) and 2
    sd = np.array([np.sqrt(1 / 5), 2.0])
    assert np.all(np.abs(params["loc"] - 1.0) < 0.05 * sd)
    np.testing.assert_allclose(params["scale"], sd, rtol=0.06)
    draws = q.sample(jax.random.PRNGKey(1), params, 20000)
    # E[s] = exp(m + v/2) for the log-normal posterior of s
    np.testing.assert_allclose(np.mean(draws["s"]), np.exp(1.0 + 0.1), rtol=0.04)
    assert draws["s"].shape == (20000,) and np.all(draws["s"] > 0)


def test_low_rank_guide_recovers_a_correlated_posterior_mean_field_cannot():
    exact_cov = np.linalg.inv(np.eye(2) + 4.0 * np.ones((2, 2)))  # [[5, -4], [-4, 5]] / 9
    exact_mean = exact_cov @ np.array([4 * 1.8, 4 * 1.8])
    q, params = _fit(_correlated_model, rank=1, steps=6000)
    S, W = np.diag(params["scale"]), params["cov_factor"]
    cov = S @ (np.eye(2) + W @ W.T) @ S
    np.testing.assert_allclose(params["loc"], exact_mean, atol=0.05)
    np.testing.assert_allclose(cov, exact_cov, atol=0.05)
    # mean-field: the same means, variances the inverse of the precision's diagonal, 1/5 < 5/9
    _, mf = _fit(_correlated_model, rank=0)
    np.testing.assert_allclose(mf["loc"], exact_mean, atol=0.05)
    np.testing.assert_allclose(mf["scale"] ** 2, [0.2, 0.2], atol=0.03)


def test_starting_parameters_are_the_unconstrained_values_given():
    q = GaussianGuide(latent_sites(_lognormal_model), rank=2)
    params = q.init_params(jax.random.PRNGKey(0), {"s": 2.0})
    assert params["loc"][0] == pytest.approx(np.log(2.0))
    assert -2 < params["loc"][1] < 2  # no value given: NumPyro's uniform start
    assert params["cov_factor"].shape == (2, 2) and not np.any(params["cov_factor"])
    np.testing.assert_allclose(params["scale"], 0.01)
    with pytest.raises(ConfigError, match="rank must be >= 0, got -1"):
        GaussianGuide(latent_sites(_lognormal_model), rank=-1)
