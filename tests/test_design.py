"""The relation-block design (bayesmf.data.design): the prediction by relation blocks equals the
naive pairwise sum, and malformed designs are refused with the block and value named."""

import itertools

import numpy as np
import pytest

from bayesmf.data.design import Block, Design, check_design, design_matrix, fm_predict_numpy
from bayesmf.errors import DataError


def _onehot(name, owner, index, n_rows, offset):
    return Block(name, owner, np.asarray(index, np.int32), np.arange(n_rows + 1, dtype=np.int64),
                 np.arange(offset, offset + n_rows, dtype=np.int32), np.ones(n_rows, np.float32), n_rows)


def _design():
    users, items = [0, 1, 1, 2], [1, 0, 2, 2]
    genres = Block("genres", "item", np.asarray(items, np.int32), np.array([0, 2, 3, 3]),
                   np.array([6, 7, 6], np.int32), np.array([1.0, 0.5, 1.0], np.float32), 3)
    blocks = (_onehot("user", "user", users, 3, 0), _onehot("item", "item", items, 3, 3), genres)
    names = tuple(f"f{j}" for j in range(8))
    return Design(blocks, names, np.array([0, 0, 0, 1, 1, 1, 2, 2], np.int32), ("user", "item", "genre"))


def test_block_prediction_is_the_pairwise_sum():
    d = check_design(_design())
    rng = np.random.default_rng(0)
    w, V = rng.normal(size=8), rng.normal(size=(8, 3))
    X = design_matrix(d)
    assert X.shape == (4, 8) and X[1, 6] == 1.0 and X[1, 7] == 0.5 and X[0, 7] == 0.0 and X[2].sum() == 2.0
    expect = [0.3 + X[r] @ w + sum(V[j] @ V[k] * X[r, j] * X[r, k] for j, k in itertools.combinations(range(8), 2))
              for r in range(4)]
    np.testing.assert_allclose(fm_predict_numpy(d, 0.3, w, V), expect, rtol=1e-12)


def test_malformed_designs_name_the_fault():
    d = _design()
    bad_value = d.blocks[2]._replace(values=np.array([1.0, np.nan, 1.0], np.float32))
    with pytest.raises(DataError, match=r"genres.*row 0.*f7.*nan"):
        check_design(d._replace(blocks=d.blocks[:2] + (bad_value,)))
    shared = d.blocks[2]._replace(columns=np.array([5, 7, 6], np.int32))
    with pytest.raises(DataError, match="'f5' is in blocks 'item' and 'genres'"):
        check_design(d._replace(blocks=d.blocks[:2] + (shared,)))
    with pytest.raises(DataError, match="group 'genre' has no columns"):
        check_design(d._replace(groups=np.array([0, 0, 0, 1, 1, 1, 1, 1], np.int32)))
    with pytest.raises(DataError, match="rating 3 points to row 5"):
        check_design(d._replace(blocks=(d.blocks[0]._replace(index=np.array([0, 1, 1, 5], np.int32)),) + d.blocks[1:]))


def test_one_hot_features_are_bpmf_with_biases():
    from bayesmf import Ratings, features

    train = Ratings.from_arrays([0, 1, 2, 2], [1, 0, 1, 2], [3.0, 4.0, 5.0, 1.0], n_users=3, n_items=3)
    d = features.Features().fit(train).design_of(train)
    rng = np.random.default_rng(1)
    w, V = rng.normal(size=6), rng.normal(size=(6, 2))
    u, i = train.users, train.items + 3
    expect = 0.5 + w[u] + w[i] + np.sum(V[u] * V[i], axis=1)
    np.testing.assert_allclose(fm_predict_numpy(d, 0.5, w, V), expect, rtol=1e-12)
    assert d.group_names == ("user", "item") and d.feature_names[4] == "item=1"
