"""Public entry point for splits: ``bayesmf.splits.random(ratings, 0.1, seed=42)`` and friends.

The implementation lives in :mod:`bayesmf.data.splits`.
"""

from bayesmf.data.splits import (
    Split,
    StrongSplit,
    kfold,
    leave_one_out,
    per_user,
    predefined,
    random,
    strong_generalization,
    temporal,
    validation_split,
)

__all__ = [
    "Split", "StrongSplit", "kfold", "leave_one_out", "per_user", "predefined", "random", "strong_generalization",
    "temporal", "validation_split",
]
