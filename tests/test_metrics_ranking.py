"""Full-catalogue ranking metrics: hand-computed examples, scikit-learn agreement, exclusion, batching."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_fakes import FixedScores, PosteriorScores

from bayesmf.data import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics import evaluate_ranking, ndcg_at_k, rank_relevant, ranking_metrics

LOG2_3, LOG2_4 = np.log2(3), np.log2(4)


def test_hand_computed_single_user():
    # items 0..5, scores in descending order of item 1, 3, 0, 4, 2, 5; relevant {3, 2}
    # ranks: item 3 -> 2, item 2 -> 5
    scores = np.array([[0.6, 0.9, 0.2, 0.8, 0.4, 0.1]])
    relevant = np.zeros((1, 6), bool)
    relevant[0, [3, 2]] = True
    np.testing.assert_array_equal(rank_relevant(scores, relevant), [[0, 0, 5, 2, 0, 0]])
    m = ranking_metrics(scores, relevant, ks=(1, 3, 5))
    assert m["hr@1"] == 0 and m["hr@3"] == 1
    assert m["precision@3"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(1 / 2)
    # NDCG@3 = (1/log2 3) / (1 + 1/log2 3);  NDCG@5 = (1/log2 3 + 1/log2 6) / (1 + 1/log2 3)
    assert m["ndcg@3"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    assert m["ndcg@5"] == pytest.approx((1 / LOG2_3 + 1 / np.log2(6)) / (1 + 1 / LOG2_3))
    # AP@5 = (1/2 + 2/5) / 2 = 0.45;  AP@3 = (1/2) / 2 = 0.25
    assert m["map@5"] == pytest.approx(0.45) and m["map@3"] == pytest.approx(0.25)
    assert m["mrr"] == pytest.approx(0.5)
    # AUC: 4 negatives; item 3 beats 3 of them, item 2 beats 1 -> (3 + 1) / 8
    assert m["auc"] == pytest.approx(0.5)


def test_fewer_relevant_than_k_and_skipped_users():
    # user 0: one relevant item ranked first -> precision@3 = 1/3 (cannot reach 1), recall, ndcg, map = 1
    # user 1: no relevant item -> skipped
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    relevant = np.array([[True, False, False], [False, False, False]])
    m = ranking_metrics(scores, relevant, ks=(3,))
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == m["ndcg@3"] == m["map@3"] == m["hr@3"] == 1.0
    assert m["n_users"] == 1 and m["n_users_skipped"] == 1


def test_ties_are_pessimistic():
    # all scores equal: the relevant item goes after both non-relevant ones -> rank 3, AUC 1/2
    scores = np.ones((1, 3))
    relevant = np.array([[False, True, False]])
    assert rank_relevant(scores, relevant)[0, 1] == 3
    m = ranking_metrics(scores, relevant, ks=(1,))
    assert m["hr@1"] == 0 and m["auc"] == 0.5 and m["mrr"] == pytest.approx(1 / 3)
    # two relevant items tied with each other and one negative: ranks 2 and 3
    r = rank_relevant(np.ones((1, 3)), np.array([[True, True, False]]))
    assert sorted(r[0, :2]) == [2, 3]


def test_exclusion_of_training_items_dense():
    # item 0 is a training item scored highest; excluded, the relevant item 1 ranks first
    scores = np.array([[5.0, 4.0, 1.0]])
    relevant = np.array([[False, True, False]])
    exclude = np.array([[True, False, False]])
    assert ndcg_at_k(scores, relevant, k=1, exclude=exclude) == 1.0
    assert ndcg_at_k(scores, relevant, k=1) == 0.0
    with pytest.raises(DataError, match="both relevant and excluded"):
        ranking_metrics(scores, relevant, exclude=relevant)


def test_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 60))  # continuous scores: no ties, so the definitions coincide
    relevant = rng.random((40, 60)) < 0.1
    keep = relevant.any(axis=1)
    m = ranking_metrics(scores, relevant, ks=(5, 60))
    for k in (5, 60):
        expected = sklearn_metrics.ndcg_score(relevant[keep].astype(float), scores[keep], k=k)
        assert m[f"ndcg@{k}"] == pytest.approx(expected, rel=1e-12)
    auc = np.mean([sklearn_metrics.roc_auc_score(relevant[u], scores[u]) for u in np.flatnonzero(keep)])
    assert m["auc"] == pytest.approx(auc, rel=1e-12)
    # tied scores: sklearn's AUC also counts ties 1/2
    tied = np.round(scores)
    auc_tied = np.mean([sklearn_metrics.roc_auc_score(relevant[u], tied[u]) for u in np.flatnonzero(keep)])
    assert ranking_metrics(tied, relevant)["auc"] == pytest.approx(auc_tied, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(1, 10), st.integers(0, 10_000))
def test_perfect_ranking_scores_one(n_items, k, seed):
    rng = np.random.default_rng(seed)
    relevant = rng.random((3, n_items)) < 0.4
    relevant[:, 0] = True
    scores = relevant + rng.random((3, n_items)) * 0.5  # every relevant item above every other
    m = ranking_metrics(scores, relevant, ks=(k,))
    assert m[f"ndcg@{k}"] == pytest.approx(1.0)
    assert m[f"map@{k}"] == pytest.approx(1.0)
    assert m["auc"] in (1.0,) or np.isnan(m["auc"])
    assert m["mrr"] == 1.0 and m[f"hr@{k}"] == 1.0


# --- model-based, batched -----------------------------------------------------------------------
def _toy(seed=0, n_users=30, n_items=25):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=300, replace=False)
    users, items = keys // n_items, keys % n_items
    values = rng.integers(1, 6, size=keys.size)
    r = Ratings.from_arrays(users, items, values, n_users=n_users, n_items=n_items, rating_scale=(1, 5))
    train, test = r.subset(np.arange(200)), r.subset(np.arange(200, 300))
    return train, test, rng.normal(size=(n_users, n_items))


def test_model_ranking_matches_dense_reference():
    train, test, scores = _toy()
    relevant = np.zeros(scores.shape, bool)
    keep = test.values >= 4
    relevant[test.users[keep], test.items[keep]] = True
    exclude = np.zeros(scores.shape, bool)
    exclude[train.users, train.items] = True
    dense = ranking_metrics(scores, relevant, ks=(3, 10), exclude=exclude)
    report = evaluate_ranking(FixedScores(scores), train, test, ks=(3, 10), threshold=4)
    for key in dense:
        if key != "n_users_skipped":
            assert report[key] == pytest.approx(dense[key], rel=1e-6), key
    # users whose test items are all below the threshold are skipped
    assert report["n_users_skipped"] == np.unique(test.users).size - np.unique(test.users[keep]).size


def test_training_items_excluded_by_default():
    train, test, _ = _toy(1)
    # a model that puts training items first, then test items, then the rest
    scores = np.zeros((train.n_users, train.n_items))
    scores[test.users, test.items] = 1.0
    scores[train.users, train.items] = 2.0
    model = FixedScores(scores)
    assert evaluate_ranking(model, train, test, ks=(5,))["ndcg@5"] == 1.0
    assert evaluate_ranking(model, train, test, ks=(5,), exclude_train=False)["ndcg@5"] < 0.5


def test_batching_gives_identical_results():
    train, test, scores = _toy(2)
    big, small = FixedScores(scores), FixedScores(scores)
    full = evaluate_ranking(big, train, test, ks=(1, 5, 10))
    tiny_budget = 3 * 25 * 20  # three users per batch (20 bytes per score cell)
    batched = evaluate_ranking(small, train, test, ks=(1, 5, 10), memory_budget=tiny_budget)
    assert max(small.calls) == 3 and len(big.calls) == 1
    assert batched == full


def test_bayesian_how_options():
    train, test, scores = _toy(3)
    post = PosteriorScores(scores)
    mean = evaluate_ranking(post, train, test, ks=(5,))
    # a constant shift (the fake's upper quantile) cannot change a ranking
    assert evaluate_ranking(post, train, test, ks=(5,), how="quantile")["ndcg@5"] == mean["ndcg@5"]
    ts1 = evaluate_ranking(post, train, test, ks=(5,), how="thompson", seed=1, memory_budget=500)
    ts2 = evaluate_ranking(post, train, test, ks=(5,), how="thompson", seed=1)
    assert ts1 == ts2 and ts1["ndcg@5"] != mean["ndcg@5"]
    with pytest.raises(ConfigError, match="only how='mean'"):
        evaluate_ranking(FixedScores(scores), train, test, how="thompson")
    with pytest.raises(ConfigError, match="how must be one of"):
        evaluate_ranking(post, train, test, how="ucb")


def test_bad_ranking_input():
    train, test, scores = _toy(4)
    model = FixedScores(scores)
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="k must be a positive integer, got " + repr(bad)):
            evaluate_ranking(model, train, test, ks=(bad,))
    with pytest.raises(DataError, match="also in train"):
        evaluate_ranking(model, train, train)
    with pytest.raises(DataError, match="relevance threshold"):
        evaluate_ranking(model, train, test, threshold=6)
    with pytest.raises(ConfigError, match="protocol"):
        evaluate_ranking(model, train, test, protocol="loo")
    nan_scores = scores.copy()
    nan_scores[0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        evaluate_ranking(FixedScores(nan_scores), train, test)
