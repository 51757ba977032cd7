"""BayesFM (bayesmf.models.fm) and its protocol model (bayesmf.posterior.fm_model): effective
per-user/item factors reproduce the dense FM prediction, the estimator's predictive moments are
the draws' moments, save/load, bad settings, and agreement with BPMF(biases=True)."""

import numpy as np
import pytest

import bayesmf
from bayesmf import Ratings
from bayesmf.data.design import Block, Design, check_design, design_matrix
from bayesmf.errors import ConfigError
from bayesmf.posterior.fm_model import BayesFMModel


def _dense_f(X, w0, w, V):
    q = X @ V
    return w0 + X @ w + 0.5 * (np.sum(q * q, 1) - (X * X) @ np.sum(V * V, 1))


def _onehot(name, owner, index, n_rows, offset):
    return Block(name, owner, np.asarray(index, np.int32), np.arange(n_rows + 1, dtype=np.int64),
                 np.arange(offset, offset + n_rows, dtype=np.int32), np.ones(n_rows, np.float32), n_rows)


def _side_design(rng, nnz=25):
    nu, ni = 4, 5
    users, items = rng.integers(0, nu, nnz), rng.integers(0, ni, nnz)
    genre = Block("genre", "item", items.astype(np.int32), np.array([0, 2, 3, 3, 5, 6]),
                  np.array([9, 10, 11, 9, 11, 10], np.int32), np.array([1, .5, 1, 1, 2, 1], np.float32), ni)
    implicit = Block("implicit", "user", users.astype(np.int32), np.array([0, 3, 4, 6, 6]),
                     np.array([12, 13, 14, 15, 13, 16], np.int32), rng.uniform(.3, 1, 6).astype(np.float32), nu)
    groups = np.array([0] * nu + [1] * ni + [2] * 3 + [3] * 5, np.int32)
    blocks = (_onehot("user", "user", users, nu, 0), _onehot("item", "item", items, ni, nu), genre, implicit)
    return check_design(Design(blocks, tuple(f"f{j}" for j in range(17)), groups, ("u", "i", "g", "imp"))), users, items


def test_effective_factors_reproduce_the_dense_prediction():
    """For each draw, global_mean + b_u + c_i + p_u . p_i equals the naive FM on the dense
    design, with multi-hot user- and item-owned blocks (within-block pairs included)."""
    rng = np.random.default_rng(0)
    d, users, items = _side_design(rng)
    C, S, F, K = 2, 3, d.n_features, 3
    draws = {"w0": rng.normal(3, .1, (C, S)), "w": rng.normal(size=(C, S, F)).astype(np.float32),
             "V": rng.normal(size=(C, S, F, K)).astype(np.float32)}
    U, V, BU, BV = BayesFMModel(design=d).factors(draws, 3.0)
    assert U.shape == (C * S, 4, K) and V.shape == (C * S, 5, K) and BU.shape == (C * S, 4)
    X = design_matrix(d)
    for s in range(C * S):
        c, t = divmod(s, S)
        expect = _dense_f(X, draws["w0"][c, t], draws["w"][c, t].astype(np.float64),
                          draws["V"][c, t].astype(np.float64))
        got = 3.0 + BU[s, users] + BV[s, items] + np.sum(U[s, users] * V[s, items], axis=1)
        np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
    context = d._replace(blocks=d.blocks + (_onehot("day", "context", users, 4, 17),), feature_names=d.feature_names
                         + ("d0", "d1", "d2", "d3"), groups=np.concatenate([d.groups, [4, 4, 4, 4]]).astype(np.int32),
                         group_names=d.group_names + ("day",))
    with pytest.raises(ConfigError, match="context block.*'day'"):
        BayesFMModel(design=check_design(context)).factors(draws, 3.0)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    nu, ni = 12, 9
    u, i = np.meshgrid(np.arange(nu), np.arange(ni), indexing="ij")
    keep = rng.random(u.size) < 0.7
    u, i = u.ravel()[keep], i.ravel()[keep]
    P, Q = rng.normal(size=(nu, 2)), rng.normal(size=(ni, 2))
    y = np.clip(np.round(3 + np.sum(P[u] * Q[i], 1) + 0.3 * rng.normal(size=u.size)), 1, 5)
    train = Ratings.from_arrays(u, i, y, n_users=nu, n_items=ni)
    return train, bayesmf.BayesFM(rank=2, n_samples=15, n_warmup=5, chains=2, seed=3).fit(train)


@pytest.mark.slow
def test_predictive_moments_are_the_draws_moments(fitted):
    """predict_dist's mean and variance are the mean and variance over the stored draws of the
    dense FM (user + item one-hot), plus E[1/alpha]."""
    train, m = fitted
    nu, ni = train.n_users, train.n_items
    pairs_u, pairs_i = np.array([0, 3, 11, 5]), np.array([0, 8, 2, 5])
    X = np.zeros((4, nu + ni))
    X[np.arange(4), pairs_u] = 1
    X[np.arange(4), nu + pairs_i] = 1
    f = np.stack([_dense_f(X, w0, w.astype(np.float64), V.astype(np.float64)) for w0, w, V in
                  zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, nu + ni),
                      m.V_samples_.reshape(-1, nu + ni, 2))])
    dist = m.predict_dist(pairs_u, pairs_i)
    np.testing.assert_allclose(dist.mean, f.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist.std ** 2, f.var(0) + np.mean(1 / m.alpha_samples_.astype(np.float64)),
                               rtol=1e-3)
    assert m.w_samples_.shape == (2, 15, nu + ni) and m.lambda_v_samples_.shape == (2, 15, 2, 2)
    # ranking reads the same draws: user 0's scores are the predictive means of (0, every item)
    np.testing.assert_allclose(m.score_users([0])[0], m.predict_dist(np.zeros(ni, int), np.arange(ni)).mean,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_save_load_round_trip_and_registry(fitted, tmp_path):
    train, m = fitted
    assert bayesmf.BayesFM is type(m)
    m.save(tmp_path / "fm")
    back = bayesmf.load(tmp_path / "fm")
    assert type(back) is type(m) and back.get_params() == m.get_params()
    np.testing.assert_array_equal(back.predict(train.users, train.items), m.predict(train.users, train.items))
    np.testing.assert_array_equal(back.predict_dist([1, 2], [3, 4]).std, m.predict_dist([1, 2], [3, 4]).std)
    unknown = m.predict_dist([0, 50, 50], [0, 0, 40], unknown="fallback")
    assert unknown.std[1] > unknown.std[0] and unknown.std[2] > unknown.std[1]
    np.testing.assert_allclose(back.predict_dist([50, 50], [0, 40], unknown="fallback").mean, unknown.mean[1:])


@pytest.mark.slow
def test_unknown_users_and_items_draw_their_one_hot_terms_from_the_group_prior(fitted):
    """``unknown="fallback"``: a new user at a known item keeps the item's effective terms, its
    one-hot ``(w_u, v_u)`` drawn from the user group's prior per draw; a pair with both sides new
    draws both (mixture moments computed in NumPy from the stored draws)."""
    _, m = fitted
    K, G = m.rank, m.lambda_w_samples_.shape[-1]
    S = m.w0_samples_.size
    gu, gi = (int(g) for g in m.group_index_)
    mu_w, lam_w = (getattr(m, f"{s}_samples_").astype(np.float64).reshape(S, G) for s in ("mu_w", "lambda_w"))
    mu_v, lam_v = (getattr(m, f"{s}_samples_").astype(np.float64).reshape(S, G, K) for s in ("mu_v", "lambda_v"))
    V = m.item_samples_.astype(np.float64).reshape(S, -1, K)
    bV = m.b_V_samples_.astype(np.float64).reshape(S, -1)
    U = m.user_samples_.astype(np.float64).reshape(S, -1, K)
    bU = m.b_U_samples_.astype(np.float64).reshape(S, -1)
    w0 = m.w0_samples_.astype(np.float64).reshape(S)
    noise = np.mean(1 / m.alpha_samples_.astype(np.float64))

    def mixture(f, v):
        return f.mean(), f.var() + v.mean() + noise

    # new user at item 3 (bV holds w0 - global mean)
    x = V[:, 3]
    f1 = bV[:, 3] + mu_w[:, gu] + np.sum(mu_v[:, gu] * x, 1)
    v1 = np.sum(x * x / lam_v[:, gu], 1) + 1 / lam_w[:, gu]
    # user 2 at a new item
    y = U[:, 2]
    f2 = bU[:, 2] + w0 - m.global_mean_ + mu_w[:, gi] + np.sum(mu_v[:, gi] * y, 1)
    v2 = np.sum(y * y / lam_v[:, gi], 1) + 1 / lam_w[:, gi]
    # both new
    f3 = w0 - m.global_mean_ + mu_w[:, gu] + mu_w[:, gi] + np.sum(mu_v[:, gu] * mu_v[:, gi], 1)
    v3 = (np.sum(1 / (lam_v[:, gu] * lam_v[:, gi]) + mu_v[:, gu] ** 2 / lam_v[:, gi] + mu_v[:, gi] ** 2 / lam_v[:, gu],
                 1) + 1 / lam_w[:, gu] + 1 / lam_w[:, gi])
    expected = np.array([mixture(f, v) for f, v in ((f1, v1), (f2, v2), (f3, v3))])
    dist = m.predict_dist([50, 2, 50], [3, 40, 40], unknown="fallback")
    np.testing.assert_allclose(dist.mean, m.global_mean_ + expected[:, 0], rtol=1e-5)
    np.testing.assert_allclose(dist.std ** 2, expected[:, 1], rtol=1e-4)


@pytest.mark.slow
def test_fold_in_draws_new_users_from_their_conditional(fitted):
    """A new user folded in with training user u's ratings predicts like u (the conditional of
    one row given the rest, per posterior draw); one with two ratings is far less certain."""
    import copy

    import pandas as pd

    train, m = fitted
    u = int(np.argmax(train.user_counts))
    rows = train.users == u
    new = pd.DataFrame({"user": 10_001, "item": train.item_map.ids(train.items[rows]), "rating": train.values[rows]})
    model = copy.deepcopy(m)
    model.fold_in(new)
    model.fold_in(new.iloc[:2].assign(user=10_002))
    assert model.user_samples_.shape[:3] == (2, 15, train.n_users + 2)
    items = np.arange(train.n_items)
    trained = model.predict_dist(np.full(items.size, u), items)
    folded = model.predict_dist(np.full(items.size, train.n_users), items)
    few = model.predict_dist(np.full(items.size, train.n_users + 1), items)
    assert np.median(np.abs(folded.mean - trained.mean)) < 0.15
    assert np.median(np.abs(folded.std / trained.std - 1)) < 0.15
    assert np.median(few.std) > 1.1 * np.median(folded.std)


def _side_features():
    import pandas as pd

    from bayesmf.data import IdMap
    from bayesmf.data.features import Features
    from bayesmf.data.side import SideColumn, SideTable

    users = SideTable("users", IdMap.from_ordered([10, 20, 30, 40]),
                      {"job": SideColumn("categorical", np.array([0, 1, 0, 1], np.int32), ("a", "b"))})
    sets = SideTable.from_pandas(pd.DataFrame({"id": [100, 200, 300], "genres": ["x|y", "y", "z"]}), "id",
                                 multi=["genres"])
    return Features(user_side=users, item_side=sets, implicit=True, implicit_items=True)


@pytest.mark.slow
def test_side_and_implicit_features_predict_the_dense_fm():
    """With user/item side tables and both implicit blocks, predict_dist's mean is the mean
    over the stored draws of the naive FM on the dense design of the query pairs."""
    from bayesmf.data.design import design_matrix

    train = Ratings.from_ids([10, 10, 20, 30, 30, 20], [100, 200, 100, 300, 200, 300], [4.0, 3.0, 5.0, 2.0, 1.0, 3.0])
    features = _side_features()
    m = bayesmf.BayesFM(rank=2, features=features, n_samples=6, n_warmup=2, seed=1).fit(train)
    users, items = np.array([0, 1, 2, 2]), np.array([2, 0, 1, 2])
    X = design_matrix(features.fit(train).design(users, items))
    F = X.shape[1]
    f = np.stack([_dense_f(X, w0, w.astype(np.float64), V.astype(np.float64)) for w0, w, V in
                  zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, F), m.V_samples_.reshape(-1, F, 2))])
    np.testing.assert_allclose(m.predict_dist(users, items).mean, f.mean(0), rtol=1e-4, atol=1e-4)
    # the design path gives the same moments, and serves a user outside the training space
    # (cold start: side features only) against the dense formula too
    fitted = features.fit(train)
    direct = m.predict_design(fitted.design(users, items))
    np.testing.assert_allclose(direct.mean, f.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(direct.std ** 2, f.var(0) + np.mean(1 / m.alpha_samples_.astype(np.float64)),
                               rtol=1e-3)
    # user 40: no training ratings, a side row
    cold = fitted.design(np.array([3]), np.array([0]), user_map=train.user_map.extend([40]))
    Xc = design_matrix(cold)
    fc = [_dense_f(Xc, w0, w.astype(np.float64), V.astype(np.float64))[0] for w0, w, V in
          zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, F), m.V_samples_.reshape(-1, F, 2))]
    assert Xc[0, :3].sum() == 0 and Xc[0].sum() > 1  # no one-hot user, but side features
    np.testing.assert_allclose(m.predict_design(cold, new="empty").mean, [np.mean(fc)], rtol=1e-4, atol=1e-4)
    # new="prior": the user group's prior adds mu_w + <mu_v, q> per draw (q: the row's V' x)
    g = int(m.group_index_[0])
    q = np.einsum("f,sfk->sk", Xc[0], m.V_samples_.reshape(-1, F, 2).astype(np.float64))
    shift = m.mu_w_samples_.reshape(-1, m.mu_w_samples_.shape[-1])[:, g] + np.sum(
        m.mu_v_samples_.reshape(-1, m.mu_v_samples_.shape[-2], 2)[:, g] * q, axis=1)
    prior = m.predict_design(cold)
    np.testing.assert_allclose(prior.mean, [np.mean(np.asarray(fc) + shift)], rtol=1e-4, atol=1e-4)
    assert prior.std[0] > m.predict_design(cold, new="empty").std[0]
    with pytest.raises(ConfigError, match="new must be 'prior' or 'empty'"):
        m.predict_design(cold, new="zero")
    with pytest.raises(ConfigError, match="fold_in needs"):
        m.fold_in(Ratings.from_ids([99], [100], [3.0]))


@pytest.mark.slow
def test_time_features_predict_from_the_pairs_timestamps(tmp_path):
    """Features(time="day"): predict/predict_dist(timestamps=) are the draws' moments of the
    NumPy FM (fm_predict_numpy) on the pairs' design with their day bins (plus E[1/alpha]);
    another day changes the prediction; without timestamps, and for ranking and save, a
    ConfigError says why."""
    from bayesmf.data.design import fm_predict_numpy
    from bayesmf.data.features import Features

    rng = np.random.default_rng(5)
    users, items = (a.ravel() for a in np.meshgrid(np.arange(8), np.arange(6), indexing="ij"))
    day = rng.integers(0, 4, users.size)
    y = np.clip(np.round(3 + (day - 1.5) + 0.3 * rng.normal(size=users.size)), 1, 5)
    train = Ratings.from_arrays(users, items, y, n_users=8, n_items=6, timestamps=day * 86_400 + 500)
    m = bayesmf.BayesFM(rank=2, features=Features(time="day"), n_samples=10, n_warmup=10, seed=2).fit(train)
    u, i, ts = np.array([0, 3, 5, 5]), np.array([1, 4, 0, 0]), np.array([500, 86_900, 3 * 86_400, 500])
    design = m.fitted_features_.design(u, i, ts)
    F = m.w_samples_.shape[-1]
    assert design.n_features == F > 14  # one-hot users, items and day bins
    f = np.stack([fm_predict_numpy(design, float(w0), w.astype(np.float64), V.astype(np.float64)) for w0, w, V in
                  zip(m.w0_samples_.reshape(-1), m.w_samples_.reshape(-1, F), m.V_samples_.reshape(-1, F, 2))])
    dist = m.predict_dist(u, i, timestamps=ts)
    np.testing.assert_allclose(dist.mean, f.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist.std ** 2, f.var(0) + np.mean(1 / m.alpha_samples_.astype(np.float64)), rtol=1e-3)
    np.testing.assert_allclose(m.predict(u, i, clip=False, timestamps=ts), f.mean(0), rtol=1e-4, atol=1e-4)
    assert dist.mean[2] - dist.mean[3] > 1.0  # the same pair on a later day: the day bins' learnt trend
    from bayesmf.metrics.evaluate import pair_arguments

    assert m.needs_timestamps and not bayesmf.BayesFM().needs_timestamps
    np.testing.assert_array_equal(pair_arguments(m, train)["timestamps"], train.timestamps)
    with pytest.raises(ConfigError, match="timestamps="):
        m.predict(u, i)
    with pytest.raises(ConfigError, match="timestamps="):
        m.predict_dist(u, i)
    with pytest.raises(ConfigError, match="score_users/recommend is not defined.*time"):
        m.recommend(0, k=2)
    with pytest.raises(ConfigError, match="save is not defined"):
        m.save(tmp_path / "fm")


@pytest.mark.parametrize("kw, message", [
    ({"inference": {"name": "svi", "batch_size": 2}}, "SVI is full batch"),
    ({"features": "user"}, "features must be a Features"),
    ({"features": {"users": True}}, "unknown key"),
    ({"hyper_prior": (1.0, -1.0)}, "hyper_rate must be finite and > 0"),
    ({"rank": 0}, "rank"),
    ({"n_samples": 0}, "n_samples"),
])
def test_bad_settings_are_named(kw, message):
    train = Ratings.from_arrays([0, 1, 1], [0, 0, 1], [3.0, 4.0, 5.0])
    with pytest.raises(ConfigError, match=message):
        bayesmf.BayesFM(**kw).fit(train)


@pytest.mark.slow
def test_one_hot_fm_agrees_with_bpmf_with_biases():
    """With Features() the FM is BPMF with biases under another hyperprior (per-coordinate
    Normal-Gamma instead of Normal-Wishart). On a fully observed 40 x 30 rank-2 problem (30+
    ratings per row: the likelihood, not the hyperprior, decides the factors) the predictive
    means agree within Monte Carlo error and the predictive standard deviations within 5%."""
    rng = np.random.default_rng(5)
    nu, ni = 40, 30
    u, i = np.meshgrid(np.arange(nu), np.arange(ni), indexing="ij")
    u, i = u.ravel(), i.ravel()
    P, Q = rng.normal(size=(nu, 2)), rng.normal(size=(ni, 2))
    y = 3 + 0.3 * rng.normal(size=nu)[u] + np.sum(P[u] * Q[i], 1) + 0.5 * rng.normal(size=u.size)
    train = Ratings.from_arrays(u, i, y, n_users=nu, n_items=ni)
    common = dict(rank=2, n_samples=400, n_warmup=200, seed=0)
    fm = bayesmf.BayesFM(**common).fit(train)
    bp = bayesmf.BPMF(biases=True, init="random", **common).fit(train)
    test_u, test_i = rng.integers(0, nu, 200), rng.integers(0, ni, 200)
    a, b = fm.predict_dist(test_u, test_i), bp.predict_dist(test_u, test_i)
    epistemic = np.sqrt(b.std ** 2 - np.mean(1 / bp.alpha_samples_))
    # Monte Carlo error of a mean over 400 autocorrelated draws: a few percent of the
    # posterior spread; 0.5 of it is many standard errors
    assert np.mean(np.abs(a.mean - b.mean) / epistemic) < 0.5
    assert np.max(np.abs(a.mean - b.mean)) < 0.1
    np.testing.assert_allclose(np.mean(a.std), np.mean(b.std), rtol=0.05)
    np.testing.assert_allclose(np.mean(1 / fm.alpha_samples_), np.mean(1 / bp.alpha_samples_), rtol=0.05)
