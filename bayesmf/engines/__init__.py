"""Engines: pure JAX functions over arrays for the classical algorithms.

Each engine is ``init(...) -> State`` and a jitted ``step`` over NamedTuple state, driven by
:mod:`bayesmf.engines.driver`. Nothing here imports :mod:`bayesmf.models`,
:mod:`bayesmf.metrics` or :mod:`bayesmf.experiments` (``tests/test_layering.py`` checks it).
The submodules are imported on use; this package re-exports nothing, so importing it is cheap.

* :mod:`~bayesmf.engines.als`, :mod:`~bayesmf.engines.implicit_als` — explicit and implicit ALS;
* :mod:`~bayesmf.engines.nmf` — NMF; :mod:`~bayesmf.engines.sgd` — Funk SVD and SVD++;
* :mod:`~bayesmf.engines.baseline` — biases only; :mod:`~bayesmf.engines.ease` — EASE's closed form;
* :mod:`~bayesmf.engines.chunks`, :mod:`~bayesmf.engines.sparse`, :mod:`~bayesmf.engines.linalg`,
  :mod:`~bayesmf.engines.residuals` — the shared layouts and batched linear algebra;
* :mod:`~bayesmf.engines.driver` — the loop that runs any ``step``.
"""

__all__: list[str] = []
