r"""How good is the uncertainty? Coverage, NLL, CRPS, calibration, risk-coverage.

Every function takes observed ratings ``y`` (N,) and a
:class:`~bayesmf.predictive.PredictiveDistribution` (or its parts). Definitions:

**Coverage and width** of the central ``level`` interval ``[l_n, h_n]`` (``dist.interval``):
:math:`\mathrm{cov} = \frac1N \sum_n 1[l_n \le y_n \le h_n]`,
:math:`\mathrm{width} = \frac1N \sum_n (h_n - l_n)`. A calibrated model has ``cov ~= level``.

**Gaussian NLL** (mean negative log predictive density of :math:`N(m_n, s_n^2)`):
:math:`\frac1N \sum_n \left[\tfrac12 \log(2\pi s_n^2) + \tfrac{(y_n - m_n)^2}{2 s_n^2}\right]`. It uses
only the predictive mean and std, whatever the distribution's form (so every model is scored on
the same footing); :func:`mixture_nll` gives the exact density of a Gaussian mixture.

**CRPS** :math:`= E|X - y| - \tfrac12 E|X - X'|` with :math:`X, X'` independent predictive draws
(lower is better; in rating units). Closed form for :math:`N(m, s^2)`, with :math:`z = (y - m)/s`:
:math:`s\,[z(2\Phi(z) - 1) + 2\varphi(z) - 1/\sqrt\pi]` (so :math:`s(\sqrt2 - 1)/\sqrt\pi` at
:math:`y = m`). For draws, the CRPS of their empirical distribution, from the sorted draws
:math:`x_{(1)} \le \dots \le x_{(S)}`: :math:`E|X - X'| = \frac{2}{S^2}\sum_i (2i - S - 1) x_{(i)}`
(``fair=True`` divides by :math:`S(S-1)` instead, the unbiased estimate of the underlying
distribution's CRPS). For a Gaussian mixture, exact sums of the closed form
:math:`E|N(\mu, \sigma^2)| = \mu(2\Phi(\mu/\sigma) - 1) + 2\sigma\varphi(\mu/\sigma)`.

**Calibration curve**: for nominal level :math:`p`, the observed coverage
:math:`G(p) = \frac1N \#\{n : |2F_n(y_n) - 1| \le p\}`, with :math:`F_n` the predictive CDF
(:math:`F_n(y_n)` is the PIT value; for a continuous :math:`F_n`, :math:`|2F_n(y_n) - 1| \le p`
exactly when :math:`y_n` is inside the central :math:`p` interval). **Calibration area**
:math:`\int_0^1 |G(p) - p|\,dp`, computed exactly (G is a step function): 0 for a perfectly
calibrated model, at most 1/2.

**Risk-coverage**: sort predictions by predictive std, most confident first; risk at coverage
:math:`k/N` is the RMSE of the :math:`k` most confident. Predictions with equal std are not
ordered arbitrarily: inside a tie group the squared error is taken at the group's mean (the
expected MSE under random tie-breaking), so the curve does not depend on input order.
**AURC** :math:`= \frac1N \sum_{k=1}^N \mathrm{risk}(k/N)`. Lower is better, and an AURC close to
the overall RMSE means the std does not rank errors at all.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata

from bayesmf.errors import DataError
from bayesmf.predictive import PredictiveDistribution, noise_matrix
from bayesmf.validate import as_std, as_values, check_positive_int, same_length

__all__ = [
    "DEFAULT_LEVELS", "calibration_area", "calibration_area_from_pit", "calibration_curve", "coverage",
    "coverage_from_pit", "crps", "crps_gaussian",
    "crps_mixture", "crps_samples", "gaussian_nll", "interval_scores", "interval_width", "mixture_nll", "pit",
    "risk_coverage", "rmse_by_std_bin", "spearman_error_std",
]

DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)
_INV_SQRT_PI = 1.0 / np.sqrt(np.pi)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _check_dist(y, dist) -> np.ndarray:
    if not isinstance(dist, PredictiveDistribution):
        raise DataError(f"dist must be a bayesmf PredictiveDistribution, got {type(dist).__name__}")
    y = as_values("y", y)
    same_length(y=y, dist=dist.mean)
    return y


# --- intervals -------------------------------------------------------------------------------
def interval_scores(y, dist: PredictiveDistribution, level: float) -> tuple[float, float]:
    """``(coverage, mean width)`` of the central ``level`` intervals (one interval computation)."""
    y = _check_dist(y, dist)
    lo, hi = dist.interval(level)
    return float(np.mean((lo <= y) & (y <= hi))), float(np.mean(hi - lo))


def coverage(y, dist: PredictiveDistribution, level: float) -> float:
    """Fraction of ``y`` inside the central ``level`` interval of ``dist`` (ends included)."""
    return interval_scores(y, dist, level)[0]


def interval_width(dist: PredictiveDistribution, level: float) -> float:
    """Mean width of the central ``level`` intervals of ``dist``."""
    lo, hi = dist.interval(level)
    return float(np.mean(hi - lo))


# --- proper scoring rules ----------------------------------------------------------------------
def gaussian_nll(y, mean, std) -> np.ndarray:
    """Negative log density of ``y`` under ``N(mean, std^2)``, per prediction (N,). ``std`` must be > 0."""
    y, mean, std = as_values("y", y), as_values("mean", mean), as_std("std", std)
    same_length(y=y, mean=mean, std=std)
    if (std == 0).any():
        raise DataError(f"std must be > 0 for a density; std[{int(np.flatnonzero(std == 0)[0])}] = 0")
    z = (y - mean) / std
    return 0.5 * np.log(2 * np.pi) + np.log(std) + 0.5 * z * z


def mixture_nll(y, dist: PredictiveDistribution) -> np.ndarray:
    """Exact negative log density of ``y`` under a Gaussian-mixture ``dist`` (Student-t components
    with its ``noise_df``), per prediction (N,):
    ``-log (1/S) sum_s N(y; samples[s], noise_std[s]^2)`` (log-sum-exp for stability)."""
    y = _check_dist(y, dist)
    if dist.kind != "mixture":
        raise DataError(f"mixture_nll needs a mixture predictive distribution, got kind {dist.kind!r}")
    z = (y[None, :] - dist.samples) / dist.noise_std
    if dist.noise_df is not None:  # Student-t components
        from scipy.stats import t as student_t

        log_comp = student_t.logpdf(z, dist.noise_df) - np.log(dist.noise_std)
    else:
        log_comp = -0.5 * z * z - np.log(dist.noise_std) - 0.5 * np.log(2 * np.pi)  # each component's log density
    top = log_comp.max(axis=0)
    return -(top + np.log(np.exp(log_comp - top).mean(axis=0)))


def crps_gaussian(y, mean, std) -> np.ndarray:
    """Closed-form CRPS of ``N(mean, std^2)`` at ``y``, per prediction (N,); ``std = 0`` gives ``|y - mean|``."""
    y, mean, std = as_values("y", y), as_values("mean", mean), as_std("std", std)
    same_length(y=y, mean=mean, std=std)
    safe = np.where(std > 0, std, 1.0)
    z = (y - mean) / safe
    crps = safe * (z * (2 * ndtr(z) - 1) + 2 * _INV_SQRT_2PI * np.exp(-0.5 * z * z) - _INV_SQRT_PI)
    return np.where(std > 0, crps, np.abs(y - mean))


def crps_samples(y, samples, fair: bool = False, sorted_samples: bool = False) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples`` (S, N) at ``y`` (N,), per prediction.

    ``fair=True``: the unbiased estimate, dividing the pair term by ``S(S-1)`` (needs S >= 2).
    ``sorted_samples=True`` declares the draws already sorted along axis 0 (skips the sort).
    """
    y = as_values("y", y)
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[1] != y.size:
        raise DataError(f"samples must have shape (S, {y.size}), got {x.shape}")
    S = x.shape[0]
    if fair and S < 2:
        raise DataError("fair CRPS needs at least 2 samples")
    xs = x if sorted_samples else np.sort(x, axis=0)
    # work in the draws' precision (float32 draws: no float64 copy of the (S, N) array);
    # the sums over draws accumulate in float64
    work = np.result_type(xs.dtype, np.float32)
    abs_dev = np.abs(xs - y.astype(work)[None, :]).mean(axis=0, dtype=np.float64)
    weights = (2 * np.arange(1, S + 1) - S - 1).astype(work)
    pair_sum = 2 * (weights @ xs).astype(np.float64)  # sum_{s,t} |x_s - x_t|
    pair_mean = pair_sum / (S * (S - 1) if fair else S * S)
    return abs_dev - 0.5 * pair_mean


def _expected_abs_normal(mu, sigma):
    """``E|Z|`` for ``Z ~ N(mu, sigma^2)``: ``mu (2 Phi(mu/sigma) - 1) + 2 sigma phi(mu/sigma)``."""
    t = mu / sigma
    return mu * (2 * ndtr(t) - 1) + 2 * sigma * _INV_SQRT_2PI * np.exp(-0.5 * t * t)


def crps_mixture(y, means, noise_std, n_shifts: int | None = None, max_evaluations: int = 2**27) -> np.ndarray:
    """CRPS of the mixture ``(1/S) sum_s N(means[s], noise_std[s]^2)`` at ``y``, per prediction (N,);
    ``noise_std`` broadcasts to ``means`` (S, N) as in :class:`~bayesmf.predictive.PredictiveDistribution`.

    ``E|X - y|`` is exact. ``E|X - X'|`` sums ``S^2`` closed-form terms: the ``S`` diagonal ones
    ``E|N(0, 2 noise_s^2)|``, the others ``E|N(m_s - m_t, noise_s^2 + noise_t^2)|``. The
    ``S(S-1)`` off-diagonal pairs are all used (exact, cost ``O(S^2 N / 2)``) when
    ``n_shifts >= S - 1``, or when ``n_shifts`` is None and ``S^2 N <= max_evaluations``.
    Otherwise they are estimated from ``n_shifts`` cyclic shifts ``t = s + k mod S`` (None:
    ``max(16, max_evaluations // (S N))``), the lags ``k`` at the midpoints of ``n_shifts`` equal
    parts of ``1..S-1`` (each shift pairs every draw with another; spreading the lags keeps their
    average representative of all pairs even for autocorrelated
    MCMC draws). That estimate is unbiased for exchangeable draws but noisy per prediction; the
    noise averages out in the mean CRPS over many predictions, the number :func:`crps` reports
    (``tests/test_metrics_uncertainty.py`` bounds the error of that mean).
    """
    y = as_values("y", y)
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != y.size:
        raise DataError(f"means must have shape (S, {y.size}), got {m.shape}")
    noise = noise_matrix(noise_std, m.shape)  # (1 or S, 1 or N)
    S = m.shape[0]
    abs_dev = _expected_abs_normal(m - y[None, :], noise).mean(axis=0)
    # diagonal pairs: E|N(0, 2 noise_s^2)|, averaged over draws
    diagonal = np.broadcast_to(2 * np.sqrt(2.0) * noise * _INV_SQRT_2PI, (noise.shape[0], y.size)).mean(axis=0)
    if S == 1:
        return abs_dev - 0.5 * diagonal
    if n_shifts is None:
        n_shifts = S - 1 if S * S * y.size <= max_evaluations else max(16, max_evaluations // (S * y.size))
    n_shifts = check_positive_int("n_shifts", n_shifts)
    if n_shifts >= S - 1:
        # lags k and S - k pair the same draws (A is even), so lags 1..S//2 cover every pair;
        # when S is even, lag S/2 lists each of its pairs twice and gets half weight
        shifts = np.arange(1, S // 2 + 1)
        weights = np.where(2 * shifts == S, 1.0, 2.0)
    else:
        shifts = np.unique(1 + np.floor((np.arange(n_shifts) + 0.5) * (S - 1) / n_shifts).astype(int))
        weights = np.ones(shifts.size)
    off = np.zeros(y.size)
    for k, w in zip(shifts, weights, strict=True):  # a loop over lags; each term vectorized over draws and predictions
        pair_sigma = np.sqrt(noise**2 + np.roll(noise, -k, axis=0) ** 2)  # noise of X_s - X_t
        off += w * _expected_abs_normal(m - np.roll(m, -k, axis=0), pair_sigma).mean(axis=0)
    off /= weights.sum()
    pair_mean = (diagonal + (S - 1) * off) / S
    return abs_dev - 0.5 * pair_mean


def crps(y, dist: PredictiveDistribution, fair: bool = False) -> float:
    """Mean CRPS of ``dist`` at ``y``: closed form (Gaussian), empirical (draws) or mixture (a
    Student-t mixture by Monte Carlo: the empirical CRPS of 4 seeded t draws around each
    component); a split-conformal predictive (kind ``"conformal"``) computes its own
    (:mod:`bayesmf.metrics.conformal`), and so does a categorical one (the exact CRPS of a
    distribution on the rating levels)."""
    y = _check_dist(y, dist)
    if dist.kind in ("conformal", "categorical"):
        return float(dist.crps(y).mean())
    if dist.kind == "gaussian":
        return float(crps_gaussian(y, dist.mean, dist.std).mean())
    if dist.kind == "empirical":
        return float(crps_samples(y, dist.sorted_samples, fair=fair, sorted_samples=True).mean())
    if dist.noise_df is not None:  # Student-t mixture: Monte Carlo, 4 noise draws per component
        rng = np.random.default_rng(0)
        noise = np.broadcast_to(dist.noise_std, dist.samples.shape)
        draws = np.concatenate([dist.samples + noise * rng.standard_t(dist.noise_df, dist.samples.shape)
                                for _ in range(4)])
        return float(crps_samples(y, draws).mean())
    return float(crps_mixture(y, dist.samples, dist.noise_std).mean())


# --- calibration -------------------------------------------------------------------------------
def pit(y, dist: PredictiveDistribution) -> np.ndarray:
    """Probability integral transform ``F_n(y_n)`` of each observation, (N,)."""
    return dist.cdf(_check_dist(y, dist))


def coverage_from_pit(pit_values, levels) -> np.ndarray:
    """Observed coverage ``G(p) = mean(|2 u - 1| <= p)`` at each level ``p`` from PIT values ``u``
    (one CDF evaluation serves every level: for a continuous predictive, ``y`` lies in the central
    ``p`` interval exactly when ``|2 F(y) - 1| <= p``)."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or np.any((levels < 0) | (levels > 1)):
        raise DataError(f"levels must be a non-empty 1-D array inside [0, 1], got {levels!r}")
    dev = np.sort(np.abs(2 * np.asarray(pit_values, dtype=np.float64) - 1))
    return np.searchsorted(dev, levels, side="right") / dev.size


def calibration_curve(y, dist: PredictiveDistribution, levels=None) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, observed)``: observed coverage ``G(p)`` of the central intervals at each
    nominal level ``p`` (default ``0, 0.01, ..., 1``)."""
    levels = np.linspace(0.0, 1.0, 101) if levels is None else np.asarray(levels, dtype=np.float64)
    return levels, coverage_from_pit(pit(y, dist), levels)


def calibration_area_from_pit(pit_values) -> float:
    """Exact ``int_0^1 |G(p) - p| dp`` for the step function ``G`` of :func:`coverage_from_pit`.

    With ``d_(1) <= ... <= d_(N)`` the sorted ``|2 PIT - 1|``, ``G = k/N`` on ``[d_(k), d_(k+1))``
    (``d_(0) = 0``, ``d_(N+1) = 1``), and ``int_a^b |c - p| dp = H(b) - H(a)`` with the
    antiderivative ``H(p) = sign(p - c) (p - c)^2 / 2``.
    """
    dev = np.sort(np.abs(2 * np.asarray(pit_values, dtype=np.float64) - 1))
    n = dev.size
    edges = np.concatenate([[0.0], dev, [1.0]])
    level = np.arange(n + 1) / n  # G on [edges[k], edges[k+1])

    def antiderivative(p):
        return np.sign(p - level) * (p - level) ** 2 / 2

    return float(np.sum(antiderivative(edges[1:]) - antiderivative(edges[:-1])))


def calibration_area(y, dist: PredictiveDistribution) -> float:
    """Area between the calibration curve and the diagonal (see :func:`calibration_area_from_pit`)."""
    return calibration_area_from_pit(pit(y, dist))


# --- does the std rank the errors? -----------------------------------------------------------
def _errors_and_std(y, pred, std):
    y, pred, std = as_values("y", y), as_values("pred", pred), as_std("std", std)
    same_length(y=y, pred=pred, std=std)
    return pred - y, std


def risk_coverage(y, pred, std) -> dict:
    """Risk-coverage curve and its area (see the module docstring).

    Returns ``coverage`` (N,) = ``k/N``, ``risk`` (N,) = RMSE of the ``k`` lowest-std predictions
    (ties at their group-mean squared error), and ``aurc`` = mean of ``risk``.
    """
    err, std = _errors_and_std(y, pred, std)
    order = np.argsort(std, kind="stable")
    sq, s = (err * err)[order], std[order]
    n = sq.size
    k = np.arange(1, n + 1)
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))  # first position of each tie group
    group = np.cumsum(np.concatenate([[False], s[1:] != s[:-1]]))  # tie group of each position
    cum = np.concatenate([[0.0], np.cumsum(sq)])
    ends = np.append(starts[1:], n)
    group_mean = (cum[ends] - cum[starts]) / (ends - starts)
    start = starts[group]
    expected_sse = cum[start] + (k - start) * group_mean[group]
    risk = np.sqrt(expected_sse / k)
    return {"coverage": k / n, "risk": risk, "aurc": float(risk.mean())}


def rmse_by_std_bin(y, pred, std, n_bins: int = 10) -> dict:
    """RMSE inside quantile bins of the predictive std (deciles by default).

    Bin ``b`` holds predictions with ``edges[b] <= std < edges[b+1]`` (the last bin includes its
    upper edge), ``edges`` being the ``b/n_bins`` quantiles of ``std``; equal stds always share a
    bin, so bins can be unequal or empty (RMSE NaN) when the std has ties. Returns ``edges``
    (n_bins + 1,), ``count``, ``rmse`` and ``rms_std`` (= ``sqrt(mean std^2)``, the RMSE a
    calibrated, unbiased model would show in that bin) of shape (n_bins,).
    """
    n_bins = check_positive_int("n_bins", n_bins)
    err, std = _errors_and_std(y, pred, std)
    edges = np.quantile(std, np.linspace(0, 1, n_bins + 1))
    which = np.searchsorted(edges[1:-1], std, side="right")
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse = np.sqrt(np.bincount(which, weights=err * err, minlength=n_bins) / count)
        rms_std = np.sqrt(np.bincount(which, weights=std * std, minlength=n_bins) / count)
    return {"edges": edges, "count": count, "rmse": rmse, "rms_std": rms_std}


def spearman_error_std(y, pred, std) -> float:
    """Spearman rank correlation of ``|error|`` with the predictive std (average ranks for ties);
    NaN when either is constant. Positive: larger std, larger errors — the std is informative."""
    err, std = _errors_and_std(y, pred, std)
    a, b = rankdata(np.abs(err)), rankdata(std)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")
