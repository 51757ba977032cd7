"""datasets.synthetic_large: exact size, distinct pairs, power-law degrees, scale, determinism, memory."""

import tracemalloc

import numpy as np
import pytest

from bayesmf import DataError, datasets


def slope(degrees, lo, hi):
    """Least-squares slope of log(degree) against log(rank) over ranks lo..hi (1-based) of the
    degrees sorted in decreasing order."""
    d = np.sort(degrees)[::-1][lo - 1:hi].astype(float)
    r = np.arange(lo, hi + 1, dtype=float)
    return np.polyfit(np.log(r), np.log(d), 1)[0]


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic_large(n_users=20_000, n_items=3_000, n_ratings=600_000, rank=4, seed=3, chunk=1500,
                                    user_exponent=0.6, item_exponent=0.9)


def test_exact_size_distinct_pairs_and_scale(data):
    r = data.ratings
    assert (r.nnz, r.n_users, r.n_items) == (600_000, 20_000, 3_000)
    keys = r.users.astype(np.int64) * r.n_items + r.items
    assert np.unique(keys).size == r.nnz
    assert np.all(np.diff(keys) > 0)  # ordered by user, then item
    assert set(np.unique(r.values).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0} and r.rating_scale == (1.0, 5.0)
    assert r.user_counts.min() >= 1 and r.item_counts.max() <= r.n_users


def test_degrees_follow_the_requested_power_laws(data):
    r = data.ratings
    # user degrees are set to c k^-0.6 (rounded, at least 1): the slope away from the floor and the cap
    assert slope(r.user_counts, 10, 5_000) == pytest.approx(-0.6, abs=0.03)
    # item degrees follow k^-0.9 below the popular items (at most one rating per user saturates them)
    assert slope(r.item_counts, 100, 2_000) == pytest.approx(-0.9, abs=0.1)


def test_values_are_the_low_rank_truth_plus_noise():
    d = datasets.synthetic_large(n_users=3_000, n_items=800, n_ratings=90_000, rank=3, noise=0.3, seed=1,
                                 rating_scale=None)
    r = d.ratings
    truth = d.global_mean + np.einsum("nd,nd->n", d.user_factors[r.users], d.item_factors[r.items])
    resid = r.values - truth
    assert resid.std() == pytest.approx(0.3, rel=0.02) and abs(resid.mean()) < 0.01
    assert np.corrcoef(truth, r.values)[0, 1] > 0.9


def test_heavy_users_and_full_rows():
    # 40 items and degrees up to all of them: the heavy users take the without-replacement path
    d = datasets.synthetic_large(n_users=50, n_items=40, n_ratings=1_500, rank=2, seed=0, chunk=7,
                                 user_exponent=1.5)
    r = d.ratings
    assert r.user_counts.max() == 40 and r.nnz == 1_500
    keys = r.users.astype(np.int64) * 40 + r.items
    assert np.unique(keys).size == 1_500


def test_deterministic_for_a_seed():
    a = datasets.synthetic_large(n_users=2_000, n_items=500, n_ratings=30_000, seed=5, chunk=300)
    b = datasets.synthetic_large(n_users=2_000, n_items=500, n_ratings=30_000, seed=5, chunk=300)
    c = datasets.synthetic_large(n_users=2_000, n_items=500, n_ratings=30_000, seed=6, chunk=300)
    for name in ("users", "items", "values"):
        np.testing.assert_array_equal(getattr(a.ratings, name), getattr(b.ratings, name))
    assert not np.array_equal(a.ratings.items, c.ratings.items)


def test_memory_is_not_users_times_items():
    n_users, n_items, nnz = 100_000, 20_000, 300_000  # dense: 2e9 cells
    tracemalloc.start()
    d = datasets.synthetic_large(n_users=n_users, n_items=n_items, n_ratings=nnz, rank=4, seed=0, chunk=2_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert d.ratings.nnz == nnz
    # final arrays (12 bytes a rating), the factors and per-user degrees, one chunk's temporaries
    assert peak < 12 * nnz + 8 * 3 * (n_users + n_items) * 4 + 10e6, peak


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_ratings": 10}, "must lie between n_users"),
        ({"n_ratings": 10**9}, "must lie between"),
        ({"chunk": 0}, "chunk must be positive"),
        ({"noise": -1.0}, "noise must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"n_users": 100, "n_items": 50, "n_ratings": 1_000, **kwargs}
    with pytest.raises(DataError, match=message):
        datasets.synthetic_large(**args)
