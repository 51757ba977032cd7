"""Cold-start prediction of the Bayesian FM: the moments of a new user's / item's one-hot terms
under their group prior (bayesmf.posterior.fm_model.design_conditional) against a NumPy Monte
Carlo of the dense FM, and the cold-start benchmark (benchmarks/fm_cold_start.py) on a tiny
synthetic data set with side tables: its JSON fields, and cold users' intervals wider than warm
users' while their side features still beat the global mean."""

import json

import numpy as np
import pytest

from bayesmf.data import IdMap, Ratings
from bayesmf.data.design import Block, Design, check_design, design_matrix
from bayesmf.data.side import SideColumn, SideTable
from bayesmf.posterior.fm_model import NewRows, design_conditional, design_draws


def _dense_f(X, w0, w, V):
    """The naive second-order FM, rows of X (n, F)."""
    q = X @ V
    return w0 + X @ w + 0.5 * (np.sum(q * q, 1) - (X * X) @ np.sum(V * V, 1))


def _design():
    """Pairs (user, item) over 2 training users + 1 new, 2 training items + 1 new: one-hot
    blocks (empty rows for the new ones) and a user side block (2 levels) and an item side block."""
    users, items = np.array([0, 2, 1, 2]), np.array([2, 0, 1, 2])

    def block(name, owner, index, indptr, cols, vals):
        return Block(name, owner, index.astype(np.int32), np.asarray(indptr, np.int64), np.asarray(cols, np.int32),
                     np.asarray(vals, np.float32), len(indptr) - 1)

    blocks = (block("user", "user", users, [0, 1, 2, 2], [0, 1], [1, 1]),
              block("user_side", "user", users, [0, 1, 2, 3], [2, 3, 3], [1, 1, 1]),
              block("item", "item", items, [0, 1, 2, 2], [4, 5], [1, 1]),
              block("item_side", "item", items, [0, 2, 3, 4], [6, 7, 7, 6], [0.5, 0.5, 1, 1]))
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
    return check_design(Design(blocks, tuple(f"f{j}" for j in range(8)), groups, ("user", "job", "item", "genre")))


def test_new_one_hot_terms_match_a_monte_carlo_of_the_dense_fm():
    """Per draw, mean and variance of f when the new user's (w_u, v_u) and the new item's
    (w_i, v_i) are drawn from their groups' priors: design_conditional against 400k NumPy draws
    of the dense FM with those two columns appended (pairs with a new user, a new item, both,
    neither)."""
    rng = np.random.default_rng(0)
    d = _design()
    S, F, K = 2, 8, 3
    w0 = rng.normal(3, 0.1, S)
    w = rng.normal(size=(S, F)).astype(np.float32)
    V = rng.normal(size=(S, F, K)).astype(np.float32)
    mu_w = rng.normal(size=(S, 2))
    lam_w = rng.uniform(1, 4, (S, 2))
    mu_v = rng.normal(size=(S, 2, K))
    lam_v = rng.uniform(1, 4, (S, 2, K))
    users, items = d.blocks[0].index, d.blocks[2].index
    new = NewRows(users >= 2, items >= 2, mu_w, lam_w, mu_v, lam_v)
    mean, var = design_conditional(d, w0, w, V, new)
    assert mean.shape == var.shape == (S, 4)
    np.testing.assert_allclose(design_draws(d, w0, w, V), np.stack(
        [_dense_f(design_matrix(d), w0[s], w[s].astype(np.float64), V[s].astype(np.float64)) for s in range(S)]),
        rtol=1e-5, atol=1e-5)
    # the dense design with two more columns: the new user's and the new item's one-hot
    X = np.concatenate([design_matrix(d), new.user[:, None], new.item[:, None]], axis=1).astype(np.float64)
    M = 400_000
    for s in range(S):
        wu = rng.normal(mu_w[s, 0], 1 / np.sqrt(lam_w[s, 0]), M)
        wi = rng.normal(mu_w[s, 1], 1 / np.sqrt(lam_w[s, 1]), M)
        vu = rng.normal(mu_v[s, 0], 1 / np.sqrt(lam_v[s, 0]), (M, K))
        vi = rng.normal(mu_v[s, 1], 1 / np.sqrt(lam_v[s, 1]), (M, K))
        # f(X) for each Monte Carlo draw: the fixed part plus the new columns' terms, as the dense
        # formula gives them (w_new x + <v_new, q> x + x x' <v_u, v_i>)
        q = X[:, :F] @ V[s].astype(np.float64)
        base = _dense_f(X[:, :F], w0[s], w[s].astype(np.float64), V[s].astype(np.float64))
        a, c = X[:, F], X[:, F + 1]
        f = (base[None] + a * wu[:, None] + c * wi[:, None] + a * (vu @ q.T) + c * (vi @ q.T)
             + (a * c) * np.sum(vu * vi, axis=1)[:, None])
        np.testing.assert_allclose(mean[s], f.mean(0), atol=4 * f.std(0).max() / np.sqrt(M))
        np.testing.assert_allclose(var[s], f.var(0), rtol=0.02, atol=1e-9)
    assert np.all(var[:, 2] == 0)  # pair (1, 1): both in training, nothing new


def _synthetic(seed=0, n_users=150, n_items=40, per_user=16):
    """Ratings whose user effect is mostly the user's side level (three levels: -1, 0, +1) plus a
    small idiosyncratic part; side tables of users (``grp``) and items (``kind``)."""
    rng = np.random.default_rng(seed)
    grp = rng.integers(0, 3, n_users)
    kind = rng.integers(0, 2, n_items)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    P, Q = 0.4 * rng.normal(size=(n_users, 2)), 0.4 * rng.normal(size=(n_items, 2))
    y = (3.0 + (grp - 1.0)[users] + 0.3 * (kind - 0.5)[items] + 0.3 * rng.normal(size=n_users)[users]
         + np.sum(P[users] * Q[items], 1) + 0.5 * rng.normal(size=users.size))
    ratings = Ratings.from_ids(users + 1000, items + 5000, np.clip(y, 1, 5), rating_scale=(1.0, 5.0))
    user_side = SideTable("users", IdMap.from_ordered(np.arange(n_users) + 1000),
                          {"grp": SideColumn("categorical", grp.astype(np.int32), ("lo", "mid", "hi"))})
    item_side = SideTable("items", IdMap.from_ordered(np.arange(n_items) + 5000),
                          {"kind": SideColumn("categorical", kind.astype(np.int32), ("a", "b"))})
    return ratings, user_side, item_side


@pytest.mark.slow
def test_cold_start_benchmark_on_synthetic_side_tables(tmp_path):
    """The script's core function: every model's row has the cold and warm scores; the FM with
    user side features predicts cold users far better than the global mean (their side level
    carries most of the user effect); its cold intervals are wider than its warm ones, and with
    the user group's prior wider than with empty one-hot rows; its cold coverage is near 0.9."""
    from benchmarks.fm_cold_start import SCORES, cold_start_split, markdown, run

    ratings, user_side, item_side = _synthetic()
    split = cold_start_split(ratings, frac=0.2, seed=1, warm_frac=0.1)
    cold_ids = set(split["cold_users"].tolist())
    assert len(cold_ids) == 30 and not cold_ids & set(split["train"].user_map.ids().tolist())
    assert split["cold"].nnz == 30 * 16 and np.all(split["cold"].users >= split["train"].n_users)
    assert split["warm"].nnz == round(0.1 * 120 * 16) and np.all(split["warm"].users < split["train"].n_users)

    result = run(ratings, user_side, item_side, rank=2, n_samples=60, n_warmup=30, seed=1, frac=0.2,
                 models=("fm_side", "bpmf", "global_mean"))
    json.loads(json.dumps(result, default=float))
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["fm_side", "fm_side:empty", "bpmf", "global_mean"]
    for r in rows.values():
        assert set(r["cold"]) == set(r["warm"]) == set(SCORES) and r["cold"]["n"] == 480
    assert result["split"]["cold_users"] == 30 and result["split"]["train_users"] == 120
    fm, empty, mean = rows["fm_side"], rows["fm_side:empty"], rows["global_mean"]
    assert fm["cold"]["rmse"] < 0.85 * mean["cold"]["rmse"]
    assert fm["cold"]["width@0.9"] > 1.05 * fm["warm"]["width@0.9"]
    assert fm["cold"]["width@0.9"] > empty["cold"]["width@0.9"]
    assert 0.8 < fm["cold"]["coverage@0.9"] < 0.97
    # BPMF's fallback knows the item but nothing of the cold user beyond the users' prior
    assert rows["bpmf"]["cold"]["rmse"] > fm["cold"]["rmse"]
    assert "| fm_side |" in markdown(result)


def test_class_probabilities_take_a_spread_per_draw():
    """ordinal.class_probabilities with f_var (S, n): the average over draws of
    Phi((c_k - f_s)/sqrt(1 + v_s)) differences, in NumPy (scipy's ndtr)."""
    import jax.numpy as jnp
    from scipy.special import ndtr

    from bayesmf.posterior.ordinal import class_probabilities

    rng = np.random.default_rng(3)
    f = rng.normal(1.0, 1.0, (5, 7)).astype(np.float32)
    cuts = np.sort(rng.normal(1.0, 1.0, (5, 3)), axis=1).astype(np.float32)
    v = rng.uniform(0, 2, (5, 7)).astype(np.float32)
    z = (cuts[:, None, :] - f[:, :, None]) / np.sqrt(1.0 + v)[:, :, None]
    cdf = np.concatenate([np.zeros((5, 7, 1)), ndtr(z.astype(np.float64)), np.ones((5, 7, 1))], axis=2)
    expect = np.diff(cdf, axis=2).mean(axis=0)
    got = np.asarray(class_probabilities(jnp.asarray(f), jnp.asarray(cuts), jnp.asarray(v)))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    # a scalar spread is the same as that spread for every draw and pair
    np.testing.assert_allclose(np.asarray(class_probabilities(jnp.asarray(f), jnp.asarray(cuts), 0.5)),
                               np.asarray(class_probabilities(jnp.asarray(f), jnp.asarray(cuts),
                                                              jnp.full((5, 7), 0.5, jnp.float32))), rtol=1e-6)


@pytest.mark.slow
def test_ordinal_fm_cold_users_take_the_prior_spread_per_draw():
    """likelihood="ordinal": predict_design's category probabilities for cold users are, per
    draw, the ordered probit at design_conditional's mean with its variance added to the latent
    scale (NumPy), averaged over draws; the prior's spread flattens them against new="empty"."""
    from scipy.special import ndtr

    import bayesmf
    from benchmarks.fm_cold_start import cold_start_split, feature_spec

    ratings, user_side, item_side = _synthetic(n_users=60, per_user=10)
    ratings = ratings.with_values(np.round(ratings.values))
    split = cold_start_split(ratings, frac=0.2, seed=2, warm_frac=0.0)
    model = bayesmf.BayesFM(rank=2, features=feature_spec(user_side, item_side, True), likelihood="ordinal",
                            n_samples=20, n_warmup=10, seed=0).fit(split["train"])
    design = model.fitted_features_.design_of(split["cold"])
    got = model.predict_design(design)
    F, K = model.w_samples_.shape[-1], model.rank
    rows = model._new_rows(design)
    assert rows.user.all() and not rows.item.any()
    mean, var = design_conditional(design, model.w0_samples_.reshape(-1), model.w_samples_.reshape(-1, F),
                                   model.V_samples_.reshape(-1, F, K), rows)
    cuts = model.cutpoints_samples_.reshape(mean.shape[0], -1).astype(np.float64)
    z = (cuts[:, None, :] - mean[:, :, None]) / np.sqrt(1.0 + var)[:, :, None]
    n = mean.shape[1]
    cdf = np.concatenate([np.zeros((mean.shape[0], n, 1)), ndtr(z), np.ones((mean.shape[0], n, 1))], axis=2)
    np.testing.assert_allclose(got.probabilities, np.diff(cdf, axis=2).mean(axis=0), rtol=1e-4, atol=1e-5)
    empty = model.predict_design(design, new="empty")
    assert np.mean(got.probabilities.max(axis=1)) < np.mean(empty.probabilities.max(axis=1))
