"""Engine configurations whose numbers are traced and whose structure is static.

A jitted step compiles once per *structure* (which terms the model has, how many inner solver
steps, which loss), not once per *value*: regularisation strengths, learning rates and
confidence scales are pytree leaves, so a hyperparameter sweep reuses one compiled step (an
ALS step on MovieLens-1M takes seconds to compile and a fraction of a second to run).
"""

from __future__ import annotations

import dataclasses

import jax


def engine_config(*static: str):
    """Class decorator: a frozen dataclass registered as a pytree whose fields named in
    ``static`` are compile-time constants (``meta_fields``) and all other fields leaves."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(static) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        data = [n for n in names if n not in static]
        return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))

    return wrap
