"""Categorical predictive and the categorical metrics against hand computations and NumPy."""

import numpy as np
import pytest
from scipy.special import ndtr

from bayesmf import DataError, Ratings
from bayesmf.experiments.catalogue import parse_metric
from bayesmf.metrics import (
    CategoricalDistribution,
    PredictiveDistribution,
    categorical_nll,
    crps,
    evaluate_ratings,
    expected_calibration_error,
    ranked_probability_score,
    reliability_diagram,
)

LEVELS = np.array([1.0, 2.0, 3.0])
PROBS = np.array([[0.2, 0.5, 0.3],
                  [0.7, 0.2, 0.1],
                  [0.05, 0.05, 0.9],
                  [1 / 3, 1 / 3, 1 / 3]])
Y = np.array([2.0, 3.0, 3.0, 1.0])


@pytest.fixture
def dist():
    return CategoricalDistribution.from_probabilities(PROBS, LEVELS)


def test_moments_cdf_quantiles_and_intervals(dist):
    assert np.allclose(dist.mean, PROBS @ LEVELS)
    assert np.allclose(dist.std ** 2, PROBS @ LEVELS**2 - (PROBS @ LEVELS) ** 2)
    assert np.allclose(dist.cdf(np.array([1.5, 3.0, 0.9, 2.0])), [0.2, 1.0, 0.0, 2 / 3])
    assert np.allclose(dist.quantile(0.5), [2.0, 1.0, 3.0, 2.0])
    # 0.8: tails of 0.1 each side; row 0: P(Y < 1) = 0 <= 0.1, P(Y > 2) = 0.3 > 0.1 -> [1, 3];
    # row 2: P(Y < 3) = 0.1 <= 0.1 -> {3} alone (mass 0.9)
    lo, hi = dist.interval(0.8)
    assert np.allclose(lo, [1.0, 1.0, 3.0, 1.0]) and np.allclose(hi, [3.0, 2.0, 3.0, 3.0])
    # 0.5: tails 0.25; row 2: P(Y <= 2) = 0.1 <= 0.25 -> lower 3; row 1: P(Y > 1) = 0.3 > 0.25 -> upper 2
    lo, hi = dist.interval(0.5)
    assert np.allclose(lo, [2.0, 1.0, 3.0, 1.0]) and np.allclose(hi, [3.0, 2.0, 3.0, 3.0])
    assert np.allclose(dist.pmf(Y), [0.5, 0.1, 0.9, 1 / 3])
    assert np.allclose(dist[1:3].probabilities, PROBS[1:3])


def test_crps_is_the_integral_of_the_squared_cdf_difference(dist):
    grid = np.linspace(0.0, 4.0, 400001)
    dt = grid[1] - grid[0]
    F = np.cumsum(PROBS, axis=1)
    expected = []
    for n in range(len(Y)):
        step = np.concatenate([[0.0], F[n]])[np.searchsorted(LEVELS, grid, side="right")]
        expected.append(np.sum((step - (grid >= Y[n])) ** 2) * dt)
    assert np.allclose(dist.crps(Y), expected, atol=1e-4)
    assert crps(Y, dist) == pytest.approx(np.mean(expected), abs=1e-4)


def test_categorical_nll_rps_by_hand(dist):
    assert np.allclose(categorical_nll(Y, dist), -np.log([0.5, 0.1, 0.9, 1 / 3]))
    # row 0: F = (0.2, 0.7), y = 2 -> O = (0, 1): (0.04 + 0.09) / 2
    # row 1: F = (0.7, 0.9), y = 3 -> O = (0, 0): (0.49 + 0.81) / 2
    # row 2: F = (0.05, 0.1), O = (0, 0); row 3: F = (1/3, 2/3), y = 1 -> O = (1, 1)
    expected = [0.065, 0.65, (0.0025 + 0.01) / 2, ((2 / 3) ** 2 + (1 / 3) ** 2) / 2]
    assert np.allclose(ranked_probability_score(Y, dist), expected)


def test_ece_and_reliability_by_hand(dist):
    # top-label: confidences 0.5, 0.7, 0.9, 1/3; right: yes (2), no (1 vs 3), yes (3), yes (1 first argmax)
    diagram = reliability_diagram(Y, dist, n_bins=10)
    assert diagram["count"].tolist() == [0, 0, 0, 1, 0, 1, 0, 1, 0, 1]
    assert np.allclose(diagram["confidence"][[3, 5, 7, 9]], [1 / 3, 0.5, 0.7, 0.9])
    assert np.allclose(diagram["frequency"][[3, 5, 7, 9]], [1, 1, 0, 1])
    ece = (abs(1 - 1 / 3) + abs(1 - 0.5) + abs(0 - 0.7) + abs(1 - 0.9)) / 4
    assert expected_calibration_error(Y, dist, n_bins=10) == pytest.approx(ece)
    # class-wise with 2 bins [0, 0.5), [0.5, 1]: 12 pairs
    p, o = PROBS.ravel(), (np.searchsorted(LEVELS, Y)[:, None] == np.arange(3)).ravel().astype(float)
    high = p >= 0.5
    ece_cw = (high.sum() * abs(o[high].mean() - p[high].mean())
              + (~high).sum() * abs(o[~high].mean() - p[~high].mean()))
    assert expected_calibration_error(Y, dist, n_bins=2, which="classwise") == pytest.approx(ece_cw / 12)


def test_discretised_gaussian_is_the_mass_between_midpoints():
    mean, std = np.array([1.2, 2.9, 2.0]), np.array([0.5, 1.0, 3.0])
    gaussian = PredictiveDistribution(mean, std)
    cat = CategoricalDistribution.from_predictive(gaussian, LEVELS)
    c1, c2 = ndtr((1.5 - mean) / std), ndtr((2.5 - mean) / std)
    assert np.allclose(cat.probabilities, np.stack([c1, c2 - c1, 1 - c2], axis=1))
    y = np.array([1.0, 3.0, 2.0])
    assert np.allclose(categorical_nll(y, gaussian, levels=LEVELS), -np.log([c1[0], 1 - c2[1], c2[2] - c1[2]]))


def test_evaluate_ratings_reports_the_categorical_metrics(dist):
    test = Ratings.from_arrays(np.arange(4), np.zeros(4, int), Y)
    report = evaluate_ratings(test, dist, n_boot=10)
    assert report["categorical_nll"] == pytest.approx(categorical_nll(Y, dist).mean())
    assert report["rps"] == pytest.approx(ranked_probability_score(Y, dist).mean())
    assert report["ece"] == pytest.approx(expected_calibration_error(Y, dist))
    lo, hi = dist.interval(0.5)
    assert report["coverage@0.5"] == pytest.approx(np.mean((lo <= Y) & (Y <= hi)))
    # a Gaussian predictive on the same integer scale is discretised onto the test grid 1..3
    gaussian = (np.array([2.0, 2.5, 2.8, 1.1]), np.full(4, 0.8))
    report = evaluate_ratings(test, gaussian, n_boot=10)
    assert report["rps"] == pytest.approx(ranked_probability_score(Y, PredictiveDistribution(*gaussian),
                                                                   levels=LEVELS).mean())
    for name in ("categorical_nll", "rps", "ece", "ece_classwise"):
        assert parse_metric(name).kind == "uncertainty"


def test_evaluate_ratings_nll_of_a_categorical_predictive_is_its_log_score():
    """A categorical predictive's ``nll`` is -log P(observed category), computed by hand; a
    certain prediction (std 0, no Gaussian density) is scored; a rating off the levels is an
    error that names it."""
    probs = np.array([[0.0, 1.0, 0.0], [0.1, 0.3, 0.6], [0.25, 0.25, 0.5]])
    y = np.array([2.0, 3.0, 1.0])
    test = Ratings.from_arrays(np.arange(3), np.zeros(3, int), y)
    report = evaluate_ratings(test, CategoricalDistribution.from_probabilities(probs, LEVELS), n_boot=10)
    assert report["nll"] == pytest.approx(-(np.log(1.0) + np.log(0.6) + np.log(0.25)) / 3)
    off = Ratings.from_arrays(np.arange(3), np.zeros(3, int), np.array([2.0, 3.0, 4.0]))
    with pytest.raises(DataError, match=r"y\[2\] = 4.0 is not one of the levels"):
        evaluate_ratings(off, CategoricalDistribution.from_probabilities(probs, LEVELS), n_boot=10)


def test_bad_input(dist):
    with pytest.raises(DataError, match=r"y\[1\] = 2.5 is not one of the levels"):
        categorical_nll(np.array([2.0, 2.5, 3.0, 1.0]), dist)
    with pytest.raises(DataError, match="sum to 1 per row; row 1"):
        CategoricalDistribution.from_probabilities([[0.5, 0.5, 0.0], [0.5, 0.6, 0.0]], LEVELS)
    with pytest.raises(DataError, match="strictly increasing"):
        CategoricalDistribution.from_probabilities([[0.5, 0.5]], [2.0, 1.0])
    with pytest.raises(Exception, match="levels"):
        categorical_nll(Y, PredictiveDistribution(Y, np.ones(4)))


def test_randomized_pit_lies_in_the_observed_category(dist):
    u = dist.randomized_pit(Y, seed=3)
    F = np.cumsum(PROBS, axis=1)
    k = np.searchsorted(LEVELS, Y)
    below = np.where(k > 0, F[np.arange(4), k - 1], 0.0)
    assert np.all((u >= below) & (u <= F[np.arange(4), k]))
