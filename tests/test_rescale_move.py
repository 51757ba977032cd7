"""The Gibbs sweep's rescaling move (``gibbs.rescale_move``): what it leaves unchanged, and its
target against a numerical integral of the closed-form density. The simulation-based calibration
test of ``test_bpmf_gibbs`` runs every sweep with the move, so it checks the posterior as a whole."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from bayesmf import ConfigError
from bayesmf.data import synthetic
from bayesmf.models.bpmf import BPMF
from bayesmf.posterior import gibbs
from bayesmf.posterior.model import Prior


def _state(rng, n_users=7, n_items=5, D=3):
    A, B = rng.normal(size=(2, D, D))
    return gibbs.GibbsState(
        U=jnp.asarray(rng.normal(size=(n_users, D)), jnp.float32),
        V=jnp.asarray(rng.normal(size=(n_items, D)), jnp.float32),
        mu_U=jnp.asarray(rng.normal(size=D), jnp.float32), Lambda_U=jnp.asarray(A @ A.T + np.eye(D), jnp.float32),
        mu_V=jnp.asarray(rng.normal(size=D), jnp.float32), Lambda_V=jnp.asarray(B @ B.T + np.eye(D), jnp.float32),
        alpha=jnp.float32(2.0), b_U=jnp.zeros(n_users), b_V=jnp.zeros(n_items), bias_precision_U=jnp.float32(1.0),
        bias_precision_V=jnp.float32(1.0), offset=jnp.float32(3.0))


@pytest.mark.parametrize("repeats", [1, 4])
def test_move_keeps_predictions_and_each_rows_prior_quadratic_form(repeats):
    """``u.v``, ``(u - mu)' Lambda (u - mu)`` and ``mu' Lambda mu`` are invariant; the determinants
    of the two Lambdas move in opposite directions by the same factor. With several moves in a
    row their product (not symmetric) is applied to the factors at once."""
    rng = np.random.default_rng(0)
    state = _state(rng)
    prior = Prior(rank=3)
    move = functools.partial(gibbs.rescale_move, prior=prior, repeats=repeats)
    moved, accepted = jax.jit(move)(jax.random.PRNGKey(3), state)
    assert float(accepted) > 0  # the check below is not of an identity move
    assert not np.allclose(moved.U, state.U, atol=1e-3)
    np.testing.assert_allclose(moved.U @ moved.V.T, state.U @ state.V.T, rtol=1e-4, atol=1e-4)

    def quad(x, mu, lam):
        d = np.asarray(x - mu, np.float64)
        return np.einsum("nd,de,ne->n", d, np.asarray(lam, np.float64), d)

    for side in ("U", "V"):
        x, mu, lam = (getattr(state, n) for n in (side, f"mu_{side}", f"Lambda_{side}"))
        x2, mu2, lam2 = (getattr(moved, n) for n in (side, f"mu_{side}", f"Lambda_{side}"))
        np.testing.assert_allclose(quad(x2, mu2, lam2), quad(x, mu, lam), rtol=1e-4)
        np.testing.assert_allclose(quad(mu2[None], 0.0, lam2), quad(mu[None], 0.0, lam), rtol=1e-4)
    ratio_u = np.linalg.det(moved.Lambda_U) / np.linalg.det(state.Lambda_U)
    ratio_v = np.linalg.det(moved.Lambda_V) / np.linalg.det(state.Lambda_V)
    np.testing.assert_allclose(ratio_u * ratio_v, 1.0, rtol=1e-4)


@pytest.mark.parametrize("repeats", [1, 3])
def test_repeated_moves_sample_the_scale_from_its_closed_form_target(repeats):
    """Rank 1: the move alone, repeated, walks ``a = log c`` (the total scale applied) through
    ``pi(a) ~ exp(-(p e^{-2a} + q e^{2a}) / 2)``, ``p = Lambda_U / w0``, ``q = Lambda_V / w0`` of the
    start; 20,000 moves (each of ``repeats`` moves in a row) against the mean and variance of
    that density integrated numerically."""
    prior = Prior(rank=1, w0=0.5)
    rng = np.random.default_rng(1)
    state = _state(rng, D=1)._replace(Lambda_U=jnp.full((1, 1), 0.3, jnp.float32),
                                      Lambda_V=jnp.full((1, 1), 4.0, jnp.float32))
    move = functools.partial(gibbs.rescale_move, prior=prior, repeats=repeats)

    def body(st, key):
        st, _ = move(key, st)
        return st, 0.5 * jnp.log(state.Lambda_U[0, 0] / st.Lambda_U[0, 0])  # Lambda_U -> Lambda_U / c^2

    _, a = jax.jit(lambda s, ks: jax.lax.scan(body, s, ks))(state, jax.random.split(jax.random.PRNGKey(0), 20_000))
    a = np.asarray(a, np.float64)
    p, q = 0.3 / 0.5, 4.0 / 0.5
    density = lambda x: np.exp(-(p * np.exp(-2 * x) + q * np.exp(2 * x)) / 2)  # noqa: E731
    z = integrate.quad(density, -10, 10)[0]
    mean = integrate.quad(lambda x: x * density(x), -10, 10)[0] / z
    var = integrate.quad(lambda x: (x - mean) ** 2 * density(x), -10, 10)[0] / z
    se = np.sqrt(var / 2000)  # the chain is close to independent draws; a tenth of them, to be safe
    assert abs(a.mean() - mean) < 4 * se, (a.mean(), mean)
    assert abs(a.var() / var - 1) < 0.1, (a.var(), var)


@pytest.mark.slow
def test_the_move_is_off_when_mu0_is_not_zero_and_gibbs_rescale_is_validated():
    assert gibbs.rescale_applies(Prior(rank=2)) and not gibbs.rescale_applies(Prior(rank=2, mu0=0.5))
    data = synthetic(n_users=30, n_items=20, n_ratings=200, rank=2, seed=0)
    model = BPMF(rank=2, n_samples=5, n_warmup=5, mu0=0.5, seed=0).fit(data.ratings)
    assert set(model.history_["rescale_accept"]) == {0.0}
    with pytest.raises(ConfigError, match="gibbs_rescale"):
        BPMF(rank=2, gibbs_rescale="yes").fit(data.ratings)


@pytest.mark.slow
def test_translation_draws_the_closed_form_gaussian_and_keeps_predictions():
    """``m -> m + d``, ``b -> b - d``: predictions unchanged, and the user-side ``d`` has the
    closed-form mean and variance (item biases at 0 with a huge precision pin the second move)."""
    prior = Prior(rank=2, offset_prior=(1.0, 2.0), bias_prior=(1.0, 1.0))
    rng = np.random.default_rng(4)
    state = _state(rng, n_users=40, n_items=30, D=2)._replace(
        b_U=jnp.asarray(rng.normal(0.7, 0.5, 40), jnp.float32), bias_precision_U=jnp.float32(3.0),
        b_V=jnp.zeros(30, jnp.float32), bias_precision_V=jnp.float32(1e6))
    moved = jax.vmap(lambda k: gibbs.translate_move(k, state, prior))(jax.random.split(jax.random.PRNGKey(0), 20_000))
    level = np.asarray(moved.offset)[:, None, None] + np.asarray(moved.b_U)[:, :, None] + np.asarray(moved.b_V)[:, None]
    before = float(state.offset) + np.asarray(state.b_U)[:, None] + np.asarray(state.b_V)[None]
    np.testing.assert_allclose(level[:3], np.broadcast_to(before, level[:3].shape), atol=1e-4)
    b = np.asarray(state.b_U, np.float64)
    precision = 1 / 2.0**2 + 40 * 3.0
    mean = (3.0 * b.sum() - (3.0 - 1.0) / 2.0**2) / precision
    d = np.asarray(moved.offset, np.float64) - 3.0
    assert abs(d.mean() - mean) < 4 * np.sqrt(1 / precision / d.size)
    assert abs(d.var() * precision - 1) < 0.05


@pytest.mark.slow
def test_shift_draws_the_closed_form_gaussian_and_keeps_predictions():
    """``u -> u + x``, ``mu_U -> mu_U + x``, ``c -> c - V x`` (then the item side): every
    ``u.v + b + c`` and every row's prior quadratic form unchanged, and the user-side ``x`` has
    the closed-form Gaussian ``N(P^-1 h, P^-1)`` (the user biases pinned at 0 by a huge
    precision keep the item-side shift at 0, so the first shift is seen alone)."""
    prior = Prior(rank=2, bias_prior=(1.0, 1.0), beta0=2.0)
    rng = np.random.default_rng(6)
    state = _state(rng, n_users=40, n_items=30, D=2)._replace(
        b_V=jnp.asarray(rng.normal(0.3, 0.5, 30), jnp.float32), bias_precision_V=jnp.float32(2.0),
        b_U=jnp.zeros(40, jnp.float32), bias_precision_U=jnp.float32(1e7))
    moved = jax.vmap(lambda k: gibbs.shift_move(k, state, prior))(jax.random.split(jax.random.PRNGKey(0), 20_000))
    pred = lambda st: st.U @ st.V.T + st.b_U[:, None] + st.b_V[None]  # noqa: E731
    np.testing.assert_allclose(pred(jax.tree.map(lambda a: a[0], moved)), pred(state), atol=1e-4)
    U, V, c = (np.asarray(a, np.float64) for a in (state.U, state.V, state.b_V))
    lam, mu = np.asarray(state.Lambda_U, np.float64), np.asarray(state.mu_U, np.float64)
    P = 2.0 * lam + 2.0 * V.T @ V
    h = 2.0 * V.T @ c - 2.0 * lam @ mu
    x = np.asarray(moved.mu_U, np.float64) - mu
    se = np.sqrt(np.diag(np.linalg.inv(P)).max() / x.shape[0])
    np.testing.assert_allclose(x.mean(0), np.linalg.solve(P, h), atol=4 * se)
    np.testing.assert_allclose(np.cov(x.T), np.linalg.inv(P), rtol=0.05, atol=1e-5)
    np.testing.assert_allclose(np.asarray(moved.U[5]) - U, np.broadcast_to(x[5], U.shape), atol=1e-4)
