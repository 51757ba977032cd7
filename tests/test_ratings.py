import numpy as np
import pandas as pd
import pytest

from bayesmf import DataError, IdMap, Ratings


def make(**kw):
    args = dict(users=[0, 1, 1, 2], items=[1, 0, 2, 2], values=[5, 3, 4, 1])
    args.update(kw)
    return Ratings.from_arrays(args.pop("users"), args.pop("items"), args.pop("values"), **args)


def test_dtypes_shapes_and_immutability():
    r = make(timestamps=[10, 20, 30, 40])
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32
    assert r.values.dtype == np.float32 and r.timestamps.dtype == np.int64
    assert r.shape == (3, 3) and r.nnz == 4
    assert r.sparsity == pytest.approx(1 - 4 / 9)
    with pytest.raises(ValueError):
        r.values[0] = 2.0
    with pytest.raises(AttributeError):
        r.n_users = 5


def test_grouping_is_csr():
    r = make()
    g = r.by_user
    np.testing.assert_array_equal(g.indptr, [0, 1, 3, 4])
    np.testing.assert_array_equal(r.users[g.order], g.segment_ids)
    np.testing.assert_array_equal(g.segment_ids, [0, 1, 1, 2])
    np.testing.assert_array_equal(r.item_counts, [1, 1, 2])
    # stable: user 1's rows keep their original order
    np.testing.assert_array_equal(g.order[1:3], [1, 2])


def test_contains_and_scipy_agree():
    r = make()
    np.testing.assert_array_equal(r.contains([0, 0, 2], [1, 0, 2]), [True, False, True])
    dense = r.to_scipy().toarray()
    assert dense[1, 2] == 4 and dense.sum() == 13


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(values=[5, np.nan, 4, 1]), "not finite"),
        (dict(values=[5, np.inf, 4, 1]), "not finite"),
        (dict(users=[0, -1, 1, 2]), "user index -1 at row 1"),
        (dict(items=[0, 1, 9, 2], n_items=3), "item index 9 at row 2"),
        (dict(values=[5, 3, 4]), "different lengths"),
        (dict(users=[], items=[], values=[]), "empty"),
        (dict(values=[5, 3, 6, 1], rating_scale=(1, 5)), "rating 6.0 at row 2 is outside"),
        (dict(users=[0, 1, 0, 2], items=[1, 0, 1, 2]), "duplicate .* rows 0 and 2"),
        (dict(timestamps=[1, -5, 2, 3]), "timestamp -5 at row 1"),
        (dict(users=[0.5, 1, 1, 2]), "integer indices"),
        (dict(values=["a", "b", "c", "d"]), "numeric"),
        (dict(duplicates="first"), "duplicates must be one of"),
    ],
)
def test_bad_input_is_named(kw, message):
    with pytest.raises(DataError, match=message):
        make(**kw)


def test_duplicates_merge_last_and_mean_keep_first_position():
    kw = dict(users=[0, 1, 0, 2], items=[1, 0, 1, 2], values=[5, 3, 2, 1], timestamps=[1, 2, 9, 4])
    last = make(**kw, duplicates="last")
    mean = make(**kw, duplicates="mean")
    np.testing.assert_array_equal(last.values, [2, 3, 1])
    np.testing.assert_array_equal(mean.values, [3.5, 3, 1])
    np.testing.assert_array_equal(mean.users, [0, 1, 2])
    np.testing.assert_array_equal(mean.timestamps, [9, 2, 4])


def test_pandas_roundtrip_with_string_ids_preserves_rows():
    df = pd.DataFrame({"u": ["bob", "amy", "bob"], "i": ["x", "y", "y"], "r": [1.0, 2.0, 3.0], "t": [3, 2, 1]})
    r = Ratings.from_pandas(df, user="u", item="i", rating="r", timestamp="t")
    assert r.user_map.ids().tolist() == ["amy", "bob"]
    back = r.to_pandas()
    assert back["user"].tolist() == ["bob", "amy", "bob"]
    assert back["rating"].tolist() == [1.0, 2.0, 3.0]
    assert back["timestamp"].tolist() == [3, 2, 1]


def test_from_pandas_errors_name_the_column():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, "bad"]})
    with pytest.raises(DataError, match="column 'rating' row 1"):
        Ratings.from_pandas(df)
    with pytest.raises(DataError, match=r"\['score'\] not in the DataFrame"):
        Ratings.from_pandas(df, rating="score")
    with pytest.raises(DataError, match="user column 'user' is missing at row 0"):
        Ratings.from_pandas(pd.DataFrame({"user": [None, 2], "item": [1, 2], "rating": [1, 2]}))


def test_from_ids_extends_given_maps_without_renumbering():
    users = IdMap.from_ids([10, 20])
    r = Ratings.from_ids([20, 30], [1, 1], [1, 2], user_map=users)
    np.testing.assert_array_equal(r.users, [1, 2])
    assert r.user_map.ids().tolist() == [10, 20, 30]


def test_subset_and_compact():
    r = make()
    s = r.subset(np.array([False, True, True, False]))
    assert s.shape == r.shape and s.nnz == 2
    c = s.compact()
    assert c.shape == (1, 2)
    assert c.user_map.ids().tolist() == [1] and c.item_map.ids().tolist() == [0, 2]
    assert r.subset(slice(1, 3)).users.base is not None  # a view, not a copy
