"""Public entry point for factorization-machine features: ``bayesmf.features.Features(...)``.

The implementation lives in :mod:`bayesmf.data.features` (and the design format in
:mod:`bayesmf.data.design`); side tables and their loaders in :mod:`bayesmf.data.side`.
"""

from bayesmf.data.design import Block, Design
from bayesmf.data.features import Features, FittedFeatures
from bayesmf.data.side import SideColumn, SideTable, side

__all__ = ["Block", "Design", "Features", "FittedFeatures", "SideColumn", "SideTable", "side"]
