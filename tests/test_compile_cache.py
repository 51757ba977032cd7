"""The persistent compilation cache (bayesmf._compile_cache).

The pure parts (CPU fingerprint, directory name, switch, log filter) are tested here; everything
that changes JAX's configuration runs in subprocesses, so this test process never uses the cache
(tests/conftest.py switches it off before bayesmf is imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bayesmf import _compile_cache as cc
from bayesmf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

CPU_A = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
stepping\t: 1
microcode\t: 0xa10113e
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx2 avx512f avx512bw

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: something else entirely
flags\t\t: fpu
"""

E_TUNING = (b"E1202 07:21:02.637950   16898 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target machine "
            b"feature +prefer-no-gather is not  supported on the host machine. Machine type used for XLA:CPU "
            b"compilation doesn't match the machine type for execution. Compile machine features: [+avx2,"
            b"+prefer-no-gather] vs host machine features: [avx2]. This could lead to execution errors such as "
            b"SIGILL.\n")
E_ISA = E_TUNING.replace(b"+prefer-no-gather is not", b"+avx512f is not")
W_VERSION = (b"W1202 07:21:02.636141   16885 pjrt_executable.cc:642] Assume version compatibility. "
             b"PjRt-IFRT does not track XLA executable versions.\n")


def test_fingerprint_reads_the_first_cpu_and_ignores_clock_and_microcode():
    fields = ("vendor_id=AuthenticAMD\ncpu family=25\nmodel=17\nmodel name=AMD EPYC 9R14\nstepping=1\n"
              "flags=fpu sse2 avx2 avx512f avx512bw")
    import hashlib

    assert cc.cpu_fingerprint(CPU_A) == hashlib.sha256(fields.encode()).hexdigest()[:16]
    other_clock = CPU_A.replace("2600.000", "3100.000").replace("0xa10113e", "0xa101144")
    assert cc.cpu_fingerprint(other_clock) == cc.cpu_fingerprint(CPU_A)
    assert cc.cpu_fingerprint(CPU_A.replace(" avx512bw", "", 1)) != cc.cpu_fingerprint(CPU_A)
    assert cc.cpu_fingerprint(CPU_A.replace("9R14", "9R15", 1)) != cc.cpu_fingerprint(CPU_A)
    assert cc.cpu_fingerprint("") is None
    assert cc.cpu_fingerprint("processor\t: 0\nBogoMIPS\t: 50.00\n") is None


def test_cache_dir_is_keyed_by_versions_and_cpu(monkeypatch, tmp_path):
    import importlib.metadata as md

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cc.cache_dir(CPU_A)
    assert path == tmp_path / "bayesmf" / "xla" / (
        f"jax-{md.version('jax')}-jaxlib-{md.version('jaxlib')}-cpu-{cc.cpu_fingerprint(CPU_A)}")
    assert cc.cache_dir(CPU_A.replace(" avx512bw", "", 1)) != path
    assert cc.cache_dir("") is None
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cc.cache_dir(CPU_A).parent == Path.home() / ".cache" / "bayesmf" / "xla"


@pytest.mark.parametrize(("value", "on"), [("0", False), ("off", False), (" False ", False), ("1", True),
                                           ("yes", True), ("", True), (None, True)])
def test_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(cc.ENV, raising=False)
    else:
        monkeypatch.setenv(cc.ENV, value)
    assert cc.requested() is on


def test_switch_rejects_an_unknown_value(monkeypatch):
    monkeypatch.setenv(cc.ENV, "sometimes")
    with pytest.raises(ConfigError, match="BAYESMF_COMPILATION_CACHE='sometimes'"):
        cc.requested()


def test_filter_drops_exactly_the_tuning_attribute_and_version_lines():
    other = b"some other line mentioning prefer-no-gather\n"
    text = W_VERSION + E_TUNING + other + E_TUNING.replace(b"gather", b"scatter") + E_ISA + b"last, no newline"
    assert cc.filter_lines(text) == other + E_ISA + b"last, no newline"
    assert cc.filter_lines(b"") == b""


# --------------------------------------------------------------------------- subprocesses

CHILD = """
import json, jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
{setup}
import bayesmf.engines
from jax._src import compilation_cache
f = jax.jit(lambda x: jnp.sin(x) @ x.T + 1.5)
value = float(f(jnp.arange(64.0, dtype=jnp.float32).reshape(8, 8) / 64).sum())
print(json.dumps({{"dir": jax.config.jax_compilation_cache_dir, "value": value,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "max_size": jax.config.jax_compilation_cache_max_size,
                  "wrapped": hasattr(compilation_cache.get_executable_and_time, "__bayesmf_quiet__")}}))
"""
FAKE_CPU = "import bayesmf._compile_cache as c; c.cpu_fingerprint = lambda cpuinfo=None: 'f' * 16"


def _child(xdg: Path, code: str = CHILD.format(setup=""), **env_extra: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BAYESMF_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env.update(XDG_CACHE_HOME=str(xdg), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **env_extra)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _entries(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*-cache") if p.is_file()) if path.exists() else []


def _expected_value() -> float:
    x = np.arange(64.0).reshape(8, 8) / 64
    return float((np.sin(x) @ x.T + 1.5).sum())


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(cc.cpu_fingerprint() is None, reason="no /proc/cpuinfo: the cache stays off on this host")
def test_second_process_hits_the_cache_quietly_and_another_cpu_never_does(tmp_path):
    first, _ = _child(tmp_path)
    base = tmp_path / "bayesmf" / "xla"
    assert first["dir"] == str(cc.cache_dir(base=base)) and first["wrapped"]
    assert first["hits"] == 0 and first["min_time"] == cc.MIN_COMPILE_TIME_SECS
    assert first["max_size"] == cc.MAX_SIZE_BYTES  # JAX's LRU eviction (file-locked) is on
    entries = _entries(base)
    assert len(entries) >= 1
    second, stderr = _child(tmp_path)
    assert second["hits"] >= 1 and _entries(base) == entries
    assert second["value"] == first["value"] == pytest.approx(_expected_value(), rel=1e-5)
    assert "SIGILL" not in stderr and "cpu_aot_loader" not in stderr and "PjRt-IFRT" not in stderr
    # the same computation on a CPU with another fingerprint: its own directory, no hit
    fake, _ = _child(tmp_path, CHILD.format(setup=FAKE_CPU))
    assert fake["dir"].endswith("-cpu-" + "f" * 16) and fake["dir"] != first["dir"]
    assert fake["hits"] == 0 and len(_entries(Path(fake["dir"]))) >= 1


@pytest.mark.skipif(cc.cpu_fingerprint() is None, reason="no /proc/cpuinfo: the cache stays off on this host")
def test_an_entry_left_half_written_by_a_killed_process_does_not_stop_later_writes(tmp_path):
    _child(tmp_path)
    base = tmp_path / "bayesmf" / "xla"
    entries = _entries(base)
    assert entries
    # a process killed between writing an entry and its access time leaves this behind
    orphan = entries[0].with_name(entries[0].name.replace("-cache", "-atime"))
    orphan.unlink()
    # a new computation must still be written (JAX's eviction reads every entry's access time)
    out, stderr = _child(tmp_path, CHILD.format(setup="").replace("+ 1.5", "+ 2.5"))
    assert "Error writing persistent compilation cache" not in stderr
    assert orphan.exists() and len(_entries(base)) > len(entries)
    assert out["value"] == pytest.approx(_expected_value() + 64.0, rel=1e-5)


def test_switched_off_by_the_environment(tmp_path):
    out, _ = _child(tmp_path, BAYESMF_COMPILATION_CACHE="0")
    assert out["dir"] is None and out["hits"] == 0 and not out["wrapped"] and out["min_time"] == 1.0
    assert out["max_size"] == -1
    assert not (tmp_path / "bayesmf").exists()


def test_a_users_own_cache_is_left_alone(tmp_path):
    """A user's JAX_COMPILATION_CACHE_DIR: no bayesmf directory, settings and log lines untouched."""
    user = tmp_path / "user-cache"
    settings = {"JAX_COMPILATION_CACHE_DIR": str(user), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    first, _ = _child(tmp_path, **settings)
    assert first["dir"] == str(user) and not first["wrapped"] and first["min_time"] == 0.0
    assert first["max_size"] == -1
    assert not (tmp_path / "bayesmf").exists() and len(_entries(user)) >= 1
    second, stderr = _child(tmp_path, **settings)
    assert second["hits"] >= 1
    if _has_avx512():  # where XLA records the tuning attributes, unfiltered reads do log them
        assert "+prefer-no-gather is not" in stderr and "SIGILL" in stderr


@pytest.mark.slow
@pytest.mark.skipif(cc.cpu_fingerprint() is None, reason="no /proc/cpuinfo: the cache stays off on this host")
def test_a_second_bpmf_fit_loads_its_executables_from_the_cache(tmp_path):
    code = """
import json, jax
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import bayesmf
from bayesmf.data import synthetic
data = synthetic(n_users=60, n_items=40, n_ratings=800, rank=2, noise=0.3, seed=3).ratings
model = bayesmf.BPMF(rank=2, n_samples=5, n_warmup=5, seed=0).fit(data)
pred = model.predict(data.users[:20], data.items[:20])
print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                  "pred": [float(p) for p in pred]}))
"""
    first, _ = _child(tmp_path, code)
    n_entries = len(_entries(tmp_path))
    second, stderr = _child(tmp_path, code)
    assert first["hits"] == 0 and n_entries >= 3
    # every cached computation is a hit in the second process, nothing new is written
    assert second["hits"] == n_entries and len(_entries(tmp_path)) == n_entries
    np.testing.assert_array_equal(second["pred"], first["pred"])
    assert "SIGILL" not in stderr


def test_stderr_is_filtered_only_inside_the_window_and_nothing_else_is_lost(tmp_path):
    """Descriptor-level: lines written by C code (os.write) and by Python inside the window."""
    code = f"""
import os, sys
from bayesmf import _compile_cache as cc
os.write(2, b"before\\n")
with cc._filtered_stderr():
    os.write(2, {E_TUNING!r} + b"kept 1\\n" + {W_VERSION!r})
    print("kept 2", file=sys.stderr)
    os.write(2, {E_ISA!r})
os.write(2, b"after " + {E_TUNING!r})
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"before\nkept 1\nkept 2\n" + E_ISA + b"after " + E_TUNING
