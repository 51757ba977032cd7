"""Posterior inference for the Bayesian models: the model, its Gibbs kernel, MAP, NUTS and SVI.

Nothing here imports :mod:`bayesmf.models`, :mod:`bayesmf.metrics` or
:mod:`bayesmf.experiments` (``tests/test_layering.py`` checks it); the engines' layouts and
linear algebra are shared. The submodules are imported on use; this package re-exports nothing.

* :mod:`~bayesmf.posterior.model` — the BPMF prior and its NumPyro model;
* :mod:`~bayesmf.posterior.gibbs` — the conjugate Gibbs sweep; :mod:`~bayesmf.posterior.map` — MAP;
* :mod:`~bayesmf.posterior.numpyro_inference`, :mod:`~bayesmf.posterior.guides` — NUTS and SVI;
* :mod:`~bayesmf.posterior.sampler` — chains, thinning, checkpoints;
* :mod:`~bayesmf.posterior.convergence` — R-hat and ESS; :mod:`~bayesmf.posterior.distributions`.
"""

__all__: list[str] = []
