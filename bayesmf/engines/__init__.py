"""Engines: pure JAX functions over arrays for the classical algorithms.

Each engine's ``build_kernel(data, config)`` returns a :class:`~bayesmf.engines.driver.Kernel`:
``init(...) -> State`` and ``step(key, state) -> (State, Info)`` over NamedTuples, run by
:func:`bayesmf.engines.driver.run`. Nothing here imports :mod:`bayesmf.models`,
:mod:`bayesmf.metrics` or :mod:`bayesmf.experiments` (``tests/test_layering.py`` checks it).
The submodules are imported on use; this package re-exports nothing, so importing it is cheap.

* :mod:`~bayesmf.engines.als`, :mod:`~bayesmf.engines.implicit_als` — explicit and implicit ALS;
* :mod:`~bayesmf.engines.nmf` — NMF; :mod:`~bayesmf.engines.sgd` — Funk SVD and SVD++;
* :mod:`~bayesmf.engines.baseline` — biases only; :mod:`~bayesmf.engines.ease` — EASE's closed form;
* :mod:`~bayesmf.engines.chunks`, :mod:`~bayesmf.engines.sparse`, :mod:`~bayesmf.engines.linalg`,
  :mod:`~bayesmf.engines.residuals` — the shared layouts and batched linear algebra;
* :mod:`~bayesmf.engines.driver` — the kernel protocol and the one driver that runs any kernel.

Importing this package turns on JAX's persistent compilation cache for this CPU
(:func:`bayesmf._compile_cache.enable`; off with ``BAYESMF_COMPILATION_CACHE=0``).
"""

from bayesmf._compile_cache import enable as _enable_compile_cache

_enable_compile_cache()

__all__: list[str] = []
