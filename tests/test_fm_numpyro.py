"""The Bayesian factorization machine as a NumPyro model (bayesmf.posterior.fm_numpyro) and the
inferences on it: its log joint against SciPy densities on a small design with one-hot and
multi-hot blocks, the MAP fit's stationarity against the objective's gradient in NumPy, NUTS
against the exact Gibbs sampler on a small simulated problem, SVI and MAP through the estimator.

``python tests/test_fm_numpyro.py`` prints the Gibbs/NUTS agreement figures (benchmarks/RESULTS.md)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_fm_model import _side_design  # one-hot user and item blocks, multi-hot genre and implicit blocks

import bayesmf
from bayesmf import Ratings
from bayesmf.data.design import design_matrix, fm_predict_numpy
from bayesmf.data.features import Features
from bayesmf.data.side import SideTable
from bayesmf.errors import ConfigError
from bayesmf.posterior import fm_gibbs
from bayesmf.posterior.fm_numpyro import fm_model


def _log_joint(data, prior, params, likelihood=True):
    from numpyro.infer.util import log_density

    # jitted: one compilation instead of NumPyro's eager one per operation
    value = jax.jit(lambda p: log_density(fm_model, (data, prior), {"likelihood": likelihood}, p)[0])
    return float(value({k: jnp.asarray(v, jnp.float32) for k, v in params.items()}))


def _random_point(rng, G, F, K):
    return dict(lambda_w=rng.gamma(2, 1, G), mu_w=rng.normal(size=G), lambda_v=rng.gamma(2, 1, (G, K)),
                mu_v=rng.normal(size=(G, K)), w=0.3 * rng.normal(size=F), V=0.5 * rng.normal(size=(F, K)))


def test_log_joint_is_the_models_density_written_out_in_scipy():
    """log p(theta, y) of the NumPyro model at a random point equals the sum of the SciPy
    densities of the model in fm_gibbs's docstring (Gamma(shape, rate) precisions, mu | lambda ~
    N(0, 1/(gamma0 lambda)), w and V per group, w0 ~ N(m0, s0^2), alpha ~ Gamma(a0, b0), y ~
    N(f, 1/alpha) with f the naive FM on the dense design); with w0 and alpha fixed they are no
    sites and the likelihood uses the data's centre and prior.alpha."""
    rng = np.random.default_rng(0)
    design = _side_design(rng)[0]
    G, F, K = 4, design.n_features, 2
    y = rng.normal(3.0, 1.0, design.nnz)
    centre = float(y.mean())
    data = fm_gibbs.prepare(design, y, K, centre)
    prior = fm_gibbs.FMPrior(rank=K, noise_prior=(2.0, 3.0), offset_prior=(3.0, 1.5), hyper_shape=1.5, hyper_rate=0.7,
                             gamma0=2.0)
    p = _random_point(rng, G, F, K)
    g = design.groups
    gamma = stats.gamma(1.5, scale=1 / 0.7)
    log_prior = (gamma.logpdf(p["lambda_w"]).sum() + gamma.logpdf(p["lambda_v"]).sum()
                 + stats.norm.logpdf(p["mu_w"], 0, 1 / np.sqrt(2.0 * p["lambda_w"])).sum()
                 + stats.norm.logpdf(p["mu_v"], 0, 1 / np.sqrt(2.0 * p["lambda_v"])).sum()
                 + stats.norm.logpdf(p["w"], p["mu_w"][g], 1 / np.sqrt(p["lambda_w"][g])).sum()
                 + stats.norm.logpdf(p["V"], p["mu_v"][g], 1 / np.sqrt(p["lambda_v"][g])).sum())
    w0, alpha = 3.1, 1.7
    full = dict(p, w0=w0, alpha=alpha)
    expect = (log_prior + stats.norm.logpdf(w0, 3.0, 1.5) + stats.gamma.logpdf(alpha, 2.0, scale=1 / 3.0)
              + stats.norm.logpdf(y, fm_predict_numpy(design, w0, p["w"], p["V"]), 1 / np.sqrt(alpha)).sum())
    assert _log_joint(data, prior, full) == pytest.approx(expect, rel=1e-5)
    assert _log_joint(data, prior, full, likelihood=False) == pytest.approx(
        expect - stats.norm.logpdf(y, fm_predict_numpy(design, w0, p["w"], p["V"]), 1 / np.sqrt(alpha)).sum(),
        rel=1e-5)
    fixed = prior._replace(noise_prior=None, offset_prior=None, alpha=0.8)
    expect_fixed = log_prior + stats.norm.logpdf(y, fm_predict_numpy(design, centre, p["w"], p["V"]),
                                                 1 / np.sqrt(0.8)).sum()
    assert _log_joint(data, fixed, p) == pytest.approx(expect_fixed, rel=1e-5)
    from bayesmf.posterior.fm_numpyro import latent_fm_sites

    assert [s.name for s in latent_fm_sites(data, fixed)] == ["lambda_w", "mu_w", "lambda_v", "mu_v", "w", "V"]
    with pytest.raises(ConfigError, match="ordinal likelihood has no NumPyro model"):
        _log_joint(data, fixed._replace(alpha=1.0, gap_prior=(0.0, 1.0), n_categories=3), p)


def test_map_sweeps_descend_to_a_stationary_point_of_the_objective():
    """Exact block coordinate ascent (fm_gibbs.map_sweep) never raises the objective
    alpha/2 SSE + lambda/2 (|w|^2 + |V|^2), and ends where its gradient, computed in NumPy on the
    dense design (df/dw_j = x_j, df/dv_jf = x_j q_f - x_j^2 v_jf), vanishes."""
    rng = np.random.default_rng(1)
    design = _side_design(rng, nnz=40)[0]
    y = rng.normal(3.0, 1.0, design.nnz)
    prior = fm_gibbs.FMPrior(rank=2, alpha=2.0, hyper_shape=2.0, hyper_rate=4.0)
    data = fm_gibbs.prepare(design, y, 2, float(y.mean()))
    kernel = fm_gibbs.build_map_kernel(data, prior)
    state = kernel.init(jax.random.PRNGKey(0))
    objectives = []
    for _ in range(300):
        state, info = kernel.step(None, state)
        objectives.append(float(info.objective))
    assert np.all(np.diff(objectives) <= 1e-4 * abs(objectives[0]))
    X = design_matrix(design)
    w, V = np.asarray(state.w, np.float64), np.asarray(state.V, np.float64)
    e = y - fm_predict_numpy(design, float(y.mean()), w, V)
    lam, alpha = 0.5, 2.0
    grad_w = -alpha * X.T @ e + lam * w
    grad_V = -alpha * (X.T @ (e[:, None] * (X @ V)) - ((X * X).T @ e)[:, None] * V) + lam * V
    assert objectives[-1] == pytest.approx(0.5 * alpha * e @ e + 0.5 * lam * (w @ w + np.sum(V * V)), rel=1e-4)
    assert max(np.abs(grad_w).max(), np.abs(grad_V).max()) < 1e-3 * np.abs(alpha * X.T @ e).max() + 1e-3


def _simulated(seed=7, n_users=30, n_items=20, n_ratings=300):
    """30 users x 20 items, ~300 ratings of a rank-2 FM with user and item biases and 4 item
    genres (1 or 2 per item); 40 held-out pairs. Returns (train, test pairs, features)."""
    rng = np.random.default_rng(seed)
    genres = [rng.choice(list("abcd"), size=rng.integers(1, 3), replace=False) for _ in range(n_items)]
    items = SideTable.from_pandas(pd.DataFrame({"id": np.arange(n_items), "genres": ["|".join(g) for g in genres]}),
                                  "id", multi=["genres"])
    effect = {"a": 0.6, "b": -0.4, "c": 0.2, "d": -0.1}
    P, Q = rng.normal(0, 0.7, (n_users, 2)), rng.normal(0, 0.7, (n_items, 2))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    pairs = rng.permutation(n_users * n_items)[:n_ratings + 40]
    u, i = pairs // n_items, pairs % n_items
    mean = 3.5 + bu[u] + bi[i] + np.sum(P[u] * Q[i], 1) + np.array([sum(effect[x] for x in genres[j]) for j in i])
    y = mean + 0.5 * rng.normal(size=u.size)
    train = Ratings.from_ids(u[:n_ratings], i[:n_ratings], y[:n_ratings])
    test_u = train.user_map.lookup(u[n_ratings:], missing=-1)
    test_i = train.item_map.lookup(i[n_ratings:], missing=-1)
    known = (test_u >= 0) & (test_i >= 0)
    return train, (test_u[known], test_i[known]), Features(item_side=items)


def _draws_at(model, train, users, items):
    """Each kept draw's noise-free prediction at the pairs (S, n) by the naive FM on the dense
    design of the pairs (not the package's prediction code)."""
    design = model.fitted_features_.design(users, items)
    F, K = model.w_samples_.shape[-1], model.rank
    return np.stack([fm_predict_numpy(design, float(w0), w.astype(np.float64), V.astype(np.float64))
                     for w0, w, V in zip(model.w0_samples_.reshape(-1), model.w_samples_.reshape(-1, F),
                                         model.V_samples_.reshape(-1, F, K))])


def _ess(x):
    """Bulk ESS of (chains, draws) (ArviZ)."""
    import arviz as az

    return float(az.ess(np.asarray(x, np.float64), method="bulk"))


def agreement(gibbs_samples=1000, nuts_samples=300, nuts_warmup=200):
    """Fit Gibbs and NUTS on :func:`_simulated`; per held-out pair and for alpha and w0 the
    posterior means and standard deviations, their Monte Carlo standard errors (sd / sqrt(ESS)
    for a mean, sd / sqrt(2 ESS) for a standard deviation: the Gaussian approximation), and the
    z-scores of the differences. Returns a dict of figures."""
    train, (users, items), features = _simulated()
    common = dict(rank=2, features=features, seed=0)
    t0 = time.perf_counter()
    gibbs = bayesmf.BayesFM(n_samples=gibbs_samples, n_warmup=200, **common).fit(train)
    t1 = time.perf_counter()
    nuts = bayesmf.BayesFM(n_samples=nuts_samples, n_warmup=nuts_warmup, inference="nuts", **common).fit(train)
    t2 = time.perf_counter()
    out = {"gibbs_seconds": t1 - t0, "nuts_seconds": t2 - t1, "n_pairs": users.size,
           "nuts_divergences": int(np.sum(nuts.sample_stats_["diverging"])),
           "nuts_mean_steps": float(np.mean(nuts.sample_stats_["num_steps"]))}
    quantities = {}
    for name, m in (("gibbs", gibbs), ("nuts", nuts)):
        f = _draws_at(m, train, users, items)
        C = m.w0_samples_.shape[0]
        per_chain = f.reshape(C, -1, f.shape[1])
        quantities[name] = {
            "f": (f.mean(0), f.std(0), np.array([_ess(per_chain[:, :, j]) for j in range(f.shape[1])])),
            "alpha": (m.alpha_samples_.mean(), m.alpha_samples_.std(), np.array(_ess(m.alpha_samples_))),
            "w0": (m.w0_samples_.mean(), m.w0_samples_.std(), np.array(_ess(m.w0_samples_))),
        }
        dist = m.predict_dist(users, items)
        out[f"{name}_predict_dist_gap"] = float(np.max(np.abs(dist.mean - f.mean(0))))
    for q in ("f", "alpha", "w0"):
        (mg, sg, eg), (mn, sn, en) = quantities["gibbs"][q], quantities["nuts"][q]
        out[f"{q}_z_mean"] = np.atleast_1d(np.abs(mg - mn) / np.sqrt(sg**2 / eg + sn**2 / en))
        out[f"{q}_z_sd"] = np.atleast_1d(np.abs(sg - sn) / np.sqrt(sg**2 / (2 * eg) + sn**2 / (2 * en)))
        out[f"{q}_abs_mean_diff"] = float(np.max(np.abs(mg - mn)))
        out[f"{q}_rel_sd_diff"] = float(np.max(np.abs(sg - sn) / sn))
        out[f"{q}_ess"] = (float(np.min(eg)), float(np.min(en)))
    out["posterior_sd_f"] = float(np.mean(quantities["nuts"]["f"][1]))
    return out


@pytest.mark.slow
def test_nuts_agrees_with_gibbs_on_a_small_problem():
    """NUTS on the NumPyro model and the exact Gibbs sampler give the same posterior (30 users x
    20 items, ~300 ratings, rank 2, one-hot user and item blocks and a multi-hot genre block):
    the posterior means and standard deviations of the held-out predictions, of alpha and of w0
    differ by less than 4.5 Monte Carlo standard errors (|z| > 4.5 has probability 7e-6 per
    quantity under agreement; the errors come from each sampler's bulk ESS), and on average by
    about one (the mean |z| of a standard normal is 0.8)."""
    out = agreement()
    for q in ("f", "alpha", "w0"):
        assert out[f"{q}_z_mean"].max() < 4.5, (q, out)
        assert out[f"{q}_z_sd"].max() < 4.5, (q, out)
    assert out["f_z_mean"].mean() < 1.3 and out["f_z_sd"].mean() < 1.3, out
    assert min(out["f_ess"]) > 100 and out["nuts_divergences"] <= 4, out
    assert out["gibbs_predict_dist_gap"] < 1e-3 and out["nuts_predict_dist_gap"] < 1e-3, out


@pytest.mark.slow
def test_svi_and_map_fit_predict_save_and_load(tmp_path):
    """SVI and MAP run through the estimator (the MAP with the genre block): the ELBO falls, the
    draws are stored under the sampler's site names, predictions are the stored draws' FM and
    track the ratings, and a saved model predicts the same after loading; the ordinal likelihood
    refuses NUTS by name."""
    train, (users, items), features = _simulated()
    # one-hot features only: a side table not from bayesmf.datasets.side is not savable
    svi = bayesmf.BayesFM(rank=2, n_samples=50, inference={"name": "svi", "steps": 1500, "learning_rate": 0.02}
                          ).fit(train)
    loss = np.asarray(svi.history_["elbo_loss"])
    assert loss.shape == (1500,) and loss[-100:].mean() < loss[:100].mean() - 50
    assert svi.w_samples_.shape == (1, 50, svi.w_samples_.shape[-1]) and svi.lambda_v_samples_.shape[-1] == 2
    f = _draws_at(svi, train, users, items)
    np.testing.assert_allclose(svi.predict(users, items, clip=False), f.mean(0), rtol=1e-4, atol=1e-4)
    rmse = float(np.sqrt(np.mean((svi.predict(train.users, train.items, clip=False) - train.values) ** 2)))
    assert rmse < 0.6  # the simulated noise sd is 0.5; the ratings' sd is about 1
    svi.save(tmp_path / "svi")
    np.testing.assert_allclose(bayesmf.load(tmp_path / "svi").predict_dist(users, items).std,
                               svi.predict_dist(users, items).std, rtol=1e-6)
    point = bayesmf.BayesFM(rank=2, features=features, inference="map").fit(train)
    assert point.w_samples_.shape[:2] == (1, 1) and np.all(point.alpha_samples_ == 2.0)
    np.testing.assert_allclose(point.predict_dist(users, items).std, np.sqrt(1 / 2.0), rtol=1e-6)
    assert np.all(np.diff(point.history_["map_objective"]) <= 1e-4 * point.history_["map_objective"][0])
    with pytest.raises(ConfigError, match="ordinal.*inference='gibbs' only.*nuts"):
        bayesmf.BayesFM(rank=2, likelihood="ordinal", inference="nuts").fit(train)


if __name__ == "__main__":
    figures = agreement()
    for key, value in figures.items():
        if isinstance(value, np.ndarray):
            value = f"max {value.max():.2f}, mean {value.mean():.2f} over {value.size}"
        print(f"{key}: {value}")
