r"""Scores of predictive distributions over rating categories (ordinal models, and any model's
predictive discretised onto the rating levels).

Every function takes observed ratings ``y`` (N,) and a predictive distribution. A
:class:`~bayesmf.predictive.CategoricalDistribution` (probabilities ``p_nk`` over levels
``l_0 < ... < l_{K-1}``) is used as it is; any other predictive is first discretised onto
``levels`` (:meth:`~bayesmf.predictive.CategoricalDistribution.from_predictive`: category ``k``
gets the mass between the midpoints around ``l_k``), so that ordinal and Gaussian models are
scored on the same footing. Every ``y`` must be one of the levels. Definitions, with ``k_n``
the category of ``y_n``, ``F_nk = sum_{j <= k} p_nj`` and ``O_nk = 1[k_n <= k]``:

**Categorical NLL** :math:`-\frac1N \sum_n \log p_{n k_n}` (each ``p`` floored at
:data:`PROBABILITY_FLOOR`, so that one impossible outcome does not make the mean infinite).

**Ranked probability score** (Epstein 1969):
:math:`\mathrm{RPS}_n = \frac{1}{K-1} \sum_{k=0}^{K-2} (F_{nk} - O_{nk})^2`, averaged over
``n``: 0 for a sure, right forecast, 1 for a sure forecast at the wrong end of the scale. On a
scale of unit steps ``(K - 1) RPS`` is the CRPS of the discrete predictive.

**Reliability diagram and expected calibration error** (Guo et al. 2017). Top-label
(``which="top"``): each prediction's confidence ``c_n = max_k p_nk`` and whether its most
probable category was right, ``o_n = 1[argmax_k p_nk = k_n]``. Class-wise (``"classwise"``):
every pair ``(n, k)``, ``c = p_nk`` and ``o = 1[k_n = k]``. The ``(c, o)`` pairs are binned by
``c`` into ``n_bins`` equal-width bins of [0, 1] (the last closed); bin ``b`` has ``N_b`` pairs,
mean confidence ``conf_b`` and observed frequency ``freq_b``, and
:math:`\mathrm{ECE} = \sum_b \frac{N_b}{N} |\mathrm{freq}_b - \mathrm{conf}_b|`.
A calibrated model has ``freq_b ~= conf_b`` (the diagram's diagonal).
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import ConfigError, DataError
from bayesmf.predictive import CategoricalDistribution, PredictiveDistribution
from bayesmf.validate import as_values, check_positive_int, same_length

__all__ = ["PROBABILITY_FLOOR", "as_categorical", "categorical_nll", "expected_calibration_error",
           "ranked_probability_score", "reliability_diagram"]

PROBABILITY_FLOOR = 1e-12


def as_categorical(dist: PredictiveDistribution, levels=None) -> CategoricalDistribution:
    """``dist`` itself when categorical, else discretised onto ``levels`` (module docstring)."""
    if isinstance(dist, CategoricalDistribution):
        return dist
    if not isinstance(dist, PredictiveDistribution):
        raise DataError(f"dist must be a bayesmf PredictiveDistribution, got {type(dist).__name__}")
    if levels is None:
        raise ConfigError(f"a {dist.kind!r} predictive needs the rating levels to be scored by category: pass levels")
    return CategoricalDistribution.from_predictive(dist, levels)


def _prepare(y, dist, levels):
    cat = as_categorical(dist, levels)
    y = as_values("y", y)
    same_length(y=y, dist=cat.mean)
    return cat, cat.category_index(y)


def categorical_nll(y, dist: PredictiveDistribution, levels=None) -> np.ndarray:
    """``-log p_{n k_n}`` per prediction (N,) (module docstring)."""
    cat, k = _prepare(y, dist, levels)
    return -np.log(np.maximum(cat.probabilities[np.arange(k.size), k], PROBABILITY_FLOOR))


def ranked_probability_score(y, dist: PredictiveDistribution, levels=None) -> np.ndarray:
    """The RPS per prediction (N,), normalised by ``K - 1`` (module docstring)."""
    cat, k = _prepare(y, dist, levels)
    K = cat.n_categories
    observed = (k[:, None] <= np.arange(K - 1)[None, :]).astype(np.float64)
    return np.sum((cat.cumulative[:, :-1] - observed) ** 2, axis=1) / (K - 1)


def reliability_diagram(y, dist: PredictiveDistribution, levels=None, n_bins: int = 10,
                        which: str = "top") -> dict:
    """Per bin of confidence: ``edges`` (n_bins + 1,), ``count``, ``confidence`` (mean ``c``)
    and ``frequency`` (mean ``o``), NaN in empty bins; and ``ece`` (module docstring)."""
    n_bins = check_positive_int("n_bins", n_bins)
    cat, k = _prepare(y, dist, levels)
    p = cat.probabilities
    if which == "top":
        conf = p.max(axis=1)
        hit = (np.argmax(p, axis=1) == k).astype(np.float64)
    elif which == "classwise":
        conf = p.reshape(-1)
        hit = (k[:, None] == np.arange(cat.n_categories)[None, :]).astype(np.float64).reshape(-1)
    else:
        raise ConfigError(f"which must be 'top' or 'classwise', got {which!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(b, weights=conf, minlength=n_bins) / count
        frequency = np.bincount(b, weights=hit, minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(frequency[filled] - confidence[filled])) / conf.size)
    return {"edges": edges, "count": count, "confidence": confidence, "frequency": frequency, "ece": ece}


def expected_calibration_error(y, dist: PredictiveDistribution, levels=None, n_bins: int = 10,
                               which: str = "top") -> float:
    """The ECE of :func:`reliability_diagram` (module docstring)."""
    return reliability_diagram(y, dist, levels, n_bins, which)["ece"]
