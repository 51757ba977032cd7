"""The experiment file: a TOML document, validated in full before anything is computed.

Schema (every table and key; anything else is an error naming the key and the allowed ones)::

    [experiment]
    name = "quickstart"               # required: a label for the report
    description = "..."               # optional, free text
    reference = "..."                 # optional: where the expected numbers come from
    seeds = [0, 1, 2]                 # repetitions (an int n means [0, ..., n-1]); default [0]

    [data]
    name = "movielens-100k"           # required: a name of bayesmf.datasets.DATASETS or "synthetic";
                                      # a list of names runs the whole grid on each
    data_dir = "/path"                # optional (default: $BAYESMF_DATA, then ~/.cache/bayesmf)
    min_user_ratings = 1              # k-core filter (bayesmf.kcore), applied after loading
    min_item_ratings = 1
    implicit = false                  # true: bayesmf.to_implicit (values become 1)
    implicit_threshold = 4.0          # with implicit: keep ratings >= threshold

    [data.synthetic]                  # only with name = "synthetic": bayesmf.datasets.synthetic(...)
    n_users = 500                     # n_users, n_items, n_ratings, rank, noise, seed
    ...

    [split]
    method = "kfold"                  # required: random | per_user | leave_one_out | temporal | kfold | predefined
    seed = 0                          # random, per_user, leave_one_out, kfold (default 0)
    test_fraction = 0.2               # random, per_user, temporal
    k = 5                             # kfold: number of folds (every fold is a run)
    folds = ["u1"]                    # predefined: MovieLens-100K folds u1..u5, ua, ub (default u1..u5)
    by = "time"                       # leave_one_out: "time" | "random"
    min_train = 1                     # per_user
    drop_unseen = false               # every method

    [evaluation]
    metrics = ["rmse", "mae", "coverage@0.9", "ndcg@10"]   # required; see catalogue.METRIC_HELP
    threshold = 4.0                   # ranking relevance: test value >= threshold (default: all)
    n_negatives = 99                  # sampled ranking
    seed = 0                          # sampled negatives and bootstrap intervals (same for every model)
    n_boot = 200                      # bootstrap replicates of the RMSE/MAE intervals
    clip = true                       # clip point predictions to the rating scale

    [[models]]                        # one table per model; at least one
    model = "BPMF"                    # required: catalogue.MODEL_MODULES
    label = "BPMF (Gibbs)"            # optional display name (default: the model name)
    bootstrap = 10                    # optional: a BootstrapEnsemble of this many copies
    rank = [5, 10]                    # hyperparameters: constructor arguments; an array is a grid axis
    inference = "gibbs"               # a name, or a table with the name and settings:
    # inference = {name = "nuts", max_tree_depth = 7}   (bayesmf.models.inference configurations)

Hyperparameter values are checked against the constructor's annotations: integers for ``int``,
finite numbers for ``float``, ``true``/``false`` for ``bool``, strings for ``str``, a TOML table of
finite numbers for ``dict`` (``learning_rates = {user_bias = 0.01}``); an argument that accepts
``None`` takes the string ``"none"``; a ``tuple`` argument (``noise_prior``) takes an array of
numbers, and an array of arrays is then its grid axis. BPMF's ``inference`` takes a name
(``"nuts"``: its default settings) or a table ``{name = "nuts", max_tree_depth = 7}`` of the
fields of that inference's configuration (:mod:`bayesmf.models.inference`); the keys
``nuts_*``, ``svi_*``, ``map_*`` and ``gibbs_rescale`` of earlier files are still read, with a
``DeprecationWarning``. BayesFM's ``features`` takes a table of
:class:`~bayesmf.features.Features` fields, side tables by data set name
(``features = {implicit = true, user_side = {dataset = "ml-100k", columns = ["age"]}}``).
Every number in the file must be finite.
A grid axis, ``[data].name`` and ``[split].folds`` may not repeat a value (compared once
resolved: ``[1, 1.0]`` for a number), since the repeat would run the same configuration again.
``seed``, ``progress`` and ``checkpoint`` belong to the runner (see :mod:`bayesmf.experiments.grid`
for how seeds are derived). Finally each grid point is handed to the estimator's own parameter
check, so a value it would reject (``inference = "mcmc"``, an unknown ``learning_rates`` group) is
reported here, not mid-run.

Experiment files shipped inside the package (``bayesmf/experiments/templates/NAME.toml``, read
through :mod:`importlib.resources` so they work from a wheel as well as from a checkout) are
listed by :func:`template_names` and read by :func:`load_template`; ``bayesmf demo`` runs
``quickstart``.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bayesmf.data.datasets import DATASETS
from bayesmf.errors import ConfigError
from bayesmf.experiments import catalogue

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TABLES = ("experiment", "data", "split", "evaluation", "models")
EXPERIMENT_KEYS = ("name", "description", "reference", "seeds")
DATA_KEYS = ("name", "data_dir", "min_user_ratings", "min_item_ratings", "implicit", "implicit_threshold",
             "synthetic")
SYNTHETIC_KEYS = {"n_users": 500, "n_items": 300, "n_ratings": 20_000, "rank": 5, "noise": 0.5, "seed": 0}
DATASET_NAMES = (*DATASETS, "synthetic")
SPLIT_METHODS = {
    # method -> {key: default}; "drop_unseen" is accepted by every method
    "random": {"test_fraction": 0.2, "seed": 0},
    "per_user": {"test_fraction": 0.2, "seed": 0, "min_train": 1},
    "leave_one_out": {"seed": 0, "by": "time"},
    "temporal": {"test_fraction": 0.2},
    "kfold": {"k": 5, "seed": 0},
    "predefined": {"folds": ["u1", "u2", "u3", "u4", "u5"]},
}
PREDEFINED_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
EVALUATION_DEFAULTS = {"threshold": None, "n_negatives": 99, "seed": 0, "n_boot": 200, "clip": True}
MODEL_KEYS = ("model", "label", "bootstrap")


@dataclass(frozen=True)
class ModelEntry:
    """One ``[[models]]`` table: ``fixed`` hyperparameters and grid ``axes`` (name -> values)."""

    index: int
    model: str
    label: str
    bootstrap: int | None
    fixed: dict
    axes: dict


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (plain, JSON-ready dicts with every default filled in)."""

    path: str
    name: str
    description: str
    reference: str
    seeds: tuple
    data: dict
    split: dict
    evaluation: dict
    models: tuple
    metrics: tuple = field(default=())

    @property
    def datasets(self) -> list[str]:
        return _dataset_names(self.data)

    def resolved(self) -> dict:
        """The whole configuration with defaults filled in (what results.json records)."""
        return {
            "experiment": {"name": self.name, "description": self.description, "reference": self.reference,
                           "seeds": list(self.seeds), "file": self.path},
            "data": copy.deepcopy(self.data),
            "split": copy.deepcopy(self.split),
            "evaluation": copy.deepcopy(self.evaluation),
            "models": [{"model": m.model, "label": m.label, "bootstrap": m.bootstrap, "fixed": m.fixed,
                        "grid": m.axes} for m in self.models],
        }


class _Checker:
    """Error messages of one file: ``FILE: KEY: problem``."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, problem: str):
        raise ConfigError(f"{self.path}: {key}: {problem}")

    def table(self, doc: dict, key: str, required: bool = True) -> dict:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(f"[{key}]", "missing table (required)")
            return {}
        if not isinstance(value, dict):
            self.fail(f"[{key}]", f"must be a table, got {type(value).__name__}")
        return value

    def only(self, table: dict, allowed, where: str, context: str = "") -> None:
        unknown = [k for k in table if k not in allowed]
        if unknown:
            self.fail(f"{where}.{unknown[0]}", f"unknown key; allowed keys in {where}{context}: {list(allowed)}")

    def integer(self, value, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value, key: str, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return float(value)

    def distinct(self, values: list, key: str, raw) -> None:
        """Refuse a list (a grid axis, data sets, folds) holding a value twice once resolved
        (``[1, 1.0]`` for a float argument): each entry would run the same configuration again, and
        the report would count it twice."""
        seen = set()
        for value in values:
            text = json.dumps(value, sort_keys=True)
            if text in seen:
                self.fail(key, f"repeats the value {value!r} ({raw!r}); list each value once")
            seen.add(text)

    def string(self, value, key: str, allowed=None) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        if allowed is not None and value not in allowed:
            self.fail(key, f"{value!r} is not allowed; allowed values: {list(allowed)}")
        return value

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value


def _dataset_names(data: dict) -> list[str]:
    names = data["name"]
    return list(names) if isinstance(names, list) else [names]


def load_experiment(path) -> Experiment:
    """Read and validate an experiment file; raises :class:`~bayesmf.errors.ConfigError` naming
    the file, the key and the allowed values on the first problem found."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_experiment(doc, str(path))


def template_names() -> list[str]:
    """Names of the experiment files shipped inside the package."""
    folder = importlib.resources.files("bayesmf.experiments") / "templates"
    if not folder.is_dir():  # an installation without its package data
        return []
    return sorted(f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml"))


def template_text(name: str) -> str:
    """The text of the shipped experiment file ``name`` (a starting point for one's own file)."""
    names = template_names()
    if name not in names:
        raise ConfigError(f"no shipped experiment named {name!r}; shipped: {', '.join(names) or 'none'}")
    return (importlib.resources.files("bayesmf.experiments") / "templates" / f"{name}.toml").read_text(
        encoding="utf-8")


def load_template(name: str) -> Experiment:
    """Read and validate the shipped experiment file ``name``; errors name it as
    ``bayesmf:experiments/templates/NAME.toml``, which is also the file recorded in results."""
    label = f"bayesmf:experiments/templates/{name}.toml"
    try:
        doc = tomllib.loads(template_text(name))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    return parse_experiment(doc, label)


def parse_experiment(doc: dict, path: str = "<experiment>") -> Experiment:
    """Validate an already-parsed TOML document (see the module docstring for the schema)."""
    c = _Checker(path)
    c.only(doc, TABLES, "top level")
    exp = c.table(doc, "experiment")
    c.only(exp, EXPERIMENT_KEYS, "[experiment]")
    if "name" not in exp:
        c.fail("[experiment].name", "missing (required)")
    name = c.string(exp["name"], "[experiment].name")
    description = c.string(exp.get("description", ""), "[experiment].description")
    reference = c.string(exp.get("reference", ""), "[experiment].reference")
    seeds = _seeds(c, exp.get("seeds", [0]))
    data = _data(c, c.table(doc, "data"))
    split = _split(c, c.table(doc, "split"), data)
    evaluation, metrics = _evaluation(c, c.table(doc, "evaluation"), data)
    models = _models(c, doc.get("models"))
    return Experiment(path, name, description, reference, seeds, data, split, evaluation, models, metrics)


def _seeds(c: _Checker, value) -> tuple:
    key = "[experiment].seeds"
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(c.integer(value, key, minimum=1)))
    if not isinstance(value, list) or not value:
        c.fail(key, f"must be a non-empty array of integers or a count, got {value!r}")
    seeds = tuple(c.integer(s, f"{key}[{i}]", minimum=0) for i, s in enumerate(value))
    if len(set(seeds)) != len(seeds):
        c.fail(key, f"repeats a seed: {list(seeds)}")
    return seeds


def _data(c: _Checker, table: dict) -> dict:
    c.only(table, DATA_KEYS, "[data]")
    if "name" not in table:
        c.fail("[data].name", f"missing (required); allowed values: {list(DATASET_NAMES)}")
    names = table["name"]
    if isinstance(names, list):
        if not names:
            c.fail("[data].name", "an empty array")
        names = [c.string(n, f"[data].name[{i}]", DATASET_NAMES) for i, n in enumerate(names)]
        c.distinct(names, "[data].name", table["name"])
    else:
        names = c.string(names, "[data].name", DATASET_NAMES)
    out = {"name": names}
    listed = _dataset_names(out)
    out["data_dir"] = None if "data_dir" not in table else c.string(table["data_dir"], "[data].data_dir")
    for key in ("min_user_ratings", "min_item_ratings"):
        out[key] = c.integer(table.get(key, 1), f"[data].{key}", minimum=1)
    out["implicit"] = c.boolean(table.get("implicit", False), "[data].implicit")
    threshold = table.get("implicit_threshold")
    if threshold is not None and not out["implicit"]:
        c.fail("[data].implicit_threshold", "only allowed with implicit = true")
    out["implicit_threshold"] = None if threshold is None else c.number(threshold, "[data].implicit_threshold")
    synth = table.get("synthetic")
    if synth is not None:
        if "synthetic" not in listed:
            c.fail("[data.synthetic]", "only allowed when [data].name includes \"synthetic\"")
        if not isinstance(synth, dict):
            c.fail("[data.synthetic]", "must be a table")
        c.only(synth, SYNTHETIC_KEYS, "[data.synthetic]")
    if "synthetic" in listed:
        synth = {**SYNTHETIC_KEYS, **(synth or {})}
        for key, value in synth.items():
            where = f"[data.synthetic].{key}"
            if key == "noise":
                synth[key] = c.number(value, where, minimum=0)
            else:
                synth[key] = c.integer(value, where, minimum=0 if key == "seed" else 1)
        out["synthetic"] = synth
    return out


def _split(c: _Checker, table: dict, data: dict) -> dict:
    if "method" not in table:
        c.fail("[split].method", f"missing (required); allowed values: {list(SPLIT_METHODS)}")
    method = c.string(table["method"], "[split].method", SPLIT_METHODS)
    defaults = SPLIT_METHODS[method]
    c.only(table, ("method", "drop_unseen", *defaults), "[split]", f" with method = {method!r}")
    out = {"method": method, **copy.deepcopy(defaults), "drop_unseen": False}
    for key, value in table.items():
        where = f"[split].{key}"
        if key == "method":
            continue
        if key == "drop_unseen":
            out[key] = c.boolean(value, where)
        elif key == "test_fraction":
            out[key] = c.number(value, where)
            if not 0.0 < out[key] < 1.0:
                c.fail(where, f"must be in (0, 1), got {value}")
        elif key in ("seed", "min_train"):
            out[key] = c.integer(value, where, minimum=0)
        elif key == "k":
            out[key] = c.integer(value, where, minimum=2)
        elif key == "by":
            out[key] = c.string(value, where, ("time", "random"))
        elif key == "folds":
            folds = value if isinstance(value, list) else [value]
            if not folds:
                c.fail(where, "an empty array")
            out[key] = [c.string(f, f"{where}[{i}]", PREDEFINED_FOLDS) for i, f in enumerate(folds)]
            c.distinct(out[key], where, value)
    listed = _dataset_names(data)
    if method == "predefined" and listed != ["movielens-100k"]:
        c.fail("[split].method", f"'predefined' folds exist only for [data].name = \"movielens-100k\", got {listed}")
    if method == "predefined" and (data["min_user_ratings"] > 1 or data["min_item_ratings"] > 1):
        c.fail("[data].min_user_ratings", "a k-core cannot be applied to predefined split files; use method = "
               "\"random\" or \"kfold\"")
    return out


def _evaluation(c: _Checker, table: dict, data: dict):
    c.only(table, ("metrics", *EVALUATION_DEFAULTS), "[evaluation]")
    names = table.get("metrics")
    if not isinstance(names, list) or not names:
        c.fail("[evaluation].metrics", f"must be a non-empty array of metric names; allowed: {catalogue.METRIC_HELP}")
    metrics = []
    for i, name in enumerate(names):
        spec = catalogue.parse_metric(name)
        if spec is None:
            c.fail(f"[evaluation].metrics[{i}]", f"unknown metric {name!r}; allowed: {catalogue.METRIC_HELP}")
        if spec in metrics:
            c.fail(f"[evaluation].metrics[{i}]", f"{name!r} is listed twice")
        metrics.append(spec)
    listed = _dataset_names(data)
    if "rmse_truth" in names and listed != ["synthetic"]:
        c.fail("[evaluation].metrics", "'rmse_truth' needs [data].name = \"synthetic\" (the only data with a truth)")
    out = dict(EVALUATION_DEFAULTS, metrics=list(names))
    for key, value in table.items():
        where = f"[evaluation].{key}"
        if key == "threshold":
            out[key] = c.number(value, where)
        elif key in ("n_negatives", "n_boot"):
            out[key] = c.integer(value, where, minimum=1)
        elif key == "seed":
            out[key] = c.integer(value, where, minimum=0)
        elif key == "clip":
            out[key] = c.boolean(value, where)
    return out, tuple(metrics)


def _models(c: _Checker, value) -> tuple:
    if not isinstance(value, list) or not value:
        c.fail("[[models]]", "missing: at least one [[models]] table is required")
    entries, labels = [], set()
    for index, table in enumerate(value):
        where = f"models[{index}]"
        if not isinstance(table, dict):
            c.fail(where, "must be a table")
        if "model" not in table:
            c.fail(f"{where}.model", f"missing (required); allowed values: {list(catalogue.MODEL_MODULES)}")
        model = c.string(table["model"], f"{where}.model", catalogue.MODEL_MODULES)
        label = c.string(table.get("label", model), f"{where}.label")
        if label in labels:
            c.fail(f"{where}.label", f"{label!r} is used by an earlier model; give each [[models]] a distinct label")
        labels.add(label)
        bootstrap = table.get("bootstrap")
        if bootstrap is not None:
            bootstrap = c.integer(bootstrap, f"{where}.bootstrap", minimum=2)
        # constructor parameters, plus the deprecated keyword names an estimator still maps
        # (BPMF's nuts_* / svi_* / map_* / gibbs_rescale onto its inference configuration)
        deprecated = getattr(catalogue.model_class(model), "deprecated_parameters", dict)()
        params = {**deprecated, **catalogue.model_parameters(model)}
        fixed, axes = {}, {}
        for key, raw in table.items():
            if key in MODEL_KEYS:
                continue
            pkey = f"{where}.{key}"
            if key in catalogue.RUNNER_PARAMS:
                c.fail(pkey, "is set by the runner (seeds come from [experiment].seeds; see bayesmf.experiments.grid)")
            if key not in params:
                allowed = [p for p in params if p not in catalogue.RUNNER_PARAMS]
                c.fail(pkey, f"unknown hyperparameter of {model}; allowed: {[*MODEL_KEYS, *allowed]}")
            kinds = _annotation_kinds(params[key])
            if _is_axis(raw, kinds):
                if not raw:
                    c.fail(pkey, "an empty array gives an empty grid")
                axes[key] = [_param_value(c, v, kinds, f"{pkey}[{i}]") for i, v in enumerate(raw)]
                c.distinct(axes[key], pkey, raw)
            else:
                fixed[key] = _param_value(c, raw, kinds, pkey)
        entry = ModelEntry(index, model, label, bootstrap, fixed, axes)
        _check_with_estimator(c, entry, where)
        entries.append(entry)
    return tuple(entries)


def _annotation_kinds(param) -> set[str]:
    """The type names of a constructor argument's annotation (``"float | None"`` -> {float, None})."""
    annotation = param.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if param.annotation is param.empty:
        text = type(param.default).__name__ if param.default is not None else "None"
    return {part.strip() for part in text.split("|")}


def _is_axis(raw, kinds: set[str]) -> bool:
    """An array is a grid axis, except a flat array of numbers for a tuple-valued argument."""
    if not isinstance(raw, list):
        return False
    if "tuple" in kinds:
        return bool(raw) and all(isinstance(v, list) for v in raw)
    return True


def _param_value(c: _Checker, value, kinds: set[str], key: str):
    if isinstance(value, str) and value == "none" and "None" in kinds:
        return None
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "float" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return c.number(value, key)
    if "str" in kinds and isinstance(value, str):
        return value
    if "tuple" in kinds and isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [c.number(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if "InferenceConfig" in kinds and isinstance(value, dict):
        # an inference table ({name = "nuts", max_tree_depth = 7}); the estimator checks its fields
        return _none_strings(value)
    if "Features" in kinds and isinstance(value, dict):
        # a feature set ({implicit = true, user_side = {dataset = "ml-100k", columns = [...]}}):
        # bayesmf.features.Features.from_mapping reads and checks it when the estimator is built
        return _none_strings(value)
    if "dict" in kinds and isinstance(value, dict):
        # the table-valued arguments (FunkSVD/SVDpp learning_rates, regularizations) map names to
        # numbers; which names are allowed is the estimator's check (_check_with_estimator)
        return {name: c.number(v, f"{key}.{name}") for name, v in value.items()}
    expected = " or ".join(sorted(_KIND_WORDS.get(k, k) for k in kinds))
    c.fail(key, f"must be {expected}, got {value!r}")


def _none_strings(table: dict) -> dict:
    """``table`` with the string "none" read as None, in nested tables too."""
    return {k: _none_strings(v) if isinstance(v, dict) else None if v == "none" else v for k, v in table.items()}


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "tuple": "an array of numbers", "dict": "a table", "None": '"none"'}


def _check_with_estimator(c: _Checker, entry: ModelEntry, where: str) -> None:
    """Construct the estimator at every grid point and run its own parameter check. Whatever it
    rejects (a ConfigError, or a TypeError/ValueError of a value it cannot use) becomes a
    ConfigError naming the file, the model table and the grid point."""
    from bayesmf.experiments.grid import combinations

    cls = catalogue.model_class(entry.model)
    for params in combinations(entry):
        try:
            estimator = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
            check = getattr(estimator, "_check_params", None) or getattr(estimator, "_validate", None)
            if check is not None:
                check()
        except (ConfigError, TypeError, ValueError) as exc:
            shown = {k: params[k] for k in entry.axes}
            c.fail(where, f"{entry.model}{' at ' + str(shown) if shown else ''}: {exc}")
