"""BPMF's ``"auto"`` priors in the ratings' unit: ``w0 = 1 / sd(r)``, ``bias_prior = (1, var(r))``
(with the offset and noise priors already data-scaled), so that a fit of ``s r + c`` is the fit of
``r`` in another unit. Checked against NumPy's moments of the training ratings, on predictions
and intervals of rescaled data, through save/load, and for bad values."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmf import BPMF, load, metrics, splits
from bayesmf.data import synthetic
from bayesmf.errors import ConfigError

SCALE, SHIFT = 40.0, 50.0


def _split():
    data = synthetic(n_users=150, n_items=100, n_ratings=4000, rank=2, noise=0.5, seed=4).ratings
    return splits.random(data, 0.2, seed=0)


def _scores(model, test):
    dist = model.predict_dist(test.users, test.items, n_draws=60)
    out = metrics.evaluate_ratings(test, dist, levels=(0.5, 0.9))
    return out["rmse"], out["coverage@0.5"], out["coverage@0.9"]


def test_auto_priors_are_the_training_ratings_moments():
    train, _ = _split()
    sd = float(np.std(train.values.astype(np.float64)))
    model = BPMF(rank=2, biases=True, n_samples=5, n_warmup=2, seed=0).fit(train)
    assert model.prior.w0 == pytest.approx(1.0 / sd, rel=1e-6)
    assert model.prior.bias_prior == pytest.approx((1.0, sd * sd), rel=1e-6)
    fixed = BPMF(rank=2, biases=True, w0=0.5, bias_prior=(2.0, 3.0), n_samples=5, n_warmup=2).fit(train)
    assert fixed.prior.w0 == 0.5 and fixed.prior.bias_prior == (2.0, 3.0)


@pytest.mark.slow
def test_a_fit_in_another_unit_is_the_same_fit_and_a_fixed_w0_is_not(tmp_path):
    """Ratings ``40 r + 50``: RMSE times 40, the same interval coverage as on ``r`` (Monte Carlo
    tolerance). ``W0 = I`` and ``bias_prior = (1, 1)`` fixed put the factors' prior at the scale of
    ``r``: on the rescaled data the same sweeps end far off (the defect the "auto" priors fix)."""
    train, test = _split()
    scaled = [part.with_values(SCALE * part.values + SHIFT) for part in (train, test)]
    settings = dict(rank=2, biases=True, n_samples=150, n_warmup=50, seed=0)
    base = _scores(BPMF(**settings).fit(train), test)
    model = BPMF(**settings).fit(scaled[0])
    rescaled = _scores(model, scaled[1])
    assert rescaled[0] / SCALE == pytest.approx(base[0], rel=0.02)
    assert abs(rescaled[1] - base[1]) < 0.03 and abs(rescaled[2] - base[2]) < 0.03, (base, rescaled)
    fixed = _scores(BPMF(w0=1.0, bias_prior=(1.0, 1.0), **settings).fit(scaled[0]), scaled[1])
    assert fixed[0] / SCALE > 1.05 * base[0] or abs(fixed[2] - base[2]) > 0.05, (base, fixed)
    # the resolved prior travels with a saved model
    loaded = load(model.save(tmp_path / "m"))
    assert loaded.prior.w0 == pytest.approx(model.prior.w0) and loaded.prior.bias_prior == model.prior.bias_prior


@pytest.mark.parametrize("name, value", [("w0", "wide"), ("w0", -1.0), ("w0", 0.0), ("bias_prior", "flat"),
                                         ("bias_prior", (1.0, 0.0)), ("bias_prior", (1.0,))])
def test_bad_w0_or_bias_prior_is_a_config_error_naming_the_value(name, value):
    train, _ = _split()
    with pytest.raises(ConfigError, match=name):
        BPMF(rank=2, biases=True, n_samples=5, n_warmup=2, **{name: value}).fit(train)
