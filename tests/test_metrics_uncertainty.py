"""PredictiveDistribution and the uncertainty metrics: closed forms, hand-computed cases, simulations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics import (
    calibration_area,
    calibration_curve,
    coverage,
    crps,
    crps_gaussian,
    crps_mixture,
    crps_samples,
    gaussian_nll,
    interval_width,
    mixture_nll,
    pit,
    risk_coverage,
    rmse_by_std_bin,
    spearman_error_std,
)
from bayesmf.predictive import PredictiveDistribution

SQRT_PI = np.sqrt(np.pi)


# --- PredictiveDistribution --------------------------------------------------------------------
def test_gaussian_interval_and_cdf():
    d = PredictiveDistribution([0.0, 3.0], [1.0, 2.0])
    lo, hi = d.interval(0.95)
    np.testing.assert_allclose(hi, [1.959964, 3 + 2 * 1.959964], rtol=1e-6)
    np.testing.assert_allclose(lo, [-1.959964, 3 - 2 * 1.959964], rtol=1e-6)
    np.testing.assert_allclose(d.cdf([0.0, 5.0]), [0.5, norm.cdf(1.0)])


def test_empirical_quantile_matches_numpy_and_cdf_inverts_it():
    x = np.random.default_rng(0).normal(size=(9, 40))
    d = PredictiveDistribution.from_samples(x)
    assert d.kind == "empirical"
    np.testing.assert_allclose(d.std, x.std(axis=0))
    for q in (0.02, 0.25, 0.5, 0.9, 0.98):
        np.testing.assert_allclose(d.quantile(q), np.quantile(x, q, axis=0))
        np.testing.assert_allclose(d.cdf(d.quantile(q)), q, atol=1e-12)
    # outside the sample range the CDF is 0 / 1
    np.testing.assert_array_equal(d.cdf(x.min(0) - 1), 0.0)
    np.testing.assert_array_equal(d.cdf(x.max(0) + 1), 1.0)


def test_mixture_moments_and_quantile():
    means = np.array([[0.0, 1.0], [2.0, 1.0]])  # two draws, two predictions
    d = PredictiveDistribution.from_samples(means, noise_std=0.5)
    assert d.kind == "mixture"
    # variance = var of draws (1 and 0) + noise^2 (0.25)
    np.testing.assert_allclose(d.std, np.sqrt([1.25, 0.25]))
    np.testing.assert_allclose(d.mean, [1.0, 1.0])
    # column 1 is a single Gaussian N(1, 0.25): its quantile is exact
    np.testing.assert_allclose(d.quantile(0.9)[1], 1 + 0.5 * norm.ppf(0.9), rtol=1e-9)
    # column 0 is a symmetric mixture: the median is 1 and cdf(quantile(q)) == q
    np.testing.assert_allclose(d.quantile(0.5)[0], 1.0, atol=1e-9)
    for q in (0.01, 0.3, 0.77):
        np.testing.assert_allclose(d.cdf(d.quantile(q)), q, atol=1e-9)


def test_predictive_bad_input():
    with pytest.raises(DataError, match="std must be >= 0"):
        PredictiveDistribution([1.0], [-0.1])
    with pytest.raises(DataError, match="different lengths"):
        PredictiveDistribution([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="mean holds nan"):
        PredictiveDistribution([np.nan], [1.0])
    with pytest.raises(DataError, match="samples must have shape"):
        PredictiveDistribution([1.0], [1.0], samples=np.ones((3, 2)))
    d = PredictiveDistribution([1.0], [1.0])
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="level"):
            d.interval(bad)


# --- scoring rules ----------------------------------------------------------------------------
def test_gaussian_nll_hand_values():
    # y = m, s = 1: 0.5 log(2 pi) = 0.918939; y - m = 2, s = 2: log 2 + 0.918939 + 0.5
    expected = [0.9189385, 0.9189385 + np.log(2) + 0.5]
    np.testing.assert_allclose(gaussian_nll([0.0, 3.0], [0.0, 1.0], [1.0, 2.0]), expected)
    with pytest.raises(DataError, match="std must be > 0"):
        gaussian_nll([0.0], [0.0], [0.0])


def test_crps_gaussian_closed_forms():
    # at the mean: s (sqrt2 - 1)/sqrt(pi) = 0.233695 s
    np.testing.assert_allclose(crps_gaussian([1.0], [1.0], [2.0]), 2 * (np.sqrt(2) - 1) / SQRT_PI)
    np.testing.assert_allclose((np.sqrt(2) - 1) / SQRT_PI, 0.2336949, rtol=1e-6)
    # against the definition: integral of (F(x) - 1[x >= y])^2
    y, m, s = 0.7, -0.2, 1.3
    left = integrate.quad(lambda x: norm.cdf(x, m, s) ** 2, -np.inf, y)[0]
    right = integrate.quad(lambda x: (1 - norm.cdf(x, m, s)) ** 2, y, np.inf)[0]
    np.testing.assert_allclose(crps_gaussian([y], [m], [s]), left + right, rtol=1e-7)
    # zero std degenerates to the absolute error
    np.testing.assert_allclose(crps_gaussian([2.0], [0.5], [0.0]), 1.5)


def test_crps_samples_hand_value_and_fair_version():
    # draws {0, 1}, y = 0: E|X - y| = 0.5, E|X - X'| = (0 + 1 + 1 + 0)/4 = 0.5 -> 0.5 - 0.25 = 0.25
    np.testing.assert_allclose(crps_samples([0.0], [[1.0], [0.0]]), 0.25)
    # fair: E|X - X'| over distinct pairs = 1 -> 0.5 - 0.5 = 0
    np.testing.assert_allclose(crps_samples([0.0], [[1.0], [0.0]], fair=True), 0.0)


def test_crps_samples_and_mixture_approach_closed_forms():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    # 2000 evenly spaced quantiles of N(0.3, 1.5^2) as draws: the empirical CRPS converges as O(1/S)
    grid = norm.ppf((np.arange(2000) + 0.5) / 2000, 0.3, 1.5)
    draws = np.repeat(grid[:, None], 50, axis=1)
    gaussian = crps_gaussian(y, np.full(50, 0.3), np.full(50, 1.5))
    np.testing.assert_allclose(crps_samples(y, draws[::-1]), gaussian, atol=1e-3)
    # a mixture whose components coincide is the Gaussian N(m, noise^2): exact
    np.testing.assert_allclose(crps_mixture(y, np.full((5, 50), 0.3), 1.5), gaussian, rtol=1e-10)


def test_crps_mixture_against_numerical_integral_and_shifts():
    means = np.array([[-1.0], [0.5], [2.0], [0.0]])
    noise, y = 0.4, 0.3

    def F(x):
        return norm.cdf((x - means[:, 0]) / noise).mean()

    left = integrate.quad(lambda x: F(x) ** 2, -np.inf, y, limit=200)[0]
    right = integrate.quad(lambda x: (1 - F(x)) ** 2, y, np.inf, limit=200)[0]
    np.testing.assert_allclose(crps_mixture([y], means, noise, n_shifts=None), left + right, rtol=1e-6)
    # with all S - 1 shifts the shift estimator is the exact sum
    np.testing.assert_allclose(crps_mixture([y], means, noise, n_shifts=3), left + right, rtol=1e-6)
    # an odd number of draws (no self-paired middle lag)
    odd = means[:3, 0]
    G = lambda x: norm.cdf((x - odd) / noise).mean()  # noqa: E731
    exact_odd = (integrate.quad(lambda x: G(x) ** 2, -np.inf, y, limit=200)[0]
                 + integrate.quad(lambda x: (1 - G(x)) ** 2, y, np.inf, limit=200)[0])
    np.testing.assert_allclose(crps_mixture([y], odd[:, None], noise), exact_odd, rtol=1e-6)
    # 16 shifts of 100 draws: per prediction within a few percent, the mean over 2000 within 0.5%
    big = np.random.default_rng(2).normal(size=(100, 2000))
    yy = np.zeros(2000)
    approx, exact = crps_mixture(yy, big, 0.5, n_shifts=16), crps_mixture(yy, big, 0.5, n_shifts=99)
    np.testing.assert_allclose(approx, exact, rtol=0.2)
    assert np.median(np.abs(approx / exact - 1)) < 0.03  # measured 0.020
    assert approx.mean() == pytest.approx(exact.mean(), rel=0.005)


def test_mixture_nll_matches_direct_density():
    means = np.array([[0.0, 1.0], [2.0, 1.0]])
    d = PredictiveDistribution.from_samples(means, noise_std=0.5)
    y = np.array([0.5, 1.0])
    direct = -np.log(0.5 * (norm.pdf(y, means[0], 0.5) + norm.pdf(y, means[1], 0.5)))
    np.testing.assert_allclose(mixture_nll(y, d), direct)


# --- coverage and calibration ------------------------------------------------------------------
def test_coverage_hand_example():
    d = PredictiveDistribution([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    # the 90% interval is +-1.645: y = 0, 1.6 are inside, 1.7 and -3 are outside -> 0.5
    assert coverage([0.0, 1.6, 1.7, -3.0], d, 0.9) == 0.5
    np.testing.assert_allclose(interval_width(d, 0.9), 2 * 1.6448536, rtol=1e-6)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_coverage_of_correct_gaussian_is_nominal(level):
    rng = np.random.default_rng(3)
    n = 20_000
    mean, std = rng.normal(size=n), rng.uniform(0.2, 2.0, size=n)
    y = mean + std * rng.normal(size=n)
    cov = coverage(y, PredictiveDistribution(mean, std), level)
    assert abs(cov - level) < 4 * np.sqrt(level * (1 - level) / n)
    # the same for draws from the correct distribution (empirical form, 400 draws)
    draws = mean + std * rng.normal(size=(400, n))
    cov_s = coverage(y, PredictiveDistribution.from_samples(draws.astype(np.float32)), level)
    assert abs(cov_s - level) < 4 * np.sqrt(level * (1 - level) / n) + 0.01


def test_calibration_curve_agrees_with_interval_coverage():
    rng = np.random.default_rng(4)
    y = rng.normal(size=500)
    d = PredictiveDistribution.from_samples(rng.normal(0.1, 1.2, size=(50, 500)), noise_std=0.3)
    levels, observed = calibration_curve(y, d, [0.5, 0.8, 0.9])
    for level, obs in zip(levels, observed, strict=True):
        assert obs == pytest.approx(coverage(y, d, level), abs=1 / 500)


def test_calibration_area_hand_and_closed_form():
    # one observation with |2 PIT - 1| = 0.5: G = 0 below 0.5, 1 above -> area 1/8 + 1/8
    d = PredictiveDistribution([0.0], [1.0])
    y = norm.ppf(0.75)  # PIT 0.75
    assert calibration_area([y], d) == pytest.approx(0.25)
    # std twice too wide: observed coverage at nominal p is 2 Phi(2 z_p) - 1, z_p = Phi^-1((1+p)/2)
    rng = np.random.default_rng(5)
    y = rng.normal(size=200_000)
    wide = PredictiveDistribution(np.zeros(y.size), np.full(y.size, 2.0))
    exact = integrate.quad(lambda p: abs(2 * norm.cdf(2 * norm.ppf((1 + p) / 2)) - 1 - p), 0, 1)[0]
    assert calibration_area(y, wide) == pytest.approx(exact, abs=3e-3)
    calibrated = PredictiveDistribution(np.zeros(y.size), np.ones(y.size))
    assert calibration_area(y, calibrated) < 3e-3


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=20), st.floats(0.01, 0.99))
def test_interval_containing_everything_has_full_coverage(ys, level):
    d = PredictiveDistribution(np.zeros(len(ys)), np.full(len(ys), 1e6))
    assert coverage(ys, d, level) == 1.0
    assert 0.0 <= calibration_area(ys, d) <= 0.5


# --- risk-coverage -----------------------------------------------------------------------------
def test_risk_coverage_hand_example():
    # errors 1, 0, 2 ranked by std: RMSE of first k = 1, sqrt(1/2), sqrt(5/3)
    rc = risk_coverage([0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(rc["risk"], [1.0, np.sqrt(0.5), np.sqrt(5 / 3)])
    np.testing.assert_allclose(rc["coverage"], [1 / 3, 2 / 3, 1.0])
    assert rc["aurc"] == pytest.approx((1 + np.sqrt(0.5) + np.sqrt(5 / 3)) / 3)  # 0.99937


def test_risk_coverage_ties_do_not_depend_on_order():
    # the first two share a std: both k = 1 and k = 2 use their mean squared error 0.5
    a = risk_coverage([0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [0.1, 0.1, 0.3])
    b = risk_coverage([0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.1, 0.1, 0.3])
    np.testing.assert_allclose(a["risk"], [np.sqrt(0.5), np.sqrt(0.5), np.sqrt(5 / 3)])
    np.testing.assert_allclose(a["risk"], b["risk"])


def test_rmse_by_std_bin_and_spearman_hand():
    y = np.zeros(4)
    pred = np.array([0.1, -0.2, 1.0, 2.0])
    std = np.array([0.1, 0.2, 0.3, 0.4])
    bins = rmse_by_std_bin(y, pred, std, n_bins=2)  # edges 0.1, 0.25, 0.4
    np.testing.assert_array_equal(bins["count"], [2, 2])
    np.testing.assert_allclose(bins["rmse"], [np.sqrt(0.025), np.sqrt(2.5)])
    np.testing.assert_allclose(bins["rms_std"], [np.sqrt(0.025), np.sqrt(0.125)])
    # |errors| 0.1, 0.2, 1, 2 rank exactly like std -> Spearman 1
    assert spearman_error_std(y, pred, std) == pytest.approx(1.0)
    assert np.isnan(spearman_error_std(y, pred, np.ones(4)))


def test_crps_and_pit_dispatch_and_errors():
    d = PredictiveDistribution([0.0, 1.0], [1.0, 1.0])
    assert crps([0.0, 1.0], d) == pytest.approx((np.sqrt(2) - 1) / SQRT_PI)
    np.testing.assert_allclose(pit([0.0, 1.0], d), [0.5, 0.5])
    with pytest.raises(DataError, match="mismatched lengths"):
        crps([0.0], d)
    with pytest.raises(DataError, match="y holds nan"):
        coverage([np.nan, 0.0], d, 0.9)
    with pytest.raises(DataError, match="std must be >= 0"):
        crps_gaussian([0.0], [0.0], [-1.0])


def test_per_draw_noise():
    # two draws with their own noise (as BPMF's 1/sqrt(alpha_s)): y ~ (N(0, 0.5^2) + N(1, 1))/2
    means, noise = np.array([[0.0], [1.0]]), np.array([[0.5], [1.0]])
    d = PredictiveDistribution.from_samples(means, noise_std=noise)
    assert d.std[0] == pytest.approx(np.sqrt(0.25 + (0.25 + 1.0) / 2))  # var of draws + mean noise var

    def F(x):
        return 0.5 * (norm.cdf(x, 0.0, 0.5) + norm.cdf(x, 1.0, 1.0))

    for q in (0.05, 0.5, 0.9):
        assert F(d.quantile(q)[0]) == pytest.approx(q, abs=1e-9)
    y = 0.8
    direct_nll = -np.log(0.5 * (norm.pdf(y, 0.0, 0.5) + norm.pdf(y, 1.0, 1.0)))
    np.testing.assert_allclose(mixture_nll([y], d), direct_nll)
    exact = integrate.quad(lambda x: F(x) ** 2, -np.inf, y)[0] + integrate.quad(lambda x: (1 - F(x)) ** 2, y, np.inf)[0]
    np.testing.assert_allclose(crps_mixture([y], means, noise), exact, rtol=1e-7)
    np.testing.assert_allclose(crps([y], d), exact, rtol=1e-7)
    with pytest.raises(DataError, match="noise_std must broadcast"):
        PredictiveDistribution.from_samples(np.zeros((2, 3)), noise_std=np.ones(2))
    with pytest.raises(DataError, match="finite and > 0"):
        PredictiveDistribution.from_samples(np.zeros((2, 3)), noise_std=0.0)
