"""Issue 26: every index entry point of a fitted model applies the same check.

``predict([1.7], [0])`` must not be ``predict([1], [0])``, nor ``predict(["5"], ...)`` index 5:
the rule of ``recommend_indices`` (integer dtypes only, in range) holds for ``predict``,
``predict_dist``, ``score_users``, ``score_std_users``, ``seen_items``, ``recommend_indices``
(users and candidates) and ``similar_*_indices``. Models here are hand-set FactorModel subclasses,
so no engine is fitted; only ``predict_dist`` needs a (small) BPMF.
"""

import numpy as np
import pytest

from bayesmf import ConfigError, DataError
from bayesmf.data import synthetic
from bayesmf.metrics.bootstrap import BootstrapEnsemble
from bayesmf.models.base import FactorModel


class Hand(FactorModel):
    """Random biases and factors of the right shapes: enough to exercise the entry points."""

    def __init__(self, rank: int = 2, seed: int = 0):
        self.rank, self.seed = rank, seed

    def _fit(self, train):
        rng = np.random.default_rng(self.seed)
        self.global_mean_ = float(train.values.mean())
        self.user_bias_ = rng.normal(size=train.n_users).astype(np.float32)
        self.item_bias_ = rng.normal(size=train.n_items).astype(np.float32)
        self.user_factors_ = rng.normal(size=(train.n_users, self.rank)).astype(np.float32)
        self.item_factors_ = rng.normal(size=(train.n_items, self.rank)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=12, n_items=9, n_ratings=50, rank=2, seed=0).ratings


@pytest.fixture(scope="module")
def model(data):
    return Hand().fit(data)


BAD_INDICES = [
    ([1.7], "1.7"),
    ([1.0], "1.0"),
    (["5"], "'5'"),
    ([True], "True"),
    (np.array([1, None], dtype=object), "None"),
]


@pytest.mark.parametrize("bad, shown", BAD_INDICES)
def test_predict_refuses_non_integer_user_and_item_indices(model, bad, shown):
    with pytest.raises(DataError, match=rf"users must be integer indices.*{shown}"):
        model.predict(bad, [0])
    with pytest.raises(DataError, match=rf"items must be integer indices.*{shown}"):
        model.predict([0], bad)
    with pytest.raises(DataError, match="users must be integer indices"):
        model.predict(bad, [0], unknown="fallback")


@pytest.mark.parametrize("bad, shown", BAD_INDICES)
def test_every_index_entry_point_uses_the_same_check(model, bad, shown):
    calls = {
        "user_indices": [lambda: model.score_users(bad), lambda: model.recommend_indices(bad, 2),
                         lambda: model.similar_users_indices(bad, 2)],
        "items": [lambda: model.score_users([0], bad)],
        "candidates": [lambda: model.recommend_indices([0], 2, candidates=bad)],
        "item_indices": [lambda: model.similar_items_indices(bad, 2)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(DataError, match=rf"{name} must be integer indices.*{shown}"):
                fn()


def test_out_of_range_and_valid_indices(model, data):
    with pytest.raises(DataError, match="user index 12 was not in training"):
        model.predict([12], [0])
    with pytest.raises(DataError, match=r"user_indices: index -1 is out of range 0..11"):
        model.score_users([-1])
    with pytest.raises(DataError, match=r"items: index 9 is out of range 0..8"):
        model.score_users([0], [9])
    with pytest.raises(DataError, match=r"user_index: index 12 is out of range"):
        model.seen_items(12)
    with pytest.raises(DataError, match=r"user_index must be integer indices.*1.7"):
        model.seen_items(1.7)
    np.testing.assert_array_equal(model.seen_items(np.int32(3)), model.seen_items(3))
    assert model.predict([], []).shape == (0,)
    ok = model.predict(np.array([1, 2], np.uint8), np.array([0, 3], np.int16))
    np.testing.assert_array_equal(ok, model.predict([1, 2], [0, 3]))
    np.testing.assert_array_equal(model.score_users(np.array([2], np.int32)), model.score_users([2]))


def test_bootstrap_ensemble_checks_indices_before_converting(data):
    ensemble = BootstrapEnsemble(Hand(), n_models=2).fit(data)
    with pytest.raises(DataError, match="user_indices must be integer indices.*1.7"):
        ensemble.score_users([1.7])
    with pytest.raises(DataError, match="users must be integer indices.*'5'"):
        ensemble.predict_dist(["5"], [0])


# -- predict_dist: indices and n_draws -----------------------------------------------------------------
@pytest.fixture(scope="module")
def bpmf(data):
    from bayesmf.models.bpmf import BPMF

    return BPMF(rank=2, n_samples=6, n_warmup=2, seed=0).fit(data)


@pytest.mark.parametrize("n_draws", [-1, 0, 2.5, "3", True])
def test_predict_dist_n_draws_is_a_positive_integer(bpmf, n_draws):
    with pytest.raises(ConfigError, match=f"n_draws must be a positive integer, got {n_draws!r}"):
        bpmf.predict_dist([0], [0], n_draws=n_draws)


def test_predict_dist_and_bayesian_scores_check_indices(bpmf):
    with pytest.raises(DataError, match="users must be integer indices.*1.7"):
        bpmf.predict_dist([1.7], [0])
    with pytest.raises(DataError, match="items must be integer indices.*'5'"):
        bpmf.predict_dist([0], ["5"], n_draws=3)
    with pytest.raises(DataError, match="user_indices must be integer indices.*1.7"):
        bpmf.score_users([1.7], how="quantile")
    with pytest.raises(DataError, match="user_indices must be integer indices.*1.7"):
        bpmf.score_std_users([1.7])
    assert bpmf.predict_dist([0, 1], [0, 1], n_draws=3).samples.shape == (3, 2)
