"""Real fitted models, checked against NumPy.

Every estimator is fitted for a few sweeps on a small synthetic data set, then:

* ``BPMF.score_users`` (``how="mean"``, ``"quantile"``, ``"thompson"``) and ``score_std_users``
  are compared with the predictive draws computed in NumPy from the model's stored posterior
  samples, ``f_s(u, j) = m_s + b_su + c_sj + u_su . v_sj``;
* ``save`` / ``bayesmf.load`` round trips every estimator with identical predictions and scores;
* the ALS, NMF and PMF objectives the fits report are recomputed in NumPy from the fitted factors,
  from the formulas of their docstrings.
"""

import numpy as np
import pytest
from scipy.stats import norm

import bayesmf
from bayesmf import ALS, BPMF, NMF, PMF, FunkSVD, ImplicitALS, SVDpp
from bayesmf.data import synthetic
from bayesmf.errors import ConfigError

# a few sweeps of two chains do not converge, and need not: the checks are against the draws kept
pytestmark = pytest.mark.filterwarnings("ignore::bayesmf.errors.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=60, n_items=40, n_ratings=900, rank=2, noise=0.3, seed=3).ratings


@pytest.fixture(scope="module")
def positive(data):
    """The same pairs with values ``|r|`` (NMF without biases and implicit ALS need values >= 0)."""
    return data.with_values(np.abs(data.values))


def _bpmf(**kwargs):
    """A real Gibbs fit, kept short: a few warm-up sweeps and draws from two chains."""
    return BPMF(rank=2, inference="gibbs", n_warmup=5, n_samples=12, chains=2, seed=0, **kwargs)


@pytest.fixture(scope="module")
def bpmf(data):
    return _bpmf(biases=True).fit(data)


def _numpy_draws(model) -> np.ndarray:
    """``f`` (S, n_users, n_items): every posterior draw's noise-free prediction, chains merged."""
    U = model.user_samples_.astype(np.float64)
    V = model.item_samples_.astype(np.float64)
    U, V = U.reshape(-1, *U.shape[-2:]), V.reshape(-1, *V.shape[-2:])
    S = U.shape[0]
    f = np.einsum("sud,sjd->suj", U, V)
    offset = getattr(model, "offset_samples_", None)
    f += model.global_mean_ if offset is None else offset.reshape(S)[:, None, None]
    if model.b_U_samples_ is not None:
        f += model.b_U_samples_.reshape(S, -1)[:, :, None] + model.b_V_samples_.reshape(S, -1)[:, None, :]
    return f


# -- BPMF scores against the stored draws ---------------------------------------------------------
@pytest.mark.slow
def test_score_users_mean_and_std_are_the_moments_of_the_draws(bpmf):
    f = _numpy_draws(bpmf)
    assert f.shape[0] == 24  # 2 chains x 12 draws
    users = np.array([0, 5, 59, 5])
    np.testing.assert_allclose(bpmf.score_users(users, how="mean"), f.mean(0)[users], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bpmf.score_std_users(users), f.std(0)[users], rtol=2e-3, atol=2e-4)
    items = np.array([3, 0, 39])
    np.testing.assert_allclose(bpmf.score_users(users, items), f.mean(0)[users][:, items], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bpmf.score_std_users(users, items), f.std(0)[users][:, items], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("q", [0.1, 0.9])
def test_score_users_quantile_is_the_gaussian_quantile_of_the_draws(bpmf, q):
    f = _numpy_draws(bpmf)
    users = np.arange(10)
    expected = f.mean(0)[users] + norm.ppf(q) * f.std(0)[users]
    np.testing.assert_allclose(bpmf.score_users(users, how="quantile", q=q), expected, rtol=1e-4, atol=5e-4)


def test_score_users_thompson_is_one_whole_draw_per_user(bpmf):
    f = _numpy_draws(bpmf)
    users = np.arange(bpmf.n_users_)
    scores = bpmf.score_users(users, how="thompson", seed=7)
    # each user's row is one posterior draw's row, every item from the same draw
    err = np.abs(scores[None, :, :] - f[:, users, :]).max(axis=2)  # (S, n_users)
    chosen = err.argmin(axis=0)
    assert err[chosen, users].max() < 1e-4
    assert np.unique(chosen).size > 1, "every user got the same draw: draws are not independent per user"
    # keyed by seed and user: a batch of users gets the draws it gets in the full call (to rounding:
    # the matmul over a smaller batch may sum in another order), a new seed other draws
    np.testing.assert_allclose(bpmf.score_users(users[[3, 1]], how="thompson", seed=7), scores[[3, 1]],
                               rtol=1e-6, atol=1e-6)
    assert not np.array_equal(bpmf.score_users(users, how="thompson", seed=8), scores)


def test_a_map_fit_scores_only_by_the_mean(data):
    pmf = PMF(rank=2, map_iter=3).fit(data)
    with pytest.raises(ConfigError, match="needs posterior draws"):
        pmf.score_users([0], how="thompson")
    with pytest.raises(ConfigError, match="no posterior draws"):
        pmf.score_std_users([0])


# -- save / load of every estimator ---------------------------------------------------------------
ESTIMATORS = {
    "BPMF": None,  # the module's fitted ``bpmf``
    "PMF": lambda: PMF(rank=2, map_iter=3),
    "ALS": lambda: ALS(rank=2, n_iter=3),
    "ImplicitALS": lambda: ImplicitALS(rank=2, n_iter=3),
    "NMF": lambda: NMF(rank=2, n_iter=5),
    "FunkSVD": lambda: FunkSVD(rank=2, n_epochs=2, batch_size=256),
    "SVDpp": lambda: SVDpp(rank=2, n_epochs=2, batch_size=256),
    "EASE": lambda: bayesmf.EASE(regularization=5.0),
}


def _as_saved(params: dict) -> dict:
    """Parameters as JSON gives them back: tuples become lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_save_load_round_trip_keeps_predictions(request, tmp_path, data, positive, name):
    if name == "BPMF":  # the module's fit, with biases (one Gibbs compilation for the whole file)
        model = request.getfixturevalue("bpmf")
    else:
        model = ESTIMATORS[name]().fit(positive if name in ("ImplicitALS", "NMF") else data)
    model.save(tmp_path / name)
    loaded = bayesmf.load(tmp_path / name)
    assert type(loaded) is type(model) and _as_saved(loaded.get_params()) == _as_saved(model.get_params())
    users, items = data.users[:200], data.items[:200]
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    np.testing.assert_array_equal(loaded.score_users(np.arange(5)), model.score_users(np.arange(5)))
    rec, rec_loaded = model.recommend_indices(np.arange(5), k=3), loaded.recommend_indices(np.arange(5), k=3)
    np.testing.assert_array_equal(rec_loaded[0], rec[0])
    if name == "BPMF":
        np.testing.assert_array_equal(loaded.score_std_users(np.arange(5)), model.score_std_users(np.arange(5)))
        dist, dist_loaded = model.predict_dist(users, items), loaded.predict_dist(users, items)
        np.testing.assert_array_equal(dist_loaded.std, dist.std)


# -- objectives recomputed in NumPy ---------------------------------------------------------------
def _arrays(data):
    return data.users, data.items, data.values.astype(np.float64)


def test_als_reported_loss_is_the_weighted_lambda_objective(data):
    model = ALS(rank=2, regularization=0.1, bias_regularization=0.05, n_iter=4).fit(data)
    u, i, r = _arrays(data)
    P, Q = model.user_factors_, model.item_factors_
    b, c = model.user_bias_, model.item_bias_
    n_u, n_i = np.bincount(u, minlength=data.n_users), np.bincount(i, minlength=data.n_items)
    pred = r.mean() + b[u] + c[i] + np.sum(P[u] * Q[i], axis=1)
    loss = (np.sum((r - pred) ** 2) + 0.1 * (n_u @ np.sum(P**2, 1) + n_i @ np.sum(Q**2, 1))
            + 0.05 * (n_u @ b**2 + n_i @ c**2))
    assert model.global_mean_ == pytest.approx(r.mean())
    assert model.history_["loss"][-1] == pytest.approx(loss, rel=1e-3)
    assert np.all(np.diff(model.history_["loss"]) <= 1e-4 * loss)  # exact block minimisation never increases it


@pytest.mark.parametrize("biases", [False, True])
def test_nmf_reported_loss_is_the_frobenius_objective(data, positive, biases):
    train = data if biases else positive
    model = NMF(rank=2, regularization=0.06, bias_regularization=0.02, biases=biases, n_iter=6).fit(train)
    u, i, r = _arrays(train)
    P, Q = model.user_factors_, model.item_factors_
    assert (P >= 0).all() and (Q >= 0).all()
    n_u, n_i = np.bincount(u, minlength=data.n_users), np.bincount(i, minlength=data.n_items)
    offset = r.mean() + model.user_bias_[u] + model.item_bias_[i] if biases else 0.0
    y = r - offset
    loss = 0.5 * np.sum((y - np.sum(P[u] * Q[i], axis=1)) ** 2) + 0.5 * 0.06 * (
        n_u @ np.sum(P**2, 1) + n_i @ np.sum(Q**2, 1))
    if biases:
        loss += 0.5 * 0.02 * (np.sum(model.user_bias_**2) + np.sum(model.item_bias_**2))
    assert model.history_["loss"][-1] == pytest.approx(loss, rel=1e-3)


def test_pmf_reported_objective_is_the_negative_log_joint(data):
    alpha, w0 = 2.0, 1.0
    model = PMF(rank=2, alpha=alpha, w0=w0, map_iter=4).fit(data)
    u, i, r = _arrays(data)
    U, V = model.user_factors_, model.item_factors_
    lam = 2 * w0  # Lambda = nu0 w0 I with nu0 = rank
    resid = r - model.global_mean_ - np.sum(U[u] * V[i], axis=1)
    objective = 0.5 * alpha * np.sum(resid**2) + 0.5 * lam * (np.sum(U**2) + np.sum(V**2))
    assert model.global_mean_ == pytest.approx(r.mean())
    assert model.history_["map_objective"][-1] == pytest.approx(objective, rel=1e-3)
    np.testing.assert_allclose(model.predict(u, i, clip=False), r - resid, rtol=1e-5, atol=1e-5)
