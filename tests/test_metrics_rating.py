"""Rating metrics, evaluate_ratings and the bootstrap ensemble."""

import numpy as np
import pytest
from metrics_fakes import FixedScores

from bayesmf.data import Ratings, synthetic
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics import (
    BootstrapEnsemble,
    bootstrap_ci,
    evaluate_ranking,
    evaluate_ratings,
    mae,
    per_user_errors,
    posterior_rmse,
    rmse,
)
from bayesmf.models.base import FactorModel
from bayesmf.predictive import PredictiveDistribution


class ItemMean(FactorModel):
    """Global mean + shrunk item offsets: a tiny real FactorModel for the ensemble tests."""

    def __init__(self, shrinkage: float = 5.0, seed: int = 0):
        self.shrinkage, self.seed = shrinkage, seed

    def _fit(self, train):
        self.global_mean_ = float(train.values.mean())
        resid = np.bincount(train.items, train.values - self.global_mean_, minlength=train.n_items)
        self.item_bias_ = (resid / (train.item_counts + self.shrinkage)).astype(np.float32)
        self.user_bias_ = self.user_factors_ = self.item_factors_ = None


def _ratings(values, users=None):
    n = len(values)
    users = np.arange(n) if users is None else users
    return Ratings.from_arrays(users, np.arange(n), values, n_users=max(users) + 1, n_items=n, rating_scale=(1, 5))


# --- point metrics -----------------------------------------------------------------------------
def test_rmse_mae_hand():
    # errors 1, -1, 2, 0: RMSE = sqrt(6/4), MAE = 1
    assert rmse([1, 2, 3, 4], [2, 1, 5, 4]) == pytest.approx(np.sqrt(1.5))
    assert mae([1, 2, 3, 4], [2, 1, 5, 4]) == 1.0


def test_bootstrap_ci_two_points():
    # errors {0, 2}: resamples give RMSE 0 (p 1/4), sqrt 2 (1/2), 2 (1/4) -> 95% interval [0, 2]
    lo, hi = bootstrap_ci([0.0, 0.0], [0.0, 2.0], n_boot=4000, seed=1)
    assert (lo, hi) == (0.0, 2.0)
    # constant errors: every resample gives the same value
    assert bootstrap_ci([0.0] * 5, [1.0] * 5, "mae") == (1.0, 1.0)


def test_bootstrap_over_users():
    y, pred = np.zeros(6), np.array([1.0, 1.0, 1.0, 3.0, 0.0, 0.0])
    # one rating per user: identical draws to the per-rating bootstrap
    by_rating = bootstrap_ci(y, pred, n_boot=300, seed=4)
    assert bootstrap_ci(y, pred, by="users", users=np.arange(6), n_boot=300, seed=4) == by_rating
    # users pool their ratings: user 0 holds errors 1,1,1 (SSE 3), user 1 holds 3,0,0 (SSE 9);
    # resamples {0,0}: 1, {0,1}: sqrt(12/6) = sqrt 2, {1,1}: sqrt 3
    lo, hi = bootstrap_ci(y, pred, by="users", users=np.array([0, 0, 0, 1, 1, 1]), n_boot=4000, seed=0)
    assert (lo, hi) == (1.0, pytest.approx(np.sqrt(3)))
    with pytest.raises(DataError, match="users"):
        bootstrap_ci(y, pred, by="users")
    with pytest.raises(ConfigError, match="by must be"):
        bootstrap_ci(y, pred, by="items")


def test_per_user_errors_hand():
    out = per_user_errors([2, 0, 2], [1.0, 1.0, 1.0], [2.0, 1.5, 4.0])  # user 2: errors 1, 3
    np.testing.assert_array_equal(out["users"], [0, 2])
    np.testing.assert_array_equal(out["count"], [1, 2])
    np.testing.assert_allclose(out["rmse"], [0.5, np.sqrt(5)])
    np.testing.assert_allclose(out["mae"], [0.5, 2.0])


def test_posterior_rmse_hand():
    # two draws: errors (1, 1) and (0, 2): RMSE 1 and sqrt 2
    post = posterior_rmse([2.0, 2.0], [[3.0, 3.0], [2.0, 4.0]], level=0.5)
    np.testing.assert_allclose(post["draws"], [1.0, np.sqrt(2)])
    assert post["mean"] == pytest.approx((1 + np.sqrt(2)) / 2)
    assert post["lo"] == pytest.approx(1 + 0.25 * (np.sqrt(2) - 1))


# --- evaluate_ratings --------------------------------------------------------------------------
def test_evaluate_ratings_inputs_and_clipping():
    test = _ratings([1.0, 5.0, 3.0])
    pred = np.array([0.0, 6.0, 3.0])  # clipped: 1, 5, 3 -> zero error
    report = evaluate_ratings(test, pred, n_boot=50)
    assert report["rmse"] == 0.0 and report["rmse_unclipped"] == pytest.approx(np.sqrt(2 / 3))
    assert report["mae_unclipped"] == pytest.approx(2 / 3) and report["clipped_to"] == (1, 5)
    assert evaluate_ratings(test, pred, clip=False, n_boot=50)["rmse"] == report["rmse_unclipped"]
    # a model (FixedScores predicts entry (u, i)) gives the same numbers
    model = FixedScores(np.diag(pred), rating_scale=(1, 5))
    assert evaluate_ratings(test, model, n_boot=50)["rmse_unclipped"] == report["rmse_unclipped"]
    # (mean, std) tuple: uncertainty keys appear
    gauss = evaluate_ratings(test, (np.array([1.0, 5.0, 3.0]), np.ones(3)), n_boot=50)
    assert gauss["coverage@0.5"] == 1.0 and gauss["nll"] == pytest.approx(0.5 * np.log(2 * np.pi))
    assert gauss["crps"] == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi))
    for key in ("width@0.9", "aurc", "calibration_area", "spearman_abs_error_std", "rmse_by_std_decile"):
        assert key in gauss


def test_evaluate_ratings_posterior_draws():
    rng = np.random.default_rng(0)
    n = 2000
    truth = rng.uniform(2, 4, size=n)
    test = Ratings.from_arrays(np.arange(n) % 50, np.arange(n) // 50, np.clip(truth + 0.5 * rng.normal(size=n), 1, 5),
                               rating_scale=(1, 5))
    draws = truth + 0.05 * rng.normal(size=(40, n))  # posterior of the mean: narrow
    report = evaluate_ratings(test, PredictiveDistribution.from_samples(draws, noise_std=0.5), n_boot=100)
    assert report["rmse_draws_lo"] <= report["rmse_draws_mean"] <= report["rmse_draws_hi"]
    assert report["rmse"] <= report["rmse_draws_mean"]  # Jensen: the mean's RMSE is the lowest
    assert abs(report["coverage@0.9"] - 0.9) < 0.04  # correctly specified (clipping aside)
    assert "nll_mixture" in report
    # noisy draws of the observed rating (empirical form): no per-draw RMSE, it would include the noise
    noisy = PredictiveDistribution.from_samples(draws + 0.5 * rng.normal(size=draws.shape))
    assert "rmse_draws_mean" not in evaluate_ratings(test, noisy, n_boot=10)


def test_evaluate_ratings_bad_input():
    test = _ratings([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="mismatched lengths"):
        evaluate_ratings(test, np.ones(2))
    with pytest.raises(DataError, match="predictions holds nan"):
        evaluate_ratings(test, np.array([1.0, np.nan, 2.0]))
    with pytest.raises(DataError, match="std must be >= 0"):
        evaluate_ratings(test, (np.ones(3), np.array([1.0, -1.0, 1.0])))
    with pytest.raises(ConfigError, match="level"):
        evaluate_ratings(test, (np.ones(3), np.ones(3)), levels=(0.9, 1.2))
    with pytest.raises(DataError, match="empty"):
        evaluate_ratings(test.subset(np.zeros(3, bool)), np.ones(0))


# --- bootstrap ensemble ------------------------------------------------------------------------
def test_bootstrap_ensemble_end_to_end():
    data = synthetic(n_users=80, n_items=40, n_ratings=1500, rank=2, noise=0.3, seed=0).ratings
    train, test = data.subset(np.arange(1200)), data.subset(np.arange(1200, 1500))
    ens = BootstrapEnsemble(ItemMean(), n_models=5, seed=0).fit(train)
    assert len(ens.members_) == 5 and ens.noise_std_ > 0
    assert len({m.seed for m in ens.members_}) == 5  # each copy got its own seed
    dist = ens.predict_dist(test.users, test.items)
    assert dist.kind == "mixture" and dist.samples.shape == (5, test.nnz)
    np.testing.assert_allclose(ens.predict(test.users, test.items, clip=False), dist.mean, rtol=1e-6)
    report = evaluate_ratings(test, ens, n_boot=50)
    assert 0.5 < report["coverage@0.9"] <= 1.0 and report["rmse_draws_mean"] >= report["rmse"] - 1e-9
    # ranking with every option; Thompson sampling does not depend on batching
    for how in ("mean", "quantile", "thompson"):
        assert 0 <= evaluate_ranking(ens, train, test, how=how)["ndcg@10"] <= 1
    a = evaluate_ranking(ens, train, test, how="thompson", seed=3)
    b = evaluate_ranking(ens, train, test, how="thompson", seed=3, memory_budget=40 * 20 * 7)  # 7 users a batch
    assert a == b
    np.testing.assert_array_equal(np.sort(ens.seen_items(0)), np.sort(train.items[train.users == 0]))
