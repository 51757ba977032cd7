import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmf import ConfigError, DataError, Ratings, splits
from bayesmf.data import synthetic


def assert_partition(full: Ratings, train: Ratings, test: Ratings):
    assert train.same_index_space(test) and train.shape == full.shape
    assert np.intersect1d(train.keys, test.keys).size == 0
    both = np.sort(np.concatenate([train.keys, test.keys]))
    np.testing.assert_array_equal(both, full.sorted_keys)
    # rows keep their input order inside each part
    for part in (train, test):
        pos = np.searchsorted(full.sorted_keys, part.keys)
        original_row = np.argsort(full.keys, kind="stable")[pos]
        assert np.all(np.diff(original_row) > 0)
        np.testing.assert_array_equal(part.values, full.values[original_row])


@pytest.fixture(scope="module")
def timed():
    data = synthetic(n_users=60, n_items=40, n_ratings=800, rank=2, seed=3)
    ts = np.random.default_rng(0).integers(0, 1000, data.ratings.nnz)
    r = data.ratings
    return Ratings.from_arrays(r.users, r.items, r.values, ts, r.n_users, r.n_items)


def test_random_matches_the_permutation_protocol(small):
    r = small.ratings
    train, test = splits.random(r, 0.1, seed=42)
    perm = np.random.default_rng(42).permutation(r.nnz)
    n_train = r.nnz - round(0.1 * r.nnz)
    np.testing.assert_array_equal(np.sort(perm[:n_train]), np.flatnonzero(np.isin(r.keys, train.keys)))
    assert_partition(r, train, test)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), frac=st.floats(0.05, 0.6))
def test_random_and_per_user_invariants(seed, frac):
    r = synthetic(n_users=30, n_items=25, n_ratings=200, rank=2, seed=seed % 1000).ratings
    for split in (splits.random(r, frac, seed), splits.per_user(r, frac, seed)):
        assert_partition(r, *split)
    train, test = splits.per_user(r, frac, seed)
    counts = r.user_counts
    expected = np.minimum(np.round(frac * counts), np.maximum(counts - 1, 0))
    np.testing.assert_array_equal(test.user_counts, expected)
    assert np.all(train.user_counts[counts > 0] >= 1)


def test_splits_are_deterministic_and_seed_dependent(small):
    r = small.ratings
    for fn in (lambda s: splits.random(r, 0.2, s), lambda s: splits.per_user(r, 0.2, s),
               lambda s: splits.leave_one_out(r, s, by="random"), lambda s: splits.kfold(r, 3, s)[1]):
        a, b, c = fn(7), fn(7), fn(8)
        np.testing.assert_array_equal(a.test.keys, b.test.keys)
        assert not np.array_equal(a.test.keys, c.test.keys)


def test_kfold_tests_partition_the_data(small):
    r = small.ratings
    folds = splits.kfold(r, 5, seed=0)
    keys = np.concatenate([f.test.keys for f in folds])
    np.testing.assert_array_equal(np.sort(keys), r.sorted_keys)
    sizes = [f.test.nnz for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for f in folds:
        assert_partition(r, *f)


def test_leave_one_out_takes_the_latest(timed):
    train, test = splits.leave_one_out(timed, seed=0)
    assert_partition(timed, train, test)
    assert np.all(test.user_counts <= 1)
    latest = np.full(timed.n_users, -1)
    np.maximum.at(latest, timed.users, timed.timestamps)
    np.testing.assert_array_equal(test.timestamps, latest[test.users])
    single = timed.user_counts == 1
    assert np.all(test.user_counts[single] == 0)
    assert np.array_equal(test.user_counts > 0, timed.user_counts > 1)


def test_leave_one_out_without_timestamps_warns(small):
    with pytest.warns(UserWarning, match="no timestamps"):
        train, test = splits.leave_one_out(small.ratings, seed=0)
    assert_partition(small.ratings, train, test)


def test_temporal_cut(timed):
    train, test = splits.temporal(timed, 0.25)
    assert train.timestamps.max() < test.timestamps.min()
    assert test.nnz >= round(0.25 * timed.nnz)
    train, test = splits.temporal(timed, cutoff=500)
    assert np.all(test.timestamps >= 500) and np.all(train.timestamps < 500)
    with pytest.raises(DataError, match="needs timestamps"):
        splits.temporal(synthetic(n_users=10, n_items=10, n_ratings=30, seed=0).ratings, 0.2)


def test_unseen_reporting_and_dropping():
    r = Ratings.from_arrays([0, 0, 1, 2], [0, 1, 1, 2], [1, 2, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splits.kfold(r, 4, seed=0)
    for s in split:
        rep = s.report()
        assert rep["test_ratings"] == 1
        if s.test.users[0] == 2:  # user 2 and item 2 only occur once
            assert s.unseen_users.tolist() == [2] and s.unseen_items.tolist() == [2]
            assert rep["test_ratings_with_unseen_user_or_item"] == 1
    with pytest.raises(DataError, match="test set empty"):
        [splits.kfold(r, 4, seed=s, drop_unseen=True) for s in range(20)]


@pytest.mark.parametrize("frac", [0, 1, -0.1, 1.5])
def test_bad_fractions(small, frac):
    with pytest.raises(ConfigError, match="test_fraction"):
        splits.random(small.ratings, frac)


@pytest.mark.realdata
def test_real_1m_split_sizes(data_dir):
    from bayesmf import datasets

    r = datasets.load("movielens-1m", data_dir=data_dir)
    train, test = splits.random(r, 0.1, seed=42)
    assert (train.nnz, test.nnz) == (900_188, 100_021)
