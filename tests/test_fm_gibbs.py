"""The factorization machine's Gibbs sampler (bayesmf.posterior.fm_gibbs): every conditional
against a brute-force NumPy computation on the dense design matrix, the colouring's invariant,
and simulation-based calibration under the prior."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesmf.data.design import Block, Design, check_design, design_matrix
from bayesmf.posterior import fm_gibbs as fg


def _onehot(name, owner, index, n_rows, offset):
    return Block(name, owner, np.asarray(index, np.int32), np.arange(n_rows + 1, dtype=np.int64),
                 np.arange(offset, offset + n_rows, dtype=np.int32), np.ones(n_rows, np.float32), n_rows)


def _multi_hot(name, owner, index, n_rows, first, n_cols, rng, max_per_row):
    indptr, cols, vals = [0], [], []
    for _ in range(n_rows):
        k = rng.choice(n_cols, size=rng.integers(0, max_per_row + 1), replace=False)
        cols += list(first + np.sort(k))
        vals += list(rng.uniform(0.3, 1.5, k.size))
        indptr.append(len(cols))
    return Block(name, owner, np.asarray(index, np.int32), np.asarray(indptr, np.int64), np.asarray(cols, np.int32),
                 np.asarray(vals, np.float32), n_rows)


def _design(seed=0, nnz=30):
    """User and item one-hot, item genres (multi-hot), a user implicit set over the items
    (multi-hot, several columns per row) and a context block (a one-hot day bin)."""
    rng = np.random.default_rng(seed)
    nu, ni, ng, nd = 5, 4, 3, 3
    users, items, days = rng.integers(0, nu, nnz), rng.integers(0, ni, nnz), rng.integers(0, nd, nnz)
    first = nu + ni
    blocks = (_onehot("user", "user", users, nu, 0), _onehot("item", "item", items, ni, nu),
              _multi_hot("genre", "item", items, ni, first, ng, rng, 3),
              _multi_hot("implicit", "user", users, nu, first + ng, ni, rng, 3),
              _onehot("day", "context", days, nd, first + ng + ni))
    F = first + ng + ni + nd
    groups = np.array([0] * nu + [1] * ni + [2] * ng + [3] * ni + [4] * nd, np.int32)
    return check_design(Design(blocks, tuple(f"f{j}" for j in range(F)), groups,
                               ("user", "item", "genre", "implicit", "day")))


def _dense_f(X, w0, w, V):
    q = X @ V
    return w0 + X @ w + 0.5 * (np.sum(q * q, 1) - (X * X) @ np.sum(V * V, 1))


def _random_state(data, K, seed=1):
    rng = np.random.default_rng(seed)
    F, G = data.groups.shape[0], data.group_sizes.shape[0]
    return fg.FMState(jnp.asarray(3.2, jnp.float32), jnp.asarray(rng.normal(0, 0.5, F), jnp.float32),
                      jnp.asarray(rng.normal(0, 0.5, (F, K)), jnp.float32), jnp.asarray(rng.normal(0, 0.3, G),
                                                                                        jnp.float32),
                      jnp.asarray(rng.gamma(2.0, 1.0, G), jnp.float32), jnp.asarray(rng.normal(0, 0.3, (G, K)),
                                                                                    jnp.float32),
                      jnp.asarray(rng.gamma(2.0, 1.0, (G, K)), jnp.float32), jnp.asarray(1.7, jnp.float32),
                      data.y)


def test_colouring_puts_no_two_columns_of_a_row_in_one_colour():
    d = _design()
    data = fg.prepare(d, np.zeros(d.nnz), 2)
    F = d.n_features
    seen = []
    for block, source in zip(data.blocks, d.blocks):
        rows = np.repeat(np.arange(source.n_rows), np.diff(source.indptr))
        cols_of_row = [set(source.columns[rows == r]) for r in range(source.n_rows)]
        colours = [np.asarray(block.colour(c)[0].cols[block.colour(c)[1]]) for c in range(block.n_colours)]
        for colour in colours:
            real = colour[colour < F]
            for r in range(source.n_rows):
                assert len(cols_of_row[r] & set(real.tolist())) <= 1
            seen += real.tolist()
        if source.name in ("user", "item", "day"):
            assert len(colours) == 1  # one-hot: one batched draw
    assert sorted(seen) == list(range(F))


@pytest.mark.slow
def test_every_column_conditional_is_the_dense_closed_form():
    """For each block and colour, the conditional N(P^-1 s, P^-1) of each column's (w_j, v_j)
    equals the one computed in NumPy from the dense design: f is linear in theta_j, so
    f(theta) = f(0) + H theta with H read off by evaluating f at the unit vectors."""
    K = 2
    d = _design()
    X = design_matrix(d)
    rng = np.random.default_rng(3)
    y = 3.0 + rng.normal(size=d.nnz)
    data = fg.prepare(d, y, K, centre=3.0)
    state = _random_state(data, K)
    w, V = np.asarray(state.w, np.float64), np.asarray(state.V, np.float64)
    w0, alpha = float(state.w0), float(state.alpha)
    groups = np.asarray(d.groups)
    prec_g = np.concatenate([np.asarray(state.lambda_w)[:, None], np.asarray(state.lambda_v)], 1).astype(np.float64)
    mean_g = np.concatenate([np.asarray(state.mu_w)[:, None], np.asarray(state.mu_v)], 1).astype(np.float64)
    checked = 0
    for b, block in enumerate(data.blocks):
        for c in range(block.n_colours):
            cols, P, s = fg.colour_conditional(data, state, b, c)
            for slot, j in enumerate(np.asarray(cols)):
                if j >= d.n_features:
                    continue

                def f_at(theta, j=j):
                    w2, V2 = w.copy(), V.copy()
                    w2[j], V2[j] = theta[0], theta[1:]
                    return _dense_f(X, w0, w2, V2)

                base = f_at(np.zeros(K + 1))
                H = np.stack([f_at(e) - base for e in np.eye(K + 1)], axis=1)
                P_np = np.diag(prec_g[groups[j]]) + alpha * H.T @ H
                s_np = prec_g[groups[j]] * mean_g[groups[j]] + alpha * H.T @ (y - base)
                np.testing.assert_allclose(np.asarray(P[slot]), P_np, rtol=2e-4, atol=2e-4)
                np.testing.assert_allclose(np.asarray(s[slot]), s_np, rtol=2e-4, atol=2e-4)
                checked += 1
    assert checked == d.n_features


def test_group_hyperparameter_posterior_is_the_grid_posterior():
    """The Normal-Gamma posterior of one group's (mu, lambda) against a brute-force grid over
    (mu, lambda) of prior x likelihood: posterior means of lambda and mu agree."""
    prior = fg.FMPrior(1, hyper_shape=2.0, hyper_rate=1.5, gamma0=3.0)
    x = np.array([0.4, -0.2, 1.1, 0.7, 0.3, 2.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    shape, rate, mean, kappa = (np.asarray(a) for a in fg.group_posterior(jnp.asarray(x, jnp.float32),
                                                                         jnp.asarray(groups), 2, prior))
    mu = np.linspace(-4, 5, 1201)[:, None]
    lam = np.linspace(1e-4, 12, 1200)[None, :]
    for g in range(2):
        xs = x[groups == g]
        log_p = (stats.gamma.logpdf(lam, 2.0, scale=1 / 1.5) + stats.norm.logpdf(mu, 0, 1 / np.sqrt(3.0 * lam))
                 + sum(stats.norm.logpdf(v, mu, 1 / np.sqrt(lam)) for v in xs))
        p = np.exp(log_p - log_p.max())
        p /= p.sum()
        np.testing.assert_allclose(shape[g] / rate[g], (p * lam).sum(), rtol=2e-3)
        np.testing.assert_allclose(mean[g], (p * mu).sum(), atol=2e-3)
        assert kappa[g] == 3.0 + xs.size


@pytest.mark.slow
def test_w0_and_alpha_conditionals_are_the_closed_forms():
    """Many draws of w0 (alpha fixed) and of alpha (w0 fixed) against the Normal and Gamma closed
    forms from the dense design's residuals."""
    K = 2
    d = _design(seed=4, nnz=40)
    X = design_matrix(d)
    y = 3.0 + np.random.default_rng(5).normal(size=d.nnz)
    data = fg.prepare(d, y, K, centre=float(y.mean()))
    state = _random_state(data, K)
    w, V = np.asarray(state.w, np.float64), np.asarray(state.V, np.float64)
    f_no_w0 = _dense_f(X, 0.0, w, V)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    nnz = d.nnz
    offset = fg.FMPrior(K, noise_prior=None, offset_prior=(2.5, 0.7))
    w0s = jax.vmap(lambda k: fg.draw_global(k, k, state, data, offset, state.w, state.V)[0])(keys)
    alpha = float(state.alpha)
    precision = 1 / 0.7**2 + alpha * nnz
    mean = (2.5 / 0.7**2 + alpha * np.sum(y - f_no_w0)) / precision
    assert abs(np.mean(w0s) - mean) < 4 / np.sqrt(precision * keys.shape[0])
    np.testing.assert_allclose(np.var(w0s), 1 / precision, rtol=0.1)
    noise = fg.FMPrior(K, noise_prior=(2.0, 3.0), offset_prior=None)
    alphas = jax.vmap(lambda k: fg.draw_global(k, k, state, data, noise, state.w, state.V)[1])(keys)
    sse = np.sum((y - f_no_w0 - float(state.w0)) ** 2)
    shape, rate = 2.0 + nnz / 2, 3.0 + sse / 2
    np.testing.assert_allclose(np.mean(alphas), shape / rate, rtol=0.01)
    np.testing.assert_allclose(np.var(alphas), shape / rate**2, rtol=0.1)


@pytest.mark.slow
def test_sweep_predictions_match_the_dense_formula_and_chains_differ():
    K = 3
    d = _design(seed=6)
    y = 3.0 + np.random.default_rng(7).normal(size=d.nnz)
    data = fg.prepare(d, y, K, centre=3.0)
    kernel = fg.build_kernel(data, fg.FMPrior(K, offset_prior=(3.0, 1.0)))
    states = kernel.init(jax.random.PRNGKey(0), chains=2)
    for t in range(3):
        states, info = kernel.step(jax.random.PRNGKey(t), states)
    assert np.all(np.asarray(info.finite))
    X = design_matrix(d)
    for c in range(2):
        s = jax.tree.map(lambda a, c=c: a[c], states)
        np.testing.assert_allclose(np.asarray(fg.predict(data, s.w0, s.w, s.V)),
                                   _dense_f(X, float(s.w0), np.asarray(s.w, np.float64), np.asarray(s.V, np.float64)),
                                   rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(states.V[0]), np.asarray(states.V[1]))


@pytest.mark.slow
def test_simulation_based_calibration():
    """Talts et al. (2018): parameters drawn from the prior, ratings from the likelihood, then
    the rank of each true value among posterior draws is uniform when the sampler is exact.
    200 replications as vmapped chains over one design (multi-hot blocks included), each chain
    with its own targets (the state's ``target``); chi-square test at a fixed seed.
    Sign-invariant summaries (v -> -v leaves the likelihood unchanged)."""
    K, reps = 1, 200
    d = _design(seed=8, nnz=40)
    X = design_matrix(d)
    prior = fg.FMPrior(K, alpha=4.0, noise_prior=(4.0, 1.0), offset_prior=(0.5, 1.0), hyper_shape=4.0,
                       hyper_rate=4.0, gamma0=2.0)
    G, F = len(d.group_names), d.n_features
    groups = np.asarray(d.groups)
    rng = np.random.default_rng(11)
    lam_w = rng.gamma(4.0, 1 / 4.0, (reps, G))
    lam_v = rng.gamma(4.0, 1 / 4.0, (reps, G, K))
    mu_w = rng.normal(size=(reps, G)) / np.sqrt(2.0 * lam_w)
    mu_v = rng.normal(size=(reps, G, K)) / np.sqrt(2.0 * lam_v)
    w = mu_w[:, groups] + rng.normal(size=(reps, F)) / np.sqrt(lam_w[:, groups])
    V = mu_v[:, groups] + rng.normal(size=(reps, F, K)) / np.sqrt(lam_v[:, groups])
    w0 = 0.5 + rng.normal(size=reps)
    alpha = rng.gamma(4.0, 1.0, reps)
    f = np.stack([_dense_f(X, w0[r], w[r], V[r]) for r in range(reps)])
    y = f + rng.normal(size=f.shape) / np.sqrt(alpha[:, None])
    data = fg.prepare(d, np.zeros(d.nnz), K)
    state = fg.init(jax.random.PRNGKey(1), data, prior, chains=reps)
    state = state._replace(target=jnp.asarray(y, jnp.float32))
    step = jax.vmap(functools.partial(fg.step, data=data, prior=prior))
    n_draws, thin, burn = 99, 20, 400

    def sweep(st, t):
        st, _ = step(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), t), reps), st)
        f0 = jax.vmap(lambda s: fg.predict(data, s.w0, s.w, s.V)[0])(st)
        return st, (st.w0, st.alpha, f0, st.w[:, 0], st.lambda_w[:, 0], st.lambda_v[:, 2, 0],
                    st.V[:, 0, 0] * st.V[:, 5, 0])

    _, trace = jax.jit(lambda s: jax.lax.scan(sweep, s, jnp.arange(burn + n_draws * thin)))(state)
    truth = (w0, alpha, f[:, 0], w[:, 0], lam_w[:, 0], lam_v[:, 2, 0], V[:, 0, 0] * V[:, 5, 0])
    names = ("w0", "alpha", "f_0", "w_0", "lambda_w[user]", "lambda_v[genre]", "v_0.v_5")
    for name, draws, true in zip(names, trace, truth):
        kept = np.asarray(draws)[burn + thin - 1::thin]
        ranks = (kept < np.asarray(true)[None]).sum(axis=0)
        counts = np.bincount(ranks * 10 // (n_draws + 1), minlength=10)
        p = stats.chisquare(counts).pvalue
        assert p > 0.001, f"SBC ranks of {name} are not uniform: counts {counts.tolist()}, p = {p:.2g}"
