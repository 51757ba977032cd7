"""bayesmf: matrix factorization for recommender systems, with uncertainty as a first-class output.

Data layer names are imported eagerly; estimators and the metrics package are imported on first
use, so ``import bayesmf`` stays cheap and does not start JAX.
"""

import importlib

from bayesmf import datasets, features, splits
from bayesmf._version import __version__
from bayesmf.data import IdMap, Ratings, kcore, sample_negatives, summary, to_implicit
from bayesmf.errors import BayesmfError, ConfigError, DataError, DataNotFoundError, ParseError
from bayesmf.registry import ESTIMATOR_MODULES  # the one estimator table: bayesmf.registry

_LAZY = {
    **ESTIMATOR_MODULES,
    "load": "bayesmf.models.base",
    # inference configurations: BPMF(inference=NUTSConfig(max_tree_depth=7))
    "GibbsConfig": "bayesmf.models.inference",
    "NUTSConfig": "bayesmf.models.inference",
    "SVIConfig": "bayesmf.models.inference",
    "MAPConfig": "bayesmf.models.inference",
    "metrics": "bayesmf.metrics",
}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if module.__name__ == f"bayesmf.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayesmf' has no attribute {name!r}")


__all__ = [
    "ESTIMATOR_MODULES", "BayesmfError", "ConfigError", "DataError", "DataNotFoundError", "IdMap", "ParseError",
    "Ratings",
    "__version__", "datasets", "features", "kcore", "sample_negatives", "splits", "summary", "to_implicit", *_LAZY,
]
