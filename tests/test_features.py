"""Feature groups of the factorization machine (bayesmf.data.features): every group's rows equal a
hand-built expectation on a tiny fixture, unseen values and missing rows fail naming the table,
column and ID (or take the documented fallback), cold-start pairs keep their side features, and a
feature set survives the experiment-file round trip."""

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest
from side_fixtures import write_ml100k

from bayesmf.data import MISSING_TIMESTAMP, IdMap, Ratings
from bayesmf.data.design import design_matrix
from bayesmf.data.features import Features
from bayesmf.data.side import SideColumn, SideTable, side
from bayesmf.errors import ConfigError, DataError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DAY = 86_400
# training ratings (raw IDs): users 10, 20, 30; items 100, 200, 300; days 10, 10, 11, 11, 12
TRAIN = ([10, 10, 20, 30, 30], [100, 200, 100, 300, 200], [4.0, 3.0, 5.0, 2.0, 1.0],
         [10 * DAY + 5, 10 * DAY + 70, 11 * DAY, 11 * DAY + 9, 12 * DAY + 1])


def _train():
    return Ratings.from_ids(*TRAIN)


def _users(ids=(10, 20, 30, 40)):
    jobs = {10: "a", 20: "b", 30: "a", 40: "c"}
    ages = {10: 20.0, 20: 30.0, 30: 40.0, 40: 50.0}
    codes = np.array([ord(jobs[u]) - ord("a") for u in ids], np.int32)
    return SideTable("users", IdMap.from_ordered(list(ids)), {
        "job": SideColumn("categorical", codes, ("a", "b", "c")),
        "age": SideColumn("numeric", np.array([ages[u] for u in ids])),
    })


def _items(genres=("x|y", "y", "", "z")):
    sets = SideTable.from_pandas(pd.DataFrame({"id": [100, 200, 300, 400], "genres": list(genres)}), "id",
                                 multi=["genres"])
    return SideTable("items", sets.ids, {
        "year": SideColumn("numeric", np.array([1990.0, 2000.0, np.nan, 2010.0])),  # item 300: missing
        "genres": sets.columns["genres"],
    })


def _expected(design, rows):
    """The dense X that puts ``rows[r][name]`` at (r, column named name)."""
    X = np.zeros((len(rows), design.n_features))
    index = {n: j for j, n in enumerate(design.feature_names)}
    for r, row in enumerate(rows):
        for name, value in row.items():
            X[r, index[name]] = value
    return X


H = 1 / np.sqrt(2)
USER_ROWS = {  # user -> its user-owned features
    10: {"user=10": 1, "job=a": 1, "age=<=30": 1, "rated=100": H, "rated=200": H},
    20: {"user=20": 1, "job=b": 1, "age=<=30": 1, "rated=100": 1},
    30: {"user=30": 1, "job=a": 1, "age=>30": 1, "rated=300": H, "rated=200": H},
}
ITEM_ROWS = {
    100: {"item=100": 1, "year=<=1995": 1, "genres=x": H, "genres=y": H, "rated_by=10": H, "rated_by=20": H},
    200: {"item=200": 1, "year=>1995": 1, "genres=y": 1, "rated_by=10": H, "rated_by=30": H},
    300: {"item=300": 1, "year=missing": 1, "rated_by=30": 1},
}


def _full(**kw):
    return Features(user_side=_users(), item_side=_items(), n_bins=1, implicit=True, implicit_items=True,
                    time="day", user_time=True, **kw)


def test_every_group_row_matches_the_hand_built_design():
    train = _train()
    fitted = _full().fit(train)
    d = fitted.design_of(train)
    assert [b.name for b in d.blocks] == ["user", "user_side", "implicit_user", "item", "item_side",
                                          "implicit_item", "time", "user_time"]
    assert [b.owner for b in d.blocks] == ["user", "user", "user", "item", "item", "item", "context", "context"]
    assert d.group_names == ("user", "job", "age", "implicit_user", "item", "year", "genres", "implicit_item",
                             "time", "user_time")
    days = ["day=1970-01-11", "day=1970-01-11", "day=1970-01-12", "day=1970-01-12", "day=1970-01-13"]
    user_days = ["user_time=10@1970-01-11", "user_time=10@1970-01-11", "user_time=20@1970-01-12",
                 "user_time=30@1970-01-12", "user_time=30@1970-01-13"]
    rows = [{**USER_ROWS[u], **ITEM_ROWS[i], days[r]: 1, user_days[r]: 1}
            for r, (u, i) in enumerate(zip(TRAIN[0], TRAIN[1]))]
    np.testing.assert_allclose(design_matrix(d), _expected(d, rows), rtol=1e-6)
    # every column is somewhere: the unknown day is the only column no training rating uses
    unused = np.flatnonzero(design_matrix(d).sum(axis=0) == 0)
    assert [d.feature_names[j] for j in unused] == ["day=<unknown>"]
    group = dict(zip(d.feature_names, (d.group_names[g] for g in d.groups)))
    assert group["job=a"] == "job" and group["genres=y"] == "genres" and group["rated=300"] == "implicit_user"
    assert group["rated_by=10"] == "implicit_item" and group["year=missing"] == "year"


def test_standardised_numeric_and_unnormalised_multi_columns():
    train = _train()
    spec = Features(user=False, item=False, user_side=_users(), user_columns=["age"], item_side=_items(),
                    item_columns=["genres"], standardize=["age"], normalize_multi=False)
    d = spec.fit(train).design_of(train)
    ages = np.array([20.0, 30.0, 40.0])  # the training users' ages: mean 30, population sd
    z = (ages - 30.0) / np.sqrt(np.mean((ages - 30.0) ** 2))
    age_of = dict(zip([10, 20, 30], z))
    genres = {100: {"genres=x": 1, "genres=y": 1}, 200: {"genres=y": 1}, 300: {}}
    rows = [{"age": age_of[u], **genres[i]} for u, i in zip(TRAIN[0], TRAIN[1])]
    assert d.feature_names == ("age", "genres=x", "genres=y")
    np.testing.assert_allclose(design_matrix(d), _expected(d, rows), rtol=1e-6)


def test_cold_start_pairs_have_side_features_only():
    train = _train()
    # user 40 and item 400 are new; user 10 / item 100 are known; day 50 was never seen
    test = Ratings.from_ids([40, 10, 40], [100, 400, 400], [1.0, 2.0, 3.0], [50 * DAY, 10 * DAY, 11 * DAY],
                            user_map=train.user_map, item_map=train.item_map)
    assert (test.n_users, test.n_items) == (4, 4)
    with pytest.raises(DataError, match=r"side table users, column 'job', ID 40 \(index 3\): level 'c' does not "
                                        r"occur in the training rows"):
        _full().fit(train).design_of(test)
    fitted = _full(unknown="level").fit(train)
    d = fitted.design_of(test)
    assert d.feature_names == fitted.feature_names and d.blocks[0].n_rows == 4
    new_user = {"job=<unknown>": 1, "age=>30": 1}
    new_item = {"year=>1995": 1, "genres=<unknown>": 1}
    rows = [{**new_user, **ITEM_ROWS[100], "day=<unknown>": 1},
            {**USER_ROWS[10], **new_item, "day=1970-01-11": 1, "user_time=10@1970-01-11": 1},
            {**new_user, **new_item, "day=1970-01-12": 1}]
    np.testing.assert_allclose(design_matrix(d), _expected(d, rows), rtol=1e-6)
    # indices beyond the training space need the map that names them
    with pytest.raises(DataError, match=r"users: index 3 is out of range 0..2"):
        fitted.design([3], [0], [10 * DAY])
    with pytest.raises(DataError, match="does not extend the training user map"):
        fitted.design([0], [0], [10 * DAY], user_map=IdMap.from_ordered([20, 10, 30, 40]))


def test_a_missing_value_training_never_had_is_unseen():
    train = Ratings.from_ids([10, 20], [100, 200], [1.0, 2.0])  # items 100 and 200 both have a year
    test = Ratings.from_ids([10], [300], [3.0], user_map=train.user_map, item_map=train.item_map)
    spec = Features(user=False, item_side=_items(), item_columns=["year"], n_bins=1)
    with pytest.raises(DataError, match=r"column 'year', ID 300 \(index 2\): a missing value does not occur"):
        spec.fit(train).design_of(test)
    lenient = dataclasses.replace(spec, unknown="level").fit(train)
    assert lenient.feature_names == ("item=100", "item=200", "year=<=1995", "year=>1995", "year=<unknown>")
    np.testing.assert_array_equal(design_matrix(lenient.design_of(test)), [[0, 0, 0, 0, 1]])


def test_missing_side_rows_fail_or_stay_empty():
    train = _train()
    with pytest.raises(DataError, match="side table users has no row for user 30"):
        Features(user_side=_users(ids=(10, 20, 40))).fit(train)
    spec = Features(item=False, user_side=_users(ids=(10, 20, 40)), user_columns=["job"], missing="empty")
    d = spec.fit(train).design_of(train)
    rows = [{k: v for k, v in USER_ROWS[u].items() if k.startswith(("user", "job"))} for u in TRAIN[0]]
    rows[3] = rows[4] = {"user=30": 1}  # no side row: no side features
    np.testing.assert_allclose(design_matrix(d), _expected(d, rows), rtol=1e-6)


def test_time_bins_and_missing_timestamps():
    train = _train()
    fitted = Features(time="week").fit(train)
    # days 10, 11, 12 lie in Unix weeks 1 (days 7..13): one training bin, plus the unknown bin
    assert fitted.feature_names[-2:] == ("week=1970-01-08", "week=<unknown>")
    with pytest.raises(DataError, match="time features need timestamps; the pairs has none"):
        fitted.design([0], [0])
    with pytest.raises(DataError, match="pair 1 has no timestamp"):
        fitted.design([0, 1], [0, 1], [10 * DAY, MISSING_TIMESTAMP])
    lenient = Features(time="week", missing_time="unknown").fit(train)
    d = lenient.design([0, 1, 2], [0, 1, 2], [MISSING_TIMESTAMP, 13 * DAY, 14 * DAY])
    assert d.blocks[-1].index.tolist() == [1, 0, 1]  # missing -> unknown; day 14 is week 2 -> unknown
    no_time = Ratings.from_ids(*TRAIN[:3])
    with pytest.raises(DataError, match="the training ratings has none"):
        Features(time="day").fit(no_time)
    with pytest.raises(DataError, match="feature group 'user_time' has no columns: no training rating has a known"):
        Features(time="day", missing_time="unknown", user_time=True).fit(no_time)


def test_groups_without_columns_and_bad_options_are_named():
    train = _train()
    with pytest.raises(DataError, match=r"feature group 'genres' has no columns: side column 'genres' of items"):
        Features(item_side=_items(genres=("", "", "", "z"))).fit(train)
    with pytest.raises(ConfigError, match="feature group user_side has no columns"):
        Features(user_side=_users(), user_columns=())
    with pytest.raises(DataError, match="side table users has no column 'zip'"):
        Features(user_side=_users(), user_columns=["zip"])
    with pytest.raises(ConfigError, match=r"user_columns=\['job', 'job'\]\) names a column twice"):
        Features(user_side=_users(), user_columns=["job", "job"])
    assert Features(user_side=_users(), standardize="age").standardize == ("age",)
    with pytest.raises(ConfigError, match=r"Features\(unknown='skip'\)"):
        Features(unknown="skip")
    with pytest.raises(ConfigError, match="user_time=True\\) needs time"):
        Features(user_time=True)
    with pytest.raises(ConfigError, match=r"\['job'\] are not selected numeric side columns"):
        Features(user_side=_users(), standardize=["job"])
    with pytest.raises(ConfigError, match="user_columns=...\\) needs user_side"):
        Features(user_columns=["job"])
    with pytest.raises(DataError, match="cannot be standardised"):
        Features(user_side=_users(ids=(10, 20, 30)), standardize=["age"]).fit(
            Ratings.from_ids([10, 10], [100, 200], [1.0, 2.0]))


def test_experiment_file_round_trip(tmp_path):
    write_ml100k(tmp_path)
    users, items = side("ml-100k", tmp_path, check_counts=False)
    spec = Features(user_side=users, user_columns=("age", "occupation"), item_side=items, implicit=True,
                    time="day", unknown="level", n_bins=3)
    mapping = spec.to_mapping()
    toml = """
    [features]
    user_side = {dataset = "movielens-100k", columns = ["age", "occupation"]}
    item_side = {dataset = "movielens-100k", columns = ["release_year", "genres"]}
    n_bins = 3
    unknown = "level"
    implicit = true
    time = "day"
    """
    assert tomllib.loads(toml.replace("\n    ", "\n"))["features"] == mapping
    again = Features.from_mapping(mapping, data_dir=tmp_path, check_counts=False)
    assert again.to_mapping() == mapping
    train = Ratings.from_ids([1, 2, 3, 4], [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], [DAY, 2 * DAY, 3 * DAY, 4 * DAY])
    a, b = spec.fit(train).design_of(train), again.fit(train).design_of(train)
    assert a.feature_names == b.feature_names and a.group_names == b.group_names
    np.testing.assert_array_equal(design_matrix(a), design_matrix(b))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['genres'\]"):
        Features.from_mapping({"genres": True})
    with pytest.raises(ConfigError, match="was not loaded by bayesmf.datasets.side"):
        Features(user_side=_users()).to_mapping()
    assert Features().to_mapping() == {} and Features.from_mapping({}) == Features()


def test_movielens_100k_u1_extended_feature_set(data_dir):
    from bayesmf.data.datasets import load_movielens_100k_split

    train, test = load_movielens_100k_split("u1", data_dir)
    users, items = side("ml-100k", data_dir)
    spec = Features(user_side=users, user_columns=("age", "occupation", "zip_prefix"), item_side=items,
                    implicit=True, implicit_items=True, time="day")
    start = time.perf_counter()
    fitted = spec.fit(train)
    d, dt = fitted.design_of(train), fitted.design_of(test)
    assert time.perf_counter() - start < 30.0
    sizes = {b.name: (b.n_rows, b.columns.size) for b in d.blocks}
    assert sizes["implicit_user"] == (943, 80_000) and sizes["implicit_item"] == (1682, 80_000)
    assert sizes["user"] == (943, 943) and sizes["user_side"] == (943, 3 * 943)
    lines = (data_dir / "ml-100k" / "u.item").read_text("latin-1").splitlines()
    genre_flags = sum(line.split("|")[5:].count("1") for line in lines)
    assert sizes["item_side"] == (1682, 1682 + genre_flags)  # a release-year bin + the genre flags per item
    assert dt.feature_names == d.feature_names and dt.nnz == 20_000
    # the implicit rows are unit vectors: sum of squares 1 for every user with training ratings
    b = d.blocks[[x.name for x in d.blocks].index("implicit_user")]
    sq = np.add.reduceat(b.values.astype(np.float64) ** 2, b.indptr[:-1])
    np.testing.assert_allclose(sq[train.user_counts > 0], 1.0, rtol=1e-5)
    n_days = np.unique(train.timestamps // DAY).size
    assert sizes["time"] == (n_days + 1, n_days + 1)
