"""Public entry point for data sets: ``bayesmf.datasets.load(name)`` and ``synthetic(...)``.

``synthetic_large(...)`` generates a Netflix-shaped matrix chunk by chunk. The implementation
lives in :mod:`bayesmf.data.datasets`, :mod:`bayesmf.data.side` (side tables: ``side("ml-100k")``
gives the users and items tables) and :mod:`bayesmf.data.synthetic`.
"""

from bayesmf.data.datasets import (
    ALIASES,
    DATASETS,
    ENV_VAR,
    available,
    default_data_dir,
    load,
    load_file,
    load_netflix,
    load_netflix_probe_split,
    load_netflix_qualifying,
    load_npz,
    locate,
    resolve_data_dir,
)
from bayesmf.data.side import (
    SideTable,
    load_ml1m_movies,
    load_ml1m_users,
    load_ml100k_items,
    load_ml100k_users,
    side,
)
from bayesmf.data.synthetic import SyntheticData, synthetic, synthetic_large

__all__ = [
    "ALIASES", "DATASETS", "ENV_VAR", "SideTable", "SyntheticData", "available", "default_data_dir", "load",
    "load_file", "load_ml1m_movies", "load_ml1m_users", "load_ml100k_items", "load_ml100k_users", "load_netflix",
    "load_netflix_probe_split", "load_netflix_qualifying", "load_npz", "locate", "resolve_data_dir", "side",
    "synthetic", "synthetic_large",
]
