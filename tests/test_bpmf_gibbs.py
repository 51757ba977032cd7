"""Correctness of the BPMF Gibbs sampler: conditionals against closed forms, simulation-based
calibration, predictive coverage on data with known truth, checkpoint/resume."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesmf import ConfigError, DataError, Ratings, splits
from bayesmf.data import synthetic
from bayesmf.engines.chunks import chunks_for, gram_chunks_for
from bayesmf.engines.linalg import sample_gaussian
from bayesmf.errors import ResumeWarning
from bayesmf.models.bpmf import BPMF, PMF
from bayesmf.posterior import gibbs
from bayesmf.posterior.model import Prior


@pytest.mark.slow
def test_row_conditional_equals_numpy_closed_form(small):
    r = small.ratings
    rng = np.random.default_rng(0)
    D, alpha = 3, 1.7
    V = rng.normal(size=(r.n_items, D)).astype(np.float32)
    A = rng.normal(size=(D, D))
    lam = (A @ A.T + D * np.eye(D)).astype(np.float32)
    mu = rng.normal(size=D).astype(np.float32)
    resid = (r.values - 3.0).astype(np.float32)
    chunks = chunks_for(r, "user", resid, width=4, chunk_slots=64)  # several chunks
    _, mean, _, _ = gibbs.conditional_rows(jax.random.PRNGKey(0), jnp.asarray(V), chunks, mu, lam, alpha)
    for u in (0, int(np.argmax(r.user_counts)), int(np.argmin(r.user_counts))):
        m = r.users == u
        F = V[r.items[m]].astype(np.float64)
        P = lam + alpha * F.T @ F
        h = lam @ mu + alpha * F.T @ resid[m]
        np.testing.assert_allclose(mean[u], np.linalg.solve(P, h), rtol=2e-4, atol=2e-4)
    # the draws have that mean and covariance P^-1: 3000 independent draws for user 0
    u = 0
    m = r.users == u
    F = V[r.items[m]].astype(np.float64)
    P = lam + alpha * F.T @ F
    keys = jax.random.split(jax.random.PRNGKey(1), 3000)
    draw = jax.vmap(lambda k: gibbs.conditional_rows(k, jnp.asarray(V), chunks, mu, lam, alpha)[0][u])
    x = np.asarray(draw(keys), np.float64)
    cov = np.linalg.inv(P)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.12 * np.abs(cov).max())
    assert np.all(np.abs(x.mean(0) - np.asarray(mean[u])) < 4 * np.sqrt(np.diag(cov) / 3000))


def test_wishart_bartlett_moments():
    W = np.array([[1.0, 0.3], [0.3, 0.5]])
    df = 5.0
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: gibbs.sample_wishart(k, jnp.asarray(W, jnp.float32), df))(keys))
    np.testing.assert_allclose(draws.mean(0), df * W, rtol=0.03)
    # Var(L_ij) = df (W_ij^2 + W_ii W_jj)
    var = df * (W**2 + np.outer(np.diag(W), np.diag(W)))
    np.testing.assert_allclose(draws.var(0), var, rtol=0.08)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["noncentered", "bartlett"])
def test_nuts_coordinates_give_the_normal_wishart_prior(parameterization):
    # the NUTS coordinates (Bartlett chi2/normal, then z_mu, z or centred mu, rows) must give the
    # same prior as the centred Wishart / MultivariateNormal sites: moments against closed forms
    from numpyro.infer import Predictive

    from bayesmf.posterior.model import bpmf_model

    D, nu, w0, beta0, mu0 = 3, 8.0, 0.5, 2.0, 0.3
    prior = Prior(rank=D, nu0=nu, w0=w0, beta0=beta0, mu0=mu0)
    draws = Predictive(bpmf_model, num_samples=40000)(
        jax.random.PRNGKey(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), None, 2, 1, prior=prior,
        parameterization=parameterization)
    lam, mu, rows = (np.asarray(draws[k], np.float64) for k in ("Lambda_U", "mu_U", "U"))
    eye = np.eye(D)
    np.testing.assert_allclose(lam.mean(0), nu * w0 * eye, atol=0.04 * nu * w0)
    var = nu * w0**2 * (1 + eye)  # Var(Lambda_ij) = nu (W_ij^2 + W_ii W_jj), W = w0 I
    np.testing.assert_allclose(lam.var(0), var, rtol=0.06)
    # E[(beta0 Lambda)^-1] = W^-1 / (beta0 (nu - D - 1)); rows add E[Lambda^-1] = W^-1 / (nu - D - 1)
    cov_mu = eye / (w0 * beta0 * (nu - D - 1))
    np.testing.assert_allclose(mu.mean(0), mu0, atol=0.02)
    np.testing.assert_allclose(np.cov(mu.T), cov_mu, atol=0.03)
    np.testing.assert_allclose(np.cov(rows[:, 0].T), cov_mu * (1 + beta0), atol=0.05)


def test_precision_cholesky_normal_density_and_draws():
    from scipy.stats import multivariate_normal

    from bayesmf.posterior.distributions import PrecisionCholeskyNormal

    lam = np.array([[2.0, 0.6, 0.1], [0.6, 1.5, -0.3], [0.1, -0.3, 0.8]])
    chol, loc = np.linalg.cholesky(lam), np.array([0.5, -1.0, 0.2])
    d = PrecisionCholeskyNormal(jnp.broadcast_to(jnp.asarray(loc), (4, 3)), jnp.asarray(chol))
    x = np.random.default_rng(0).normal(size=(4, 3))
    expected = multivariate_normal(loc, np.linalg.inv(lam)).logpdf(x)
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(x))), expected, rtol=1e-5)
    draws = np.asarray(d.sample(jax.random.PRNGKey(0), (20000,)), np.float64).reshape(-1, 3)
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(lam), atol=0.02)
    np.testing.assert_allclose(draws.mean(0), loc, atol=0.02)


@pytest.mark.slow
def test_normal_wishart_conditional_mean():
    rng = np.random.default_rng(2)
    X = rng.normal(1.0, 0.5, size=(40, 2)).astype(np.float32)
    prior = Prior(rank=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    mus, lams = jax.vmap(lambda k: gibbs.sample_normal_wishart(k, jnp.asarray(X), prior))(keys)
    N, xbar = 40, X.mean(0)
    S = (X - xbar).T @ (X - xbar)
    W_n = np.linalg.inv(np.eye(2) + S + (2 * N / (2 + N)) * np.outer(xbar, xbar))
    np.testing.assert_allclose(np.asarray(lams).mean(0), (2 + N) * W_n, rtol=0.05, atol=0.05)
    np.testing.assert_allclose(np.asarray(mus).mean(0), N * xbar / (2 + N), atol=0.01)


def _simulate_prior(key, prior: Prior, n_users, n_items):
    """Draw (hyperparameters, factors, noise-free ratings) from the BPMF prior."""
    keys = jax.random.split(key, 4)
    out = {}
    for side, n, (k_h, k_f) in (("U", n_users, keys[:2]), ("V", n_items, keys[2:])):
        lam = gibbs.sample_wishart(k_h, prior.w0_matrix(), prior.nu)
        k_mu, k_x = jax.random.split(k_f)
        mu, _ = sample_gaussian(k_mu, prior.beta0 * lam[None], jnp.zeros((1, prior.rank)))
        x = mu[0] + jax.scipy.linalg.solve_triangular(
            jnp.linalg.cholesky(lam), jax.random.normal(k_x, (prior.rank, n)), lower=True, trans=1).T
        out[side], out["mu_" + side], out["Lambda_" + side] = x, mu[0], lam
    return out


@pytest.mark.slow
@pytest.mark.parametrize("biases", [False, True])
def test_simulation_based_calibration(biases):
    """Talts et al. (2018): for prior draws theta, data y ~ p(y|theta) and L posterior draws,
    the rank of theta among the draws is uniform when the sampler is right. 200 replications
    of a fully observed 6 x 5 rank-1 problem run as vmapped chains, the offset drawn from its
    prior; chi-square test at a fixed seed. Every sweep ends with the invariance moves (the
    rescaling, and with biases the shifts and translations), so this checks them too."""
    # nu0 = 5, w0 = 0.2 (E[Lambda] = 1): SBC holds for any proper prior, and with the default
    # nu0 = D = 1 the chi-square(1) Lambda has so much mass near 0 that the hierarchical chain
    # mixes too slowly for 99 draws — autocorrelation alone would bend the rank histogram.
    prior = Prior(rank=1, alpha=4.0, nu0=5.0, w0=0.2, offset_prior=(0.5, 1.0),
                  bias_prior=(4.0, 4.0) if biases else None)
    n_users, n_items, reps = 6, 5, 200
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    users, items = users.ravel(), items.ravel()
    keys = jax.random.split(jax.random.PRNGKey(123), reps)
    truth = jax.vmap(lambda k: _simulate_prior(k, prior, n_users, n_items))(keys)
    noise = jax.random.normal(jax.random.PRNGKey(7), (reps, users.size)) / np.sqrt(prior.alpha)
    offset = 0.5 + jax.random.normal(jax.random.PRNGKey(8), (reps,))
    y = offset[:, None] + jnp.einsum("rnk,rnk->rn", truth["U"][:, users], truth["V"][:, items]) + noise
    bias_u = bias_v = lam_b = jnp.zeros((reps, 1))
    if biases:  # lambda ~ Gamma(4, 4), b ~ N(0, 1/lambda) per side
        k_l, k_u, k_v = jax.random.split(jax.random.PRNGKey(10), 3)
        lam_b = jax.random.gamma(k_l, 4.0, (reps, 2)) / 4.0
        bias_u = jax.random.normal(k_u, (reps, n_users)) / jnp.sqrt(lam_b[:, :1])
        bias_v = jax.random.normal(k_v, (reps, n_items)) / jnp.sqrt(lam_b[:, 1:])
        y = y + bias_u[:, users] + bias_v[:, items]
    pattern = Ratings.from_arrays(users, items, np.zeros(users.size))

    def data_for(values):
        ub, ib = (gram_chunks_for(pattern, side, prior.rank, values) for side in ("user", "item"))
        return gibbs.GibbsData(ub, ib, jnp.asarray(users), jnp.asarray(items), jnp.asarray(values))

    # one layout per replication (same pattern, so same shapes), stacked for vmap
    y_host = np.asarray(y, np.float32)
    data = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *(data_for(y_host[i]) for i in range(reps)))
    state = jax.vmap(lambda k: gibbs.init(k, prior, n_users, n_items))(jax.random.split(jax.random.PRNGKey(9), reps))
    step = jax.vmap(functools.partial(gibbs.step, prior=prior))
    n_draws, thin, burn = 99, 10, 200

    def sweep(carry, t):
        st = carry
        ks = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), t), reps)
        st, _ = step(ks, st, data)
        # sign-invariant quantities: (u, v) -> (-u, -v) leaves the likelihood unchanged, so the
        # posterior of a sign-carrying quantity such as mu_U is bimodal and no local sampler
        # crosses between the modes — SBC would flag that, correctly, as non-identifiability
        return st, (st.U[:, 0, 0] * st.V[:, 0, 0], st.mu_U[:, 0] * st.mu_V[:, 0], st.Lambda_V[:, 0, 0],
                    st.Lambda_U[:, 0, 0], st.offset, st.b_U[:, 0] + st.b_V[:, 0], st.bias_precision_U)

    _, trace = jax.jit(lambda s: jax.lax.scan(sweep, s, jnp.arange(burn + n_draws * thin)))(state)
    true_values = (truth["U"][:, 0, 0] * truth["V"][:, 0, 0], truth["mu_U"][:, 0] * truth["mu_V"][:, 0],
                   truth["Lambda_V"][:, 0, 0], truth["Lambda_U"][:, 0, 0], offset, bias_u[:, 0] + bias_v[:, 0],
                   lam_b[:, 0])
    names = ("u0.v0", "mu_U.mu_V", "Lambda_V", "Lambda_U", "offset") + (("b0 + c0", "bias_precision_U") if biases
                                                                         else ())
    for name, draws, true in zip(names, trace, true_values):
        kept = np.asarray(draws)[burn + thin - 1::thin]  # (n_draws, reps)
        ranks = (kept < np.asarray(true)[None]).sum(axis=0)  # 0..n_draws
        counts = np.bincount(ranks * 10 // (n_draws + 1), minlength=10)
        p = stats.chisquare(counts).pvalue
        assert p > 0.001, f"SBC ranks of {name} are not uniform: counts {counts.tolist()}, p = {p:.2g}"


@pytest.mark.slow
def test_predictive_intervals_cover_held_out_ratings():
    data = synthetic(n_users=300, n_items=200, n_ratings=24_000, rank=3, noise=0.5, seed=4)
    train, test = splits.random(data.ratings, 0.2, seed=0)
    model = BPMF(rank=3, n_samples=150, n_warmup=60, noise_prior=(1.0, 1.0), seed=0).fit(train)
    dist = model.predict_dist(test.users, test.items)
    lo, hi = dist.interval(0.9)
    coverage = np.mean((test.values >= lo) & (test.values <= hi))
    assert 0.87 <= coverage <= 0.93, coverage
    assert abs(np.sqrt(1 / model.alpha_samples_.mean()) - 0.5) < 0.05  # noise std recovered
    rmse = np.sqrt(np.mean((model.predict_ratings(test) - test.values) ** 2))
    assert rmse < 0.5 * 1.1  # within 10% of the noise sigma


@pytest.mark.slow
def test_gibbs_beats_map_and_history_is_recorded(small):
    train, test = splits.random(small.ratings, 0.2, seed=0)
    pmf = PMF(rank=3).fit(train)
    bpmf = BPMF(rank=3, n_samples=60, n_warmup=20, chains=2, noise_prior=(1.0, 1.0), seed=1).fit(train)
    err = {name: np.sqrt(np.mean((m.predict_ratings(test) - test.values) ** 2)) for name, m in
           (("pmf", pmf), ("bpmf", bpmf))}
    assert err["bpmf"] < err["pmf"]
    assert bpmf.user_samples_.shape == (2, 60, train.n_users, 3)
    assert len(bpmf.history_["train_rmse"]) == 80
    assert np.all(np.diff(pmf.history_["map_objective"]) <= 1e-3 * np.abs(pmf.history_["map_objective"][1:]))
    idata = bpmf.to_arviz(factors=False)
    assert idata.posterior["Lambda_U"].shape == (2, 60, 3, 3)


@pytest.mark.slow
def test_tracked_online_moments_equal_kept_draws(small):
    train, test = splits.random(small.ratings, 0.2, seed=0)
    model = BPMF(rank=3, n_samples=30, n_warmup=5, seed=2).fit(train, track=test)
    dist = model.predict_dist(test.users, test.items)
    np.testing.assert_allclose(model.tracked_mean_, dist.mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.tracked_var_, dist.std**2, rtol=2e-2, atol=1e-4)


@pytest.mark.slow
def test_checkpoint_resume_is_bit_identical(small, tmp_path, monkeypatch):
    train = small.ratings
    kw = dict(rank=2, n_samples=12, n_warmup=6, thin=2, seed=3, init="random")
    reference = BPMF(**kw).fit(train)
    ckpt = tmp_path / "chain.npz"
    from bayesmf.engines import driver as sampler

    calls = {"n": 0}
    real_bar = sampler.progress_bar

    class Interrupting:
        def update(self, n=1):
            calls["n"] += n
            if calls["n"] == 17:
                raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(sampler, "progress_bar", lambda *a: Interrupting())
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="progress saved"):
        BPMF(**kw, checkpoint=str(ckpt), checkpoint_every=5).fit(train)
    assert ckpt.exists()
    monkeypatch.setattr(sampler, "progress_bar", real_bar)
    with pytest.warns(ResumeWarning, match="at sweep 17 of 30"):
        resumed = BPMF(**kw, checkpoint=str(ckpt), checkpoint_every=5).fit(train)
    np.testing.assert_array_equal(resumed.user_samples_, reference.user_samples_)
    np.testing.assert_array_equal(resumed.Lambda_V_samples_, reference.Lambda_V_samples_)
    assert resumed.history_["train_rmse"] == reference.history_["train_rmse"]
    assert not ckpt.exists()


@pytest.mark.parametrize(
    "kw, message",
    [(dict(rank=0), "rank"), (dict(alpha=-1.0), "alpha"), (dict(nu0=0.5, rank=3), "nu0"),
     (dict(inference="vb"), "inference"), (dict(n_samples=0), "n_samples"), (dict(beta0=0.0), "beta0"),
     (dict(inference="nuts", nuts_parameterization="centred"), "nuts_parameterization.*'centred'"),
     (dict(inference="nuts", nuts_init="prior"), "nuts_init.*'prior'"),
     (dict(inference="nuts", nuts_init_sweeps=10), "nuts_init_sweeps.*>= 15, got 10")],
)
def test_bad_hyperparameters(small, kw, message):
    with pytest.raises(ConfigError, match=message):
        BPMF(**kw).fit(small.ratings)


@pytest.mark.slow
def test_unknown_users_get_prior_predictive_uncertainty(small):
    """``unknown="fallback"``: a new user at a known item keeps the item's bias and factors, its
    own vector and bias drawn from the prior per draw (mixture moments computed in NumPy from the
    stored draws); a new item likewise; a pair with both sides new draws both."""
    r = small.ratings
    model = BPMF(rank=2, n_samples=20, n_warmup=5, noise_prior=None, biases=True).fit(r)
    with pytest.raises(DataError, match="not in training"):
        model.predict([r.n_users], [0])
    new_u, new_i = r.n_users, r.n_items
    dist = model.predict_dist([0, new_u, 3, new_u], [0, 5, new_i, new_i], unknown="fallback")
    S, D = model.user_samples_.shape[0] * model.user_samples_.shape[1], model.rank
    flat = {name: getattr(model, f"{name}_samples_").astype(np.float64).reshape(S, -1)
            for name in ("mu_U", "mu_V", "Lambda_U", "Lambda_V", "bias_precision_U", "bias_precision_V")}
    U = model.user_samples_.astype(np.float64).reshape(S, -1, D)
    V = model.item_samples_.astype(np.float64).reshape(S, -1, D)
    bU = model.b_U_samples_.astype(np.float64).reshape(S, -1)
    bV = model.b_V_samples_.astype(np.float64).reshape(S, -1)
    offset = model.offset_samples_.astype(np.float64).reshape(S)
    noise_var = 1 / model.alpha  # fixed alpha = 2

    def mixture(f, v):
        return f.mean(), f.var() + v.mean() + noise_var

    # new user, item 5: u ~ N(mu_U, Lambda_U^-1), b ~ N(0, 1/lambda_b)
    x = V[:, 5]
    f = offset + bV[:, 5] + np.einsum("sd,sd->s", flat["mu_U"], x)
    cov = np.linalg.inv(flat["Lambda_U"].reshape(S, D, D))
    v = np.einsum("sd,sde,se->s", x, cov, x) + 1 / flat["bias_precision_U"][:, 0]
    m1, var1 = mixture(f, v)
    # user 3, new item
    y = U[:, 3]
    f = offset + bU[:, 3] + np.einsum("sd,sd->s", flat["mu_V"], y)
    cov = np.linalg.inv(flat["Lambda_V"].reshape(S, D, D))
    v = np.einsum("sd,sde,se->s", y, cov, y) + 1 / flat["bias_precision_V"][:, 0]
    m2, var2 = mixture(f, v)
    # both new: u.v of two independent prior draws, E = mu_U'mu_V, Var = tr(S_U S_V) + mu_U'S_V mu_U + mu_V'S_U mu_V
    mu_u, mu_v = flat["mu_U"], flat["mu_V"]
    S_u = np.linalg.inv(flat["Lambda_U"].reshape(S, D, D))
    S_v = np.linalg.inv(flat["Lambda_V"].reshape(S, D, D))
    f = offset + np.einsum("sd,sd->s", mu_u, mu_v)
    v = (np.einsum("sde,sed->s", S_u, S_v) + np.einsum("sd,sde,se->s", mu_u, S_v, mu_u)
         + np.einsum("sd,sde,se->s", mu_v, S_u, mu_v) + 1 / flat["bias_precision_U"][:, 0]
         + 1 / flat["bias_precision_V"][:, 0])
    m3, var3 = mixture(f, v)
    np.testing.assert_allclose(dist.mean[1:], [m1, m2, m3], rtol=1e-4)
    np.testing.assert_allclose(dist.std[1:] ** 2, [var1, var2, var3], rtol=1e-3)
    epistemic = dist.std**2 - noise_var
    assert epistemic[0] > 0 and epistemic[3] > 5 * epistemic[0] and epistemic[1] > 2 * epistemic[0]
    # predict agrees with predict_dist's mean (unclipped), and with the draws path
    pred = model.predict([0, new_u, 3, new_u], [0, 5, new_i, new_i], clip=False, unknown="fallback")
    np.testing.assert_allclose(pred, dist.mean, rtol=1e-5)
    drawn = model.predict_dist([new_u], [5], unknown="fallback", n_draws=10)
    assert drawn.mean[0] == pytest.approx(m1, rel=1e-4)


@pytest.mark.slow
def test_fold_in_uses_the_conditional_posterior_per_draw(small):
    import pandas as pd

    r = small.ratings
    model = BPMF(rank=2, n_samples=60, n_warmup=20, noise_prior=(1.0, 1.0), seed=0).fit(r)
    u = int(np.argmax(r.user_counts))
    rows = r.users == u
    copy = pd.DataFrame({"user": 10_001, "item": r.item_map.ids(r.items[rows]), "rating": r.values[rows]})
    model.fold_in(copy)
    model.fold_in(copy.iloc[:2].assign(user=10_002))
    assert model.user_samples_.shape == (1, 60, r.n_users + 2, 2)
    items = np.arange(r.n_items)
    trained = model.predict_dist(np.full(r.n_items, u), items)
    folded = model.predict_dist(np.full(r.n_items, r.n_users), items)
    few = model.predict_dist(np.full(r.n_items, r.n_users + 1), items)
    # a user folded in with the same ratings as a training user predicts like that user
    # (the posterior of one row given the others differs only by the row's own feedback on V)
    assert np.median(np.abs(folded.mean - trained.mean)) < 0.05
    assert np.median(np.abs(folded.std / trained.std - 1)) < 0.05
    # two ratings leave the new user's uncertainty far wider
    assert np.median(few.std) > 1.2 * np.median(folded.std)
    recs = model.recommend([10_001], k=5)
    assert len(recs) == 5 and "std" in recs.columns
    assert not set(recs["item"]) & set(copy["item"])  # rated items are excluded


@pytest.mark.slow
def test_biases_variant_recovers_bias_structure():
    """Ratings with strong user/item offsets: the biased model finds them (correlation with the
    truth) and predicts better than the model without biases."""
    rng = np.random.default_rng(0)
    d = synthetic(n_users=150, n_items=100, n_ratings=6000, rank=2, noise=0.3, seed=6)
    r = d.ratings
    bu, bi = rng.normal(0, 0.8, r.n_users), rng.normal(0, 0.8, r.n_items)
    shifted = Ratings.from_arrays(r.users, r.items, r.values + bu[r.users] + bi[r.items], n_users=r.n_users,
                                  n_items=r.n_items)
    train, test = splits.random(shifted, 0.2, seed=0)
    kw = dict(rank=2, n_samples=80, n_warmup=40, noise_prior=(1.0, 1.0), seed=0)
    biased = BPMF(biases=True, **kw).fit(train)
    plain = BPMF(biases=False, **kw).fit(train)
    seen = train.user_counts > 0
    assert np.corrcoef(biased.user_bias_[seen], bu[seen])[0, 1] > 0.8
    err = {name: np.sqrt(np.mean((m.predict_ratings(test, clip=False) - test.values) ** 2))
           for name, m in (("biased", biased), ("plain", plain))}
    assert err["biased"] < err["plain"]
    assert biased.b_U_samples_.shape == (1, 80, r.n_users)
    with pytest.raises(ConfigError, match="biases=True needs a posterior"):
        BPMF(biases=True, inference="map").fit(train)


@pytest.mark.parametrize("parameterization", ["centered", "noncentered", "bartlett"])
def test_nuts_start_is_the_conditional_posterior_mean_in_every_coordinate_system(parameterization):
    """The NUTS starting values, pushed through the model, give back the MAP factors and the
    hyperparameters' conditional posterior means, computed here with numpy: Lambda = nu_N W_N,
    mu = mu_N, alpha = (a0 + nnz/2) / (b0 + SSE/2)."""
    from numpyro import handlers

    from bayesmf.posterior.model import bpmf_model
    from bayesmf.posterior.numpyro_inference import initial_values

    d = synthetic(n_users=30, n_items=20, n_ratings=300, rank=3, noise=0.5, seed=4)
    r, prior = d.ratings, Prior(rank=3, noise_prior=(2.0, 1.0))
    rng = np.random.default_rng(0)
    U, V, mean = rng.normal(size=(30, 3)), rng.normal(size=(20, 3)), 3.0
    values = initial_values(prior, U, V, parameterization, r, mean)
    args = (jnp.asarray(r.users), jnp.asarray(r.items), jnp.asarray(r.values), 30, 20)
    trace = handlers.trace(handlers.substitute(bpmf_model, data=values)).get_trace(
        *args, prior=prior, global_mean=mean, parameterization=parameterization)
    for side, X in (("U", U), ("V", V)):
        N, xbar = X.shape[0], X.mean(0)
        S = (X - xbar).T @ (X - xbar)
        w_n = np.linalg.inv(np.eye(3) + S + (2 * N / (2 + N)) * np.outer(xbar, xbar))
        np.testing.assert_allclose(trace[side]["value"], X, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(trace[f"Lambda_{side}"]["value"], (3 + N) * w_n, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(trace[f"mu_{side}"]["value"], N * xbar / (2 + N), rtol=1e-4, atol=1e-5)
    sse = np.sum((r.values - mean - np.einsum("nk,nk->n", U[r.users], V[r.items])) ** 2)
    np.testing.assert_allclose(trace["alpha"]["value"], (2.0 + r.nnz / 2) / (1.0 + sse / 2), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["bartlett", "centered"])
def test_the_layout_likelihood_is_the_same_log_density_and_gradient(parameterization):
    """NUTS's likelihood through the packed sum of squares (``layout``) against the per-rating
    Normal sites: log joint and its gradient in every coordinate, with biases and learned alpha."""
    from numpyro import handlers
    from numpyro.infer import init_to_value
    from numpyro.infer.util import initialize_model

    from bayesmf.posterior.model import bpmf_model
    from bayesmf.posterior.numpyro_inference import initial_values, likelihood_layout

    d = synthetic(n_users=30, n_items=20, n_ratings=300, rank=3, noise=0.5, seed=4)
    r, mean = d.ratings, 3.0
    prior = Prior(rank=3, noise_prior=(2.0, 1.0), bias_prior=(1.0, 1.0))
    rng = np.random.default_rng(1)
    values = initial_values(prior, rng.normal(size=(30, 3)), rng.normal(size=(20, 3)), parameterization, r, mean)
    values.update(b_U=jnp.asarray(rng.normal(size=30), jnp.float32), b_V=jnp.asarray(rng.normal(size=20), jnp.float32))
    args = (jnp.asarray(r.users), jnp.asarray(r.items), jnp.asarray(r.values), 30, 20)
    potentials = []
    for layout in (None, likelihood_layout(r, mean)):
        kwargs = dict(prior=prior, global_mean=mean, parameterization=parameterization, layout=layout)
        info = initialize_model(jax.random.PRNGKey(0), bpmf_model, model_args=args, model_kwargs=kwargs,
                                init_strategy=init_to_value(values=values))
        potentials.append(jax.value_and_grad(info.potential_fn)(info.param_info.z))
    (value, grad), (value_layout, grad_layout) = potentials
    assert np.isfinite(float(value)) and abs(float(value)) > 100
    np.testing.assert_allclose(value_layout, value, rtol=1e-5)
    assert grad.keys() == grad_layout.keys()
    for site in grad:
        np.testing.assert_allclose(grad_layout[site], grad[site], rtol=2e-4, atol=2e-3, err_msg=site)
    with pytest.raises(ConfigError, match="likelihood_scale=0.5"):
        handlers.trace(handlers.seed(bpmf_model, 0)).get_trace(
            *args, prior=prior, likelihood_scale=0.5, layout=likelihood_layout(r, mean))


@pytest.mark.slow
def test_full_batch_adam_map_reaches_the_coordinate_ascent_optimum(small):
    """PMF MAP by Adam (gradient through the packed sum of squares) against exact block
    coordinate ascent on the same objective, from the same start."""
    from bayesmf.posterior.map import MapState, build_kernel, make_adam_step, objective

    r = small.ratings
    data = gibbs.prepare(r, float(np.mean(r.values)), 3)
    rng = np.random.default_rng(0)
    U0, V0 = (jnp.asarray(0.1 * rng.normal(size=(n, 3)), jnp.float32) for n in (r.n_users, r.n_items))
    alpha, lam = 2.0, 3.0
    als = build_kernel(data, alpha, lam).step
    state = MapState(U0, V0)
    for _ in range(100):
        state, _ = als(None, state)
    opt, adam_step = make_adam_step(data, alpha, lam, 0.02, None)
    carry = ((U0, V0), opt.init((U0, V0)))
    carry, trace = jax.jit(lambda c: jax.lax.scan(lambda c, k: adam_step(k, c), c, jax.random.split(
        jax.random.PRNGKey(0), 3000)))(carry)
    best = float(objective(state.U, state.V, data, alpha, lam))
    reached = float(objective(*carry[0], data, alpha, lam))
    assert float(trace["objective"][0]) > 1.5 * best  # a real descent, not a start at the optimum
    np.testing.assert_allclose(reached, best, rtol=1e-4)


@pytest.mark.parametrize("parameterization", ["bartlett", "noncentered", "centered"])
@pytest.mark.parametrize("learned", [True, False])
def test_site_values_invert_the_models_maps_over_a_batch_of_draws(parameterization, learned):
    """Two draws of the model's quantities, stacked, mapped to the sites of ``parameterization``
    and replayed through the model (via the unconstrained scale and back, but for the centred
    Wishart, whose unconstrained shape differs): its rows, ``mu`` and
    ``Lambda`` (deterministic functions of Bartlett's and the offsets' sites unless centred) are
    the quantities again, draw by draw; ``alpha`` and the biases only where the prior has them."""
    from numpyro import handlers

    from bayesmf.posterior.guides import constrain, latent_sites, unconstrain
    from bayesmf.posterior.model import bpmf_model
    from bayesmf.posterior.numpyro_inference import site_values

    prior = Prior(rank=3, noise_prior=(2.0, 1.0), bias_prior=(1.0, 1.0)) if learned else Prior(rank=3)
    rng = np.random.default_rng(5)
    A = rng.normal(size=(2, 3, 3))
    quantities = {"U": rng.normal(size=(2, 6, 3)), "V": rng.normal(size=(2, 4, 3)),
                  "mu_U": rng.normal(size=(2, 3)), "mu_V": rng.normal(size=(2, 3)),
                  "Lambda_U": A @ A.transpose(0, 2, 1) + np.eye(3),
                  "Lambda_V": np.broadcast_to(2 * np.eye(3), (2, 3, 3)),
                  "alpha": np.array([1.5, 2.5]), "b_U": rng.normal(size=(2, 6)), "b_V": rng.normal(size=(2, 4)),
                  "bias_precision_U": np.array([0.5, 1.0]), "bias_precision_V": np.array([2.0, 3.0])}
    quantities = {k: np.asarray(v, np.float32) for k, v in quantities.items()}
    args = (jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.ones(1), 6, 4)
    kwargs = dict(prior=prior, parameterization=parameterization)
    batch = site_values(prior, parameterization, quantities)
    if parameterization != "centered":  # NUTS's coordinates (the centred Wishart's change shape)
        sites = latent_sites(bpmf_model, *args, **kwargs)
        batch = constrain(sites, unconstrain(sites, batch))
    assert ("alpha" in batch) == ("b_U" in batch) == learned
    for d in range(2):
        values = {name: v[d] for name, v in batch.items()}
        trace = handlers.trace(handlers.substitute(handlers.seed(bpmf_model, 0), data=values)).get_trace(
            *args, **kwargs)
        names = ("U", "V", "mu_U", "mu_V", "Lambda_U", "Lambda_V")
        for name in names + (("alpha", "b_V", "bias_precision_U") if learned else ()):
            np.testing.assert_allclose(trace[name]["value"], quantities[name][d], rtol=1e-4, atol=1e-4)


def test_inverse_mass_from_draws_is_the_shrunk_variance_in_numpyros_block_layout():
    """Hand-computed: variances (n s^2 + 5e-3) / (n + 5) over n = 4 draws (s^2 with n - 1 in the
    denominator, as NumPyro's estimate); a diagonal matrix for the dense block, one vector over
    the other sites in sorted order."""
    from bayesmf.posterior.numpyro_inference import inverse_mass_from_draws

    draws = {"b": np.array([0.0, 1.0, 2.0, 3.0]), "a": np.array([[0.0, 2.0], [0.0, 2.0], [2.0, 2.0], [2.0, 2.0]]),
             "c": np.array([1.0, 1.0, 1.0, 3.0])}
    mass = inverse_mass_from_draws(draws, [("a",)])
    assert set(mass) == {("a",), ("b", "c")}
    np.testing.assert_allclose(mass[("a",)], np.diag([(4 * 4 / 3 + 5e-3) / 9, 5e-3 / 9]), rtol=1e-6)
    np.testing.assert_allclose(mass[("b", "c")], [(4 * 5 / 3 + 5e-3) / 9, (4 * 1.0 + 5e-3) / 9], rtol=1e-6)
