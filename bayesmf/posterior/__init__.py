"""Posterior inference for the Bayesian models: the model, its Gibbs kernel, MAP, NUTS and SVI.

Nothing here imports :mod:`bayesmf.models`, :mod:`bayesmf.metrics` or
:mod:`bayesmf.experiments` (``tests/test_layering.py`` checks it); the engines' layouts and
linear algebra are shared. The submodules are imported on use; this package re-exports nothing.

* :mod:`~bayesmf.posterior.protocol` — what a Bayesian model provides;
  :mod:`~bayesmf.posterior.bpmf_model` — BPMF expressed through it;
* :mod:`~bayesmf.posterior.model` — the BPMF prior and its NumPyro model;
* :mod:`~bayesmf.posterior.gibbs` — the conjugate Gibbs kernel; :mod:`~bayesmf.posterior.map` — MAP kernels;
* :mod:`~bayesmf.posterior.numpyro_inference`, :mod:`~bayesmf.posterior.guides` — NUTS and SVI;
* :mod:`~bayesmf.posterior.sampler` — chain kernels ``(keys, states, jitter)`` on the driver;
* :mod:`~bayesmf.posterior.convergence` — R-hat and ESS; :mod:`~bayesmf.posterior.distributions`.
"""

__all__: list[str] = []
