"""Grid expansion, per-run seeds and run keys.

An experiment expands into runs in a fixed order: for each data set (``[data].name``, in file
order), each split instance (one for ``random``/``per_user``/``leave_one_out``/``temporal``; one
per fold for ``kfold`` and ``predefined``), each ``[[models]]`` table (file order), each point of
its hyperparameter grid (the Cartesian product of its array-valued keys, in file order, last key
fastest) and each seed of ``[experiment].seeds``. A run's *position* is the tuple of these five
indices.

**Seeds.** Run ``(d, f, m, g)`` with repetition seed ``s`` gives its estimator (its ``seed``
argument, and a bootstrap ensemble's resampling seed) the integer

    derived_seed = SeedSequence(entropy=s, spawn_key=(d, f, m, g)).generate_state(1)[0] mod 2**31

(NumPy's ``SeedSequence``, which hashes the entropy and the spawn key into well-mixed,
statistically independent streams). The estimator turns it into its JAX key with
``jax.random.PRNGKey(derived_seed)``. So the same file gives the same seeds on every machine; two
repetitions, two folds, two models or two grid points never share a stream; and a run's seed
does not depend on how many seeds or grid points come after it. Splits and sampled negatives use
their own fixed seeds (``[split].seed``, ``[evaluation].seed``) so that every model is compared
on the same data.

**Run keys.** A run is identified by the SHA-256 of its resolved configuration (data set and
preprocessing, split and fold, model class, *all* constructor arguments including the derived
seed, bootstrap size, evaluation settings, bayesmf version), serialised as canonical JSON. The
runner caches finished runs under this key: change anything that affects the numbers and the
key changes; change a label or the order of unrelated keys and it does not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

import numpy as np

from bayesmf.experiments import catalogue

KEY_LENGTH = 16  # hex characters of the SHA-256 kept in file names


def combinations(entry) -> list[dict]:
    """Every hyperparameter combination of a model entry, in grid order (last axis fastest)."""
    names = list(entry.axes)
    points = itertools.product(*(entry.axes[n] for n in names)) if names else [()]
    return [{**entry.fixed, **dict(zip(names, values))} for values in points]


def derive_seed(seed: int, position: tuple[int, ...]) -> int:
    """The estimator seed of the run at grid ``position`` for repetition ``seed`` (module docstring)."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(p) for p in position)).generate_state(1)
    return int(state[0] % np.uint32(2**31))


def run_key(config: dict) -> str:
    """SHA-256 (first :data:`KEY_LENGTH` hex digits) of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {value!r} in a run configuration")


def split_instances(split: dict) -> list[str]:
    """Names of the split instances a split configuration produces (one run each)."""
    if split["method"] == "kfold":
        return [f"fold{i + 1}" for i in range(split["k"])]
    if split["method"] == "predefined":
        return list(split["folds"])
    return [split["method"]]


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid. ``params`` are the hyperparameters the file gives for this grid point;
    ``config`` the resolved configuration whose hash is ``key``."""

    position: tuple  # (dataset, split instance, model, grid point) indices
    index: int  # 0-based position in the expansion order
    dataset: str
    split: str
    split_index: int
    model: str
    label: str
    bootstrap: int | None
    params: dict
    seed: int
    derived_seed: int
    config: dict
    key: str

    @property
    def params_text(self) -> str:
        """Compact, stable rendering of ``params`` for tables (``rank=10, inference=gibbs``)."""
        return ", ".join(f"{k}={v}" for k, v in self.params.items())

    def estimator_params(self) -> dict:
        """Constructor arguments: the file's hyperparameters plus the derived seed where taken."""
        params = dict(self.params)
        if "seed" in catalogue.model_parameters(self.model):
            params["seed"] = self.derived_seed
        for name, value in params.items():  # TOML arrays stand for tuples (noise_prior)
            if isinstance(value, list):
                params[name] = tuple(value)
        return params


def data_config(experiment, dataset: str) -> dict:
    """The preprocessing of one data set (what its runs' keys depend on)."""
    data = {k: v for k, v in experiment.data.items() if k not in ("name", "data_dir", "synthetic")}
    data["name"] = dataset
    if dataset == "synthetic":
        data["synthetic"] = experiment.data["synthetic"]
    return data


def expand(experiment) -> list[RunSpec]:
    """Every run of ``experiment`` (a :class:`~bayesmf.experiments.schema.Experiment`), in order."""
    from bayesmf import __version__

    runs = []
    instances = split_instances(experiment.split)
    for d, dataset in enumerate(experiment.datasets):
        data = data_config(experiment, dataset)
        for f, split_name in enumerate(instances):
            split = {**experiment.split, "instance": split_name}
            for entry in experiment.models:
                defaults = {n: p.default for n, p in catalogue.model_parameters(entry.model).items()
                            if n not in ("progress", "checkpoint", "devices")}
                for g, params in enumerate(combinations(entry)):
                    position = (d, f, entry.index, g)
                    for seed in experiment.seeds:
                        derived = derive_seed(seed, position)
                        resolved = {**defaults, **params}
                        if "seed" in resolved:
                            resolved["seed"] = derived
                        config = {"bayesmf": __version__, "data": data, "split": split, "model": entry.model,
                                  "params": resolved, "bootstrap": entry.bootstrap,
                                  "evaluation": experiment.evaluation, "seed": seed, "derived_seed": derived}
                        runs.append(RunSpec(position, len(runs), dataset, split_name, f, entry.model, entry.label,
                                            entry.bootstrap, params, seed, derived, config, run_key(config)))
    return runs
