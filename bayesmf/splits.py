"""Public entry point for splits: ``bayesmf.splits.random(ratings, 0.1, seed=42)`` and friends.

The implementation lives in :mod:`bayesmf.data.splits`.
"""

from bayesmf.data.splits import Split, kfold, leave_one_out, per_user, predefined, random, temporal

__all__ = ["Split", "kfold", "leave_one_out", "per_user", "predefined", "random", "temporal"]
