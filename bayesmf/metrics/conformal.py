r"""Split-conformal prediction intervals for any point model: the distribution-free reference.

``ConformalRegressor(ALS(rank=10)).fit(train)`` carves a calibration set out of the training
ratings, fits a copy of the estimator on the rest (the *proper* training set, same ID maps and
index space), and keeps the sorted nonconformity scores of the calibration ratings, ::

    s_i = |r_i - f(u_i, j_i)|            (normalized=False)
    s_i = |r_i - f(u_i, j_i)| / sigma_i  (normalized=True: sigma the model's predictive std)

with ``f`` the *unclipped* point prediction. The central ``level`` interval of a new rating is
``f +- sigma q(level)`` with the split-conformal quantile

    q(L) = s_(k),   k = ceil((n + 1) L)        (s_(1) <= ... <= s_(n); q = inf when k > n)

so that for a test rating exchangeable with the calibration ratings
``P(y in interval) >= L`` whatever the model and the data (Vovk et al. 2005; Lei et al. 2018),
and ``<= L + 1/(n + 1)`` when the scores have no ties. The guarantee is marginal (on average
over test ratings), not per user or per item, and holds for test ratings drawn like the
calibration ones: ``calibration="random"`` (default, a uniformly random subset of the training
ratings: exchangeable with a random test split of the same pool, such as MovieLens u1..u5 or
:func:`bayesmf.splits.random`) or ``"per_user"`` (each user's fraction, :func:`bayesmf.splits.per_user`,
for per-user test splits). The model is not refitted on the calibration ratings (that would void
the guarantee); a user or item whose ratings all fall in the calibration part is unseen by the
fitted model and gets its treatment of empty rows, at calibration as at test time.

**Predictive distribution.** :meth:`ConformalRegressor.predict_dist` returns a
:class:`ConformalDistribution`, a :class:`~bayesmf.predictive.PredictiveDistribution`, so
:func:`bayesmf.metrics.evaluate_ratings` scores it with the same code as BPMF and bootstrap
ensembles. Its quantiles and CDF are those of the conformal predictive ``f + sigma E S`` with
``E = +-1`` equally likely and ``S`` uniform over ``{s_1, ..., s_n, +inf}``: the central ``L``
interval is exactly the split-conformal interval above, and ``|2 F(y) - 1| <= L`` exactly when
``y`` lies in it (the PIT-based coverage of ``evaluate_ratings`` is the interval coverage). The
atom at infinity makes the variance and the CRPS infinite, so ``std`` and :meth:`ConformalDistribution.crps`
are those of the finite part, ``S`` uniform over ``{s_1, ..., s_n}``: ``std = sigma sqrt(mean s^2)``
(the calibration RMSE when not normalized); ``nll`` in ``evaluate_ratings`` is, as for every
model, the Gaussian NLL from ``mean`` and ``std``.

Intervals are not clipped to the rating scale (neither are BPMF's): clipping would keep the
coverage and shorten ``width``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bayesmf.data import splits
from bayesmf.data.ratings import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics.bootstrap import _Seen
from bayesmf.predictive import PredictiveDistribution, check_level, check_probability
from bayesmf.validate import check_fraction

__all__ = ["ConformalDistribution", "ConformalRegressor", "conformal_quantile", "conformal_rank"]

CALIBRATIONS = ("random", "per_user")
# (n + 1) L is computed in floating point: a level meant as a decimal (0.9) may land a few ulps
# above an integer; this tolerance keeps k = ceil((n + 1) L) at the decimal's value
_TOL = 1e-9


def conformal_rank(n: int, level) -> np.ndarray:
    """``k = ceil((n + 1) level)`` (at least 1), the rank of the calibration score that bounds the
    split-conformal ``level`` interval; ``k = n + 1`` means the interval is infinite."""
    level = np.asarray(level, dtype=np.float64)
    return np.clip(np.ceil((n + 1) * level - _TOL), 1, n + 1).astype(np.int64)


def conformal_quantile(scores, level: float) -> float:
    """The split-conformal quantile ``s_(k)``, ``k = ceil((n + 1) level)``, of the nonconformity
    ``scores`` (n,): the ``k``-th smallest score, or ``inf`` when ``k > n`` (too few calibration
    scores for that level: fewer than ``level / (1 - level)``)."""
    level = check_level(level)
    s = np.sort(_scores(scores))
    k = int(conformal_rank(s.size, level))
    return float(s[k - 1]) if k <= s.size else float("inf")


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise DataError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise DataError("scores must be finite and >= 0")
    return s


@dataclasses.dataclass(frozen=True, eq=False)
class ConformalDistribution(PredictiveDistribution):
    """The split-conformal predictive of ``n`` ratings (see the module docstring): ``mean`` (n,)
    the point predictions, ``scores`` (m,) the sorted calibration scores, ``scale`` (n,) or None
    the per-prediction ``sigma`` (normalized scores). Build with :meth:`from_scores`."""

    scores: np.ndarray | None = None
    scale: np.ndarray | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.samples is not None or self.noise_std is not None:
            raise DataError("a conformal predictive has no samples or noise_std")
        scores = _scores(self.scores)
        if np.any(np.diff(scores) < 0):
            raise DataError("scores must be sorted ascending (use ConformalDistribution.from_scores)")
        object.__setattr__(self, "scores", scores)
        if self.scale is not None:
            scale = np.asarray(self.scale, dtype=np.float64)
            if scale.shape != self.mean.shape or not np.all(np.isfinite(scale) & (scale > 0)):
                raise DataError(f"scale must be finite, > 0 and of shape {self.mean.shape}")
            object.__setattr__(self, "scale", scale)

    @classmethod
    def from_scores(cls, point, scores, scale=None) -> ConformalDistribution:
        """From point predictions (n,), calibration scores (m,) (any order) and optional
        per-prediction scales (n,)."""
        s = np.sort(_scores(scores))
        point = np.asarray(point, dtype=np.float64)
        sigma = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)
        std = np.broadcast_to(sigma * np.sqrt(np.mean(s * s)), point.shape)
        return cls(point, std, scores=s, scale=scale)

    @property
    def kind(self) -> str:
        return "conformal"

    @property
    def n_calibration(self) -> int:
        return int(self.scores.size)

    def _sigma(self):
        return 1.0 if self.scale is None else self.scale

    def __getitem__(self, index) -> ConformalDistribution:
        scale = None if self.scale is None else self.scale[index]
        return ConformalDistribution(self.mean[index], self.std[index], scores=self.scores, scale=scale)

    def half_width(self, level: float) -> np.ndarray:
        """``sigma q(level)`` per prediction, (n,) (``inf`` when the level needs more scores)."""
        level = check_level(level)
        k = int(conformal_rank(self.scores.size, level))
        q = self.scores[k - 1] if k <= self.scores.size else np.inf
        return np.broadcast_to(self._sigma() * q, self.mean.shape).astype(np.float64)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """The split-conformal interval ``mean -+ sigma s_(ceil((n + 1) level))``."""
        half = self.half_width(level)
        return self.mean - half, self.mean + half

    def quantile(self, q) -> np.ndarray:
        """``mean + sigma sign(2q - 1) q(|2q - 1|)`` (the median is ``mean``)."""
        if np.ndim(q) != 0:
            raise ConfigError(f"q must be a scalar in (0, 1), got {q!r}")
        q = float(check_probability("q", q))
        if q == 0.5:
            return self.mean.astype(np.float64)
        half = self.half_width(abs(2 * q - 1))
        return self.mean + np.sign(q - 0.5) * half

    def cdf(self, y) -> np.ndarray:
        """``1/2 + sign(d)/2 (m + 1e-9)/(n + 1)``, ``d = (y - mean)/sigma`` and ``m = #{s_i < |d|}``:
        the conformal CDF (up to the 1e-9, which puts ``|d| = s_(k)`` exactly on the interval's
        side), so that ``|2 F(y) - 1| <= L`` exactly when ``y`` is in :meth:`interval` ``(L)``."""
        y = self._check_y(y)
        d = (y - self.mean) / self._sigma()
        m = np.searchsorted(self.scores, np.abs(d), side="left")
        dev = (m + _TOL) / (self.scores.size + 1)
        return np.where(d == 0, 0.5, 0.5 + 0.5 * np.sign(d) * dev)

    def crps(self, y) -> np.ndarray:
        """CRPS per prediction (n,) of the finite part ``mean + sigma E S``, ``S`` uniform over the
        scores (exact; equal to the empirical CRPS of the ``2m`` draws ``mean +- sigma s_i``)."""
        y = self._check_y(y)
        sigma = self._sigma()
        s, n = self.scores, self.scores.size
        a = np.abs(y - self.mean) / sigma
        prefix = np.concatenate([[0.0], np.cumsum(s)])
        j = np.searchsorted(s, a, side="right")  # scores <= a
        sum_abs = j * a - prefix[j] + (prefix[n] - prefix[j]) - (n - j) * a  # sum_i |a - s_i|
        abs_dev = (sum_abs + n * a + prefix[n]) / (2 * n)  # E|E S - a| (|a + s_i| = a + s_i)
        pairs = 2 * np.sum((2 * np.arange(1, n + 1) - n - 1) * s)  # sum_{i,l} |s_i - s_l|
        spread = (pairs + 2 * n * prefix[n]) / (2 * n * n)  # E|E S - E' S'|
        return sigma * (abs_dev - 0.5 * spread)


class ConformalRegressor:
    """Split-conformal intervals around ``estimator`` (an unfitted bayesmf estimator, used as a
    template: its class and ``get_params()``). See the module docstring.

    Parameters: ``calibration_fraction`` of the training ratings held out to calibrate (0 < f < 1;
    with ``m`` calibration ratings, levels above ``m / (m + 1)`` give infinite intervals);
    ``calibration`` ``"random"`` or ``"per_user"``; ``normalized`` scores divided by the model's
    predictive std (needs ``predict_dist``, e.g. BPMF or a bootstrap ensemble); ``seed`` of the
    calibration split.

    Fitted attributes: ``model_`` (fitted on the proper training ratings), ``scores_`` (sorted
    calibration scores), ``n_calibration_``, ``n_users_``, ``n_items_``, ``rating_scale_``.
    """

    def __init__(self, estimator, calibration_fraction: float = 0.1, calibration: str = "random",
                 normalized: bool = False, seed: int = 0):
        if not hasattr(estimator, "get_params") or not hasattr(estimator, "fit"):
            raise ConfigError(f"estimator must be a bayesmf estimator (fit/get_params), got {type(estimator).__name__}")
        self.estimator = estimator
        self.calibration_fraction = check_fraction("calibration_fraction", calibration_fraction)
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        self.calibration = calibration
        if not isinstance(normalized, (bool, np.bool_)):
            raise ConfigError(f"normalized must be True or False, got {normalized!r}")
        if normalized and not hasattr(estimator, "predict_dist"):
            raise ConfigError(f"normalized=True needs a model with predict_dist; {type(estimator).__name__} has none")
        self.normalized = bool(normalized)
        self.seed = seed

    def __repr__(self) -> str:
        return (f"ConformalRegressor({self.estimator!r}, calibration_fraction={self.calibration_fraction!r}, "
                f"calibration={self.calibration!r}, normalized={self.normalized!r}, seed={self.seed!r})")

    def fit(self, train: Ratings) -> ConformalRegressor:
        """Split ``train``, fit the copy on the proper part, score the calibration part."""
        if not isinstance(train, Ratings):
            raise DataError(f"fit expects a bayesmf Ratings, got {type(train).__name__}")
        split = (splits.random if self.calibration == "random" else splits.per_user)(
            train, self.calibration_fraction, seed=self.seed)
        proper, cal = split.train, split.test
        if cal.nnz == 0 or proper.nnz == 0:
            raise DataError(f"calibration_fraction={self.calibration_fraction} of {train.nnz} ratings leaves "
                            f"{proper.nnz} to fit and {cal.nnz} to calibrate; both must be non-empty")
        self.model_ = type(self.estimator)(**self.estimator.get_params()).fit(proper)
        point, scale = self._point_and_scale(cal.users, cal.items, "error")
        self.scores_ = np.sort(np.abs(cal.values.astype(np.float64) - point) / (1.0 if scale is None else scale))
        self.n_calibration_ = int(cal.nnz)
        self.n_users_, self.n_items_ = train.shape
        self.rating_scale_ = train.rating_scale
        self._seen = _Seen(train)
        return self

    def _require_fitted(self):
        if not hasattr(self, "model_"):
            raise ConfigError("this ConformalRegressor is not fitted yet; call fit(train) first")

    def _point_and_scale(self, users, items, unknown):
        if not self.normalized:
            return np.asarray(self.model_.predict(users, items, clip=False, unknown=unknown), np.float64), None
        dist = self.model_.predict_dist(users, items, unknown=unknown)
        if np.any(dist.std <= 0):
            raise DataError("normalized conformal scores need a predictive std > 0 everywhere")
        return np.asarray(dist.mean, np.float64), np.asarray(dist.std, np.float64)

    def predict(self, users, items, clip: bool = True, unknown: str = "error") -> np.ndarray:
        """The fitted model's point predictions (n,), clipped to the rating scale by default."""
        self._require_fitted()
        return self.model_.predict(users, items, clip=clip, unknown=unknown)

    def predict_ratings(self, test: Ratings, clip: bool = True, unknown: str = "error") -> np.ndarray:
        return self.predict(test.users, test.items, clip=clip, unknown=unknown)

    def predict_dist(self, users, items, unknown: str = "error") -> ConformalDistribution:
        """The :class:`ConformalDistribution` at index pairs (unclipped, as BPMF's)."""
        self._require_fitted()
        point, scale = self._point_and_scale(users, items, unknown)
        return ConformalDistribution.from_scores(point, self.scores_, scale)

    def interval(self, users, items, level: float = 0.9, unknown: str = "error") -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` split-conformal ``level`` intervals at index pairs."""
        level = check_level(level)
        return self.predict_dist(users, items, unknown).interval(level)

    def score_users(self, user_indices, items=None, **kwargs) -> np.ndarray:
        """The fitted model's scores (for ranking metrics)."""
        self._require_fitted()
        return self.model_.score_users(user_indices, items, **kwargs)

    def seen_items(self, user_index: int) -> np.ndarray:
        """Items the user rated in the full training set (proper and calibration parts)."""
        self._require_fitted()
        return self._seen(user_index)
