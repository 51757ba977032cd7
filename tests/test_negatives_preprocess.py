import numpy as np
import pytest

from bayesmf import DataError, Ratings, kcore, sample_negatives, splits, summary, to_implicit
from bayesmf.data import candidate_sets, synthetic


def test_negatives_exclude_positives_and_are_distinct(small):
    r = small.ratings
    for dist in ("uniform", "popularity"):
        neg = sample_negatives(r, 30, seed=1, distribution=dist)
        assert neg.shape == (r.n_users, 30) and neg.dtype == np.int32
        assert not r.contains(np.repeat(np.arange(r.n_users), 30), neg.ravel()).any()
        assert np.all(np.diff(np.sort(neg, axis=1), axis=1) > 0)
    np.testing.assert_array_equal(sample_negatives(r, 5, seed=3), sample_negatives(r, 5, seed=3))
    assert not np.array_equal(sample_negatives(r, 5, seed=3), sample_negatives(r, 5, seed=4))


def test_uniform_negatives_are_uniform_over_non_positives():
    # user 0 rated items 0..3 of 10; the 6 others must each appear ~1/6 of the time
    r = Ratings.from_arrays([0, 0, 0, 0, 1], [0, 1, 2, 3, 0], [1, 1, 1, 1, 1], n_items=10)
    neg = sample_negatives(r, 1, seed=0, users=np.zeros(60_000, int), replace=True)
    freq = np.bincount(neg.ravel(), minlength=10) / neg.size
    assert freq[:4].sum() == 0
    np.testing.assert_allclose(freq[4:], 1 / 6, atol=0.01)


def test_popularity_negatives_follow_count_power():
    # item popularity counts 4, 2, 1 (from users 1..4); user 0 rated nothing of those
    r = Ratings.from_arrays([1, 2, 3, 4, 1, 2, 3, 0], [0, 0, 0, 0, 1, 1, 2, 3], np.ones(8), n_items=4)
    neg = sample_negatives(r, 1, seed=0, users=np.zeros(80_000, int), distribution="popularity", alpha=0.5,
                           replace=True)
    freq = np.bincount(neg.ravel(), minlength=4) / neg.size
    w = np.sqrt([4, 2, 1])
    np.testing.assert_allclose(freq[:3], w / w.sum(), atol=0.01)
    assert freq[3] == 0


def test_negative_sampling_errors():
    r = Ratings.from_arrays([0, 0, 1], [0, 1, 0], [1, 1, 1], n_items=3)
    with pytest.raises(DataError, match="user index 0 has only 1 items available"):
        sample_negatives(r, 2)
    assert sample_negatives(r, 2, users=[0], replace=True).tolist() == [[2, 2]]
    with pytest.raises(DataError, match="user index 5 outside"):
        sample_negatives(r, 1, users=[5])
    with pytest.raises(DataError, match="distribution must be"):
        sample_negatives(r, 1, distribution="zipf")


def test_candidate_sets_exclude_train_and_test_positives(small):
    train, test = splits.leave_one_out(small.ratings, seed=0, by="random")
    users, cand = candidate_sets(train, test, n_negatives=20, seed=0)
    assert cand.shape == (test.nnz, 21)
    np.testing.assert_array_equal(cand[:, 0], test.items)
    negs = cand[:, 1:]
    flat_users = np.repeat(users, 20)
    assert not train.contains(flat_users, negs.ravel()).any()
    assert not test.contains(flat_users, negs.ravel()).any()


def test_kcore_iterates_and_reports():
    # user 2 has one rating; removing it leaves item 2 with one rating, which then goes too
    r = Ratings.from_arrays([0, 0, 0, 1, 1, 1, 2, 3, 3], [0, 1, 2, 0, 1, 3, 3, 0, 1], np.ones(9))
    out, rep = kcore(r, min_user_ratings=2, min_item_ratings=2)
    assert rep.removed_ratings == 3 and rep.removed_users == 1 and rep.removed_items == 2
    assert len(rep.rounds) == 2 and rep.kept_ratings == out.nnz == 6
    assert out.shape == (3, 2)
    assert np.all(out.user_counts >= 2) and np.all(out.item_counts >= 2)
    assert out.user_map.ids().tolist() == [0, 1, 3]
    with pytest.raises(DataError, match="removes every rating"):
        kcore(r, 10, 10)


def test_to_implicit_threshold_and_confidence():
    r = Ratings.from_arrays([0, 0, 1], [0, 1, 1], [5, 2, 4], rating_scale=(1, 5))
    imp, rep = to_implicit(r, threshold=4, alpha=2.0)
    np.testing.assert_array_equal(imp.values, [11, 9])
    assert rep.removed_ratings == 1 and imp.rating_scale is None


def test_summary_numbers():
    r = Ratings.from_arrays([0, 0, 1], [0, 1, 1], [5, 2, 4])
    s = summary(r)
    assert s["n_ratings"] == 3 and s["sparsity"] == pytest.approx(0.25)
    assert s["rating_counts"] == {"2": 1, "4": 1, "5": 1}
    assert s["ratings_per_user"]["max"] == 2


def test_synthetic_truth_and_determinism():
    a = synthetic(n_users=50, n_items=40, n_ratings=500, rank=3, noise=0.2, seed=5)
    b = synthetic(n_users=50, n_items=40, n_ratings=500, rank=3, noise=0.2, seed=5)
    np.testing.assert_array_equal(a.ratings.values, b.ratings.values)
    resid = a.ratings.values - a.true_mean(a.ratings.users, a.ratings.items)
    assert abs(resid.std() - 0.2) < 0.03 and abs(resid.mean()) < 0.03
    assert a.ratings.nnz == 500 and np.unique(a.ratings.keys).size == 500
    # power-law popularity: the top 10% of items receive far more than 10% of the ratings
    top = np.sort(a.ratings.item_counts)[::-1][:4].sum() / 500
    assert top > 0.2
    with pytest.raises(DataError, match="exceeds half"):
        synthetic(n_users=5, n_items=5, n_ratings=20)
