"""Inferences as a registry of (fit function, frozen configuration): names, configuration objects
and mappings; the deprecated keyword arguments; saved models, checkpoints and TOML files."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from bayesmf import BPMF, PMF
from bayesmf.data.synthetic import synthetic
from bayesmf.errors import ConfigError
from bayesmf.experiments import load_experiment
from bayesmf.models import persist
from bayesmf.models.base import load
from bayesmf.models.inference import (
    GIBBS_START_ITER,
    INFERENCES,
    GibbsConfig,
    MAPConfig,
    NUTSConfig,
    SVIConfig,
    inference_params,
    resolve,
)


@pytest.fixture(scope="module")
def ratings():
    return synthetic(n_users=30, n_items=20, n_ratings=240, rank=2, seed=0).ratings


def test_a_name_a_configuration_and_a_mapping_give_the_same_inference():
    assert set(INFERENCES) == {"gibbs", "nuts", "svi", "map"}
    assert BPMF(inference="nuts").inference_config() == NUTSConfig() == resolve({"name": "nuts"})
    config = NUTSConfig(max_tree_depth=7, start=MAPConfig(n_iter=3))
    assert resolve({"name": "nuts", "max_tree_depth": 7, "start": {"n_iter": 3}}) == config
    assert BPMF(inference=config).inference_config().max_tree_depth == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_tree_depth = 9


def test_get_params_is_json_and_reads_back():
    config = GibbsConfig(rescale=False, start=MAPConfig(method="adam"))
    params = BPMF(rank=3, inference=config).get_params()
    # MAPConfig's own default of 10 sweeps differs from the Gibbs start's default (2)
    assert params["inference"] == {"name": "gibbs", "rescale": False, "start": {"n_iter": 10, "method": "adam"}}
    assert json.loads(json.dumps(params))["inference"] == params["inference"]
    assert BPMF(**params).inference_config() == config
    assert inference_params(SVIConfig()) == "svi"
    # a nested mapping changes the nested default of its configuration, not MAPConfig()'s
    config = GibbsConfig(start=MAPConfig(n_iter=GIBBS_START_ITER, method="adam"))
    assert inference_params(config) == {"name": "gibbs", "start": {"method": "adam"}}
    assert resolve(inference_params(config)) == config


def test_the_gibbs_samplers_default_map_start_is_two_sweeps(ratings):
    assert GIBBS_START_ITER == 2 and GibbsConfig().start == MAPConfig(n_iter=2)
    assert NUTSConfig().start == SVIConfig().start == MAPConfig() == MAPConfig(n_iter=10)
    model = BPMF(rank=2, n_samples=2, n_warmup=0).fit(ratings)
    assert len(model.history_["map_objective"]) == 2


@pytest.mark.parametrize(("legacy", "expected"), [
    (dict(inference="nuts", nuts_max_tree_depth=6, nuts_init="map"), NUTSConfig(max_tree_depth=6, init="map")),
    (dict(inference="svi", svi_steps=7, map_iter=2), SVIConfig(steps=7, start=MAPConfig(n_iter=2))),
    (dict(inference="gibbs", gibbs_rescale=False, map_method="adam"),
     GibbsConfig(rescale=False, start=MAPConfig(n_iter=GIBBS_START_ITER, method="adam"))),
    (dict(inference="map", map_iter=4), MAPConfig(n_iter=4)),
])
def test_deprecated_keywords_warn_and_map_onto_the_configuration(legacy, expected):
    with pytest.warns(DeprecationWarning, match="deprecated"):
        model = BPMF(rank=2, **legacy)
    assert model.inference_config() == expected


def test_other_inferences_settings_are_ignored_with_the_warning_saying_so():
    with pytest.warns(DeprecationWarning, match=r"\['nuts_max_tree_depth'\] do not apply to inference='gibbs'"):
        model = BPMF(rank=2, nuts_max_tree_depth=6)
    assert model.inference_config() == GibbsConfig()
    with pytest.raises(TypeError, match="nuts_depth"):
        BPMF(rank=2, nuts_depth=6)


@pytest.mark.parametrize(("inference", "match"), [
    ("mcmc", "inference must be one of"),
    ({"name": "nuts", "depth": 7}, r"NUTSConfig has no field\(s\) \['depth'\]"),
    ({"max_tree_depth": 7}, "needs name"),
    (MAPConfig(method="lbfgs"), r"MAPConfig.method \(map_method\) must be 'als' or 'adam', got 'lbfgs'"),
    (GibbsConfig(start=MAPConfig(n_iter=0)), r"MAPConfig.n_iter \(map_iter\) must be a positive integer, got 0"),
    (SVIConfig(steps=0), r"SVIConfig.steps \(svi_steps\) must be a positive integer, got 0"),
])
def test_bad_inferences_fail_at_fit_with_a_named_error(ratings, inference, match):
    with pytest.raises(ConfigError, match=match):
        BPMF(rank=2, inference=inference).fit(ratings)


@pytest.mark.slow
def test_the_configuration_reaches_the_fit(ratings):
    """The MAP start's sweeps and the chain's length come from the configuration: a PMF-MAP start
    of 3 sweeps is recorded as 3 objective values, and MAPConfig and PMF agree exactly (PMF is
    ``BPMF(inference="map")`` with ``W0 = I``, not the ratings' unit)."""
    gibbs = BPMF(rank=2, n_samples=4, n_warmup=1, inference=GibbsConfig(start=MAPConfig(n_iter=3))).fit(ratings)
    assert len(gibbs.history_["map_objective"]) == 3 and len(gibbs.history_["train_rmse"]) == 5
    via_config = BPMF(rank=2, w0=1.0, inference=MAPConfig(n_iter=5)).fit(ratings)
    pmf = PMF(rank=2, map_iter=5).fit(ratings)
    np.testing.assert_array_equal(via_config.user_factors_, pmf.user_factors_)
    assert pmf.inference_config() == MAPConfig(n_iter=5)


def test_checkpoint_fingerprint_keeps_the_settings_of_earlier_versions(ratings):
    """Checkpoints written before the registry resume: the inference settings enter the
    fingerprint under their old keyword names, nothing else is added; ``biases="auto"`` enters
    resolved (the Gibbs sampler's: True), as a checkpoint of ``biases=True`` has it."""
    settings = BPMF(rank=2, inference=GibbsConfig(rescale=False))._chain_fingerprint(ratings, None)["settings"]
    assert settings == {
        "rank": 2, "n_samples": 200, "n_warmup": 50, "thin": 1, "chains": 1, "alpha": 2.0, "noise_prior": "auto",
        "beta0": 2.0, "nu0": None, "w0": "auto", "mu0": 0.0, "offset_prior": "auto", "biases": True,
        "bias_prior": "auto", "init": "map", "keep_every": 1, "seed": 0, "dtype": "float32",
        "inference": "gibbs", "gibbs_rescale": False, "map_iter": 2, "map_method": "als"}


def test_a_model_saved_with_the_old_keyword_parameters_loads(ratings, tmp_path):
    model = BPMF(rank=2, n_samples=3, n_warmup=1, inference=GibbsConfig(start=MAPConfig(n_iter=2))).fit(ratings)
    path = model.save(tmp_path / "m")
    meta_path = path / persist.META_FILE
    meta = json.loads(meta_path.read_text())
    # the parameters as the 33-argument constructor saved them
    meta["params"]["inference"] = "gibbs"
    meta["params"].update(gibbs_rescale=True, map_iter=2, map_method="als", svi_steps=1000, svi_guide="meanfield",
                          svi_batch_size=None, svi_learning_rate=0.01, nuts_target_accept=0.8,
                          nuts_max_tree_depth=8, nuts_dense_mass="hyper", nuts_parameterization="bartlett",
                          nuts_init="gibbs", nuts_init_sweeps=150)
    del meta["meta_sha256"]
    meta["meta_sha256"] = persist.meta_digest(meta)
    meta_path.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        loaded = load(path)
    assert loaded.inference_config() == GibbsConfig(start=MAPConfig(n_iter=2))
    np.testing.assert_array_equal(loaded.predict(ratings.users, ratings.items),
                                  model.predict(ratings.users, ratings.items))


TOML = """
[experiment]
name = "registry"
seeds = [0]

[data]
name = "synthetic"

[data.synthetic]
n_users = 30
n_items = 20
n_ratings = 240
rank = 2
seed = 0

[split]
method = "random"
test_fraction = 0.2

[evaluation]
metrics = ["rmse"]

[[models]]
model = "BPMF"
label = "table"
rank = 2
inference = {name = "nuts", max_tree_depth = 7}

[[models]]
model = "BPMF"
label = "names"
rank = 2
inference = ["gibbs", "map"]
map_iter = 2
"""


def test_toml_takes_an_inference_table_names_and_the_old_keys(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(TOML)
    with pytest.warns(DeprecationWarning, match="map_iter"):
        experiment = load_experiment(path)
    table, names = experiment.models
    assert BPMF(**table.fixed).inference_config() == NUTSConfig(max_tree_depth=7)
    assert names.axes["inference"] == ["gibbs", "map"] and names.fixed["map_iter"] == 2
    path.write_text(TOML.replace("max_tree_depth = 7", "depth = 7"))
    with pytest.raises(ConfigError, match=r"models\[0\].*NUTSConfig has no field\(s\) \['depth'\]"):
        load_experiment(path)

