"""The factorization-machine pairs of the benchmark harness: bayesmf's designs reach myFM intact.

myFM itself is not imported (it lives in its own environment): the conversion of a bayesmf design
into myFM's relation blocks is NumPy/SciPy code (``benchmarks/peers/_fm.py``), checked here
against bayesmf's dense design matrix, after the round trip through the file the harness writes.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import pytest

from bayesmf.data import Ratings
from bayesmf.data.design import design_matrix
from bayesmf.data.features import Features
from bayesmf.data.side import SideTable
from benchmarks import fm_features, pairs, report, runner
from benchmarks.data import write_split

sys.path.append(str(runner.PEERS_DIR))
_fm = importlib.import_module("_fm")

DAY = 86_400


def _fixture():
    """Training and test ratings over raw IDs with side tables of both kinds and timestamps; the
    test pairs include a day training never had (the unknown day bin)."""
    users = SideTable.from_pandas(pd.DataFrame({"id": [1, 2, 3, 4], "job": ["a", "b", "a", "c"],
                                                "age": [20.0, 30.0, 40.0, 50.0]}), "id", categorical=["job"],
                                  numeric=["age"])
    items = SideTable.from_pandas(pd.DataFrame({"id": [7, 8, 9], "genres": ["x|y", "y", "z"]}), "id",
                                  multi=["genres"])
    train = Ratings.from_ids([1, 1, 2, 3, 3, 4], [7, 8, 7, 9, 8, 9], [4.0, 3.0, 5.0, 2.0, 1.0, 3.0],
                             [DAY * d + 5 for d in (10, 10, 11, 11, 12, 12)])
    spec = Features(user_side=users, item_side=items, n_bins=1, implicit=True, implicit_items=True, time="day",
                    user_time=True)
    fitted = spec.fit(train)
    test_users, test_items = np.array([0, 1, 3, 2]), np.array([1, 2, 0, 0])
    test = fitted.design(test_users, test_items, np.array([DAY * 10, DAY * 11, DAY * 40, DAY * 12]))
    return fitted.design_of(train), test


def _round_trip(tmp_path, train, test):
    np.savez(tmp_path / "d.npz", **_fm.design_arrays(train, "train_"), **_fm.design_arrays(test, "test_"))
    with np.load(tmp_path / "d.npz") as f:
        return _fm.read_design(f, "train_"), _fm.read_design(f, "test_")


def test_myfm_relation_blocks_equal_the_design_matrix_with_columns_by_block_and_group(tmp_path):
    train, test = _fixture()
    arrays_train, arrays_test = _round_trip(tmp_path, train, test)
    layout = _fm.myfm_layout(arrays_train)
    order = layout["order"]
    assert np.array_equal(np.sort(order), np.arange(train.n_features))
    # myFM's layout: blocks one after another, and within each the groups in runs
    assert np.all(np.diff(layout["block_of"][order]) >= 0) and layout["n_x"] == 0
    assert sum(layout["group_shapes"]) == train.n_features
    runs = np.split(np.asarray(train.groups)[order], np.cumsum(layout["group_shapes"])[:-1])
    assert [train.group_names[int(r[0])] for r in runs] == layout["group_names"]
    assert all(np.all(r == r[0]) for r in runs) and len(runs) == len(train.group_names)
    assert layout["group_names"] == ["user", "job", "age", "implicit_user", "item", "genres", "implicit_item",
                                     "time", "user_time"]
    for design, arrays in ((train, arrays_train), (test, arrays_test)):
        X, blocks = _fm.relation_blocks(arrays, layout)
        assert [d.shape[0] for _, d in blocks] == [b.n_rows for b in design.blocks]
        np.testing.assert_allclose(_fm.dense_myfm_design(X, blocks), design_matrix(design)[:, order], rtol=1e-6)
    # the unknown day's pair (test row 2) has the unknown-day column and no user_time column
    X, blocks = _fm.relation_blocks(arrays_test, layout)
    row = _fm.dense_myfm_design(X, blocks)[2]
    names = np.asarray(train.feature_names)[order]
    assert set(names[row != 0]) >= {"day=<unknown>", "user=4", "item=7"}
    assert not any(n.startswith("user_time=") for n in names[row != 0])


def _hand_design(columns_per_block, groups, n_features, group_names=("g0", "g1")):
    blocks = [{"name": f"b{k}", "owner": "user", "n_rows": 1, "index": np.zeros(2, np.int32),
               "indptr": np.array([0, len(cols)]), "columns": np.asarray(cols, np.int32),
               "values": np.arange(1.0, len(cols) + 1)} for k, cols in enumerate(columns_per_block)]
    return {"blocks": blocks, "n_features": n_features, "groups": np.asarray(groups), "group_names": list(group_names)}


def test_a_column_no_block_stores_goes_to_x_and_groups_must_not_span_blocks():
    # column 1 is in no block: myFM's X gets it first (zero for every rating)
    design = _hand_design([[2, 0], [3]], [0, 0, 0, 1], 4)
    layout = _fm.myfm_layout(design)
    assert layout["n_x"] == 1 and list(layout["order"]) == [1, 0, 2, 3]
    assert layout["group_shapes"] == [3, 1]
    X, blocks = _fm.relation_blocks(design, layout)
    np.testing.assert_allclose(_fm.dense_myfm_design(X, blocks), [[0, 2, 1, 1]] * 2)
    # a group in two blocks is one run when they are adjacent, and refused when another is between
    assert _fm.myfm_layout(_hand_design([[0], [1]], [0, 0], 2))["group_shapes"] == [2]
    with pytest.raises(ValueError, match="'g0' falls into several runs"):
        _fm.myfm_layout(_hand_design([[0], [1], [2]], [0, 1, 0], 3))
    with pytest.raises(ValueError, match="column 0 is in blocks 0 and 1"):
        _fm.myfm_layout(_hand_design([[0, 1], [0]], [0, 1], 2))
    # a test design whose block stores another block's column is refused, not silently moved
    with pytest.raises(ValueError, match="block 'b0': column 3 belongs to block 1"):
        _fm.relation_blocks(_hand_design([[3], [2]], [0, 0, 0, 1], 4), layout)


def test_categorical_metrics_by_hand():
    data = {"test_values": np.array([1.0, 3.0]), "rating_min": 1.0}
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    m = _fm.categorical_metrics(probs, data, n_bins=10)
    assert m["nll"] == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2)
    # RPS: CDFs (0.5, 0.8) vs observed (1, 1); (0.1, 0.2) vs (0, 0); normalised by K - 1 = 2
    assert m["rps"] == pytest.approx(((0.25 + 0.04) / 2 + (0.01 + 0.04) / 2) / 2)
    # top label: confidence 0.5 (right) in bin [0.5, 0.6), 0.8 (right) in [0.8, 0.9)
    assert m["ece"] == pytest.approx((0.5 + 0.2) / 2)
    with pytest.raises(ValueError, match="categories in"):
        _fm.categorical_metrics(probs, {"test_values": np.array([1.0, 4.0]), "rating_min": 1.0})


def test_harness_writes_the_design_of_a_feature_set_next_to_the_split(tmp_path):
    split = write_split("synthetic", tmp_path)
    path = fm_features.write_design(split, "implicit")
    assert path == _fm.design_path(split, "implicit") and path.exists()
    with np.load(path) as f:
        train = _fm.read_design(f, "train_")
    with np.load(split) as f:
        n_train = f["train_users"].size
    assert train["group_names"] == ["user", "implicit_user", "item", "implicit_item"]
    assert all(b["index"].size == n_train for b in train["blocks"])
    assert sum(_fm.myfm_layout(train)["group_shapes"]) == train["n_features"]


def test_ratings_of_a_split_keep_raw_ids_and_timestamps():
    data = {"kind": "explicit", "rating_min": 1.0, "rating_max": 5.0, "n_users": 2, "n_items": 3,
            "user_ids": np.array([10, 20]), "item_ids": np.array([7, 8, 9]),
            "train_users": np.array([0, 1], np.int32), "train_items": np.array([2, 0], np.int32),
            "train_values": np.array([4.0, 2.0], np.float32), "train_timestamps": np.array([DAY, -1])}
    train = fm_features.ratings_of(data, "train")
    assert train.user_map.ids()[train.users].tolist() == [10, 20]
    assert train.item_map.ids()[train.items].tolist() == [9, 7]
    assert train.timestamps.tolist() == [DAY, -1] and train.rating_scale == (1.0, 5.0)


def test_ordinal_smoke_split_is_the_synthetic_one_rounded(tmp_path):
    with np.load(write_split("synthetic", tmp_path)) as f, np.load(write_split("synthetic-ordinal", tmp_path)) as g:
        for key in ("train_users", "train_items", "test_users", "test_items"):
            assert np.array_equal(f[key], g[key])
        for part in ("train", "test"):
            np.testing.assert_array_equal(g[f"{part}_values"], np.rint(f[f"{part}_values"]))
        assert set(np.unique(g["train_values"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_fm_pairs_name_known_feature_sets_and_match_sweeps():
    fm = [p for p in pairs.PAIRS if p.bayesmf.algo == "BayesFM"]
    assert {p.name for p in fm} >= {"fm-ml100k-extended", "fm-ordinal-ml100k", "fm-ml1m-side"}
    for p in fm:
        (peer,) = p.peers
        assert p.bayesmf.params["features"] == peer.params["features"] in fm_features.FEATURE_SETS
        assert p.bayesmf.params["rank"] == peer.params["rank"]
        assert p.bayesmf.params["burn_in"] + p.bayesmf.params["n_samples"] == peer.params["n_iter"]
        assert p.bayesmf.params["n_samples"] == peer.params["n_kept_samples"]
        assert p.quick_params["features"] in fm_features.FEATURE_SETS


def test_report_shows_categorical_scores_only_where_a_job_has_them():
    row = {"side": "myfm", "rmse": 0.9, "mae": 0.7, "fit_seconds": 2.0, "repeats": 1, "of": 1}
    plain = [{"pair": "p", "protocol": "ml100k-u1", "jobs": {"myfm FM": row}}]
    ordinal = [{"pair": "q", "protocol": "ml100k-u1", "jobs": {"myfm FMOrdinal": {**row, "nll": 1.25, "rps": 0.125,
                                                                                 "ece": 0.0165}}}]
    assert "NLL" not in report.results_table(plain, "ml100k-u1")[0]
    header, _, plain_line, ordinal_line = report.results_table(plain + ordinal, "ml100k-u1")
    assert "| RMSE | MAE | NLL | RPS | ECE |" in header
    assert "| 0.9000 | 0.7000 |  |  |  |" in plain_line
    assert "| 0.9000 | 0.7000 | 1.2500 | 0.1250 | 0.0165 |" in ordinal_line
