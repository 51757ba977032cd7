"""Estimators: the thin scikit-learn-style layer over the engines and the Bayesian posteriors."""

from bayesmf.models.base import Estimator, FactorModel, load

__all__ = ["Estimator", "FactorModel", "load"]
