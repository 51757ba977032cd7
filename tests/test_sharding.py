"""Sharded ALS, implicit ALS and Gibbs (``devices=``, :mod:`bayesmf.engines.sharding`).

JAX fixes its device count when it starts, so the multi-device fits run in a fresh process
(tests/sharding_worker.py) with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; this
process compares what it writes. The claims checked:

* on 1, 2, 3 and 4 devices every fit is the same, bit for bit (factors, biases, losses; for the
  sampler every kept draw and the final state of every chain), with chunk counts (20 user
  chunks, 12 item chunks) that 3 does not divide (padded) and 2, 4 do;
* against ``devices=None`` (today's unsharded path): implicit ALS bit for bit; explicit ALS's
  factors bit for bit and its loss to float rounding (relative 1e-6: the sum of squared errors
  goes per chunk); the sampler's draws to 1e-4 (the same random numbers; the sums that feed the
  noise precision and the offset round differently, and rounding grows over sweeps);
* the estimators' ``devices=`` plumbing, save/load after a sharded fit, and bad ``devices``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import bayesmf
from bayesmf.engines.sharding import AXIS, device_mesh
from bayesmf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "sharding_worker.py"


def worker_env(devices: int) -> dict:
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_worker(tmp_path, case: str, labels: str, names: str, devices: int = 4) -> dict:
    """tests/sharding_worker.py CASE on ``devices`` host devices; its arrays by key."""
    out = tmp_path / f"{case}-{labels}-{names}.npz".replace(",", "_")
    proc = subprocess.run([sys.executable, str(WORKER), case, str(out), labels, names], env=worker_env(devices),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = dict(np.load(out))
    assert int(result["device_count"]) == devices
    return result


def fields(result: dict, name: str, label: str) -> dict:
    prefix = f"{name}/{label}/"
    return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


def assert_identical(result: dict, name: str, labels) -> None:
    """Every field of fit ``name`` equal bit for bit on every label."""
    first = fields(result, name, labels[0])
    assert first
    for label in labels[1:]:
        other = fields(result, name, label)
        assert other.keys() == first.keys()
        for key, value in first.items():
            np.testing.assert_array_equal(other[key], value, err_msg=f"{name}: {key} on {label} devices")


def check_als(result: dict, names, labels) -> None:
    sharded = [label for label in labels if label != "0"]
    for name in names:
        assert_identical(result, name, sharded)
        base, one = fields(result, name, "0"), fields(result, name, sharded[0])
        for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
            np.testing.assert_array_equal(one[key], base[key], err_msg=f"{name}: {key}")
        if name.startswith("implicit"):
            np.testing.assert_array_equal(one["loss"], base["loss"])
        else:
            np.testing.assert_allclose(one["loss"], base["loss"], rtol=1e-6)
        # the fit moved the factors (an agreement of untouched starting values would prove nothing)
        assert np.abs(base["user_factors"]).max() > 0.05


def test_device_mesh_checks_its_argument():
    assert device_mesh(None) is None
    mesh = device_mesh(jax.devices()[:1])
    assert mesh.axis_names == (AXIS,) and mesh.size == 1
    assert device_mesh(mesh) is mesh
    for bad, words in (([], "empty"), (["cpu"], "'cpu' is not a JAX device"), ("cpu", "list of JAX devices"),
                       (jax.devices()[:1] * 2, "listed twice"), (3, "list of JAX devices")):
        with pytest.raises(ConfigError, match=words):
            device_mesh(bad)
    two_axes = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ConfigError, match="one axis"):
        device_mesh(two_axes)
    with pytest.raises(ConfigError, match="list of JAX devices"):
        bayesmf.ALS(devices="cpu").fit(bayesmf.datasets.synthetic(n_users=20, n_items=10, n_ratings=60).ratings)


def test_bpmf_devices_need_the_gibbs_sampler():
    train = bayesmf.datasets.synthetic(n_users=20, n_items=10, n_ratings=60).ratings
    with pytest.raises(ConfigError, match="shards the Gibbs sampler only"):
        bayesmf.BPMF(rank=2, inference="map", devices=jax.devices()).fit(train)


def test_one_device_mesh_in_process_equals_the_unsharded_fit(tmp_path):
    train = bayesmf.datasets.synthetic(n_users=60, n_items=40, n_ratings=700, rank=2, seed=1).ratings
    base = bayesmf.ALS(rank=2, n_iter=3).fit(train)
    sharded = bayesmf.ALS(rank=2, n_iter=3, devices=jax.devices()[:1]).fit(train)
    np.testing.assert_array_equal(sharded.user_factors_, base.user_factors_)
    np.testing.assert_array_equal(sharded.item_bias_, base.item_bias_)
    np.testing.assert_allclose(sharded.history_["loss"], base.history_["loss"], rtol=1e-6)
    loaded = bayesmf.load(sharded.save(tmp_path / "m"))
    assert loaded.devices is None
    np.testing.assert_array_equal(loaded.predict(train.users, train.items), sharded.predict(train.users, train.items))


@pytest.mark.slow
def test_als_and_implicit_als_on_three_devices(tmp_path):
    result = run_worker(tmp_path, "als", "0,1,3", "als,implicit")
    n_user_chunks, n_item_chunks = result["chunks"]
    assert n_user_chunks % 3 and n_user_chunks > 3  # several chunks per device, padded
    check_als(result, ("als", "implicit"), ("0", "1", "3"))


@pytest.mark.slow
def test_als_and_implicit_als_on_every_device_count(tmp_path):
    labels = ("0", "1", "2", "3", "4")
    names = ("als", "nnals", "implicit", "implicit_exact", "als_chunked", "nnals_chunked")
    result = run_worker(tmp_path, "als", ",".join(labels), ",".join(names))
    check_als(result, names, labels)
    # rows solved chunk by chunk (ALSConfig.systems_budget exceeded) give the batched solutions
    for name in ("als", "nnals"):
        for label in labels:
            batched, chunked = fields(result, name, label), fields(result, f"{name}_chunked", label)
            for key in ("user_factors", "item_factors", "user_bias", "item_bias", "loss"):
                np.testing.assert_allclose(chunked[key], batched[key], rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}: {key} on {label} devices")


def check_gibbs(result: dict, name: str, labels) -> None:
    sharded = [label for label in labels if label != "0"]
    assert_identical(result, name, sharded)
    base, one = fields(result, name, "0"), fields(result, name, sharded[0])
    assert one.keys() == base.keys()
    for key in base:
        np.testing.assert_allclose(one[key], base[key], atol=1e-4, rtol=1e-5, err_msg=f"{name}: {key}")
    # the draws move from sweep to sweep by much more than the tolerance, and the chains differ
    assert np.abs(np.diff(base["U"], axis=1)).max() > 0.05
    assert np.abs(base["U"][0] - base["U"][1]).max() > 0.05


@pytest.mark.slow
def test_gibbs_on_every_device_count(tmp_path):
    labels = ("0", "1", "2", "3", "4")
    check_gibbs(run_worker(tmp_path, "gibbs", ",".join(labels), "gibbs"), "gibbs", labels)


@pytest.mark.slow
def test_gibbs_fixed_noise_and_student_t_on_three_devices(tmp_path):
    result = run_worker(tmp_path, "gibbs", "0,1,3", "gibbs_plain,gibbs_student")
    for name in ("gibbs_plain", "gibbs_student"):
        check_gibbs(result, name, ("0", "1", "3"))


@pytest.mark.slow
def test_estimators_take_devices(tmp_path):
    result = run_worker(tmp_path, "estimators", "0,1,3", "ALS,ImplicitALS,BPMF")
    for name in ("ALS", "ImplicitALS", "BPMF"):
        assert_identical(result, name, ("1", "3"))
        for key in ("user_factors", "predict"):
            np.testing.assert_allclose(result[f"{name}/3/{key}"], result[f"{name}/0/{key}"], atol=1e-4, rtol=1e-5)
        np.testing.assert_array_equal(result[f"{name}/loaded/predict"], result[f"{name}/3/predict"])
        assert bool(result[f"{name}/loaded/devices"])
