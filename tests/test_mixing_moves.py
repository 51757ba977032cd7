"""The Gibbs sweep's collapsed moves (``gibbs.collapsed_shift_move``, the half steps' bias precision
drawn with the rows integrated out, ``gibbs.rows_with_biases(collapse=...)``):
what they leave unchanged, and the distribution each samples, repeated on its own, against the
closed-form target integrated numerically in NumPy. The simulation-based calibration test of
``test_bpmf_gibbs`` runs every sweep with them, so it checks the posterior as a whole."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesmf.data import Ratings
from bayesmf.posterior import gibbs
from bayesmf.posterior.model import Prior


def _state(rng, n_users, n_items, D, **extra):
    A, B = rng.normal(size=(2, D, D))
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    fields = dict(
        U=f32(rng.normal(size=(n_users, D))), V=f32(rng.normal(0.5, 1.0, size=(n_items, D))),
        mu_U=f32(rng.normal(size=D)), Lambda_U=f32(A @ A.T + np.eye(D)),
        mu_V=f32(rng.normal(size=D)), Lambda_V=f32(B @ B.T + np.eye(D)),
        alpha=jnp.float32(2.0), b_U=f32(rng.normal(0, 0.5, n_users)), b_V=f32(rng.normal(0.2, 0.5, n_items)),
        bias_precision_U=jnp.float32(4.0), bias_precision_V=jnp.float32(3.0), offset=jnp.float32(3.0))
    fields.update(extra)
    return gibbs.GibbsState(**fields)


def _predictions(st):
    return np.asarray(st.offset + st.b_U[:, None] + st.b_V[None] + st.U @ st.V.T, np.float64)


def _scan(move, state, n):
    def body(st, key):
        st = move(key, st)
        return st, (st.mu_U, st.offset, st.bias_precision_V, st.b_V)

    return jax.jit(lambda s, ks: jax.lax.scan(body, s, ks))(state, jax.random.split(jax.random.PRNGKey(0), n))


def test_collapsed_shift_keeps_predictions_and_each_rows_prior_quadratic_form():
    prior = Prior(rank=3, bias_prior=(1.0, 1.0), offset_prior=(3.5, 1.0))
    state = _state(np.random.default_rng(0), 9, 7, 3)
    moved = jax.jit(functools.partial(gibbs.collapsed_shift_move, prior=prior))(jax.random.PRNGKey(1), state)
    assert abs(float(moved.offset) - 3.0) > 1e-4 and not np.allclose(moved.mu_U, state.mu_U, atol=1e-4)
    np.testing.assert_allclose(_predictions(moved), _predictions(state), atol=2e-4)
    for side in ("U", "V"):
        before = np.asarray(getattr(state, side) - getattr(state, f"mu_{side}"))
        after = np.asarray(getattr(moved, side) - getattr(moved, f"mu_{side}"))
        np.testing.assert_allclose(after, before, atol=1e-4)  # rows and mean move together
    assert float(moved.bias_precision_V) == 3.0 and float(moved.bias_precision_U) == 4.0  # drawn by the sweep


@pytest.mark.slow
def test_collapsed_shift_samples_the_orbit_target_with_the_bias_precision_integrated_out():
    """Rank 1, user side alone, repeated: ``(x, d)`` (the shift of ``mu_U`` and of the offset)
    walks through ``exp(-beta0 Lambda (mu + x)^2 / 2 - (m + d - m0)^2 / (2 s0^2)) *
    (b + |c - x v - d|^2 / 2)^-(a + n/2)``; its mean and covariance on a NumPy grid."""
    a, b, beta0, m0, s0 = 2.0, 0.5, 2.0, 2.5, 0.7
    prior = Prior(rank=1, beta0=beta0, bias_prior=(a, b), offset_prior=(m0, s0))
    rng = np.random.default_rng(3)
    state = _state(rng, 6, 12, 1, Lambda_U=jnp.full((1, 1), 1.5, jnp.float32), mu_U=jnp.full((1,), 0.4, jnp.float32))
    move = functools.partial(gibbs.collapsed_shift_move, prior=prior, sides=("U",))
    _, (mu, offset, *_) = _scan(move, state, 20_000)
    draws = np.stack([np.asarray(mu[:, 0], np.float64) - 0.4, np.asarray(offset, np.float64) - 3.0], axis=1)
    assert np.mean(np.abs(np.diff(draws[:, 0])) > 0) > 0.8  # the proposal fits: most moves accepted

    v, c = np.asarray(state.V[:, 0], np.float64), np.asarray(state.b_V, np.float64)
    x, d = np.meshgrid(np.linspace(-3, 3, 601), np.linspace(-3, 3, 601), indexing="ij")
    resid = c[None, None] - x[..., None] * v - d[..., None]
    log_p = (-0.5 * beta0 * 1.5 * (0.4 + x) ** 2 - (3.0 + d - m0) ** 2 / (2 * s0**2)
             - (a + c.size / 2) * np.log(b + 0.5 * np.sum(resid**2, axis=-1)))
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    assert w[0].sum() + w[-1].sum() + w[:, 0].sum() + w[:, -1].sum() < 1e-8  # the grid holds the mass
    mean = np.array([np.sum(w * x), np.sum(w * d)])
    cov = np.array([[np.sum(w * (p - mp) * (q - mq)) for q, mq in ((x, mean[0]), (d, mean[1]))]
                    for p, mp in ((x, mean[0]), (d, mean[1]))])
    se = np.sqrt(np.diag(cov) / 4000)  # a fifth of the draws, for their autocorrelation
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.1, atol=0.05 * np.sqrt(cov[0, 0] * cov[1, 1]))


def _tiny_data(rng, n_users=10, n_items=6):
    """Every item rated by a different number of users (1..n_users), values around 3."""
    pairs = [(i, j) for j in range(n_items) for i in rng.permutation(n_users)[: 1 + (j * 7) % n_users]]
    users, items = (np.asarray(a) for a in zip(*pairs))
    values = rng.normal(3.0, 1.0, users.size)
    return Ratings.from_arrays(users, items, values, n_users=n_users, n_items=n_items), users, items, values


def _item_block(data, prior, state):
    """The item half step with its bias precision collapsed (``rows_with_biases(collapse=...)``),
    given the state's users, user biases, offset and item hyperparameters: returns a move of
    ``(V, b_V, bias_precision_V)`` alone."""
    shift = state.offset - data.centre

    def move(key, st):
        k_rows, k_lam = jax.random.split(key)
        normals = jax.random.normal(k_lam, (2,), jnp.float32)
        V, c, _, _, lam = gibbs.rows_with_biases(k_rows, st.U, st.b_U, data.item_chunks, st.mu_V, st.Lambda_V,
                                                 st.bias_precision_V, st.alpha, 0.0, shift,
                                                 collapse=(normals, prior))
        return st._replace(V=V, b_V=c, bias_precision_V=lam)

    return move


def test_collapsed_bias_block_keeps_the_other_side_and_draws_finite_rows():
    rng = np.random.default_rng(5)
    ratings, *_ = _tiny_data(rng)
    data = gibbs.prepare(ratings, 0.0, 2)
    prior = Prior(rank=2, bias_prior=(1.0, 1.0), offset_prior=(3.0, 1.0))
    state = _state(rng, 10, 6, 2)
    moved = jax.jit(_item_block(data, prior, state))(jax.random.PRNGKey(0), state)
    np.testing.assert_array_equal(moved.b_U, state.b_U)
    np.testing.assert_array_equal(moved.U, state.U)
    assert np.all(np.isfinite(moved.b_V)) and np.all(np.isfinite(moved.V))
    assert float(moved.bias_precision_V) != float(state.bias_precision_V)


def _gaussian_marginals(U, users, y, items, n_items, mu_V, Lambda_V, alpha, grid):
    """Per ``lambda`` on ``grid``: ``log p(y | lambda)`` with every item's ``(v_j, c_j)``
    integrated out (``y_j ~ N(F_j [mu_V; 0], F_j blockdiag(Lambda_V^-1, 1/lambda) F_j^T + I/alpha)``,
    ``F_j = [U_raters, 1]``), and each item's posterior mean of ``c_j`` (grid, n_items)."""
    D = U.shape[1]
    log_lik = np.zeros(grid.size)
    means = np.zeros((grid.size, n_items))
    for g, lam in enumerate(grid):
        prior_cov = np.zeros((D + 1, D + 1))
        prior_cov[:D, :D] = np.linalg.inv(Lambda_V)
        prior_cov[D, D] = 1.0 / lam
        prior_mean = np.append(mu_V, 0.0)
        for j in range(n_items):
            F = np.column_stack([U[users[items == j]], np.ones(np.sum(items == j))])
            yj = y[items == j]
            cov = F @ prior_cov @ F.T + np.eye(yj.size) / alpha
            log_lik[g] += stats.multivariate_normal(F @ prior_mean, cov).logpdf(yj)
            gain = prior_cov @ F.T @ np.linalg.inv(cov)  # posterior mean = prior mean + gain (y - F prior mean)
            post = prior_mean + gain @ (yj - F @ prior_mean)
            means[g, j] = post[D]
    return log_lik, means


@pytest.mark.slow
def test_collapsed_bias_block_samples_the_precision_with_the_rows_integrated_out():
    """Item side alone, repeated: the draws of ``lambda_c`` against ``Gamma(lambda; a, b) *
    prod_j N(y_j; F_j [mu_V; 0], F_j blockdiag(Lambda_V^-1, 1/lambda) F_j^T + I/alpha)`` on a
    grid (SciPy's multivariate normal; ``y_ij = r_ij - m - b_i``, ``F_j = [u_i; 1]`` over item
    ``j``'s raters), and each ``E[c_j]`` against the Gaussian posterior mean averaged over it."""
    rng = np.random.default_rng(6)
    ratings, users, items, values = _tiny_data(rng)
    a, b = 2.0, 1.0
    prior = Prior(rank=2, bias_prior=(a, b), offset_prior=(3.0, 1.0))
    state = _state(rng, 10, 6, 2)
    data = gibbs.prepare(ratings, 0.0, 2)
    _, (_, _, lam, c) = _scan(_item_block(data, prior, state), state, 20_000)
    lam, c = np.asarray(lam, np.float64), np.asarray(c, np.float64)
    assert np.mean(np.diff(lam) != 0) > 0.6  # the proposal fits: most moves accepted

    U, bu, mu_V, Lambda_V = (np.asarray(getattr(state, n), np.float64) for n in ("U", "b_U", "mu_V", "Lambda_V"))
    alpha = float(state.alpha)
    y = values - 3.0 - bu[users]
    grid = np.linspace(1e-3, 40, 1500)
    log_lik, means = _gaussian_marginals(U, users, y, items, 6, mu_V, Lambda_V, alpha, grid)
    log_p = stats.gamma(a, scale=1 / b).logpdf(grid) + log_lik
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    assert w[-100:].sum() < 1e-6
    mean, sd = np.sum(w * grid), np.sqrt(np.sum(w * (grid - np.sum(w * grid)) ** 2))
    assert abs(lam.mean() - mean) < 4 * sd / np.sqrt(4000), (lam.mean(), mean)
    assert abs(lam.std() / sd - 1) < 0.1, (lam.std(), sd)
    expected = np.einsum("g,gj->j", w, means)
    np.testing.assert_allclose(c.mean(0), expected, atol=0.05)
