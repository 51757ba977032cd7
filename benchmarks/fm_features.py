"""The factorization-machine feature sets of the benchmark pairs, and their design files.

A feature set is a name (a job's ``"features"`` parameter) for a :class:`bayesmf.features.Features`
built from the side tables of the split's data set. The harness writes, next to each split file,
one design file per feature set (:func:`write_design`): the train and test designs of that
feature set, fitted on the split's training ratings, as flat arrays (``peers/_fm.py``), so that a
peer without bayesmf (myFM) fits the same columns, groups and rows that bayesmf builds.

Feature sets:

* ``ml100k-extended``: myFM's ``examples/ml-100k-extended.ipynb`` set on MovieLens-100K: user
  and item one-hot; user age (10 percentile bins), occupation and zip prefix (first character);
  item release year (10 percentile bins, a missing bin) and genres (``1/sqrt(n)`` each); implicit
  feedback both ways (the items each user rated, the users who rated each item, ``1/sqrt(n)``
  each); the rating's day (one-hot of the training days plus an unknown day).
* ``ml1m-side``: MovieLens-1M one-hot, side information (user age bucket, gender, occupation,
  zip prefix; item release year (from the title) and genres) and implicit feedback both ways; no time (our
  MovieLens-1M copy lacks some timestamps).
* ``implicit``: one-hot and implicit feedback both ways, no side table (any data, e.g. the
  synthetic smoke-test split).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent / "peers"))
import _common  # noqa: E402
import _fm  # noqa: E402

FEATURE_SETS = {  # Features fields; "side" names the data set whose side tables are used
    "ml100k-extended": {"side": "ml-100k", "user_columns": ("age", "occupation", "zip_prefix"),
                        "item_columns": ("release_year", "genres"), "implicit": True, "implicit_items": True,
                        "time": "day"},
    "ml1m-side": {"side": "ml-1m", "user_columns": ("age", "gender", "occupation", "zip_prefix"),
                  "item_columns": ("year", "genres"), "implicit": True, "implicit_items": True},
    "implicit": {"implicit": True, "implicit_items": True},
}


def features(name: str, data_dir=None):
    """The :class:`~bayesmf.features.Features` of feature set ``name`` (side tables loaded from
    ``data_dir``, default: the usual data directory)."""
    from bayesmf import datasets
    from bayesmf.features import Features

    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}")
    spec = dict(FEATURE_SETS[name])
    dataset = spec.pop("side", None)
    if dataset is not None:
        spec["user_side"], spec["item_side"] = datasets.side(dataset, data_dir or None)
    return Features(**spec)


def ratings_of(data: dict, part: str):
    """The ``part`` ("train" or "test") ratings of a split read by ``_common.load``, with the raw
    ID maps and the timestamps the split stores (what side and time features look up)."""
    from bayesmf import IdMap, Ratings

    scale = None if data["kind"] == "implicit" else (data["rating_min"], data["rating_max"])
    maps = {}
    if "user_ids" in data:
        maps = {"user_map": IdMap.from_ordered(data["user_ids"]), "item_map": IdMap.from_ordered(data["item_ids"])}
    return Ratings.from_arrays(data[f"{part}_users"], data[f"{part}_items"], data[f"{part}_values"],
                               data.get(f"{part}_timestamps"), n_users=data["n_users"], n_items=data["n_items"],
                               rating_scale=scale, **maps)


def design_path(split: Path, name: str) -> Path:
    """Where :func:`write_design` puts feature set ``name``'s designs for ``split``."""
    return _fm.design_path(split, name)


def write_design(split: Path, name: str) -> Path:
    """Write the train and test designs of feature set ``name`` on ``split`` next to it
    (:func:`_fm.design_path`) and return that path."""
    data = _common.load(split)
    train, test = ratings_of(data, "train"), ratings_of(data, "test")
    fitted = features(name, data.get("data_dir")).fit(train)
    path = design_path(split, name)
    np.savez(path, **_fm.design_arrays(fitted.design_of(train), "train_"),
             **_fm.design_arrays(fitted.design_of(test), "test_"))
    return path
