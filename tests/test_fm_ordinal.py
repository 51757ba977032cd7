"""BayesFM with the ordered probit likelihood (bayesmf.posterior.fm_gibbs ordinal block,
bayesmf.models.fm likelihood="ordinal"): the sweep's latent/cutpoint step is
``ordinal.sample_ordinal`` at the NumPy FM prediction followed by the unchanged Gaussian sweep on
the latent targets with alpha = 1; a small fit's expected ratings beat the global mean, its
category probabilities are the draws' probit probabilities (NumPy), save/load keeps them;
simulation-based calibration of the ordinal sampler under its own prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.stats import norm

import bayesmf
from bayesmf import Ratings
from bayesmf.data.design import design_matrix, fm_predict_numpy
from bayesmf.data.features import Features
from bayesmf.errors import ConfigError
from bayesmf.posterior import fm_gibbs, ordinal


def _ratings(seed=1, nu=12, ni=9, timestamps=False):
    rng = np.random.default_rng(seed)
    u, i = np.meshgrid(np.arange(nu), np.arange(ni), indexing="ij")
    keep = rng.random(u.size) < 0.7
    u, i = u.ravel()[keep], i.ravel()[keep]
    P, Q = rng.normal(size=(nu, 2)), rng.normal(size=(ni, 2))
    y = np.clip(np.round(3 + np.sum(P[u] * Q[i], 1) + 0.3 * rng.normal(size=u.size)), 1, 5)
    ts = (rng.integers(0, 5, u.size) * 86_400 + 1_000).astype(np.int64) if timestamps else None
    return Ratings.from_arrays(u, i, y, n_users=nu, n_items=ni, timestamps=ts)


def _tiny_problem():
    train = _ratings(seed=4, nu=5, ni=4)
    levels = ordinal.rating_levels(train.values)
    category = ordinal.encode_levels(train.values, levels, "ratings")
    start = category - 0.5
    design = Features().fit(train).design_of(train)
    prior = fm_gibbs.FMPrior(2, alpha=1.0, noise_prior=None, offset_prior=(float(start.mean()), 1.0),
                             gap_prior=(0.0, 1.0), n_categories=levels.size)
    data = fm_gibbs.prepare(design, start, 2, float(start.mean()), np.float32, category=category)
    state = jax.tree.map(lambda a: a[0], fm_gibbs.init(jax.random.PRNGKey(0), data, prior))
    rng = np.random.default_rng(0)  # a state away from the start, so that f is not constant
    state = state._replace(w=jnp.asarray(rng.normal(0, .5, state.w.shape), jnp.float32),
                           V=jnp.asarray(rng.normal(0, .5, state.V.shape), jnp.float32))
    return design, data, prior, state, category, levels


def test_latent_step_is_sample_ordinal_at_the_numpy_prediction():
    """latent_targets: z and the cutpoints are ordinal.sample_ordinal's at f = the NumPy FM
    prediction; target = z - centre; every z lies in its category's interval."""
    design, data, prior, state, category, levels = _tiny_problem()
    key = jax.random.PRNGKey(7)
    new, _ = fm_gibbs.latent_targets(key, state, data, prior)
    f = fm_predict_numpy(design, float(state.w0), np.asarray(state.w, np.float64), np.asarray(state.V, np.float64))
    z, cuts, _ = ordinal.sample_ordinal(key, jnp.asarray(f, jnp.float32), jnp.asarray(category),
                                        state.cutpoints, prior.gap_prior)
    np.testing.assert_allclose(np.asarray(new.cutpoints), np.asarray(cuts), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new.target) + float(data.centre), np.asarray(z), rtol=1e-4, atol=1e-4)
    c = np.concatenate([[-np.inf], np.asarray(new.cutpoints, np.float64), [np.inf]])
    zz = np.asarray(new.target, np.float64) + float(data.centre)
    assert float(new.cutpoints[0]) == 0.0 and np.all(np.diff(c[1:-1]) > 0)
    assert np.all(zz > c[category] - 1e-5) and np.all(zz <= c[category + 1] + 1e-5)


def test_ordinal_sweep_is_the_gaussian_sweep_on_the_latent_targets():
    """step with the ordinal prior = latent_targets (its own key) then the Gaussian step, alpha
    fixed at 1, on the same key."""
    _, data, prior, state, _, _ = _tiny_problem()
    key = jax.random.PRNGKey(3)
    got, info = fm_gibbs.step(key, state, data, prior)
    latent, _ = fm_gibbs.latent_targets(jax.random.fold_in(key, 11), state, data, prior)
    want, _ = fm_gibbs.step(key, latent, data, prior._replace(gap_prior=None))
    for name in ("w0", "w", "V", "target", "cutpoints", "lambda_v"):
        np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)), rtol=1e-5,
                                   atol=1e-5, err_msg=name)
    assert float(got.alpha) == 1.0 and float(info.cutpoint_accept) in (0.0, 1.0)


def test_ordinal_prior_fixes_alpha():
    with pytest.raises(ConfigError, match="fixes alpha at 1"):
        fm_gibbs.FMPrior(2, alpha=2.0, noise_prior=None, gap_prior=(0.0, 1.0), n_categories=5).validate()
    with pytest.raises(ConfigError, match="n_categories >= 2"):
        fm_gibbs.FMPrior(2, alpha=1.0, noise_prior=None, gap_prior=(0.0, 1.0), n_categories=1).validate()


@pytest.fixture(scope="module")
def fitted():
    train = _ratings()
    return train, bayesmf.BayesFM(rank=2, likelihood="ordinal", n_samples=20, n_warmup=20, seed=3).fit(train)


def _numpy_probabilities(f, cuts):
    """Mean over draws of Phi(c_k - f) - Phi(c_{k-1} - f): f (S, n), cuts (S, K - 1)."""
    c = np.concatenate([np.full((cuts.shape[0], 1), -np.inf), cuts, np.full((cuts.shape[0], 1), np.inf)], 1)
    return np.mean(norm.cdf(c[:, None, 1:] - f[:, :, None]) - norm.cdf(c[:, None, :-1] - f[:, :, None]), axis=0)


@pytest.mark.slow
def test_ordinal_fit_predicts_and_round_trips(fitted, tmp_path):
    """Expected-rating RMSE beats the global mean; probabilities are the draws' probit
    probabilities of the NumPy FM (one-hot design) and sum to 1; save/load keeps them."""
    train, m = fitted
    y = train.values
    pred = m.predict(train.users, train.items, clip=False)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.8 * np.std(y)
    dist = m.predict_dist(train.users, train.items)
    np.testing.assert_allclose(dist.probabilities.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(dist.mean, pred, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dist.levels if hasattr(dist, "levels") else m.rating_levels_, [1, 2, 3, 4, 5])
    design = m.fitted_features_.design(train.users[:6], train.items[:6])
    F = m.w_samples_.shape[-1]
    f = np.stack([fm_predict_numpy(design, float(w0), w.astype(np.float64), V.astype(np.float64)) for w0, w, V in
                  zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, F), m.V_samples_.reshape(-1, F, 2))])
    expect = _numpy_probabilities(f, m.cutpoints_samples_.reshape(f.shape[0], -1).astype(np.float64))
    np.testing.assert_allclose(dist.probabilities[:6], expect, atol=2e-4)
    assert np.all(m.cutpoints_samples_[..., 0] == 0) and m.alpha_samples_.min() == m.alpha_samples_.max() == 1
    m.save(tmp_path / "fm")
    back = bayesmf.load(tmp_path / "fm")
    assert back.get_params() == m.get_params()
    np.testing.assert_array_equal(back.predict_dist([1, 2], [3, 4]).probabilities,
                                  m.predict_dist([1, 2], [3, 4]).probabilities)
    with pytest.raises(ConfigError, match="fold_in is not implemented"):
        m.fold_in(Ratings.from_ids([99], [0], [3.0]))


@pytest.mark.slow
def test_ordinal_time_model_predicts_from_the_pairs_design():
    """With time features, predict_dist(timestamps=) gives the probit probabilities of the
    draws of the NumPy FM on the pairs' design (their day bins)."""
    train = _ratings(timestamps=True)
    m = bayesmf.BayesFM(rank=2, features=Features(time="day"), likelihood="ordinal", n_samples=8, n_warmup=8,
                        seed=1).fit(train)
    users, items, ts = train.users[:5], train.items[:5], train.timestamps[:5]
    dist = m.predict_dist(users, items, timestamps=ts)
    design = m.fitted_features_.design(users, items, ts)
    F = m.w_samples_.shape[-1]
    f = np.stack([fm_predict_numpy(design, float(w0), w.astype(np.float64), V.astype(np.float64)) for w0, w, V in
                  zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, F), m.V_samples_.reshape(-1, F, 2))])
    expect = _numpy_probabilities(f, m.cutpoints_samples_.reshape(f.shape[0], -1).astype(np.float64))
    np.testing.assert_allclose(dist.probabilities, expect, atol=2e-4)
    np.testing.assert_allclose(m.predict(users, items, clip=False, timestamps=ts), expect @ np.arange(1, 6),
                               rtol=1e-4)


# The ordinal FM's SBC problem: a 20 x 15 user/item one-hot design with 250 observed pairs, rank
# 1, 4 rating levels; priors under which every category holds a sizeable share of the ratings
# (a few of the data sets leave one category empty, which the sampler must handle too).
SBC_PRIOR = fm_gibbs.FMPrior(1, alpha=1.0, noise_prior=None, offset_prior=(1.0, 0.7), hyper_shape=4.0,
                             hyper_rate=2.0, gamma0=2.0, gap_prior=(0.0, 0.5), n_categories=4)


def _simulate_ordinal_fm(prior, X, groups, reps, rng):
    """Parameters from the ordinal FM's prior (NumPy, float64) and the categories they give:
    ``lambda ~ Gamma(a, b)``, ``mu | lambda ~ N(0, 1/(gamma0 lambda))`` per group and factor
    coordinate, ``w_j, v_jk`` from their group's Normal, ``w0 ~ N(m0, s0^2)``, log gaps
    ``~ N(m_g, s_g^2)`` (``c_0 = 0``), ``z = f(x) + N(0, 1)``, ``y = #{k: z > c_k}``."""
    G, F, K = groups.max() + 1, groups.size, prior.rank
    a, b, g0 = prior.hyper_shape, prior.hyper_rate, prior.gamma0
    lam_w, lam_v = rng.gamma(a, 1 / b, (reps, G)), rng.gamma(a, 1 / b, (reps, G, K))
    mu_w = rng.normal(size=(reps, G)) / np.sqrt(g0 * lam_w)
    mu_v = rng.normal(size=(reps, G, K)) / np.sqrt(g0 * lam_v)
    w = mu_w[:, groups] + rng.normal(size=(reps, F)) / np.sqrt(lam_w[:, groups])
    V = mu_v[:, groups] + rng.normal(size=(reps, F, K)) / np.sqrt(lam_v[:, groups])
    w0 = prior.offset_prior[0] + prior.offset_prior[1] * rng.normal(size=reps)
    m_g, s_g = prior.gap_prior
    cuts = np.concatenate([np.zeros((reps, 1)),
                           np.cumsum(np.exp(m_g + s_g * rng.normal(size=(reps, prior.n_categories - 2))), 1)], 1)
    q = np.einsum("nf,rfk->rnk", X, V)
    f = w0[:, None] + w @ X.T + 0.5 * (np.sum(q * q, 2) - np.sum(V * V, 2) @ (X * X).T)
    z = f + rng.normal(size=f.shape)
    y = np.sum(z[:, :, None] > cuts[:, None, :], axis=2)
    return {"w0": w0, "cuts": cuts, "f": f, "lambda_w": lam_w, "V": V, "y": y}


def ordinal_fm_sbc(reps=200, n_draws=99, thin=5, burn=100, seed=0, prior=SBC_PRIOR):
    """Simulation-based calibration (Talts et al. 2018) of the ordinal FM's Gibbs sweep
    (``fm_gibbs.step`` with ``gap_prior`` set): ``reps`` data sets from the prior
    (:func:`_simulate_ordinal_fm`), each fitted by its own chain (the chains vmapped over one
    design, each with its own categories), the rank of each true value among ``n_draws``
    thinned draws after ``burn`` sweeps. Returns ``{name: (counts in 10 bins, chi-square
    p-value)}`` for the cutpoints, ``w0``, a prediction ``f_0``, the user biases' precision and
    a sign-invariant interaction ``v_user0 v_item0``."""
    rng = np.random.default_rng(seed)
    nu, ni, nnz = 20, 15, 250
    pairs = rng.choice(nu * ni, nnz, replace=False)
    train = Ratings.from_arrays(pairs // ni, pairs % ni, np.ones(nnz), n_users=nu, n_items=ni)
    design = Features().fit(train).design_of(train)
    X, groups = design_matrix(design), np.asarray(design.groups)
    user0, item0 = int(np.flatnonzero(X[0] * (groups == 0))[0]), int(np.flatnonzero(X[0] * (groups == 1))[0])
    truth = _simulate_ordinal_fm(prior, X, groups, reps, rng)
    data = fm_gibbs.prepare(design, np.zeros(nnz), prior.rank, 0.0, np.float32, category=truth["y"][0])
    state = fm_gibbs.init(jax.random.PRNGKey(seed), data, prior, chains=reps)
    step = jax.vmap(lambda k, s, d, cat: fm_gibbs.step(k, s, d._replace(category=cat), prior), (0, 0, None, 0))

    @jax.jit
    def run(state, data, categories):  # the data as arguments, not constants folded at compile time
        def sweep(st, t):
            st, _ = step(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed + 1), t), reps), st, data,
                         categories)
            f0 = jax.vmap(lambda s: fm_gibbs.predict(data, s.w0, s.w, s.V)[0])(st)
            return st, (st.cutpoints[:, 1], st.cutpoints[:, 2], st.w0, f0, st.lambda_w[:, 0],
                        st.V[:, user0, 0] * st.V[:, item0, 0])

        return jax.lax.scan(sweep, state, jnp.arange(burn + n_draws * thin))[1]

    trace = run(state, data, jnp.asarray(truth["y"], jnp.int32))
    true_values = (truth["cuts"][:, 1], truth["cuts"][:, 2], truth["w0"], truth["f"][:, 0], truth["lambda_w"][:, 0],
                   truth["V"][:, user0, 0] * truth["V"][:, item0, 0])
    out = {}
    for name, draws, true in zip(("c_1", "c_2", "w0", "f_0", "lambda_w[user]", "v_u0.v_i0"), trace, true_values,
                                 strict=True):
        kept = np.asarray(draws, np.float64)[burn + thin - 1::thin]  # (n_draws, reps)
        ranks = (kept < true[None]).sum(axis=0)
        counts = np.bincount(ranks * 10 // (n_draws + 1), minlength=10)
        out[name] = (counts, stats.chisquare(counts).pvalue)
    return out


@pytest.mark.slow
@pytest.mark.timeout(1200)  # one compilation of the whole chain scan: long on a loaded machine
def test_simulation_based_calibration_of_the_ordinal_fm():
    """Talts et al. (2018): 200 replications of a 20 x 15 one-hot ordinal FM (250 ratings, 4
    levels, rank 1) drawn from the sampler's own prior; the ranks of the two free cutpoints,
    ``w0``, a prediction, the user biases' precision and a user-item interaction among 99
    thinned draws are uniform: chi-square over 10 bins, each at level 0.001 (about 0.006 for
    the six together when the sampler is exact)."""
    for name, (counts, p) in ordinal_fm_sbc().items():
        assert p > 0.001, f"SBC ranks of {name} are not uniform: counts {counts.tolist()}, p = {p:.2g}"
