"""The fit's host set-up at scale: radix grouping and the chunk layout built from a fit's
groupings give exactly the layout of the reference construction (so every fit is unchanged)."""

import numpy as np
import pytest

from bayesmf import datasets
from bayesmf.data.ratings import group_order, group_rows
from bayesmf.engines.chunks import build_chunks, chunks_for


@pytest.mark.parametrize("n_groups", [1, 7, 65_536, 65_537, 300_000])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_group_order_is_numpys_stable_argsort(n_groups, dtype):
    keys = np.random.default_rng(n_groups).integers(0, n_groups, 50_000).astype(dtype)
    np.testing.assert_array_equal(group_order(keys, n_groups), np.argsort(keys, kind="stable"))
    g = group_rows(keys, n_groups)
    np.testing.assert_array_equal(g.segment_ids, np.sort(keys))
    np.testing.assert_array_equal(g.counts, np.bincount(keys, minlength=n_groups))


def reference_slots(rows, n_rows, width, chunks):
    """Where the reference construction puts each rating: the k-th rating of row r (input order)
    at (chunk of r, first virtual row of r + k // W, k % W); read back from ``rows``/``owner``."""
    rows_g, owner = np.asarray(chunks.rows), np.asarray(chunks.owner)
    n_chunks, capacity = rows_g.shape
    first_vrow = {}
    for c in range(n_chunks):
        for v in range(capacity):
            local = owner[c, v]
            r = rows_g[c, local]
            if r < n_rows and (c, local) not in first_vrow:
                first_vrow[(c, local)] = v
    slots = []
    seen = np.zeros(n_rows, int)
    slot_of = np.asarray(chunks.slot)
    for r in rows:
        c, local = divmod(int(slot_of[r]), capacity)
        k = seen[r]
        seen[r] += 1
        slots.append((c, first_vrow[(c, local)] + k // width, k % width))
    return slots


def test_layout_puts_every_rating_where_the_reference_does():
    r = datasets.synthetic(n_users=60, n_items=40, n_ratings=700, rank=2, seed=4).ratings
    for side, rows, cols in (("user", r.users, r.items), ("item", r.items, r.users)):
        ch = chunks_for(r, side, width=8, chunk_slots=128, rating_index=True)
        n_rows = r.n_users if side == "user" else r.n_items
        slots = reference_slots(rows, n_rows, 8, ch)
        got_cols = np.asarray(ch.cols)[tuple(np.array(slots).T)]
        got_vals = np.asarray(ch.vals)[tuple(np.array(slots).T)]
        got_rating = np.asarray(ch.rating)[tuple(np.array(slots).T)]
        np.testing.assert_array_equal(got_cols, cols)
        np.testing.assert_array_equal(got_vals, r.values)
        np.testing.assert_array_equal(got_rating, np.arange(r.nnz))
        assert int((np.asarray(ch.cols) < (r.n_items if side == "user" else r.n_users)).sum()) == r.nnz


def test_layout_from_the_ratings_groupings_equals_the_standalone_one():
    r = datasets.synthetic(n_users=900, n_items=300, n_ratings=20_000, rank=2, seed=2).ratings
    for side, rows, cols, n_rows, n_cols in (("user", r.users, r.items, r.n_users, r.n_items),
                                              ("item", r.items, r.users, r.n_items, r.n_users)):
        a = chunks_for(r, side, width=64, chunk_slots=4096, rating_index=True)
        b = build_chunks(rows.astype(np.int64), cols, r.values, n_rows, n_cols, 64, 4096, rating_index=True)
        for name, x, y in zip(a._fields, a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


@pytest.mark.slow
def test_predictions_equal_those_with_a_comparison_sort(monkeypatch):
    # the fit with the radix grouping against the same fit with NumPy's stable comparison sort:
    # bit-identical draws, so bit-identical predictions
    from bayesmf import BPMF
    from bayesmf.data import ratings as ratings_module

    def fit():
        r = datasets.synthetic(n_users=80, n_items=50, n_ratings=1_500, rank=2, seed=7).ratings
        return BPMF(rank=3, n_warmup=2, n_samples=3, seed=0).fit(r).predict(r.users, r.items)

    radix = fit()
    monkeypatch.setattr(ratings_module, "group_order", lambda keys, n: np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(fit(), radix)


@pytest.mark.parametrize("values", [np.array([], np.int64), np.array([3], np.int32), np.arange(10)[::-1],
                                    np.random.default_rng(0).integers(-5, 40, 2_000),
                                    np.array(["b", "a", "b"]), np.array([np.nan, 1.0, np.nan])])
def test_sorted_distinct_is_numpys_unique(values):
    from bayesmf.data.idmap import sorted_distinct

    got = sorted_distinct(values)
    np.testing.assert_array_equal(got, np.unique(values))
    assert got.dtype == values.dtype


def test_items_by_user_is_the_csr_column_gather_and_the_seen_items():
    from bayesmf import ALS

    r = datasets.synthetic(n_users=50, n_items=30, n_ratings=600, rank=2, seed=5).ratings
    expected = r.items[np.argsort(r.users, kind="stable")]
    assert r.items_by_user.dtype == np.int32
    np.testing.assert_array_equal(r.items_by_user, expected)
    assert not r.items_by_user.flags.writeable
    model = ALS(rank=2, n_iter=1).fit(r)
    for u in range(r.n_users):  # each user's seen items, in input order
        np.testing.assert_array_equal(model.seen_items(u), r.items[r.users == u])


def test_grouping_segment_ids_keep_the_keys_dtype():
    keys = np.array([3, 0, 3, 1, 0], np.int32)
    g = group_rows(keys, 5)
    assert g.segment_ids.dtype == np.int32
    np.testing.assert_array_equal(g.segment_ids, [0, 0, 1, 3, 3])


def test_value_moments_and_the_auto_priors_built_on_them():
    import math

    from bayesmf.models.bpmf import auto_noise_prior, auto_offset_prior

    r = datasets.synthetic(n_users=40, n_items=30, n_ratings=500, rank=2, seed=6).ratings
    x = [float(v) for v in r.values]
    mean = math.fsum(x) / len(x)
    var = math.fsum((v - mean) ** 2 for v in x) / len(x)
    got_mean, got_var = r.value_moments
    assert got_mean == pytest.approx(mean, rel=1e-12) and got_var == pytest.approx(var, rel=1e-12)
    # the priors are bit-identical to their float64 NumPy formulas
    values = r.values.astype(np.float64)
    assert auto_offset_prior(r) == (float(values.mean()), float(values.std()))
    rows = int((np.bincount(r.users) > 0).sum() + (np.bincount(r.items) > 0).sum())
    a0 = 0.5 * rows * 3
    assert auto_noise_prior(r, 2, True) == (a0, a0 * float(values.var()) / 2.0)
