"""EASE (Steck 2019) against its closed form computed in NumPy."""

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data import Ratings
from bayesmf.errors import ConfigError
from bayesmf.models.ease import EASE


def _tiny():
    """6 users x 5 items, binary interactions; values deliberately not all 1 (EASE ignores them)."""
    x = np.array([
        [1, 1, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [1, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [0, 1, 0, 1, 1],
    ], dtype=np.float64)
    u, i = np.nonzero(x)
    values = 1.0 + (u + i) % 3
    return x, Ratings.from_arrays(u, i, values, n_users=6, n_items=5)


def _numpy_ease(x, lam):
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_weights_scores_and_predict_match_numpy_closed_form():
    x, train = _tiny()
    model = EASE(regularization=2.0, dtype="float64").fit(train)
    b = _numpy_ease(x, 2.0)
    np.testing.assert_allclose(model.weights_, b, rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(model.weights_) == 0.0)
    np.testing.assert_allclose(model.score_users(np.arange(6)), (x @ b).astype(np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score_users([3, 0], items=[4, 1]), (x @ b)[[3, 0]][:, [4, 1]], rtol=1e-5)
    users, items = np.array([0, 5, 2, 1]), np.array([2, 0, 4, 3])
    np.testing.assert_allclose(model.predict(users, items), (x @ b)[users, items], rtol=1e-5, atol=1e-6)
    # a zero-diagonal B is not the unconstrained ridge solution (X^T X + lam I)^-1 X^T X
    ridge = np.linalg.solve(x.T @ x + 2.0 * np.eye(5), x.T @ x)
    assert np.abs(np.diag(ridge)).min() > 0.1


def test_float32_default_agrees_with_closed_form():
    x, train = _tiny()
    model = EASE(regularization=0.5).fit(train)
    assert model.weights_.dtype == np.float32
    np.testing.assert_allclose(model.weights_, _numpy_ease(x, 0.5), rtol=1e-4, atol=1e-5)


def test_recommend_excludes_seen_and_ranks_by_xB():
    x, train = _tiny()
    model = EASE(regularization=1.0).fit(train)
    scores = x @ _numpy_ease(x, 1.0)
    items, got = model.recommend_indices([0, 1], k=2)
    for row, u in enumerate([0, 1]):
        unseen = np.flatnonzero(x[u] == 0)
        assert set(items[row]) <= set(unseen)
        # the k best unseen scores (user 1 has an exact tie, so compare scores, not item order)
        np.testing.assert_allclose(got[row], np.sort(scores[u, unseen])[::-1][:2], rtol=1e-5)
        np.testing.assert_allclose(scores[u, items[row]], got[row], rtol=1e-5)


def test_fold_in_is_exact():
    x, train = _tiny()
    model = EASE(regularization=1.0).fit(train)
    b = _numpy_ease(x, 1.0)
    new = pd.DataFrame({"user": [100, 100, 101], "item": [0, 3, 2], "rating": [5.0, 1.0, 3.0]})
    model.fold_in(new)
    assert model.n_users_ == 8
    xn = np.zeros((2, 5))
    xn[0, [0, 3]] = 1
    xn[1, 2] = 1
    np.testing.assert_allclose(model.score_users([6, 7]), xn @ b, rtol=1e-4, atol=1e-5)
    rec = model.recommend([100], k=3)
    assert not set(rec["item"]) & {0, 3}


def test_save_load_round_trip(tmp_path):
    _, train = _tiny()
    model = EASE(regularization=3.0).fit(train)
    model.save(tmp_path / "ease")
    loaded = bayesmf.load(tmp_path / "ease")
    assert isinstance(loaded, EASE) and loaded.regularization == 3.0
    np.testing.assert_array_equal(loaded.weights_, model.weights_)
    np.testing.assert_array_equal(loaded.score_users(np.arange(6)), model.score_users(np.arange(6)))
    pd.testing.assert_frame_equal(loaded.recommend(k=2), model.recommend(k=2))


def test_similar_items_are_rows_of_B():
    x, train = _tiny()
    model = EASE(regularization=1.0).fit(train)
    b = _numpy_ease(x, 1.0)
    found, scores = model.similar_items_indices([0], k=2, metric="dot")
    gram = b @ b.T
    gram[0, 0] = -np.inf
    assert list(found[0]) == list(np.argsort(-gram[0], kind="stable")[:2])
    np.testing.assert_allclose(scores[0], np.sort(gram[0])[::-1][:2], rtol=1e-4)
    with pytest.raises(ConfigError, match="no user representation"):
        model.similar_users(k=2)
    with pytest.raises(ConfigError, match="no user or item factors"):
        model.export_factors("unused")


def test_catalogue_name():
    from bayesmf.experiments.catalogue import model_class

    assert model_class("EASE") is EASE
    assert bayesmf.EASE is EASE


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "big", True])
def test_bad_regularization(bad):
    _, train = _tiny()
    with pytest.raises(ConfigError, match="regularization must be a finite number > 0"):
        EASE(regularization=bad).fit(train)


def test_catalogue_too_large_names_size():
    _, train = _tiny()
    with pytest.raises(ConfigError, match=r"dense 5 x 5 .* exceeds max_items=4"):
        EASE(max_items=4).fit(train)
    with pytest.raises(ConfigError, match="max_items"):
        EASE(max_items=0).fit(train)


@pytest.mark.slow
def test_ml100k_weights_match_numpy_and_beat_popularity(data_dir):
    from bayesmf import datasets, splits
    from bayesmf.data import to_implicit
    from bayesmf.metrics import full_ranking
    from bayesmf.models.baseline import Popularity

    ratings, _ = to_implicit(datasets.load("movielens-100k", data_dir))
    train, test = splits.leave_one_out(ratings, seed=0, by="random")
    model = EASE(regularization=100.0).fit(train)
    x = np.zeros(train.shape)
    x[train.users, train.items] = 1.0
    b = _numpy_ease(x, 100.0)
    np.testing.assert_allclose(model.weights_, b, atol=2e-5)
    np.testing.assert_allclose(model.score_users(np.arange(50)), x[:50] @ b, atol=1e-4)
    ease = full_ranking(model, train, test, ks=(10,))["ndcg@10"]
    popularity = full_ranking(Popularity().fit(train), train, test, ks=(10,))["ndcg@10"]
    assert ease > popularity + 0.02
