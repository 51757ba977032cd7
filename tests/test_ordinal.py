"""The ordered-probit likelihood: truncated-normal draws, the cutpoint conditional, category
probabilities against NumPy closed forms; simulation-based calibration of the ordinal BPMF
Gibbs sampler; levels and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import log_ndtr, ndtr
from test_bpmf_gibbs import _simulate_prior

from bayesmf import ConfigError, DataError, Ratings
from bayesmf.engines.chunks import gram_chunks_for
from bayesmf.models.bpmf import BPMF
from bayesmf.posterior import gibbs, ordinal
from bayesmf.posterior.model import Prior
from bayesmf.predictive import CategoricalDistribution


def _truncated_moments(a, b):
    """Mean and variance of N(0, 1) truncated to (a, b), float64, on the side of the smaller tail."""
    flip = a + b > 0
    lo, hi = (-b, -a) if flip else (a, b)
    log_z = log_ndtr(hi) + np.log1p(-np.exp(log_ndtr(lo) - log_ndtr(hi)))
    pdf = lambda x: np.exp(-0.5 * x * x - 0.5 * np.log(2 * np.pi) - log_z) if np.isfinite(x) else 0.0  # noqa: E731
    mean = pdf(lo) - pdf(hi)
    second = 1 + (lo * pdf(lo) if np.isfinite(lo) else 0.0) - (hi * pdf(hi) if np.isfinite(hi) else 0.0)
    return (-mean if flip else mean), second - mean * mean


@pytest.mark.parametrize("lo, hi", [(-1.0, 0.5), (-np.inf, -0.3), (1.2, np.inf), (8.0, 9.0), (-np.inf, -20.0),
                                    (30.0, np.inf), (2.0, 2.01)])
def test_truncated_normal_matches_the_closed_form_moments(lo, hi):
    n = 200_000
    big = 1e3  # the sampler's stand-in for an infinite end
    a, b = max(lo, -big), min(hi, big)
    x = np.asarray(ordinal.truncated_normal(jax.random.PRNGKey(1), jnp.full(n, a), jnp.full(n, b)), np.float64)
    assert np.all((x >= a) & (x <= b))
    mean, var = _truncated_moments(lo, hi)
    sd_mean = np.sqrt(var / n)
    assert abs(x.mean() - mean) < 5 * sd_mean + 1e-6 * abs(mean), (x.mean(), mean)
    sd_var = np.std((x - mean) ** 2) / np.sqrt(n)
    assert abs(x.var() - var) < 5 * sd_var + 1e-4 * var, (x.var(), var)


def test_sample_latent_lands_in_each_rating_category():
    rng = np.random.default_rng(0)
    cut = jnp.asarray([0.0, 0.7, 1.5, 3.0])
    f = jnp.asarray(rng.normal(1.0, 3.0, 20_000), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 20_000), jnp.int32)  # including very unlikely categories for f
    z = np.asarray(ordinal.sample_latent(jax.random.PRNGKey(2), f, y, cut))
    ext = np.concatenate([[-np.inf], np.asarray(cut), [np.inf]])
    yy = np.asarray(y)
    assert np.all((z > ext[yy] - 1e-5) & (z <= ext[yy + 1] + 1e-5)) and np.all(np.isfinite(z))


def _log_posterior_numpy(a, f, y, gap_prior):
    cut = np.concatenate([[0.0], np.cumsum(np.exp(a))])
    ext = np.concatenate([[-np.inf], cut, [np.inf]])
    m, s = gap_prior
    with np.errstate(divide="ignore"):  # far off the mode a category's probability underflows
        return np.sum(np.log(ndtr(ext[y + 1] - f) - ndtr(ext[y] - f))) - 0.5 * np.sum(((a - m) / s) ** 2)


@pytest.mark.slow
def test_cutpoint_conditional_matches_a_numpy_grid():
    """The MH kernel's draws against the target integrated on a grid in NumPy (K = 4: two log
    gaps); and the log density itself against NumPy at a few points."""
    rng = np.random.default_rng(1)
    n, truth, prior = 150, np.array([0.0, 0.8, 1.4]), (0.0, 1.0)
    f = rng.normal(0.7, 1.0, n)
    y = np.searchsorted(truth, f + rng.standard_normal(n))  # categories 0..3
    fj, yj = jnp.asarray(f, jnp.float32), jnp.asarray(y, jnp.int32)
    for a in ([0.1, -0.3], [-1.0, 0.5]):
        got = float(ordinal.cutpoint_log_posterior(jnp.asarray(a), fj, yj, prior))
        assert got == pytest.approx(_log_posterior_numpy(np.asarray(a), f, y, prior), rel=1e-4)
    grid = np.linspace(-3.0, 2.0, 161)
    A1, A2 = np.meshgrid(grid, grid, indexing="ij")
    logp = np.array([[_log_posterior_numpy(np.array([u, v]), f, y, prior) for v in grid] for u in grid])
    w = np.exp(logp - logp.max())
    w /= w.sum()
    means = np.array([np.sum(w * A1), np.sum(w * A2)])
    sds = np.sqrt(np.array([np.sum(w * A1**2), np.sum(w * A2**2)]) - means**2)

    step = jax.jit(lambda k, c: ordinal.sample_cutpoints_mh(k, c, fj, yj, prior))

    def body(c, k):
        c, acc = step(k, c)
        return c, (ordinal.log_gaps(c), acc)

    n_iter = 4000
    _, (a, acc) = jax.lax.scan(body, jnp.asarray([0.0, 1.0, 2.0]), jax.random.split(jax.random.PRNGKey(3), n_iter))
    a, acc = np.asarray(a, np.float64)[200:], np.asarray(acc)
    assert acc.mean() > 0.5
    # independence proposals: nearly independent draws; 5 standard errors with an ESS of n/2
    se = sds / np.sqrt(a.shape[0] / 2)
    assert np.all(np.abs(a.mean(0) - means) < 5 * se), (a.mean(0), means, se)
    assert np.all(np.abs(a.std(0) - sds) < 0.1 * sds), (a.std(0), sds)


@pytest.mark.slow
def test_cutpoint_gradient_and_precision_match_autodiff():
    """The analytic gradient equals autodiff's of the log density; the Gauss-Newton precision
    equals minus the autodiff Hessian minus the term of the cutpoints' curvature in ``a``,
    ``diag(e^{a_k} sum_{j >= k} dL/dc_j)``, which vanishes for linear maps."""
    rng = np.random.default_rng(5)
    f = jnp.asarray(rng.normal(1.0, 1.2, 300))
    y = jnp.asarray(rng.integers(0, 5, 300), jnp.int32)
    a = jnp.asarray([0.2, -0.4, 0.1])
    prior = (0.0, 0.8)
    target = functools.partial(ordinal.cutpoint_log_posterior, f=f, y_cat=y, gap_prior=prior)
    grad, precision = ordinal._gradient_and_precision(a, f, y, prior)
    assert np.allclose(grad, jax.grad(target)(a), rtol=1e-4, atol=1e-4)
    c = ordinal.cutpoints_from_log_gaps(a)
    grad_c = jax.grad(lambda c: ordinal.cutpoint_log_posterior(ordinal.log_gaps(c), f, y, (0.0, 1e9)))(c)
    curvature = jnp.diag(jnp.exp(a) * jnp.cumsum(grad_c[::-1])[::-1][1:])
    assert np.allclose(precision, -jax.hessian(target)(a) + curvature, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_albert_chib_step_draws_inside_the_free_interval():
    """Under a very wide gap prior the step is Albert & Chib's uniform conditional: each free
    cutpoint lands between the largest latent value below it and the smallest above."""
    z = jnp.asarray([-1.0, -0.2, 0.3, 0.5, 1.1, 1.9, 2.4, 3.0])
    y = jnp.asarray([0, 0, 1, 1, 2, 2, 3, 3])
    cut = jnp.asarray([0.0, 0.8, 2.0])
    draws = jax.vmap(lambda k: ordinal.sample_cutpoints(k, z, y, cut, (0.0, 100.0))[0])(
        jax.random.split(jax.random.PRNGKey(4), 4000))
    c1, c2 = np.asarray(draws[:, 1]), np.asarray(draws[:, 2])
    assert np.all((c1 > 0.5) & (c1 < 1.1)) and np.all((c2 > 1.9) & (c2 < 2.4))
    moved = c1 != 0.8  # accepted draws are uniform on (0.5, 1.1) (the prior is flat to 1e-4 there)
    assert moved.mean() > 0.9
    assert stats.kstest((c1[moved] - 0.5) / 0.6, "uniform").pvalue > 0.001


def test_class_probabilities_match_numpy():
    rng = np.random.default_rng(2)
    S, n = 7, 50
    f = rng.normal(1.0, 1.0, (S, n))
    cuts = np.sort(rng.normal(1.0, 1.0, (S, 3)), axis=1)
    cuts -= cuts[:, :1]
    extra = rng.uniform(0, 2, n)
    got = np.asarray(ordinal.class_probabilities(jnp.asarray(f, jnp.float32), jnp.asarray(cuts, jnp.float32),
                                                 jnp.asarray(extra, jnp.float32)))
    ext = np.concatenate([np.full((S, 1), -np.inf), cuts, np.full((S, 1), np.inf)], axis=1)
    cdf = ndtr((ext[:, None, :] - f[:, :, None]) / np.sqrt(1 + extra)[None, :, None])  # (S, n, K + 1)
    expected = np.diff(cdf, axis=2).mean(axis=0)
    assert np.allclose(got, expected, atol=2e-6)


def test_levels_and_bad_input():
    assert ordinal.rating_levels(np.array([1.0, 2, 5, 4])).tolist() == [1, 2, 3, 4, 5]  # 3: empty category
    assert ordinal.rating_levels(np.array([0.5, 5.0, 3.5])).tolist() == list(np.arange(0.5, 5.01, 0.5))
    with pytest.raises(DataError, match="row 2 holds 3.7"):
        ordinal.rating_levels(np.array([1.0, 2.0, 3.7, 5.0]))
    with pytest.raises(DataError, match="row 1 holds 6.0, not one of the training scale's levels"):
        ordinal.encode_levels(np.array([2.0, 6.0]), np.arange(1.0, 6.0), "test ratings")
    with pytest.raises(DataError, match="row 0 holds 2.5"):
        ordinal.encode_levels(np.array([2.5]), np.arange(1.0, 6.0))
    with pytest.raises(DataError, match="2..100 rating levels"):
        ordinal.rating_levels(np.array([3.0, 3.0]))
    with pytest.raises(ConfigError, match="alpha=1"):
        Prior(rank=2, likelihood="ordinal", n_categories=5).validate()
    with pytest.raises(ConfigError, match="n_categories >= 2"):
        Prior(rank=2, alpha=1.0, likelihood="ordinal", n_categories=1).validate()


def _ordinal_ratings(seed, n_users=40, n_items=30, levels=(1.0, 2.0, 3.0, 4.0, 5.0), density=0.5):
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    f = 0.8 + rng.normal(0, 0.7, n_users)[users] + rng.normal(0, 0.7, n_items)[items]
    cut = np.array([0.0, 0.7, 1.5, 2.5])[: len(levels) - 1]
    k = np.searchsorted(cut, f + rng.standard_normal(f.size))
    return Ratings.from_arrays(users, items, np.asarray(levels)[k], n_users=n_users, n_items=n_items)


@pytest.mark.slow
def test_ordinal_bpmf_predicts_categories_and_round_trips(tmp_path):
    data = _ordinal_ratings(0)
    model = BPMF(rank=2, likelihood="ordinal", biases=True, n_samples=40, n_warmup=40, seed=1).fit(data)
    dist = model.predict_dist(data.users[:20], data.items[:20])
    assert isinstance(dist, CategoricalDistribution) and dist.levels.tolist() == [1, 2, 3, 4, 5]
    assert np.allclose(dist.probabilities.sum(1), 1.0)
    assert np.allclose(model.predict(data.users[:20], data.items[:20]), dist.mean, atol=1e-5)
    assert model.cutpoints_samples_.shape == (1, 40, 4) and np.all(np.diff(model.cutpoints_samples_, axis=-1) > 0)
    # the ratings' categories are learned: higher observed ratings get higher expected ratings
    all_dist = model.predict_dist(data.users, data.items)
    assert np.corrcoef(all_dist.mean, data.values)[0, 1] > 0.5
    model.save(tmp_path / "m")
    from bayesmf import load

    again = load(tmp_path / "m")
    assert np.allclose(again.predict_dist(data.users[:20], data.items[:20]).probabilities, dist.probabilities)
    unknown = model.predict_dist(np.array([10_000]), np.array([0]), unknown="fallback")
    assert unknown.probabilities.shape == (1, 5) and np.isclose(unknown.probabilities.sum(), 1.0)
    # a new user at item 4: per draw f ~ N(m + c_4 + mu_U'v_4, v_4' Lambda_U^-1 v_4 + 1/lambda_b), in NumPy
    S, D = 40, 2
    v4 = model.item_samples_.astype(np.float64).reshape(S, -1, D)[:, 4]
    m = (model.offset_samples_.reshape(S) + model.b_V_samples_.reshape(S, -1)[:, 4]
         + np.einsum("sd,sd->s", model.mu_U_samples_.reshape(S, D), v4))
    cov = np.linalg.inv(model.Lambda_U_samples_.astype(np.float64).reshape(S, D, D))
    var = np.einsum("sd,sde,se->s", v4, cov, v4) + 1 / model.bias_precision_U_samples_.reshape(S)
    cuts = model.cutpoints_samples_.astype(np.float64).reshape(S, -1)
    ext = np.concatenate([np.full((S, 1), -np.inf), cuts, np.full((S, 1), np.inf)], axis=1)
    expected = np.diff(ndtr((ext - m[:, None]) / np.sqrt(1 + var)[:, None]), axis=1).mean(0)
    new_user = model.predict_dist(np.array([10_000]), np.array([4]), unknown="fallback")
    np.testing.assert_allclose(new_user.probabilities[0], expected, atol=2e-5)
    assert model.predict(np.array([10_000]), np.array([4]), unknown="fallback", clip=False)[0] == pytest.approx(
        expected @ np.arange(1, 6), rel=1e-5)
    with pytest.raises(DataError, match="row 3 holds 3.7"):
        BPMF(rank=2, likelihood="ordinal").fit(Ratings.from_arrays([0, 1, 2, 3], [0, 1, 0, 1], [1, 2, 5, 3.7]))
    with pytest.raises(ConfigError, match="inference='gibbs' only"):
        BPMF(rank=2, likelihood="ordinal", inference="nuts").fit(data)


@pytest.mark.slow
def test_a_category_without_training_ratings_gets_a_small_probability():
    """Ratings 1, 2, 4, 5 only: 3 is a category of the scale, its gap drawn from the prior and
    squeezed by the data, so it gets less probability than its neighbours."""
    data = _ordinal_ratings(1, density=0.8)
    values = np.where(data.values == 3.0, 4.0, data.values)
    data = data.with_values(values)
    model = BPMF(rank=2, likelihood="ordinal", n_samples=30, n_warmup=30, seed=2).fit(data)
    assert model.rating_levels_.tolist() == [1, 2, 3, 4, 5]
    p = model.predict_dist(data.users, data.items).probabilities.mean(0)
    assert p[2] < 0.5 * min(p[1], p[3])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 150 s on an idle 2-core machine; several times that under load
def test_simulation_based_calibration_of_the_ordinal_sampler():
    """Talts et al. (2018), as the Gaussian sampler's SBC test: 200 replications of a fully
    observed 6 x 5 rank-1 problem with 4 categories drawn from the prior (offset, log gaps,
    factors, latent values), the ordinal Gibbs sweep run as vmapped chains, ranks of the
    cutpoints, the offset and a prediction among 99 thinned draws, chi-square test."""
    gap_prior = (0.0, 0.5)
    prior = Prior(rank=1, alpha=1.0, nu0=5.0, w0=0.2, offset_prior=(0.5, 1.0), likelihood="ordinal",
                  n_categories=4, gap_prior=gap_prior)
    n_users, n_items, reps = 6, 5, 200
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    users, items = users.ravel(), items.ravel()
    keys = jax.random.split(jax.random.PRNGKey(321), reps)
    truth = jax.vmap(lambda k: _simulate_prior(k, prior, n_users, n_items))(keys)
    offset = 0.5 + jax.random.normal(jax.random.PRNGKey(8), (reps,))
    a = gap_prior[0] + gap_prior[1] * jax.random.normal(jax.random.PRNGKey(9), (reps, 2))
    cuts = ordinal.cutpoints_from_log_gaps(a)
    f = offset[:, None] + jnp.einsum("rnk,rnk->rn", truth["U"][:, users], truth["V"][:, items])
    z = f + jax.random.normal(jax.random.PRNGKey(7), f.shape)
    y = np.asarray(jnp.sum(z[:, :, None] > cuts[:, None, :], axis=-1), np.int32)  # (reps, nnz) in 0..3
    pattern = Ratings.from_arrays(users, items, np.zeros(users.size))

    def data_for(cat):
        start = cat.astype(np.float32) - 0.5
        ub, ib = (gram_chunks_for(pattern, side, prior.rank, start, rating_index=True) for side in ("user", "item"))
        return gibbs.GibbsData(ub, ib, jnp.asarray(users), jnp.asarray(items), jnp.asarray(start), 0.0,
                               jnp.asarray(cat))

    data = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *(data_for(y[i]) for i in range(reps)))
    state = jax.vmap(lambda k: gibbs.init(k, prior, n_users, n_items))(jax.random.split(jax.random.PRNGKey(10), reps))
    step = jax.vmap(functools.partial(gibbs.step, prior=prior))
    n_draws, thin, burn = 99, 10, 200

    def sweep(st, t):
        ks = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), t), reps)
        st, _ = step(ks, st, data)
        return st, (st.cutpoints[:, 1], st.cutpoints[:, 2], st.offset, st.offset + st.U[:, 0, 0] * st.V[:, 0, 0],
                    st.U[:, 1, 0] * st.V[:, 2, 0])

    _, trace = jax.jit(lambda s: jax.lax.scan(sweep, s, jnp.arange(burn + n_draws * thin)))(state)
    true_values = (cuts[:, 1], cuts[:, 2], offset, f[:, 0], truth["U"][:, 1, 0] * truth["V"][:, 2, 0])
    for name, draws, true in zip(("c_1", "c_2", "offset", "f_00", "u1.v2"), trace, true_values, strict=True):
        kept = np.asarray(draws)[burn + thin - 1::thin]  # (n_draws, reps)
        ranks = (kept < np.asarray(true)[None]).sum(axis=0)
        counts = np.bincount(ranks * 10 // (n_draws + 1), minlength=10)
        p = stats.chisquare(counts).pvalue
        assert p > 0.001, f"SBC ranks of {name} are not uniform: counts {counts.tolist()}, p = {p:.2g}"
