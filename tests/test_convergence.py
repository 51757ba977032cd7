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


def _hint_state(lam_u, lam_v, U, V, alpha=2.0):
    """A one-chain float64 Gibbs state (leading chain axis) with the given factors and precisions
    (NumPy arrays: the hint reads the state on the host)."""
    from bayesmf.posterior import gibbs

    zero = np.zeros(1)
    return gibbs.GibbsState(U=U[None], V=V[None], mu_U=np.zeros((1, 2)), Lambda_U=lam_u[None], mu_V=np.zeros((1, 2)),
                            Lambda_V=lam_v[None], alpha=np.full(1, alpha), b_U=np.zeros((1, len(U))),
                            b_V=np.zeros((1, len(V))), bias_precision_U=zero, bias_precision_V=zero, offset=zero)


def test_divergence_hint_reports_the_conditioning_figures_and_explains_only_when_extreme():
    """``gibbs.divergence_hint``: the largest rows and the extreme eigenvalues of each Lambda, and
    the bound ``(lambda_max(Lambda_U) + alpha max |v|^2) / lambda_min(Lambda_U)`` (either side,
    the larger) computed here in NumPy; the drift explanation only past ``1e-3 / eps``."""
    from bayesmf.posterior import gibbs

    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    lam_u, lam_v = np.array([[2.0, 0.3], [0.3, 1.0]]), np.array([[1.5, 0.0], [0.0, 0.5]])
    text = gibbs.divergence_hint(_hint_state(lam_u, lam_v, U, V))
    eu, ev = np.linalg.eigvalsh(lam_u), np.linalg.eigvalsh(lam_v)
    kappa = max((eu[-1] + 2.0 * np.max(np.sum(V**2, 1))) / eu[0], (ev[-1] + 2.0 * np.max(np.sum(U**2, 1))) / ev[0])
    assert f"condition number up to about {kappa:.3g}." in text
    assert f"max |V| {np.linalg.norm(V, axis=1).max():.3g}" in text
    assert f"Lambda_U {eu[0]:.3g} to {eu[-1]:.3g}" in text and "drifted" not in text
    # the failing chain's state of the calibration test (RESULTS): Lambda_U nearly singular, V at 1e5
    V_big = V * np.array([1.2e5, 7.0])
    lam_tiny = np.array([[1e-8, 0.0], [0.0, 3.6]])
    extreme = gibbs.divergence_hint(_hint_state(lam_tiny, lam_v, U, V_big))
    kappa = (3.6 + 2.0 * np.max(np.sum(V_big**2, 1))) / 1e-8
    assert f"about {kappa:.3g}." in extreme and "past what float64 resolves" in extreme and "init='map'" in extreme


@pytest.mark.slow
def test_bpmf_fit_that_turns_non_finite_raises_naming_sweep_and_field_and_keeps_draws(monkeypatch):
    """The estimator's own Gibbs run (the driver over ``BPMFModel.gibbs_kernel``) with ``U`` made
    NaN from sweep 6 on, in the sweep and in its jitter retry: ``BPMF.fit`` raises
    ``DivergenceError`` naming sweep 6 and ``U`` (only), with the figures of the state of sweep 5
    (its largest user row, computed here from ``.partial.state``), and ``.partial`` holds the draws
    of sweeps 3-5 and the history of sweeps 0-5."""
    import jax.numpy as jnp

    from bayesmf.engines.driver import DivergenceError
    from bayesmf.posterior.bpmf_model import BPMFModel

    real = BPMFModel.gibbs_kernel

    def faulty(self, data, rescale=True):
        kernel, sweeps = real(self, data, rescale), []

        def poisoned(new, info):
            return new._replace(U=new.U * jnp.nan), info._replace(finite=jnp.zeros_like(info.finite))

        def step(key, states):
            sweeps.append(len(sweeps))
            new, info = kernel.step(key, states)
            return poisoned(new, info) if sweeps[-1] >= 6 else (new, info)

        def retry(key, states):  # only called on the failing sweep
            return poisoned(*kernel.retry(key, states))

        return kernel._replace(step=step, retry=retry)

    monkeypatch.setattr(BPMFModel, "gibbs_kernel", faulty)
    ratings = synthetic(n_users=30, n_items=20, n_ratings=200, rank=2, seed=0).ratings
    model = BPMF(rank=2, n_warmup=3, n_samples=10, seed=0)
    with pytest.warns(RuntimeWarning, match="sweep 6"), pytest.raises(DivergenceError) as caught:
        model.fit(ratings)
    message, partial = str(caught.value), caught.value.partial
    assert "non-finite U at sweep 6" in message and "3 draws kept" in message
    assert partial.samples["U"].shape == (1, 3, 30, 2) and partial.history["train_rmse"].shape == (6, 1)
    largest = np.sqrt(np.max(np.sum(np.asarray(partial.state.U, np.float64) ** 2, axis=-1)))
    assert f"max |U| {largest:.3g}" in message
    np.testing.assert_array_equal(partial.samples["U"][0, -1], np.asarray(partial.state.U)[0])
