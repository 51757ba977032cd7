"""Data for an experiment: presence checks before anything runs, loading with the file's
preprocessing, and the split instances (all through :mod:`bayesmf.datasets` and
:mod:`bayesmf.splits`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmf.data import kcore, to_implicit
from bayesmf.data.datasets import DATASETS, available, load, resolve_data_dir
from bayesmf.data.ratings import Ratings
from bayesmf.data.synthetic import SyntheticData, synthetic
from bayesmf.errors import ConfigError, DataError, DataNotFoundError
from bayesmf.experiments.grid import split_instances


@dataclass
class Prepared:
    """A data set after preprocessing, with the notes a report shows and, for synthetic data,
    the truth (``truth.true_mean`` over raw IDs, which preprocessing never renumbers)."""

    name: str
    ratings: Ratings
    notes: list
    truth: SyntheticData | None = None

    def true_mean(self, test: Ratings) -> np.ndarray:
        """Noise-free synthetic ratings at the test pairs (raw IDs are the generator's indices)."""
        users = test.user_map.ids(test.users).astype(np.int64)
        items = test.item_map.ids(test.items).astype(np.int64)
        return self.truth.true_mean(users, items)


def check_available(experiment, data_dir=None) -> None:
    """Raise :class:`~bayesmf.errors.DataNotFoundError` naming the experiment file, the data set
    and the expected path when a named data set (or a predefined split file) is not on disk."""
    root = resolve_data_dir(data_dir or experiment.data["data_dir"])
    found = available(root)
    for name in experiment.datasets:
        if name == "synthetic":
            continue
        if found[name] is None:
            spec = DATASETS[name]
            raise DataNotFoundError(
                f"{experiment.path}: [data].name: data set {name!r} is not present: expected "
                f"{root / spec.folder / spec.files[0]}. Set [data].data_dir, the BAYESMF_DATA environment "
                f"variable or --data-dir to a folder holding {spec.folder}/ (see `bayesmf datasets`)."
            )
        if experiment.split["method"] == "predefined":
            for fold in experiment.split["folds"]:
                for part in ("base", "test"):
                    path = found[name].parent / f"{fold}.{part}"
                    if not path.is_file():
                        raise DataNotFoundError(f"{experiment.path}: [split].folds: {fold!r} needs {path}")


def prepare(experiment, name: str, data_dir=None) -> Prepared:
    """Load data set ``name`` and apply ``[data]``'s k-core and implicit conversions."""
    cfg = experiment.data
    truth = None
    if name == "synthetic":
        try:
            truth = synthetic(**cfg["synthetic"])
        except (ConfigError, DataError) as exc:  # settings the generator refuses (too many ratings...)
            raise ConfigError(f"{experiment.path}: [data.synthetic]: {exc}") from None
        ratings = truth.ratings
    else:
        ratings = load(name, data_dir or cfg["data_dir"], download=False)
    notes = [f"loaded {ratings!r}"]
    if cfg["min_user_ratings"] > 1 or cfg["min_item_ratings"] > 1:
        ratings, report = kcore(ratings, cfg["min_user_ratings"], cfg["min_item_ratings"])
        notes.append(f"k-core (users >= {cfg['min_user_ratings']}, items >= {cfg['min_item_ratings']}): {report}")
    if cfg["implicit"]:
        ratings, report = to_implicit(ratings, cfg["implicit_threshold"])
        notes.append(f"implicit (threshold {cfg['implicit_threshold']}): {report}")
    return Prepared(name, ratings, notes, truth)


def make_splits(experiment, prepared: Prepared, data_dir=None) -> dict:
    """``{instance name: Split}`` for every split instance of ``[split]`` (see
    :func:`bayesmf.experiments.grid.split_instances`)."""
    from bayesmf.data import splits

    s = experiment.split
    r = prepared.ratings
    drop = s["drop_unseen"]
    method = s["method"]
    if method == "kfold":
        return dict(zip(split_instances(s), splits.kfold(r, s["k"], s["seed"], drop_unseen=drop)))
    if method == "predefined":
        folder = data_dir or experiment.data["data_dir"]
        parts = {f: splits.predefined(prepared.name, f, folder, drop) for f in s["folds"]}
        if experiment.data["implicit"]:  # the published folds are files: convert both parts
            parts = {f: _implicit_pair(split, experiment.data["implicit_threshold"]) for f, split in parts.items()}
        return parts
    if method == "random":
        split = splits.random(r, s["test_fraction"], s["seed"], drop_unseen=drop)
    elif method == "per_user":
        split = splits.per_user(r, s["test_fraction"], s["seed"], s["min_train"], drop_unseen=drop)
    elif method == "leave_one_out":
        split = splits.leave_one_out(r, s["seed"], s["by"], drop_unseen=drop)
    else:
        split = splits.temporal(r, s["test_fraction"], drop_unseen=drop)
    return {method: split}


def _implicit_pair(split, threshold):
    """``to_implicit`` on both parts of a predefined split (k-cores are refused for these by the schema)."""
    from bayesmf.data.splits import Split

    train, _ = to_implicit(split.train, threshold)
    test, _ = to_implicit(split.test, threshold)
    return Split(train, test, split.dropped)
