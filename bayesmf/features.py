"""Public entry point for factorization-machine features: ``bayesmf.features.Features(...)``.

The implementation lives in :mod:`bayesmf.data.features` (and the design format in
:mod:`bayesmf.data.design`).
"""

from bayesmf.data.design import Block, Design
from bayesmf.data.features import Features, FittedFeatures

__all__ = ["Block", "Design", "Features", "FittedFeatures"]
