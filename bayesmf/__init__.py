"""bayesmf: matrix factorization for recommender systems, with uncertainty as a first-class output."""

from bayesmf import datasets, splits
from bayesmf.data import IdMap, Ratings, kcore, sample_negatives, summary, to_implicit
from bayesmf.errors import BayesmfError, ConfigError, DataError, DataNotFoundError, ParseError

__version__ = "0.1.0"

__all__ = [
    "BayesmfError", "ConfigError", "DataError", "DataNotFoundError", "IdMap", "ParseError", "Ratings",
    "__version__", "datasets", "kcore", "sample_negatives", "splits", "summary", "to_implicit",
]
