"""Data layer: sparse ratings, ID maps, loaders, filters, splits, negative sampling.

Nothing here imports the engines, metrics or experiments (the architecture flows one way).
"""

from bayesmf.data.idmap import IdMap
from bayesmf.data.negatives import candidate_sets, sample_negatives
from bayesmf.data.preprocess import FilterReport, kcore, summary, to_implicit
from bayesmf.data.ratings import MISSING_TIMESTAMP, Grouping, Ratings, unix_seconds
from bayesmf.data.splits import Split
from bayesmf.data.synthetic import SyntheticData, synthetic

__all__ = [
    "MISSING_TIMESTAMP", "FilterReport", "Grouping", "IdMap", "Ratings", "Split", "SyntheticData",
    "candidate_sets", "kcore", "sample_negatives", "summary", "synthetic", "to_implicit", "unix_seconds",
]
