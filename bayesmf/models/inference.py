"""Inferences of the Bayesian models as a registry of (fit function, frozen configuration).

``BPMF(inference=...)`` takes a name (``"gibbs"``, ``"nuts"``, ``"svi"``, ``"map"``: that
inference with its default configuration), a configuration object (``NUTSConfig(max_tree_depth=7)``)
or a mapping ``{"name": "nuts", "max_tree_depth": 7}`` (the form TOML experiments and saved
models use; see :func:`inference_params`). :func:`resolve` turns any of them into the
configuration; :data:`INFERENCES` maps each name to an :class:`Inference`.

Adding an inference
-------------------
Write one module with a frozen dataclass subclassing :class:`InferenceConfig` (its ``name``,
its fields with defaults, ``validate``) and a fit function ``fit(model, problem, config) ->
draws`` (a dict site -> (chains, draws, ...) arrays, or None for a point estimate; see
:class:`FitProblem`), then add one line to :data:`INFERENCES`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

from bayesmf.errors import ConfigError
from bayesmf.validate import check_positive_int


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Base of the inferences' configurations: a frozen dataclass with a registry ``name`` and
    ``legacy`` (field -> the ``BPMF`` keyword argument it replaces, for deprecation and for the
    checkpoint fingerprint)."""

    name: ClassVar[str] = ""
    legacy: ClassVar[dict] = {}

    def validate(self) -> InferenceConfig:  # pragma: no cover - overridden
        return self

    def _field_name(self, field: str) -> str:
        """How errors name ``field``: the class field and the keyword argument it replaces."""
        old = self.legacy.get(field)
        return f"{type(self).__name__}.{field}" + (f" ({old})" if old else "")

    def settings(self) -> dict:
        """Every setting under its ``BPMF`` keyword name (nested configurations flattened), as
        the checkpoint fingerprint and ``get_params`` of earlier versions recorded them."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, InferenceConfig):
                out.update(value.settings())
            else:
                out[self.legacy.get(field.name, field.name)] = value
        return out


@dataclasses.dataclass(frozen=True)
class MAPConfig(InferenceConfig):
    r"""PMF MAP (:mod:`bayesmf.posterior.map`): the model with its hyperparameters at their prior
    means, maximised over the factors; also the samplers' starting point (``init="map"``).

    Parameters
    ----------
    n_iter : int
        Coordinate-ascent sweeps (or Adam steps).
    method : {"als", "adam"}
        Exact block coordinate ascent, or Adam on the objective.
    """

    name: ClassVar[str] = "map"
    legacy: ClassVar[dict] = {"n_iter": "map_iter", "method": "map_method"}
    n_iter: int = 10
    method: str = "als"

    def validate(self) -> MAPConfig:
        check_positive_int(self._field_name("n_iter"), self.n_iter)
        if self.method not in ("als", "adam"):
            raise ConfigError(f"{self._field_name('method')} must be 'als' or 'adam', got {self.method!r}")
        return self


GIBBS_START_ITER = 2
"""Sweeps of the Gibbs sampler's PMF MAP start. A start is only the chains' first state: two
sweeps give test RMSE and interval coverage equal to ten after the default 50 + 200 sweeps, and
after a short run (no warm-up, 20 draws), where a random start is far behind, on MovieLens-100K
and -1M (benchmarks/RESULTS.md, "BPMF's MAP start"); each further sweep would cost about one
Gibbs sweep of set-up at any data size."""


@dataclasses.dataclass(frozen=True)
class GibbsConfig(InferenceConfig):
    """The blocked conjugate Gibbs sampler (:mod:`bayesmf.posterior.gibbs`).

    Parameters
    ----------
    rescale : bool
        End every sweep with the exact moves along the likelihood's invariances (see
        :class:`~bayesmf.models.bpmf.BPMF`); the posterior is the same, the chain mixes faster.
    start : MAPConfig
        The PMF MAP fit the chains start from (with ``init="map"``); by default
        :data:`GIBBS_START_ITER` coordinate-ascent sweeps, each costing about one Gibbs sweep.
    """

    name: ClassVar[str] = "gibbs"
    legacy: ClassVar[dict] = {"rescale": "gibbs_rescale"}
    rescale: bool = True
    start: MAPConfig = MAPConfig(n_iter=GIBBS_START_ITER)

    def validate(self) -> GibbsConfig:
        if not isinstance(self.rescale, (bool, np.bool_)):
            raise ConfigError(f"{self._field_name('rescale')} must be True or False, got {self.rescale!r}")
        self.start.validate()
        return self


@dataclasses.dataclass(frozen=True)
class NUTSConfig(InferenceConfig):
    """NumPyro NUTS on the same model (:func:`bayesmf.posterior.numpyro_inference.run_nuts`).

    Parameters
    ----------
    target_accept, max_tree_depth : float, int
        NUTS's target acceptance probability and maximum tree depth.
    dense_mass : {"hyper", False, True}
        Dense mass matrix over each side's hyperparameter block ("hyper"), all diagonal, or
        dense over everything (small models only). Used with ``init="map"`` only.
    parameterization : {"bartlett", "noncentered"}
        Rows centred given Bartlett's ``L``, or ``u_i = mu + L^{-T} z_i``.
    init : {"gibbs", "map"}
        Start from ``init_sweeps`` Gibbs sweeps (their draws' variance the kept inverse mass
        matrix), or from the MAP factors with NumPyro's mass-matrix adaptation.
    init_sweeps : int
        Gibbs sweeps of the "gibbs" start (>= 15; the first third discarded).
    start : MAPConfig
        The PMF MAP fit the start begins from.
    """

    name: ClassVar[str] = "nuts"
    legacy: ClassVar[dict] = {"target_accept": "nuts_target_accept", "max_tree_depth": "nuts_max_tree_depth",
                              "dense_mass": "nuts_dense_mass", "parameterization": "nuts_parameterization",
                              "init": "nuts_init", "init_sweeps": "nuts_init_sweeps"}
    target_accept: float = 0.8
    max_tree_depth: int = 8
    dense_mass: bool | str = "hyper"
    parameterization: str = "bartlett"
    init: str = "gibbs"
    init_sweeps: int = 150
    start: MAPConfig = MAPConfig()

    def validate(self) -> NUTSConfig:
        if self.parameterization not in ("noncentered", "bartlett"):
            raise ConfigError(f"{self._field_name('parameterization')} must be 'noncentered' or 'bartlett', "
                              f"got {self.parameterization!r}")
        if self.init not in ("gibbs", "map"):
            raise ConfigError(f"{self._field_name('init')} must be 'gibbs' or 'map', got {self.init!r}")
        # the mass matrix is the variance over the kept two thirds of these sweeps
        if check_positive_int(self._field_name("init_sweeps"), self.init_sweeps) < 15:
            raise ConfigError(f"{self._field_name('init_sweeps')} must be an integer >= 15, got {self.init_sweeps!r}")
        self.start.validate()
        return self


@dataclasses.dataclass(frozen=True)
class SVIConfig(InferenceConfig):
    """NumPyro SVI with a mean-field or low-rank guide
    (:func:`bayesmf.posterior.numpyro_inference.run_svi`).

    Parameters
    ----------
    steps : int
        Adam steps.
    guide : {"meanfield", "lowrank"}
    batch_size : int or None
        Ratings per step (None: all of them, through the packed layout).
    learning_rate : float
    start : MAPConfig
        The PMF MAP fit the guide's means start from.
    """

    name: ClassVar[str] = "svi"
    legacy: ClassVar[dict] = {"steps": "svi_steps", "guide": "svi_guide", "batch_size": "svi_batch_size",
                              "learning_rate": "svi_learning_rate"}
    steps: int = 1000
    guide: str = "meanfield"
    batch_size: int | None = None
    learning_rate: float = 0.01
    start: MAPConfig = MAPConfig()

    def validate(self) -> SVIConfig:
        check_positive_int(self._field_name("steps"), self.steps)
        self.start.validate()
        return self


class FitProblem(NamedTuple):
    """What every fit function receives besides the model and its configuration.

    Attributes
    ----------
    train : Ratings
        The training ratings.
    data : GibbsData
        Their packed layout (:func:`bayesmf.posterior.gibbs.prepare`).
    prior : Prior
        The model.
    U0, V0 : arrays
        The starting factors (the MAP fit or random ones).
    key : PRNG key
        The run's key.
    dtype : numpy dtype
    """

    train: Any
    data: Any
    prior: Any
    U0: Any
    V0: Any
    key: Any
    dtype: Any


class Inference(NamedTuple):
    """A registry entry: ``fit(model, problem, config) -> draws or None`` and its configuration
    class."""

    fit: Callable
    config: type


def fit_map(model, problem: FitProblem, config: MAPConfig):
    """The estimator's MAP fit (``model._run_map``): None when the point estimate is the
    starting point itself (BPMF's PMF MAP), else the point as one draw."""
    return model._run_map(problem, config)


def fit_gibbs(model, problem: FitProblem, config: GibbsConfig):
    """Chains of the model's Gibbs kernel run by the driver (``model._run_gibbs``)."""
    return model._run_gibbs(problem.key, problem.data, problem.prior, problem.U0, problem.V0, problem.train,
                            problem.dtype)


def fit_nuts(model, problem: FitProblem, config: NUTSConfig):
    """NumPyro NUTS on the model's NumPyro function (``model._run_nuts``: BPMF's
    :func:`~bayesmf.posterior.numpyro_inference.run_nuts`, BayesFM's
    :func:`~bayesmf.posterior.fm_numpyro.run_nuts`), started from a short Gibbs run
    (``init="gibbs"``) or the MAP fit."""
    return model._run_nuts(problem, config)


def fit_svi(model, problem: FitProblem, config: SVIConfig):
    """NumPyro SVI on the model's NumPyro function (``model._run_svi``); the ELBO loss of every
    step goes to ``history_["elbo_loss"]``."""
    return model._run_svi(problem, config)


INFERENCES: dict[str, Inference] = {
    "gibbs": Inference(fit_gibbs, GibbsConfig),
    "nuts": Inference(fit_nuts, NUTSConfig),
    "svi": Inference(fit_svi, SVIConfig),
    "map": Inference(fit_map, MAPConfig),
}

# Inferences that produce Markov chains (R-hat and ESS apply).
CHAIN_INFERENCES = ("gibbs", "nuts")


def resolve(inference) -> InferenceConfig:
    """The configuration of ``inference``: a registered name (its defaults), a configuration
    object, or a mapping with ``name`` and fields (nested mappings for nested configurations).

    Raises
    ------
    ConfigError
        Naming the unknown inference or field.
    """
    if isinstance(inference, InferenceConfig):
        return inference
    if isinstance(inference, str):
        if inference not in INFERENCES:
            raise ConfigError(f"inference must be one of {tuple(INFERENCES)} or a configuration, got {inference!r}")
        return INFERENCES[inference].config()
    if isinstance(inference, Mapping):
        fields = dict(inference)
        name = fields.pop("name", None)
        if name not in INFERENCES:
            raise ConfigError(f"an inference mapping needs name = one of {tuple(INFERENCES)}, got {name!r}")
        return _from_fields(INFERENCES[name].config, fields)
    raise ConfigError(f"inference must be one of {tuple(INFERENCES)}, a configuration (e.g. NUTSConfig(...)) or a "
                      f"mapping with a name, got {inference!r}")


def _from_fields(cls: type, fields: dict, base: InferenceConfig | None = None) -> InferenceConfig:
    """``cls`` with ``fields`` changed from ``base`` (default: ``cls()``); a nested mapping changes
    the fields of that nested configuration's default in ``cls`` (e.g. the Gibbs sampler's MAP
    start, whose defaults differ from :class:`MAPConfig`'s own), as :func:`inference_params`
    writes it."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; its fields are {sorted(known)}")
    base = cls() if base is None else base
    out = {}
    for name, value in fields.items():
        default = getattr(base, name)
        if isinstance(default, InferenceConfig) and isinstance(value, Mapping):
            value = _from_fields(type(default), dict(value), default)
        out[name] = value
    return dataclasses.replace(base, **out)


def inference_params(inference):
    """``inference`` in a JSON-able form that :func:`resolve` reads back: a name when it is that
    inference's default configuration, else a mapping ``{"name": ..., changed fields}``."""
    if isinstance(inference, (str, Mapping)) or not isinstance(inference, InferenceConfig):
        return inference
    default = type(inference)()
    if inference == default:
        return inference.name
    out = {"name": inference.name}
    for field in dataclasses.fields(inference):
        value, base = getattr(inference, field.name), getattr(default, field.name)
        if value != base:
            out[field.name] = (inference_params(value) if not isinstance(value, InferenceConfig)
                               else {k: v for k, v in dataclasses.asdict(value).items()
                                     if v != getattr(base, k)})
    return out


def legacy_names() -> dict:
    """Every deprecated ``BPMF`` keyword argument -> ``(configuration class, field)``; the MAP
    start's (``map_*``) map to the ``start`` field of the sampling inferences."""
    out = {}
    for entry in INFERENCES.values():
        for field, old in entry.config.legacy.items():
            out[old] = (entry.config, field)
    return out


def legacy_parameters() -> dict:
    """The deprecated ``BPMF`` keyword arguments as :class:`inspect.Parameter` objects (default
    and annotation of the configuration field each maps onto), for tools that read constructor
    signatures (the experiments schema)."""
    import inspect

    out = {}
    for old, (cls, field) in legacy_names().items():
        spec = next(f for f in dataclasses.fields(cls) if f.name == field)
        out[old] = inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=spec.type)
    return out


def apply_legacy(inference, legacy: dict, owner: str = "BPMF") -> InferenceConfig | Any:
    """``inference`` with the deprecated keyword arguments ``legacy`` (e.g. ``nuts_max_tree_depth``)
    mapped onto its configuration, with a :class:`DeprecationWarning` naming the replacement.
    ``map_*`` set the MAP configuration itself for ``inference="map"`` and the ``start`` of the
    others; the settings of another inference than the chosen one are ignored (as before)."""
    if not legacy:
        return inference
    names = legacy_names()
    unknown = sorted(set(legacy) - set(names))
    if unknown:
        raise TypeError(f"{owner}() got unexpected keyword argument(s) {unknown}")
    config = resolve(inference)
    changes, start_changes, ignored = {}, {}, []
    for old, value in legacy.items():
        cls, field = names[old]
        if cls is type(config):
            changes[field] = value
        elif cls is MAPConfig and hasattr(config, "start"):
            start_changes[field] = value
        else:
            ignored.append(old)
    if start_changes:
        changes["start"] = dataclasses.replace(config.start, **start_changes)
    new = dataclasses.replace(config, **changes)
    example = f"inference={type(new).__name__}(...)"
    warnings.warn(f"{owner}: the keyword argument(s) {sorted(legacy)} are deprecated and will be removed in the next "
                  f"release; pass {example} (here {new!r})"
                  + (f"; {sorted(ignored)} do not apply to inference={config.name!r} and are ignored" if ignored
                     else ""), DeprecationWarning, stacklevel=3)
    return new
