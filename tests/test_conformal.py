"""Split-conformal intervals: the quantile formula, the predictive object, the coverage guarantee."""

import math
from fractions import Fraction

import numpy as np
import pytest

from bayesmf import splits
from bayesmf.data import Ratings, synthetic
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics import (
    ConformalDistribution,
    ConformalRegressor,
    conformal_quantile,
    crps,
    crps_samples,
    evaluate_ratings,
)
from bayesmf.models.base import Estimator


def closed_form(scores, level):
    """The ceil((n + 1) level)-th smallest score (exact rational arithmetic), inf past n."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = math.ceil((s.size + 1) * Fraction(str(level)))
    return float(s[k - 1]) if k <= s.size else math.inf


# --- the quantile ------------------------------------------------------------------------------
def test_quantile_on_hand_made_residuals():
    s = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]  # n = 9: (n + 1) L = 10 L
    assert conformal_quantile(s, 0.5) == 0.5  # k = 5 exactly (an integer (n + 1) L)
    assert conformal_quantile(s, 0.8) == 0.8  # k = 8
    assert conformal_quantile(s, 0.81) == 0.9  # k = ceil(8.1) = 9
    assert conformal_quantile(s, 0.9) == 0.9  # k = 9 = n: the largest score
    assert conformal_quantile(s, 0.91) == math.inf  # k = 10 > n: too few scores
    assert conformal_quantile(s, 0.05) == 0.1  # k = 1
    assert conformal_quantile([0.3, 0.1, 0.2], 0.8) == math.inf  # ceil(3.2) = 4 > 3
    assert conformal_quantile([0.3, 0.1, 0.2], 0.75) == 0.3  # ceil(3.0) = 3
    # the same as NumPy's "inverted_cdf" quantile at k / n (the smallest s with ECDF(s) >= k / n)
    for level in (0.5, 0.8, 0.81, 0.9):
        k = math.ceil(10 * Fraction(str(level)))
        assert conformal_quantile(s, level) == np.quantile(s, k / 9, method="inverted_cdf")


def test_quantile_against_closed_form_random():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9, 19, 99, 100, 999, 1234):
        scores = np.abs(rng.standard_normal(n))
        for level in (0.05, 0.1, 0.25, 0.5, 0.8, 0.9, 0.95, 0.99):
            assert conformal_quantile(scores, level) == closed_form(scores, level), (n, level)


# --- the predictive distribution ----------------------------------------------------------------
@pytest.mark.parametrize("n_cal", [9, 99, 250])
def test_pit_coverage_equals_interval_coverage(n_cal):
    rng = np.random.default_rng(n_cal)
    scores = np.abs(rng.standard_normal(n_cal))
    mean = rng.normal(3, 1, 5000)
    y = mean + rng.standard_normal(5000) * 1.2
    for scale in (None, rng.uniform(0.5, 2, 5000)):
        dist = ConformalDistribution.from_scores(mean, scores, scale)
        assert dist.kind == "conformal"
        pit = dist.cdf(y)
        for level in (0.5, 0.8, 0.9, 0.95):
            lo, hi = dist.interval(level)
            half = closed_form(scores, level) * (1.0 if scale is None else scale)
            np.testing.assert_allclose(hi - mean, half)
            np.testing.assert_allclose(mean - lo, half)
            inside = (lo <= y) & (y <= hi)
            assert np.array_equal(np.abs(2 * pit - 1) <= level, inside), level
            q_hi, q_lo = dist.quantile((1 + level) / 2), dist.quantile((1 - level) / 2)
            np.testing.assert_allclose(q_hi, hi)
            np.testing.assert_allclose(q_lo, lo)
        np.testing.assert_array_equal(dist.quantile(0.5), mean)


def test_evaluate_ratings_scores_a_conformal_distribution():
    rng = np.random.default_rng(1)
    n = 2000
    users, items = np.arange(n) % 50, np.arange(n) // 50
    truth = 3 + rng.standard_normal(n) * 0.3
    test = Ratings.from_arrays(users, items, truth + rng.standard_normal(n) * 0.8, n_users=50, n_items=40)
    scores = np.abs(rng.standard_normal(99) * 0.8)
    dist = ConformalDistribution.from_scores(truth, scores)
    report = evaluate_ratings(test, dist, levels=(0.5, 0.9, 0.995), n_boot=10)
    for level in (0.5, 0.9):
        lo, hi = dist.interval(level)
        assert report[f"coverage@{level:g}"] == np.mean((lo <= test.values) & (test.values <= hi))
        assert report[f"width@{level:g}"] == pytest.approx(2 * closed_form(scores, level))
    assert report["width@0.995"] == math.inf  # 99 scores bound levels up to 0.99 only
    assert report["coverage@0.995"] == 1.0
    # CRPS of the finite part: the empirical CRPS of the draws mean +- s_i
    draws = np.concatenate([truth[None] + scores[:, None], truth[None] - scores[:, None]])
    np.testing.assert_allclose(dist.crps(test.values), crps_samples(test.values, draws), rtol=1e-10, atol=1e-12)
    assert report["crps"] == pytest.approx(crps(test.values, dist))
    np.testing.assert_allclose(dist.std, np.sqrt(np.mean(scores**2)))
    sub = dist[10:20]
    assert isinstance(sub, ConformalDistribution) and len(sub) == 10
    np.testing.assert_array_equal(sub.interval(0.9)[1], dist.interval(0.9)[1][10:20])


# --- the estimator --------------------------------------------------------------------------------
def test_split_conformal_coverage_on_synthetic_data():
    """Marginal coverage >= level (finite-sample guarantee), and not much more, over thousands of
    test ratings, for an ALS of the wrong rank (the guarantee does not need a good model)."""
    from bayesmf import ALS

    data = synthetic(n_users=300, n_items=200, n_ratings=20_000, rank=3, noise=0.5, seed=3)
    train, test = splits.random(data.ratings, 0.2, seed=0)
    covered, widths = [], []
    for seed in (0, 1):
        model = ConformalRegressor(ALS(rank=2, n_iter=5), calibration_fraction=0.2, seed=seed).fit(train)
        assert model.n_calibration_ == round(0.2 * train.nnz)
        assert model.model_.n_users_ == train.n_users  # the proper part keeps the index space
        dist = model.predict_dist(test.users, test.items)
        report = evaluate_ratings(test, model, levels=(0.5, 0.9), n_boot=10)
        lo, hi = dist.interval(0.9)
        assert report["coverage@0.9"] == np.mean((lo <= test.values) & (test.values <= hi))
        assert 0.45 <= report["coverage@0.5"] <= 0.55
        covered.append(report["coverage@0.9"])
        widths.append(report["width@0.9"])
        np.testing.assert_allclose(model.predict(test.users, test.items), model.model_.predict(test.users, test.items))
    assert 0.88 <= np.mean(covered) <= 0.93, covered
    assert all(0.87 <= c <= 0.94 for c in covered), covered
    assert 2 * 1.645 * 0.5 < np.mean(widths) < 2 * 1.645 * 0.5 * 1.6  # wider than the noise alone


class _Fixed(Estimator):
    """A point model with a Gaussian predictive: mean 0 everywhere, std 1 on even items and 3 on
    odd ones (the data's true noise)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train):
        self.n_users_, self.n_items_ = train.shape
        return self

    def predict(self, users, items, clip=True, unknown="error"):
        return np.zeros(len(users))

    def predict_dist(self, users, items, unknown="error"):
        from bayesmf.predictive import PredictiveDistribution

        return PredictiveDistribution(np.zeros(len(users)), np.where(np.asarray(items) % 2, 3.0, 1.0))


def _heteroscedastic(n, seed):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 100, n), rng.integers(0, 60, n)
    keep = np.unique(users * 60 + items, return_index=True)[1]
    users, items = users[keep], items[keep]
    values = rng.standard_normal(users.size) * np.where(items % 2, 3.0, 1.0)
    return Ratings.from_arrays(users, items, values, n_users=100, n_items=60)


def test_normalized_scores_adapt_the_width():
    ratings = _heteroscedastic(5000, 0)
    train, test = splits.random(ratings, 0.4, seed=1)
    odd = test.items % 2 == 1
    plain = ConformalRegressor(_Fixed(), 0.5, seed=2).fit(train).predict_dist(test.users, test.items)
    scaled = ConformalRegressor(_Fixed(), 0.5, normalized=True, seed=2).fit(train).predict_dist(test.users, test.items)
    for dist, name in ((plain, "plain"), (scaled, "normalized")):
        lo, hi = dist.interval(0.9)
        inside = (lo <= test.values) & (test.values <= hi)
        assert 0.87 <= inside.mean() <= 0.93, (name, inside.mean())
        if name == "plain":  # one width for all: the noisy items are under-covered
            assert inside[odd].mean() < 0.88 and inside[~odd].mean() > 0.97  # about 0.84 and 1.0
        else:  # scaled by the predictive std: about 0.9 in both groups
            assert 0.86 <= inside[odd].mean() <= 0.94 and 0.86 <= inside[~odd].mean() <= 0.94
            np.testing.assert_allclose((hi - lo)[odd] / (hi - lo)[~odd].mean(), 3.0)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.1", None, True])
def test_bad_calibration_fraction(fraction):
    with pytest.raises(ConfigError, match=f"calibration_fraction.*{fraction!r}"):
        ConformalRegressor(_Fixed(), calibration_fraction=fraction)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.2])
def test_bad_level(level):
    with pytest.raises(ConfigError, match=f"level.*{level!r}"):
        conformal_quantile([0.1, 0.2], level)
    dist = ConformalDistribution.from_scores([1.0, 2.0], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match=f"level.*{level!r}"):
        dist.interval(level)


def test_bad_arguments_and_unfitted():
    with pytest.raises(ConfigError, match="not fitted"):
        ConformalRegressor(_Fixed()).predict_dist([0], [0])
    with pytest.raises(ConfigError, match="'stratified'"):
        ConformalRegressor(_Fixed(), calibration="stratified")
    with pytest.raises(ConfigError, match="predict_dist"):
        from bayesmf import Baseline

        ConformalRegressor(Baseline(), normalized=True)
    with pytest.raises(ConfigError, match="estimator"):
        ConformalRegressor("ALS")
    with pytest.raises(DataError, match="Ratings"):
        ConformalRegressor(_Fixed()).fit(np.zeros(3))
    with pytest.raises(DataError, match="scores"):
        conformal_quantile([], 0.9)
    with pytest.raises(DataError, match="scores"):
        conformal_quantile([0.1, -0.2], 0.9)
