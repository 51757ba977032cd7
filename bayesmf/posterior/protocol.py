"""What a Bayesian model provides, so that models share inference, prediction, recommendation,
saving and ArviZ export.

A model of ratings ``r_ij ~ p(r | f_ij, noise)`` with noise-free predictions
``f_ij = m + b_i + c_j + u_i . v_j`` implements :class:`BayesianModel`: the inferences of
:mod:`bayesmf.models.inference` run its NumPyro function (NUTS, SVI), its Gibbs kernel when
it is conjugate, and its point-estimate kernel (MAP); the estimator stores the draws of its
``sites`` and predicts, ranks, finds similar items and folds in new users through its latent
factors and predictive moments. :class:`bayesmf.posterior.bpmf_model.BPMFModel` is BPMF (and,
with its hyperparameters fixed, PMF-MAP) expressed this way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from bayesmf.engines.driver import Kernel


@runtime_checkable
class BayesianModel(Protocol):
    """The protocol of a Bayesian matrix-factorisation model.

    Attributes
    ----------
    numpyro_model : callable
        The model as a NumPyro function (for NUTS and SVI).
    """

    numpyro_model: Callable

    def sites(self) -> tuple[str, ...]:
        """The posterior sites kept per draw (``"U"``, ``"V"``, hyperparameters, ...); the
        estimator stores each as ``{site}_samples_`` (chains, draws, ...)."""

    def gibbs_kernel(self, data, rescale: bool = True) -> Kernel | None:
        """The conjugate Gibbs sampler as a :class:`~bayesmf.engines.driver.Kernel` over a batch
        of chains, or None when the model is not conjugate."""

    def map_kernel(self, data, method: str = "als") -> Kernel:
        """The point estimate (the model's hyperparameters fixed, maximised over the factors) as
        a kernel: the MAP fit and the samplers' start."""

    def factors(self, draws: dict, global_mean: float) -> tuple:
        """Per-draw latent factors ``(U (S, n_users, D), V (S, n_items, D), BU (S, n_users),
        BV (S, n_items))`` with chains merged, such that ``global_mean + BU + BV + U . V`` is each
        draw's noise-free prediction: what ranking, similarity and fold-in use."""

    def predictive_moments(self, factors: tuple, users, items, global_mean: float) -> tuple:
        """Mean and variance over draws of the noise-free prediction at index pairs (n,)."""
