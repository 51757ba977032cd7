r"""Predictive distributions of ratings: the object Bayesian models and ensembles return.

A :class:`PredictiveDistribution` describes, for ``n`` (user, item) pairs at once, the predictive
distribution of the *observed* rating ``y_n``. Three forms, chosen by which fields are set:

* **Gaussian** (``samples is None``): ``y_n ~ N(mean_n, std_n^2)``.
* **Empirical** (``samples`` given, ``noise_std is None``): the ``S`` rows of ``samples`` (S, n)
  are draws of ``y`` itself; the distribution is their empirical distribution, with quantiles
  interpolated linearly between order statistics (NumPy's default ``"linear"`` method).
* **Gaussian mixture** (``samples`` and ``noise_std`` given): the rows of ``samples`` are draws
  of the noise-free predicted rating (e.g. ``mu + u_i . v_j`` for each posterior draw of BPMF),
  and ``y_n ~ (1/S) sum_s N(samples[s, n], noise_std[s, n]^2)``, where ``noise_std``
  broadcasts to ``(S, n)``: a scalar, shape (n,) (per prediction), (S, 1) (per draw, e.g. BPMF's
  ``1/sqrt(alpha_s)``) or (S, n).
* **Student-t mixture** (a mixture with ``noise_df`` = ``nu`` set): the components are
  location-scale Student-t, ``y_n ~ (1/S) sum_s samples[s, n] + noise_std[s, n] t_nu`` (BPMF with
  ``noise="student_t"``); its ``kind`` is still ``"mixture"``.

* **Categorical** (:class:`CategoricalDistribution`, kind ``"categorical"``): probabilities
  ``(n, K)`` over the ``K`` levels of an ordinal rating scale (an ordinal model's predictive, or
  any other one discretised onto the levels by :meth:`CategoricalDistribution.from_predictive`).

``mean`` and ``std`` are always the first two moments of ``y``; :meth:`from_samples` computes
them: ``mean = samples.mean(0)`` and ``std^2 = samples.var(0) (+ mean_s noise_std[s]^2)``
(population variance, ``ddof=0``, i.e. the variance of the empirical distribution itself, plus the
average noise variance: the law of total variance); a t component's variance is
``noise_std^2 nu / (nu - 2)``, infinite for ``nu <= 2`` (``std`` is then ``inf``, the one case
where it may be).

NumPy only (no JAX), so any layer — engines' wrappers, ensembles, metrics — can build and read
one without starting JAX. Arrays are stored as given when already float64/float32, never
clipped or reordered.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import cached_property

import numpy as np
from scipy.special import ndtr, ndtri, stdtr, stdtrit
from scipy.stats import t as student_t

from bayesmf.errors import ConfigError, DataError
from bayesmf.validate import check_level, check_probability

__all__ = ["CategoricalDistribution", "PredictiveDistribution", "check_level", "check_probability"]


def _finite_1d(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    arr = arr.astype(np.result_type(arr.dtype, np.float32), copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} holds {float(arr[pos])} at position {pos} ({int(bad.sum())} non-finite entries)")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class PredictiveDistribution:
    """Predictive distribution of ``n`` ratings. Shapes: ``mean``, ``std`` (n,); ``samples``
    (S, n) or None; ``noise_std`` None or broadcastable to (S, n): (), (n,), (S, 1), (S, n).
    See the module docstring."""

    mean: np.ndarray
    std: np.ndarray
    samples: np.ndarray | None = None
    noise_std: np.ndarray | float | None = None
    noise_df: float | None = None  # Student-t components' degrees of freedom (None: Gaussian)

    def __post_init__(self):
        if self.noise_df is not None:
            df = self.noise_df
            if isinstance(df, bool) or not isinstance(df, (int, float, np.number)) or not np.isfinite(df) or df <= 0:
                raise ConfigError(f"noise_df must be a finite number > 0, got {df!r}")
            object.__setattr__(self, "noise_df", float(df))
        mean = _finite_1d("mean", self.mean)
        heavy = self.noise_df is not None and float(self.noise_df) <= 2  # infinite variance
        std = _finite_1d("std", np.where(np.isposinf(self.std), 0.0, self.std) if heavy else self.std)
        if heavy:
            std = np.asarray(self.std, std.dtype)
        if std.shape != mean.shape:
            raise DataError(f"mean and std have different lengths: {mean.size} vs {std.size}")
        if (std < 0).any():
            pos = int(np.flatnonzero(std < 0)[0])
            raise DataError(f"std must be >= 0; std[{pos}] = {float(std[pos])}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.samples is not None:
            samples = np.asarray(self.samples)
            if samples.ndim != 2 or samples.shape[1] != mean.size or samples.shape[0] < 1:
                raise DataError(f"samples must have shape (S, {mean.size}) with S >= 1, got {samples.shape}")
            if not np.all(np.isfinite(samples)):
                raise DataError(f"samples hold {int((~np.isfinite(samples)).sum())} non-finite entries")
            object.__setattr__(self, "samples", samples)
        if self.noise_std is not None:
            if self.samples is None:
                raise DataError("noise_std is only meaningful with samples (a Gaussian already has std)")
            object.__setattr__(self, "noise_std", noise_matrix(self.noise_std, self.samples.shape))
        if self.noise_df is not None and self.noise_std is None:
            raise DataError("noise_df is only meaningful with noise_std (Student-t mixture components)")

    # construction -----------------------------------------------------------------------
    @classmethod
    def from_samples(cls, samples, noise_std=None, noise_df=None) -> PredictiveDistribution:
        """Build from draws ``samples`` (S, n): empirical when ``noise_std`` is None, otherwise
        the Gaussian (or, with ``noise_df``, Student-t) mixture around the draws. Moments as in
        the module docstring."""
        samples = np.asarray(samples)
        if samples.ndim != 2:
            raise DataError(f"samples must have shape (S, n), got {samples.shape}")
        var = samples.var(axis=0, dtype=np.float64)
        if noise_std is not None:
            noise_std = noise_matrix(noise_std, samples.shape)
            var = var + (noise_std**2).mean(axis=0) * t_variance_factor(noise_df)
        return cls(samples.mean(axis=0, dtype=np.float64), np.sqrt(var), samples, noise_std, noise_df)

    @property
    def kind(self) -> str:
        """``"gaussian"``, ``"empirical"`` or ``"mixture"``."""
        if self.samples is None:
            return "gaussian"
        return "empirical" if self.noise_std is None else "mixture"

    def __len__(self) -> int:
        return int(self.mean.size)

    def __getitem__(self, index) -> PredictiveDistribution:
        """The distribution of a subset of the ``n`` predictions (index as for a 1-D array)."""
        noise = self.noise_std
        if noise is not None and noise.shape[1] > 1:
            noise = noise[:, index]
        samples = None if self.samples is None else self.samples[:, index]
        return PredictiveDistribution(self.mean[index], self.std[index], samples, noise, self.noise_df)

    @cached_property
    def sorted_samples(self) -> np.ndarray:
        """``samples`` sorted along the draw axis (computed once, then reused by
        :meth:`cdf`, :meth:`quantile` and the sample-based CRPS)."""
        if self.samples is None:
            raise DataError("this predictive distribution has no samples")
        return np.sort(self.samples, axis=0)

    # distribution functions -------------------------------------------------------------
    def cdf(self, y) -> np.ndarray:
        r"""``P(Y_n <= y_n)`` for each prediction, shape (n,) (the PIT value when ``y`` is observed).

        Gaussian: :math:`\Phi((y - m)/s)` (a step at ``m`` when ``s = 0``). Mixture: the average of the
        components' CDFs. Empirical: the inverse of the linearly interpolated quantile function, so
        that ``quantile(cdf(y)) == y`` inside the sample range and, for distinct draws,
        ``y in interval(level)  <=>  |2 cdf(y) - 1| <= level``.
        """
        y = self._check_y(y)
        if self.kind == "gaussian":
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (y - self.mean) / self.std
            return np.where(self.std > 0, ndtr(z), (y >= self.mean).astype(np.float64))
        if self.kind == "mixture":
            return self._component_cdf((y[None, :] - self.samples) / self.noise_std).mean(axis=0)
        return _empirical_cdf(self.sorted_samples, y)

    def quantile(self, q) -> np.ndarray:
        """The ``q``-quantile of each prediction, shape (n,) for a scalar ``q``.

        Gaussian: ``mean + std * Phi^-1(q)``; empirical: ``np.quantile(samples, q, axis=0)``;
        mixture: the root of ``cdf(x) = q``, by bracketed Newton iterations to 1e-9 relative
        precision (about six iterations from the Gaussian approximation's quantile; a t mixture
        starts from its median ``mean``).
        """
        if np.ndim(q) != 0:
            raise ConfigError(f"q must be a scalar in (0, 1), got {q!r}")
        q = float(check_probability("q", q))
        if self.kind == "gaussian":
            return self.mean + self.std * ndtri(q)
        if self.kind == "empirical":
            return _sorted_quantile(self.sorted_samples, q)
        if self.noise_df is not None:
            return _mixture_quantile(self.samples, self.noise_std, q, self.mean, self.noise_df)
        return _mixture_quantile(self.samples, self.noise_std, q, self.mean + self.std * ndtri(q))

    def _component_cdf(self, z):
        """The standardised component's CDF: normal, or Student-t with ``noise_df``."""
        return ndtr(z) if self.noise_df is None else stdtr(self.noise_df, z)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Central interval ``(quantile((1 - level)/2), quantile((1 + level)/2))``, each (n,)."""
        level = check_level(level)
        return self.quantile((1 - level) / 2), self.quantile((1 + level) / 2)

    def _check_y(self, y) -> np.ndarray:
        y = _finite_1d("y", y).astype(np.float64)
        if y.shape != self.mean.shape:
            raise DataError(f"y has {y.size} entries, the distribution {self.mean.size}")
        return y


def _sorted_quantile(sorted_samples: np.ndarray, q: float) -> np.ndarray:
    """``np.quantile(samples, q, axis=0)`` (linear method) from already sorted draws:
    position ``h = (S - 1) q`` interpolated between order statistics ``floor(h)`` and ``floor(h) + 1``."""
    S = sorted_samples.shape[0]
    h = (S - 1) * q
    j = min(int(np.floor(h)), S - 1)
    lo = sorted_samples[j].astype(np.float64)
    hi = sorted_samples[min(j + 1, S - 1)].astype(np.float64)
    return lo + (h - j) * (hi - lo)


def _empirical_cdf(sorted_samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inverse of NumPy's linear quantile: the order statistic ``x_(j)`` (0-based) sits at
    probability ``j / (S - 1)``; between neighbours the probability is interpolated linearly;
    below the minimum it is 0, above the maximum 1. With S = 1 it is a step at the draw."""
    S, n = sorted_samples.shape
    if S == 1:
        return (y >= sorted_samples[0]).astype(np.float64)
    below = (sorted_samples <= y[None, :]).sum(axis=0)  # number of draws <= y, 0..S
    j = np.clip(below - 1, 0, S - 2)  # left neighbour of y
    cols = np.arange(n)
    lo, hi = sorted_samples[j, cols].astype(np.float64), sorted_samples[j + 1, cols].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hi > lo, (y - lo) / (hi - lo), 1.0)
    p = (j + np.clip(frac, 0.0, 1.0)) / (S - 1)
    return np.where(below == 0, 0.0, np.where(below == S, 1.0, p))


def t_variance_factor(noise_df) -> float:
    """Variance of a standard Student-t with ``noise_df`` degrees of freedom, ``nu / (nu - 2)``
    (``inf`` for ``nu <= 2``); 1 for ``None`` (a normal)."""
    if noise_df is None:
        return 1.0
    return float(noise_df) / (float(noise_df) - 2.0) if noise_df > 2 else np.inf


def _mixture_quantile(means, noise, q: float, start: np.ndarray, df=None, tol: float = 1e-8,
                      max_iter: int = 60):
    """Solve ``(1/S) sum_s Phi((x - means[s]) / noise[s]) = q`` for each column by Newton's method
    (``noise`` as returned by :func:`noise_matrix`), kept inside a bisection bracket
    ``[min_s (m_s + noise_s z_q), max_s (m_s + noise_s z_q)]`` (the mixture quantile lies between
    its components' quantiles), so it converges from any start. Each round evaluates only the
    columns not yet converged (``|step| <= tol (1 + |x|)``): from the Gaussian approximation most
    columns converge in two or three rounds, and the cost is dominated by the ``S x n`` normal
    CDF evaluations of those rounds. ``df``: Student-t components (their CDF and density)."""
    if df is None:
        z, cdf = ndtri(q), ndtr
        density = lambda t: np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)  # noqa: E731
    else:
        z, cdf = stdtrit(df, q), functools.partial(stdtr, df)
        density = functools.partial(student_t.pdf, df=df)
    component_quantiles = means + noise * z
    lo, hi = component_quantiles.min(axis=0), component_quantiles.max(axis=0)
    del component_quantiles
    x = np.clip(start, lo, hi)
    per_column = noise.shape[1] > 1
    todo = np.arange(x.size)
    for _ in range(max_iter):  # Newton rounds over the shrinking set of unconverged columns
        xt, lt, ht = x[todo], lo[todo], hi[todo]
        sig = noise[:, todo] if per_column else noise
        t = (xt[None, :] - means[:, todo]) / sig
        f = cdf(t).mean(axis=0) - q
        dens = (density(t) / sig).mean(axis=0)
        lt = np.where(f < 0, xt, lt)
        ht = np.where(f > 0, xt, ht)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = xt - f / dens
        inside = np.isfinite(newton) & (newton > lt) & (newton < ht)
        x_new = np.where(inside, newton, 0.5 * (lt + ht))
        moving = np.abs(x_new - xt) > tol * (1.0 + np.abs(xt))
        x[todo], lo[todo], hi[todo] = x_new, lt, ht
        todo = todo[moving]
        if todo.size == 0:
            break
    return x


def noise_matrix(noise_std, shape: tuple[int, int]) -> np.ndarray:
    """``noise_std`` as a float64 array of shape (1 or S, 1 or n) that broadcasts against draws
    of ``shape`` (S, n): a scalar, (n,), (S, 1), (1, n) or (S, n); every entry finite and > 0."""
    S, n = shape
    noise = np.asarray(noise_std, dtype=np.float64)
    if noise.ndim < 2:
        noise = noise.reshape(1, -1) if noise.ndim == 1 else noise.reshape(1, 1)
    if noise.ndim != 2 or noise.shape[0] not in (1, S) or noise.shape[1] not in (1, n) or (
        np.ndim(noise_std) == 1 and np.size(noise_std) != n
    ):
        raise DataError(
            f"noise_std must broadcast to the draws' shape ({S}, {n}) as (), ({n},), ({S}, 1) or ({S}, {n}); "
            f"got shape {np.shape(noise_std)}"
        )
    if not np.all(np.isfinite(noise) & (noise > 0)):
        raise DataError("noise_std must be finite and > 0")
    return noise


@dataclasses.dataclass(frozen=True, eq=False)
class CategoricalDistribution(PredictiveDistribution):
    r"""A predictive distribution over the ``K`` rating levels of an ordinal scale:
    ``P(Y_n = l_k) = probabilities[n, k]`` with ``levels`` ``l_0 < ... < l_{K-1}`` (K,).

    ``mean`` is the expected rating ``sum_k p_nk l_k`` and ``std`` its standard deviation;
    :meth:`cdf` is the step function ``P(Y <= y)``; :meth:`quantile` the smallest level whose
    CDF reaches ``q``; :meth:`interval` the smallest equal-tailed set of categories
    ``[l_a, l_b]`` with ``P(Y < l_a) <= (1 - L)/2`` and ``P(Y > l_b) <= (1 - L)/2`` (so its
    mass is at least ``L``); :meth:`crps` the exact CRPS of a distribution on the levels,
    ``sum_{k < K-1} (F(l_k) - 1[y <= l_k])^2 (l_{k+1} - l_k)``. A discrete PIT is not uniform
    even for a calibrated model: :meth:`randomized_pit` is (Czado, Gneiting & Held 2009).
    Build with :meth:`from_probabilities`, or discretise any other predictive with
    :meth:`from_predictive`.
    """

    probabilities: np.ndarray | None = None
    levels: np.ndarray | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.samples is not None:
            raise DataError("a categorical predictive has no samples")
        p = np.asarray(self.probabilities, np.float64)
        levels = np.asarray(self.levels, np.float64)
        if levels.ndim != 1 or levels.size < 2 or np.any(np.diff(levels) <= 0) or not np.all(np.isfinite(levels)):
            raise DataError(f"levels must be at least 2 finite, strictly increasing values, got {self.levels!r}")
        if p.shape != (self.mean.size, levels.size):
            raise DataError(f"probabilities must have shape ({self.mean.size}, {levels.size}), got {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < -1e-6) or np.any(np.abs(p.sum(axis=1) - 1) > 1e-4):
            row = int(np.flatnonzero(~np.isfinite(p).all(1) | (p < -1e-6).any(1)
                                     | (np.abs(p.sum(1) - 1) > 1e-4))[0])
            raise DataError(f"probabilities must be finite, >= 0 and sum to 1 per row; row {row} is "
                            f"{p[row].tolist()}")
        p = np.clip(p, 0.0, None)
        object.__setattr__(self, "probabilities", p / p.sum(axis=1, keepdims=True))
        object.__setattr__(self, "levels", levels)

    @classmethod
    def from_probabilities(cls, probabilities, levels) -> CategoricalDistribution:
        """From category probabilities (n, K) and the levels (K,): mean and std computed."""
        p = np.asarray(probabilities, np.float64)
        levels = np.asarray(levels, np.float64)
        if p.ndim != 2 or levels.ndim != 1 or p.shape[1] != levels.size:
            raise DataError(f"probabilities (n, K) and levels (K,) disagree: {p.shape} and {levels.shape}")
        mean = p @ levels
        var = np.maximum(p @ levels**2 - mean**2, 0.0)
        return cls(mean, np.sqrt(var), probabilities=p, levels=levels)

    @classmethod
    def from_predictive(cls, dist: PredictiveDistribution, levels) -> CategoricalDistribution:
        """Discretise a continuous predictive onto ``levels``: category ``k`` gets the mass of
        ``(m_{k-1}, m_k]`` with ``m_k = (l_k + l_{k+1})/2`` the midpoints (``m_{-1} = -inf``,
        ``m_{K-1} = inf``), so that a Gaussian model's ratings can be scored by the categorical
        metrics. K - 1 evaluations of ``dist.cdf``."""
        if isinstance(dist, CategoricalDistribution):
            return dist
        levels = np.asarray(levels, np.float64)
        mids = 0.5 * (levels[1:] + levels[:-1])
        n = len(dist)
        cdf = np.stack([dist.cdf(np.full(n, m)) for m in mids], axis=1) if mids.size else np.zeros((n, 0))
        cdf = np.maximum.accumulate(np.clip(cdf, 0.0, 1.0), axis=1)
        edges = np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1)
        return cls.from_probabilities(np.diff(edges, axis=1), levels)

    @property
    def kind(self) -> str:
        return "categorical"

    @property
    def n_categories(self) -> int:
        return int(self.levels.size)

    def __getitem__(self, index) -> CategoricalDistribution:
        return CategoricalDistribution(self.mean[index], self.std[index], probabilities=self.probabilities[index],
                                       levels=self.levels)

    @cached_property
    def cumulative(self) -> np.ndarray:
        """``F(l_k) = P(Y <= l_k)``, (n, K) (the last column is 1)."""
        return np.cumsum(self.probabilities, axis=1)

    def _tol(self) -> float:
        return 1e-9 * max(1.0, float(np.abs(self.levels).max()))

    def category_index(self, y, name: str = "y") -> np.ndarray:
        """Index of each ``y`` among ``levels`` (n,); :class:`DataError` naming the first value
        (and its position) that is not a level."""
        y = self._check_y(y)
        k = np.clip(np.searchsorted(self.levels, y - self._tol()), 0, self.levels.size - 1)
        bad = np.abs(self.levels[k] - y) > 1e3 * self._tol()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name}[{pos}] = {float(y[pos])!r} is not one of the levels {self.levels.tolist()} "
                            f"({int(bad.sum())} such values)")
        return k

    def pmf(self, y) -> np.ndarray:
        """``P(Y_n = y_n)``, (n,); every ``y`` must be a level."""
        return self.probabilities[np.arange(len(self)), self.category_index(y)]

    def cdf(self, y) -> np.ndarray:
        """``P(Y_n <= y_n)`` for any real ``y``, (n,)."""
        y = self._check_y(y)
        k = np.searchsorted(self.levels, y + self._tol(), side="right")  # levels <= y
        padded = np.concatenate([np.zeros((len(self), 1)), self.cumulative], axis=1)
        return np.clip(padded[np.arange(len(self)), k], 0.0, 1.0)

    def quantile(self, q) -> np.ndarray:
        """The smallest level with ``P(Y <= l) >= q``, (n,)."""
        if np.ndim(q) != 0:
            raise ConfigError(f"q must be a scalar in (0, 1), got {q!r}")
        q = float(check_probability("q", q))
        return self.levels[np.argmax(self.cumulative >= q - 1e-12, axis=1)]

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """The smallest equal-tailed set of categories with mass >= ``level`` (class docstring),
        as its lowest and highest level, each (n,)."""
        level = check_level(level)
        tail = (1.0 - level) / 2.0
        lower = self.levels[np.argmax(self.cumulative > tail + 1e-12, axis=1)]
        upper = self.levels[np.argmax(self.cumulative >= 1.0 - tail - 1e-12, axis=1)]
        return lower, upper

    def crps(self, y) -> np.ndarray:
        """Exact CRPS per prediction (class docstring), (n,), in rating units."""
        y = self._check_y(y)
        below = (y[:, None] <= self.levels[None, :-1] + self._tol()).astype(np.float64)
        return ((self.cumulative[:, :-1] - below) ** 2) @ np.diff(self.levels)

    def randomized_pit(self, y, seed: int = 0) -> np.ndarray:
        """``F(y-) + V P(Y = y)`` with ``V ~ U(0, 1)`` seeded by ``seed``: uniform on (0, 1) for a
        calibrated categorical predictive (every ``y`` a level), (n,)."""
        k = self.category_index(y)
        rows = np.arange(len(self))
        p = self.probabilities[rows, k]
        below = self.cumulative[rows, k] - p
        return below + np.random.default_rng(seed).uniform(size=p.size) * p
