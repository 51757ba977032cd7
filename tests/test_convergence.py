"""Several chains from over-dispersed starts, R-hat and ESS on identified summaries, and the
warning when they miss their thresholds."""

import warnings

import arviz as az
import numpy as np
import pytest

from bayesmf.data import synthetic
from bayesmf.errors import ConvergenceWarning
from bayesmf.models.bpmf import BPMF, overdispersed_starts
from bayesmf.posterior.convergence import diagnose, identified_summaries, warn_if_unconverged


def test_overdispersed_starts_keep_chain_0_and_spread_the_others():
    rng = np.random.default_rng(0)
    U0, V0 = rng.normal(0, 0.3, (50, 3)), rng.normal(0, 0.2, (40, 3))
    U, V = overdispersed_starts(U0, V0, chains=4, seed=1)
    assert U.shape == (4, 50, 3) and V.shape == (4, 40, 3)
    np.testing.assert_array_equal(U[0], U0)
    np.testing.assert_array_equal(V[0], V0)
    # the added noise has twice the entries' spread, and differs between chains
    assert abs(np.std(U[1:] - U0) / (2 * U0.std()) - 1) < 0.05
    assert abs(np.std(V[1:] - V0) / (2 * V0.std()) - 1) < 0.05
    assert not np.allclose(U[1], U[2])


def test_summaries_are_rotation_invariant_and_equal_numpy():
    """The summaries of draws rotated by an orthogonal Q (Lambda -> Q' Lambda Q, mu -> Q' mu) are
    unchanged; trace and log-determinant equal NumPy's per draw."""
    rng = np.random.default_rng(2)
    A = rng.normal(size=(2, 5, 3, 3))
    lam = A @ np.swapaxes(A, -1, -2) + np.eye(3)
    draws = {"Lambda_U": lam, "Lambda_V": lam[::-1], "mu_U": rng.normal(size=(2, 5, 3)),
             "mu_V": rng.normal(size=(2, 5, 3)), "alpha": rng.gamma(2.0, size=(2, 5)), "offset": np.full((2, 5), 3.0)}
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = dict(draws, Lambda_U=Q.T @ lam @ Q, mu_U=draws["mu_U"] @ Q)
    a, b = identified_summaries(draws), identified_summaries(rotated)
    assert set(a) == {"tr_Lambda_U", "logdet_Lambda_U", "norm_mu_U", "tr_Lambda_V", "logdet_Lambda_V", "norm_mu_V",
                      "alpha"}  # a constant offset (fixed) is not diagnosed
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10)
    np.testing.assert_allclose(a["logdet_Lambda_U"][1, 2], np.log(np.linalg.det(lam[1, 2])), rtol=1e-10)
    np.testing.assert_allclose(a["tr_Lambda_U"][0, 4], np.trace(lam[0, 4]), rtol=1e-12)


def test_diagnose_flags_chains_that_disagree_and_passes_ones_that_agree():
    rng = np.random.default_rng(3)
    same = rng.normal(size=(4, 400))
    apart = same + np.array([0.0, 0.0, 3.0, 3.0])[:, None]
    figures = diagnose({"same": same, "apart": apart})
    assert figures["same"][0] < 1.02 and figures["same"][1] > 1000
    assert figures["apart"][0] > 1.5
    np.testing.assert_allclose(figures["apart"][0], float(az.rhat(apart)))
    with pytest.warns(ConvergenceWarning, match=r"apart R-hat [0-9.]+ ESS"):
        assert warn_if_unconverged(figures, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_unconverged({"same": figures["same"]}, "test")


@pytest.mark.slow
def test_short_gibbs_run_from_overdispersed_starts_warns_with_the_figures():
    """Two chains of 10 draws with no burn-in from over-dispersed starts cannot have converged:
    the fit warns once, and ``diagnostics_`` holds the figures for every identified summary."""
    data = synthetic(n_users=60, n_items=40, n_ratings=900, rank=2, noise=0.5, seed=1)
    with pytest.warns(ConvergenceWarning, match="have not converged") as record:
        model = BPMF(rank=2, chains=2, n_warmup=0, n_samples=10, noise_prior=(1.0, 1.0), seed=0).fit(data.ratings)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in record) == 1
    assert {"tr_Lambda_U", "logdet_Lambda_V", "norm_mu_U", "alpha", "offset"} <= set(model.diagnostics_)
    assert model.user_samples_.shape[:2] == (2, 10)
    single = BPMF(rank=2, n_warmup=0, n_samples=10, seed=0).fit(data.ratings)
    assert single.diagnostics_ is None


@pytest.mark.slow
def test_a_chain_that_turns_non_finite_stops_naming_the_sweep_and_quantity_and_keeps_earlier_draws():
    """A real Gibbs kernel whose Lambda_V is made NaN from sweep 7 on (fault injection): the
    driver retries with jitter, then raises ``DivergenceError`` naming sweep 7 and ``Lambda_V``,
    with the 5 draws of sweeps 2-6 in ``.partial``."""
    import functools

    import jax
    import jax.numpy as jnp

    from bayesmf.engines.driver import DivergenceError
    from bayesmf.posterior import gibbs
    from bayesmf.posterior.model import Prior
    from bayesmf.posterior.sampler import run_sampler

    ratings = synthetic(n_users=30, n_items=20, n_ratings=200, rank=2, seed=0).ratings
    prior = Prior(rank=2)
    data = gibbs.prepare(ratings, float(ratings.values.mean()), 2)
    start = jax.tree.map(lambda x: x[None], gibbs.init(jax.random.PRNGKey(0), prior, 30, 20))
    real = functools.partial(gibbs.chain_step, data=data, prior=prior)
    calls = []

    def kernel(keys, states, jitter):
        calls.append(jitter)
        new, info = real(keys, states, jitter)
        if len(calls) > 7:  # sweeps 0-6 run once each; sweep 7 and its jitter retry fail
            new = new._replace(Lambda_V=new.Lambda_V * jnp.nan)
            info = info._replace(finite=jnp.zeros_like(info.finite))
        return new, info

    with pytest.warns(RuntimeWarning, match="sweep 7"), pytest.raises(DivergenceError) as caught:
        run_sampler(kernel, start, jax.random.PRNGKey(1), n_warmup=2, n_samples=10,
                    collect=lambda st: {"U": st.U, "alpha": st.alpha})
    message = str(caught.value)
    assert "sweep 7" in message and "Lambda_V" in message and "U," not in message
    assert caught.value.partial.samples["U"].shape == (1, 5, 30, 2)
    assert caught.value.partial.history["train_rmse"].shape == (7, 1)
