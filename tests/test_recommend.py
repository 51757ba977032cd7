"""The recommendation layer (issue 7): top-k with rules, similar items/users, fold-in, save/load,
export. Models here are tiny FactorModel subclasses (exact numpy ALS, hand-set posterior samples)
so the tests depend on no engine."""

import json

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.models import persist
from bayesmf.models.base import FactorModel


def ridge(features, targets, lam):
    """argmin_x |targets - features x|^2 + lam |x|^2, by the normal equations."""
    d = features.shape[1]
    return np.linalg.solve(features.T @ features + lam * np.eye(d), features.T @ targets)


class TinyALS(FactorModel):
    """Biased ALS by exact per-row ridge solves in numpy (test-sized data only), ending with the
    user step, so each user's factors are exactly the ridge solution given the item side."""

    def __init__(self, rank: int = 3, regularization: float = 0.5, n_iter: int = 6, seed: int = 0):
        self.rank, self.regularization, self.n_iter, self.seed = rank, regularization, n_iter, seed

    def _fit(self, train):
        rng = np.random.default_rng(self.seed)
        mu = float(train.values.mean())
        users = rng.normal(0, 0.3, (train.n_users, self.rank + 1))  # [p_u, b_u]
        items = rng.normal(0, 0.3, (train.n_items, self.rank + 1))  # [q_i, c_i]
        u_rows, i_rows = train.by_user, train.by_item
        for _ in range(self.n_iter):
            for i in range(train.n_items):
                sel = i_rows.order[i_rows.indptr[i]:i_rows.indptr[i + 1]]
                feats = np.c_[users[train.users[sel], :-1], np.ones(sel.size)]
                items[i] = ridge(feats, train.values[sel] - mu - users[train.users[sel], -1], self.regularization)
            for u in range(train.n_users):
                sel = u_rows.order[u_rows.indptr[u]:u_rows.indptr[u + 1]]
                feats = np.c_[items[train.items[sel], :-1], np.ones(sel.size)]
                users[u] = ridge(feats, train.values[sel] - mu - items[train.items[sel], -1], self.regularization)
        self.global_mean_ = mu
        self.user_factors_, self.user_bias_ = users[:, :-1].astype(np.float32), users[:, -1].astype(np.float32)
        self.item_factors_, self.item_bias_ = items[:, :-1].astype(np.float32), items[:, -1].astype(np.float32)
        self.history_["n_iter"] = [float(self.n_iter)]


class Popular(FactorModel):
    """No factors, no biases: scores are the popularity counts (a custom score_users)."""

    def __init__(self):
        pass

    def _fit(self, train):
        self.global_mean_ = float(train.values.mean())
        self.user_bias_ = self.item_bias_ = self.user_factors_ = self.item_factors_ = None

    def score_users(self, user_indices, items=None):
        counts = self.item_counts_.astype(np.float32) if items is None else self.item_counts_[items].astype(np.float32)
        return np.broadcast_to(counts, (len(user_indices), counts.size)).copy()


class FakeBayes(FactorModel):
    """A 'Bayesian' model with hand-set posterior samples (S, n, r); scores as BPMF provides them."""

    is_bayesian = True
    _state_arrays = FactorModel._state_arrays + ("user_samples_", "item_samples_")

    def __init__(self, rank: int = 2, n_samples: int = 4):
        self.rank, self.n_samples = rank, n_samples

    def _fit(self, train):
        rng = np.random.default_rng(3)
        self.global_mean_ = 0.0
        self.user_bias_ = self.item_bias_ = None
        self.user_samples_ = rng.normal(size=(self.n_samples, train.n_users, self.rank)).astype(np.float32)
        self.item_samples_ = rng.normal(size=(self.n_samples, train.n_items, self.rank)).astype(np.float32)
        self.user_factors_ = self.user_samples_.mean(0)
        self.item_factors_ = self.item_samples_.mean(0)

    def _draws(self, users, items):
        cols = slice(None) if items is None else np.asarray(items)
        return np.einsum("sur,sir->sui", self.user_samples_[:, users], self.item_samples_[:, cols])

    def score_users(self, user_indices, items=None, how="mean", q=0.9, seed=0):
        draws = self._draws(np.asarray(user_indices), items)
        if how == "mean":
            return draws.mean(0)
        if how == "quantile":
            return np.quantile(draws, q, axis=0).astype(np.float32)
        pick = np.random.default_rng(seed).integers(0, draws.shape[0], draws.shape[1])
        return draws[pick, np.arange(draws.shape[1])]

    def score_std_users(self, user_indices, items=None):
        return self._draws(np.asarray(user_indices), items).std(0)


@pytest.fixture(scope="module")
def data(small):
    return small.ratings


@pytest.fixture(scope="module")
def als(data):
    return TinyALS().fit(data)


def brute_force(model, users, k, exclude_seen=True, keep=None, weights=None, scores=None):
    """Dense numpy ranking of ``scores`` (default: the model's): stable argsort of -score (ties ->
    lower index) after removing filtered and seen items."""
    scores = (model.score_users(users) if scores is None else scores).astype(np.float64)
    if weights is not None:
        scores = scores * weights
    banned = np.zeros(scores.shape, bool)
    if keep is not None:
        banned[:, ~keep] = True
    if exclude_seen:
        for row, u in enumerate(users):
            banned[row, model.seen_items(u)] = True
    scores[banned] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1), np.take_along_axis(banned, order, 1)


# -- top-k -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_top_k_equals_brute_force_argsort(als, data, exclude_seen):
    users = np.arange(data.n_users)
    items, scores = als.recommend_indices(users, 7, exclude_seen=exclude_seen)
    want, want_scores, _ = brute_force(als, users, 7, exclude_seen)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert items.shape == (data.n_users, 7) and items.dtype == np.int64


def test_seen_items_never_recommended_and_no_duplicates(als, data):
    items, _ = als.recommend_indices(np.arange(data.n_users), 20)
    for u in range(data.n_users):
        assert not np.isin(items[u], als.seen_items(u)).any()
        assert np.unique(items[u]).size == 20


def test_batches_do_not_change_results(als, data):
    users = np.array([5, 0, 199, 5, 17, 3, 88])  # unsorted, with a repeat
    ref = als.recommend_indices(users, 5)
    for batch_size in (1, 3, 4, 1000):
        got = als.recommend_indices(users, 5, batch_size=batch_size)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)  # gemm blocking differs with the shape
    np.testing.assert_array_equal(ref[0][0], ref[0][3])


def test_filter_weights_candidates_match_brute_force(als, data):
    rng = np.random.default_rng(0)
    keep = rng.random(data.n_items) < 0.6
    weights = rng.uniform(0.5, 2.0, data.n_items).astype(np.float32)
    users = np.arange(0, data.n_users, 3)
    items, scores = als.recommend_indices(users, 6, filter=keep, weights=weights)
    want, want_scores, _ = brute_force(als, users, 6, keep=keep, weights=weights)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    # candidates = the kept items: same ranking without the filter
    cand = rng.permutation(np.flatnonzero(keep))
    got, _ = als.recommend_indices(users, 6, candidates=cand, weights=weights)
    np.testing.assert_array_equal(got, want)


def test_fewer_than_k_available_pads_index_api_and_shortens_frame(als, data):
    u = int(np.argmax(als.user_counts_))
    n_unseen = data.n_items - int(als.user_counts_[u])
    k = n_unseen + 3
    items, scores = als.recommend_indices([u], k)
    assert (items[0, :n_unseen] >= 0).all() and np.isfinite(scores[0, :n_unseen]).all()
    assert (items[0, n_unseen:] == -1).all() and np.isnan(scores[0, n_unseen:]).all()
    frame = als.recommend([als.user_map_.ids([u])[0]], k)
    assert len(frame) == n_unseen and list(frame["rank"]) == list(range(1, n_unseen + 1))
    # a candidate set smaller than k
    items, _ = als.recommend_indices([0], 5, candidates=[3, 1], exclude_seen=False)
    assert sorted(items[0, :2]) == [1, 3] and (items[0, 2:] == -1).all()


def test_ties_break_towards_lower_index(data):
    pop = Popular().fit(data)
    users = np.arange(10)
    items, scores = pop.recommend_indices(users, 15, exclude_seen=False)
    want = np.argsort(-pop.item_counts_, kind="stable")[:15]
    assert (items == want).all()
    np.testing.assert_array_equal(scores[0], pop.item_counts_[want])


def test_raw_id_round_trip_with_string_ids():
    rng = np.random.default_rng(2)
    pairs = rng.permutation(30 * 20)[:250]
    users = np.array([f"u{p // 20:02d}" for p in pairs])
    items = np.array([f"item-{p % 20}" for p in pairs])
    train = Ratings.from_ids(users, items, rng.integers(1, 6, pairs.size).astype(np.float32), rating_scale=(1, 5))
    model = TinyALS(rank=2).fit(train)
    query = ["u07", "u03", "u07"]
    frame = model.recommend(query, 4)
    idx, scores = model.recommend_indices(model.user_map_.lookup(query), 4)
    assert list(frame.columns) == ["user", "item", "score", "rank"]
    valid = idx >= 0
    np.testing.assert_array_equal(frame["user"], np.repeat(query, valid.sum(1)))
    np.testing.assert_array_equal(frame["item"], model.item_map_.ids(idx[valid]))
    np.testing.assert_allclose(frame["score"], scores[valid])
    seen = set(zip(users, items, strict=True))
    assert not any((u, i) in seen for u, i in zip(frame["user"], frame["item"], strict=True))


def test_unknown_user_error_or_cold_start(als):
    with pytest.raises(DataError, match="unknown user ID 12345"):
        als.recommend([0, 12345], 3)
    frame = als.recommend([12345, 0], 4, unknown="fallback")
    cold = frame[frame["user"] == 12345]
    want = np.argsort(-(als.global_mean_ + als.item_bias_), kind="stable")[:4]
    np.testing.assert_array_equal(cold["item"], als.item_map_.ids(want))
    np.testing.assert_allclose(cold["score"], (als.global_mean_ + als.item_bias_)[want], rtol=1e-6)
    np.testing.assert_array_equal(frame[frame["user"] == 0]["item"], als.recommend([0], 4)["item"])


def test_series_rules_by_raw_id(als):
    ids = als.item_map_.ids()
    base = als.recommend([1], 3)
    top = base["item"].iloc[0]
    dropped = als.recommend([1], 3, filter=pd.Series([False], index=[top]))
    assert top not in set(dropped["item"]) and list(dropped["item"][:2]) == list(base["item"][1:])
    boosted = als.recommend([1], 1, weights=pd.Series([1e4], index=[ids[-1]]), exclude_seen=False)
    assert boosted["item"].iloc[0] == ids[-1]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ConfigError, "k must be a positive integer"),
        ({"k": 10_000}, ConfigError, "larger than the catalogue"),
        ({"k": 2.5}, ConfigError, "positive integer"),
        ({"weights": np.full(120, np.nan)}, DataError, "weight nan of item 0"),
        ({"weights": -np.ones(120)}, DataError, "not finite and >= 0"),
        ({"weights": np.ones(3)}, DataError, "one entry per catalogue item"),
        ({"filter": np.ones(120)}, DataError, "filter must be boolean"),
        ({"candidates": [1, 999]}, DataError, "unknown item ID 999"),
        ({"candidates": [1, 1]}, DataError, "candidate item 1 is listed more than once"),
        ({"candidates": []}, DataError, "candidates is empty"),
        ({"how": "quantile"}, ConfigError, "needs a Bayesian model"),
        ({"how": "best"}, ConfigError, "how must be one of"),
        ({"unknown": "ignore"}, ConfigError, "unknown must be"),
        ({"batch_size": 0}, ConfigError, "batch_size"),
    ],
)
def test_bad_recommend_input(als, kwargs, error, match):
    with pytest.raises(error, match=match):
        als.recommend([0], **{"k": 3, **kwargs})


def test_bad_index_input_and_nan_scores(als, data):
    with pytest.raises(DataError, match="user_indices: index 200 is out of range"):
        als.recommend_indices([0, 200], 3)
    with pytest.raises(DataError, match="user_indices must be integer indices"):
        als.recommend_indices([0.5], 3)
    with pytest.raises(ConfigError, match="not fitted"):
        TinyALS().recommend([0], 3)
    broken = TinyALS().fit(data)
    broken.user_factors_ = broken.user_factors_.copy()
    broken.user_factors_[4, 0] = np.nan
    with pytest.raises(DataError, match="row index 4 contain NaN"):
        broken.recommend_indices([1, 4], 3)


# -- Bayesian scoring ----------------------------------------------------------------------------
def test_bayesian_how_and_std(data):
    model = FakeBayes().fit(data)
    users = np.arange(12)
    for how in ("mean", "quantile", "thompson"):
        items, scores, std = model.recommend_indices(users, 4, how=how, q=0.8, seed=5, return_std=True)
        dense = model.score_users(users, how=how, q=0.8, seed=5)
        want, want_scores, _ = brute_force(model, users, 4, scores=dense)
        np.testing.assert_array_equal(items, want)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
        np.testing.assert_allclose(std, np.take_along_axis(model.score_std_users(users), items, 1), rtol=1e-5)
    frame = model.recommend([0, 1], 3, how="quantile")
    assert list(frame.columns) == ["user", "item", "score", "rank", "std"] and (frame["std"] > 0).all()
    with pytest.raises(ConfigError, match="q must be"):
        model.recommend([0], 3, how="quantile", q=1.5)


# -- similar items / users -----------------------------------------------------------------------
def cosine_matrix(x):
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_similar_items_brute_force(als, metric):
    q = als.item_factors_.astype(np.float64)
    sims = cosine_matrix(q) if metric == "cosine" else q @ q.T
    np.fill_diagonal(sims, -np.inf)
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    items, scores = als.similar_items_indices(np.arange(als.n_items_), 5, metric=metric)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, want, 1), rtol=1e-4, atol=1e-5)
    assert not (items == np.arange(als.n_items_)[:, None]).any()


def test_similar_users_frame_and_bayesian_average(data):
    model = FakeBayes().fit(data)
    per_sample = np.mean([cosine_matrix(s.astype(np.float64)) for s in model.user_samples_], axis=0)
    np.fill_diagonal(per_sample, -np.inf)
    users = np.arange(0, 200, 9)
    idx, scores = model.similar_users_indices(users, 3)
    np.testing.assert_array_equal(idx, np.argsort(-per_sample[users], axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.take_along_axis(per_sample[users], idx, 1), rtol=1e-4, atol=1e-5)
    model.user_samples_ = model.user_samples_.reshape(2, 2, *model.user_samples_.shape[1:])  # (chains, draws, ..)
    np.testing.assert_array_equal(model.similar_users_indices(users, 3)[0], idx)
    frame = model.similar_users([users[0]], 3)
    assert list(frame.columns) == ["user", "similar_user", "score", "rank"]
    np.testing.assert_array_equal(frame["similar_user"], model.user_map_.ids(idx[0]))
    with pytest.raises(ConfigError, match="larger than the number of other rows"):
        model.similar_items([0], model.n_items_)
    with pytest.raises(ConfigError, match="no item factors"):
        Popular().fit(data).similar_items([0], 2)


# -- fold-in -------------------------------------------------------------------------------------
def test_fold_in_equals_closed_form_ridge(data):
    model = TinyALS().fit(data)
    items = np.array([3, 10, 11, 50, 77, 90])
    values = np.array([4.0, 1.5, 3.0, 5.0, 2.0, 3.5], np.float32)
    model.fold_in(pd.DataFrame({"user": 5000, "item": items, "rating": values}))
    feats = np.c_[model.item_factors_[items], np.ones(items.size)].astype(np.float64)
    want = ridge(feats, values - model.global_mean_ - model.item_bias_[items], model.regularization)
    new = model.user_map_.lookup([5000])[0]
    assert new == data.n_users and model.n_users_ == data.n_users + 1
    np.testing.assert_allclose(model.user_factors_[new], want[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_bias_[new], want[-1], rtol=1e-4, atol=1e-5)
    # the new user is usable: predictions and recommendations without the rated items
    np.testing.assert_allclose(
        model.predict([new], [0], clip=False),
        model.global_mean_ + want[-1] + model.item_bias_[0] + model.item_factors_[0] @ want[:-1], rtol=1e-4)
    recs = model.recommend([5000], 10)
    assert not set(recs["item"]) & set(items) and len(recs) == 10


def test_fold_in_of_training_users_reproduces_their_factors(als, data):
    model = TinyALS().fit(data)
    frame = data.to_pandas()
    chosen = frame[frame["user"].isin([0, 7, 42])].copy()
    chosen["user"] += 100_000  # same ratings, as brand-new users
    model.fold_in(chosen)
    new = model.user_map_.lookup([100_000, 100_007, 100_042])
    np.testing.assert_allclose(model.user_factors_[new], als.user_factors_[[0, 7, 42]], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.user_bias_[new], als.user_bias_[[0, 7, 42]], rtol=1e-3, atol=1e-4)
    for u_new, u_old in zip(new, [0, 7, 42], strict=True):
        np.testing.assert_array_equal(np.sort(model.seen_items(u_new)), np.sort(als.seen_items(u_old)))


def test_fold_in_accepts_ratings_and_extends_map_incrementally(data):
    model = TinyALS().fit(data)
    before = model.user_map_.ids().copy()
    new = Ratings.from_ids([900, 901, 900], [1, 2, 3], [4.0, 2.0, 5.0])
    model.fold_in(new)
    np.testing.assert_array_equal(model.user_map_.ids()[: before.size], before)
    np.testing.assert_array_equal(model.user_map_.ids()[before.size:], [900, 901])
    np.testing.assert_array_equal(np.sort(model.seen_items(before.size)), [1, 3])


@pytest.mark.parametrize(
    "frame, match",
    [
        (pd.DataFrame({"user": [3], "item": [1], "rating": [4.0]}), "user ID 3 is already in the model"),
        (pd.DataFrame({"user": [999], "item": [12345], "rating": [4.0]}), "unknown item ID 12345"),
        (pd.DataFrame({"user": [999], "item": [1], "rating": [np.nan]}), "not finite"),
        (pd.DataFrame({"user": [999, 999], "item": [1, 1], "rating": [4.0, 3.0]}), "duplicate|twice|repeat"),
        (pd.DataFrame({"user": [999], "item": [1]}), r"column\(s\) \['rating'\]"),
        (pd.DataFrame({"user": [999], "item": [1], "rating": ["good"]}), "must be numeric"),
    ],
)
def test_bad_fold_in_input(data, frame, match):
    model = TinyALS(n_iter=1).fit(data)
    with pytest.raises(DataError, match=match):
        model.fold_in(frame)
    assert model.n_users_ == data.n_users  # nothing half-added


def test_fold_in_without_penalty_is_minimum_norm_least_squares(data):
    model = TinyALS(regularization=0.0, n_iter=1).fit(data)
    items = np.array([4, 8])  # 2 ratings, 4 unknowns: underdetermined
    values = np.array([5.0, 1.0], np.float32)
    model.fold_in(pd.DataFrame({"user": -1, "item": items, "rating": values}))
    feats = np.c_[model.item_factors_[items], np.ones(2)].astype(np.float64)
    want = np.linalg.pinv(feats) @ (values - model.global_mean_ - model.item_bias_[items])
    got = np.r_[model.user_factors_[-1], model.user_bias_[-1]]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_fold_in_uses_bias_regularization_and_refuses_nonlinear_models(data):
    model = TinyALS(n_iter=1).fit(data)
    model.bias_regularization = 7.0
    items, values = np.array([1, 2, 3]), np.array([5.0, 4.0, 1.0], np.float32)
    model.fold_in(pd.DataFrame({"user": 4242, "item": items, "rating": values}))
    feats = np.c_[model.item_factors_[items], np.ones(3)].astype(np.float64)
    penalty = np.diag([model.regularization] * 3 + [7.0])
    y = values - model.global_mean_ - model.item_bias_[items]
    want = np.linalg.solve(feats.T @ feats + penalty, feats.T @ y)
    np.testing.assert_allclose(np.r_[model.user_factors_[-1], model.user_bias_[-1]], want, rtol=1e-4, atol=1e-5)
    for other in (FakeBayes().fit(data),):
        with pytest.raises(ConfigError, match="must implement _fold_in_solve"):
            other.fold_in(pd.DataFrame({"user": [999], "item": [1], "rating": [4.0]}))
    pop = Popular().fit(data)  # no per-user parameters: fold-in only registers what was seen
    pop.fold_in(pd.DataFrame({"user": [999], "item": [int(np.argmax(pop.item_counts_))], "rating": [4.0]}))
    assert int(np.argmax(pop.item_counts_)) not in pop.recommend_indices([data.n_users], 5)[0]


# -- save / load / export ------------------------------------------------------------------------
def test_save_load_round_trip_identical(tmp_path, data):
    model = TinyALS(n_iter=2).fit(data)
    model.fold_in(pd.DataFrame({"user": [777, 777], "item": [5, 6], "rating": [5.0, 1.0]}))
    path = model.save(tmp_path / "model")
    loaded = bayesmf.load(path)
    assert type(loaded) is TinyALS and loaded.get_params() == model.get_params()
    users = np.arange(loaded.n_users_)
    for a, b in zip(model.recommend_indices(users, 8), loaded.recommend_indices(users, 8), strict=True):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(model.recommend([777, 0], 5), loaded.recommend([777, 0], 5))
    np.testing.assert_array_equal(model.predict(users, users % 120), loaded.predict(users, users % 120))
    pd.testing.assert_frame_equal(model.similar_items([0, 1], 3), loaded.similar_items([0, 1], 3))
    assert loaded.history_ == {"n_iter": [2.0]}


def test_save_load_bayesian_samples(tmp_path, data):
    model = FakeBayes().fit(data)
    loaded = bayesmf.load(model.save(tmp_path / "bayes"))
    np.testing.assert_array_equal(loaded.user_samples_, model.user_samples_)
    pd.testing.assert_frame_equal(model.recommend([3], 4, how="thompson", seed=2),
                                  loaded.recommend([3], 4, how="thompson", seed=2))


def test_load_rejects_other_version_and_corruption(tmp_path, data):
    model = TinyALS(n_iter=1).fit(data)
    path = model.save(tmp_path / "m")
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="format version 99.*reads versions 2 and 3"):
        bayesmf.load(path)
    (path / "meta.json").write_text(json.dumps(meta)[:-20])
    with pytest.raises(DataError, match="not valid JSON"):
        bayesmf.load(path)
    (path / "meta.json").write_text(json.dumps(meta))
    blob = (path / meta["arrays_file"]).read_bytes()
    (path / meta["arrays_file"]).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupted or truncated"):
        bayesmf.load(path)
    with pytest.raises(DataError, match="meta.json missing"):
        bayesmf.load(tmp_path / "nothing-here")


def test_failed_save_leaves_nothing_and_never_clobbers(tmp_path, data, monkeypatch):
    model = TinyALS(n_iter=1).fit(data)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persist.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(DataError, match="refusing to overwrite"):
        model.save(precious)
    assert (precious / "cat.jpg").read_bytes() == b"meow"
    model.save(tmp_path / "m")
    model.save(tmp_path / "m")  # replacing an earlier save is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "photos"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_factors_reconstructs_predictions(tmp_path, als, fmt):
    path = als.export_factors(tmp_path / "export", format=fmt)
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    users, items = read(path / f"users.{fmt}"), read(path / f"items.{fmt}")
    info = json.loads((path / "factors.json").read_text())
    f_cols = [f"f{j}" for j in range(info["rank"])]
    assert info["rank"] == 3 and list(users.columns) == ["user", "bias", *f_cols]
    u, i = users.iloc[[0, 5, 9]], items.iloc[[2, 2, 40]]
    pred = info["global_mean"] + u["bias"].to_numpy() + i["bias"].to_numpy() + np.einsum(
        "nk,nk->n", u[f_cols].to_numpy(), i[f_cols].to_numpy())
    uidx, iidx = als.user_map_.lookup(u["user"]), als.item_map_.lookup(i["item"])
    np.testing.assert_allclose(pred, als.predict(uidx, iidx, clip=False), rtol=1e-5)
    with pytest.raises(ConfigError, match="format must be"):
        als.export_factors(tmp_path / "x", format="xlsx")


@pytest.mark.realdata
def test_movielens_100k_recommendations_exclude_training_pairs(data_dir):
    from bayesmf import splits

    train, _ = splits.predefined("movielens-100k", "u1", data_dir=data_dir)
    model = RandomFactorsForTest().fit(train)
    frame = model.recommend(None, 10)
    assert len(frame) == 10 * train.n_users
    pairs = train.to_pandas()
    assert not set(zip(pairs["user"], pairs["item"], strict=True)) & set(zip(frame["user"], frame["item"], strict=True))
    np.testing.assert_array_equal(frame.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing), True)


class RandomFactorsForTest(FactorModel):
    def __init__(self):
        pass

    def _fit(self, train):
        rng = np.random.default_rng(0)
        self.global_mean_ = 3.5
        self.user_bias_ = rng.normal(size=train.n_users).astype(np.float32)
        self.item_bias_ = rng.normal(size=train.n_items).astype(np.float32)
        self.user_factors_ = rng.normal(size=(train.n_users, 8)).astype(np.float32)
        self.item_factors_ = rng.normal(size=(train.n_items, 8)).astype(np.float32)
