"""Ranking protocols: validation carved from training, strong generalization (held-out users) and
its metrics, checked against NumPy references."""

import numpy as np
import pytest

from bayesmf.data import Ratings, candidate_sets, to_implicit
from bayesmf.data.splits import leave_one_out, strong_generalization, validation_split
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics.ranking import heldout_metrics, strong_generalization_ranking
from bayesmf.models.ease import EASE


def _random_implicit(n_users=40, n_items=25, density=0.3, seed=0, raw_offset=1000):
    rng = np.random.default_rng(seed)
    x = rng.random((n_users, n_items)) < density
    x[:, 0] |= rng.random(n_users) < 0.5  # a popular item
    u, i = np.nonzero(x)
    ratings = Ratings.from_ids(u + raw_offset, i + 7 * raw_offset, np.ones(u.size),
                               timestamps=rng.integers(1, 10**6, u.size))
    return ratings


def _liang_metrics(scores, heldout, k):
    """Liang et al.'s reference code (vae_cf notebook): NDCG_binary_at_k_batch, Recall_at_k_batch."""
    idx = np.argsort(-scores, axis=1)
    top = idx[:, :k]
    tp = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (heldout[np.arange(len(scores))[:, None], top] * tp).sum(axis=1)
    idcg = np.array([tp[:min(n, k)].sum() for n in heldout.sum(axis=1).astype(int)])
    hits = heldout[np.arange(len(scores))[:, None], top].sum(axis=1)
    return hits / np.minimum(k, heldout.sum(axis=1)), dcg / idcg


# -- validation carved from training ------------------------------------------------------------------
def test_validation_split_holds_out_latest_training_rating():
    ratings = _random_implicit()
    train, test = leave_one_out(ratings, seed=1)
    fit, val = validation_split(train, seed=2, skip_short=True)  # one user has a single training rating
    assert fit.nnz + val.nnz == train.nnz
    assert np.all(val.user_counts == (train.user_counts > 1))
    assert not train.contains(test.users, test.items).any()  # never from test
    for u in np.flatnonzero(val.user_counts):  # the latest training rating of each user
        rows = train.users == u
        assert val.timestamps[val.users == u][0] == train.timestamps[rows].max()


def test_validation_split_refuses_to_empty_a_user():
    ratings = Ratings.from_ids(["a", "a", "b", "c", "c"], [1, 2, 1, 2, 3], np.ones(5))
    with pytest.raises(DataError, match=r"user 'b' has a single training rating"):
        validation_split(ratings, by="random")
    fit, val = validation_split(ratings, by="random", skip_short=True)
    assert fit.user_counts[1] == 1 and val.user_counts[1] == 0


def test_too_few_negatives_names_the_user():
    ratings = Ratings.from_ids(["a", "a", "a", "b"], [1, 2, 3, 1], np.ones(4))
    train, test = leave_one_out(ratings, by="random")
    with pytest.raises(DataError, match="user index 0 has only 0 items available as negatives"):
        candidate_sets(train, test, n_negatives=1)


# -- strong generalization ----------------------------------------------------------------------------
def test_strong_generalization_partitions_users_and_ratings():
    ratings = _random_implicit(n_users=60)
    split = strong_generalization(ratings, 8, fold_in_fraction=0.8, seed=3, n_validation_users=5)
    train = split.train
    test_raw = split.fold_in.user_map.ids()
    val_raw = split.validation_fold_in.user_map.ids()
    assert len(test_raw) == 8 and len(val_raw) == 5
    assert not set(test_raw) & set(val_raw)
    assert not set(train.user_map.ids()) & (set(test_raw) | set(val_raw))
    assert train.n_users == 60 - 13
    total = train.nnz + sum(p.nnz for p in split[1:5]) + split.dropped
    assert total == ratings.nnz
    for fold, target in ((split.fold_in, split.target), (split.validation_fold_in, split.validation_target)):
        assert fold.item_map == train.item_map and target.same_index_space(fold)
        n_u = fold.user_counts + target.user_counts
        np.testing.assert_array_equal(fold.user_counts, np.clip(np.round(0.8 * n_u), 1, n_u - 1))
        assert not fold.contains(target.users, target.items).any()
        # every held-out pair is a pair of the input, in raw IDs
        raw_u, raw_i = fold.user_map.ids(target.users), fold.item_map.ids(target.items)
        assert ratings.contains(ratings.user_map.lookup(raw_u), ratings.item_map.lookup(raw_i)).all()


def test_strong_generalization_drops_items_unknown_to_training():
    users = ["a"] * 5 + ["b"] * 5 + ["c"] * 3
    items = [1, 2, 3, 4, 9, 1, 2, 3, 4, 5, 1, 2, 3]
    ratings = Ratings.from_ids(users, items, np.ones(len(users)))
    # with seed 0 the held-out user is whoever the permutation picks first among a, b
    split = strong_generalization(ratings, 1, seed=0, min_heldout_ratings=5)
    held = split.fold_in.user_map.ids()[0]
    assert split.dropped == 1  # item 9 (user a) or item 5 (user b) is rated by nobody else
    assert split.fold_in.nnz + split.target.nnz == 4
    assert held in ("a", "b")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_heldout_users": 0}, ConfigError, "n_heldout_users"),
    ({"n_heldout_users": 3, "fold_in_fraction": 1.0}, ConfigError, "fold_in_fraction"),
    ({"n_heldout_users": 60}, DataError, r"only \d+ users have >= 5 ratings"),
])
def test_strong_generalization_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        strong_generalization(_random_implicit(), **kwargs)


def test_heldout_metrics_match_liang_reference():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(30, 50))
    fold = rng.random((30, 50)) < 0.2
    heldout = (rng.random((30, 50)) < 0.25) & ~fold
    heldout[:, 0] |= ~heldout.any(axis=1) & ~fold[:, 0]
    masked = np.where(fold, -np.inf, scores)
    got = heldout_metrics(scores, heldout, ks=(5, 20), exclude=fold)
    for k in (5, 20):
        recall, ndcg = _liang_metrics(masked, heldout.astype(float), k)
        np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ndcg, rtol=1e-12)
    # normalised by min(k, |R_u|): a perfect ranking scores 1 even for users with more than k targets
    perfect = heldout_metrics(heldout.astype(float), heldout, ks=(5,), exclude=fold)
    assert (heldout.sum(axis=1) > 5).any()
    np.testing.assert_array_equal(perfect["recall@5"], 1.0)


def test_strong_generalization_ranking_with_ease_matches_numpy():
    ratings, _ = to_implicit(_random_implicit(n_users=80, n_items=30, density=0.35, seed=4))
    split = strong_generalization(ratings, 10, seed=1)
    lam = 5.0
    model = EASE(regularization=lam, dtype="float64").fit(split.train)
    report = strong_generalization_ranking(model, split.fold_in, split.target, ks=(3, 10))
    # NumPy: B from the training users, scores x_u B of the fold-in rows, fold-in items masked
    m = split.train.n_items
    x = np.zeros((split.train.n_users, m))
    x[split.train.users, split.train.items] = 1
    p = np.linalg.inv(x.T @ x + lam * np.eye(m))
    b = np.eye(m) - p / np.diag(p)
    np.fill_diagonal(b, 0)
    xf = np.zeros((10, m))
    xf[split.fold_in.users, split.fold_in.items] = 1
    heldout = np.zeros((10, m))
    heldout[split.target.users, split.target.items] = 1
    scores = np.where(xf > 0, -np.inf, xf @ b)
    for k in (3, 10):
        recall, ndcg = _liang_metrics(scores, heldout, k)
        assert report[f"recall@{k}"] == pytest.approx(recall.mean(), rel=1e-9)
        assert report[f"ndcg@{k}"] == pytest.approx(ndcg.mean(), rel=1e-9)
    assert report["n_users"] == 10 and model.n_users_ == split.train.n_users + 10


def test_strong_generalization_ranking_refuses_overlap():
    ratings, _ = to_implicit(_random_implicit())
    split = strong_generalization(ratings, 4, seed=0)
    model = EASE(regularization=1.0).fit(split.train)
    with pytest.raises(DataError, match="also in fold_in"):
        strong_generalization_ranking(model, split.fold_in, split.fold_in)


def test_strong_generalization_ranking_refuses_a_model_of_other_items():
    ratings, _ = to_implicit(_random_implicit())
    split = strong_generalization(ratings, 4, seed=0)
    other, _ = to_implicit(_random_implicit(raw_offset=5000))
    model = EASE(regularization=1.0).fit(other)
    assert model.n_items_ == split.train.n_items  # same catalogue size, other raw item IDs
    with pytest.raises(DataError, match="item IDs differ"):
        strong_generalization_ranking(model, split.fold_in, split.target)
