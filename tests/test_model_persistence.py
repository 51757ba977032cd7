"""Saved models under faults and bad input (issue 26, defects 2 and 5): everything loaded is
integrity-checked, unknown parameters are named, and replacing a saved model is atomic for
readers and survives ``kill -9`` at any step, without leftovers and with umask-respecting modes.

The model here is a tiny :class:`FactorModel` whose ``tag`` is its global mean and every user
bias, so a load that mixes two saves is visible."""

import hashlib
import json
import os
import shutil
import signal
import stat
import time
import warnings

import numpy as np
import pytest

import bayesmf
from bayesmf import DataError, Ratings
from bayesmf.models import persist
from bayesmf.models.base import FactorModel

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class PersistTagged(FactorModel):
    """``global_mean_ = tag`` and every user bias ``= tag``: a consistent load has them equal."""

    def __init__(self, tag: float = 1.0, n_iter: int = 1):
        self.tag, self.n_iter = tag, n_iter

    def _fit(self, train):
        self.global_mean_ = float(self.tag)
        self.user_bias_ = np.full(train.n_users, self.tag, np.float64)
        self.item_bias_ = np.zeros(train.n_items, np.float64)
        self.user_factors_ = self.item_factors_ = None


@pytest.fixture(scope="module")
def ratings():
    rng = np.random.default_rng(0)
    pairs = rng.choice(300 * 80, size=2000, replace=False)
    return Ratings.from_arrays(pairs // 80, pairs % 80, rng.integers(1, 6, 2000), n_users=300, n_items=80)


def fitted(ratings, tag):
    return PersistTagged(tag=tag).fit(ratings)


def consistent_tag(path) -> float:
    model = bayesmf.load(path)
    assert np.all(model.user_bias_ == model.global_mean_), "a load mixed two saves"
    return model.global_mean_


def _params_free_meta(path):
    meta, arrays = persist.load_dir(path)
    reserved = ("format", "format_version", "arrays", "sha256", "meta_sha256", "arrays_file")
    return {k: v for k, v in meta.items() if k not in reserved}, arrays


# -- defect 2: meta.json is verified too --------------------------------------------------------
def test_one_changed_byte_of_the_global_mean_is_reported(tmp_path, ratings):
    path = fitted(ratings, 3.5171396732330322).save(tmp_path / "m")
    text = (path / "meta.json").read_text()
    stored = '"global_mean": 3.5171396732330322'
    assert text.count(stored) == 1
    (path / "meta.json").write_text(text.replace(stored, stored[:-1] + "9"))
    with pytest.raises(DataError, match=r"meta\.json.*(corrupted|modified)"):
        bayesmf.load(path)


def test_meta_corruption_anywhere_is_reported(tmp_path, ratings):
    path = fitted(ratings, 2.0).save(tmp_path / "m")
    meta = json.loads((path / "meta.json").read_text())
    for key, value in (("rating_scale", [1.0, 4.0]), ("history", {"n_iter": [9.0]}),
                       ("params", {**meta["params"], "tag": 7.0})):
        (path / "meta.json").write_text(json.dumps({**meta, key: value}))
        with pytest.raises(DataError, match=r"meta\.json"):
            bayesmf.load(path)


def test_unknown_parameter_in_the_metadata_is_named(tmp_path, ratings):
    path = fitted(ratings, 2.0).save(tmp_path / "m")
    meta, arrays = _params_free_meta(path)
    meta["params"]["future_knob"] = 3
    persist.save_dir(tmp_path / "newer", meta, arrays)  # a consistent file from a newer version
    with pytest.raises(DataError, match=r"future_knob.*PersistTagged"):
        bayesmf.load(tmp_path / "newer")


# -- defect 5: replacing a saved model -----------------------------------------------------------
def _kill_before_op(k: int) -> None:
    """In a child process: SIGKILL ourselves just before the k-th file-system change."""
    count = {"n": 0}
    for name in ("rename", "replace", "unlink", "remove", "rmdir"):
        real = getattr(os, name)

        def wrapped(*args, _real=real, **kwargs):
            count["n"] += 1
            if count["n"] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)


def _forked(child) -> int:
    """Run ``child()`` in a forked process; returns its wait status."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns about fork; the child only touches files
        pid = os.fork()
    if pid == 0:
        try:
            child()
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


@posix_only
@pytest.mark.slow
def test_kill_9_at_any_step_of_a_replacement_leaves_a_loadable_model(tmp_path, ratings):
    path = tmp_path / "m"
    models = {1.0: fitted(ratings, 1.0), 2.0: fitted(ratings, 2.0)}
    models[1.0].save(path)
    killed = 0
    for k in range(1, 40):
        before = consistent_tag(path)
        after = 3.0 - before
        status = _forked(lambda k=k, after=after: (_kill_before_op(k), models[after].save(path)))
        if os.WIFSIGNALED(status):
            killed += 1
            assert os.WTERMSIG(status) == signal.SIGKILL
            assert consistent_tag(path) in (before, after), f"killed before step {k}"
        else:
            assert consistent_tag(path) == after
            break
    else:
        pytest.fail("the save never completed")
    assert killed >= 2
    models[1.0].save(path)  # the next save clears what the killed ones left
    assert os.listdir(tmp_path) == ["m"]
    meta = json.loads((path / "meta.json").read_text())
    assert sorted(os.listdir(path)) == sorted(["meta.json", *meta["sha256"]])


@posix_only
def test_a_concurrent_reader_never_fails(tmp_path, ratings):
    path = tmp_path / "m"
    models = [fitted(ratings, 1.0), fitted(ratings, 2.0)]
    models[0].save(path)
    read_end, write_end = os.pipe()

    def reader():
        loads = failures = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                failures += consistent_tag(path) not in (1.0, 2.0)
            except Exception:  # noqa: BLE001 - any failure counts
                failures += 1
            loads += 1
        os.write(write_end, json.dumps([loads, failures]).encode())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pid = os.fork()
    if pid == 0:
        try:
            reader()
        finally:
            os._exit(0)
    os.close(write_end)
    saves = 0
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        models[saves % 2].save(path)
        saves += 1
    loads, failures = json.loads(os.read(read_end, 100))
    os.close(read_end)
    assert saves > 20 and loads > 20
    assert failures == 0, f"{failures} of {loads} loads failed during {saves} saves"


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_saved_files_respect_the_umask(tmp_path, ratings, mask):
    old = os.umask(mask)
    try:
        model = fitted(ratings, 1.0)
        path = model.save(tmp_path / "m")
        first = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.iterdir()]}
        model.save(path)  # replacing keeps them right too
        second = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.iterdir()]}
    finally:
        os.umask(old)
    for modes in (first, second):
        assert modes.pop("m") == 0o777 & ~mask
        assert set(modes.values()) == {0o666 & ~mask}


def test_stale_leftovers_of_this_path_are_cleaned_and_nothing_else(tmp_path, ratings):
    ours = (".m.x1y2z3w4.partial", ".m.abcd_123.old")  # as this version and the one before name them
    for name in (*ours, ".m.v2.abcdefgh.partial", ".other.abcdefgh.partial", "m.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text("{}")
    (tmp_path / "notes.partial").write_text("mine")
    fitted(ratings, 1.0).save(tmp_path / "m")
    left = [".m.v2.abcdefgh.partial", ".other.abcdefgh.partial", "m", "m.old", "notes.partial"]
    assert sorted(os.listdir(tmp_path)) == left


def _write_format_2(path, model):
    """A directory as bayesmf wrote it with model format 2 (arrays.npz + meta.json, no meta digest)."""
    path.mkdir()
    arrays = {n: np.asarray(getattr(model, n)) for n in model._all_state_arrays() if getattr(model, n) is not None}
    np.savez(path / "arrays.npz", **arrays)
    meta = {"format": "bayesmf-model", "format_version": 2, "arrays": sorted(arrays),
            "sha256": {"arrays.npz": hashlib.sha256((path / "arrays.npz").read_bytes()).hexdigest()},
            "class": "PersistTagged", "bayesmf_version": "0.1.0", "params": model.get_params(),
            "global_mean": model.global_mean_, "rating_scale": None, "user_map": model.user_map_.to_dict(),
            "item_map": model.item_map_.to_dict(), "history": {}}
    (path / "meta.json").write_text(json.dumps(meta, indent=1))


def test_format_2_directories_still_load_and_are_replaced_in_place(tmp_path, ratings):
    path = tmp_path / "m"
    _write_format_2(path, fitted(ratings, 4.0))
    assert consistent_tag(path) == 4.0
    fitted(ratings, 5.0).save(path)
    assert consistent_tag(path) == 5.0
    assert "arrays.npz" not in os.listdir(path)
    shutil.rmtree(path)
    _write_format_2(path, fitted(ratings, 4.0))
    blob = (path / "arrays.npz").read_bytes()
    (path / "arrays.npz").write_bytes(blob[:-10])
    with pytest.raises(DataError, match="corrupted or truncated"):
        bayesmf.load(path)
