"""The sharded fits across two processes (``jax.distributed.initialize`` on 127.0.0.1, CPU
collectives over gloo): two local processes of tests/multiprocess_worker.py, one CPU device each,
fit on the mesh of both devices; both must see what one process sees on a one-device mesh (the
sharded fits give the same numbers on any mesh, bit for bit: tests/test_sharding.py), and agree
with the unsharded fit to the tolerances stated there."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_sharding import check_als, check_gibbs, run_worker, worker_env

WORKER = Path(__file__).resolve().parent / "multiprocess_worker.py"


def gloo_missing() -> str | None:
    """Why this JAX cannot run CPU collectives across processes, or None when it can."""
    try:
        from jax._src.lib import xla_client
    except ImportError as exc:  # pragma: no cover - depends on the installed jaxlib
        return f"jaxlib has no xla_client ({exc})"
    if not hasattr(xla_client._xla, "make_gloo_tcp_collectives"):  # pragma: no cover
        return f"jaxlib {jax.__version__} has no gloo CPU collectives (make_gloo_tcp_collectives)"
    if "jax_cpu_collectives_implementation" not in jax.config.values:  # pragma: no cover
        return f"jax {jax.__version__} has no jax_cpu_collectives_implementation option"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(tmp_path, case: str, names: str) -> list[dict]:
    """Both processes' arrays (each process saves what it sees)."""
    reason = gloo_missing()
    if reason:
        pytest.skip(reason)
    port = free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), case, names, str(outs[i])],
                              env=worker_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=900)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-4000:]
    results = [dict(np.load(out)) for out in outs]
    for result in results:
        assert int(result["process_count"]) == 2 and int(result["device_count"]) == 2
    return results


def merged(reference: dict, process: dict) -> dict:
    """The reference fits ("0": unsharded, "1": one-device mesh) and one process's ("2")."""
    return {**reference, **process}


@pytest.mark.slow
def test_als_across_two_processes(tmp_path):
    names = "als,implicit"
    reference = run_worker(tmp_path, "als", "0,1", names, devices=1)
    for process in two_processes(tmp_path, "als", names):
        check_als(merged(reference, process), names.split(","), ("0", "1", "2"))


@pytest.mark.slow
def test_gibbs_across_two_processes(tmp_path):
    reference = run_worker(tmp_path, "gibbs", "0,1", "gibbs", devices=1)
    for process in two_processes(tmp_path, "gibbs", "gibbs"):
        check_gibbs(merged(reference, process), "gibbs", ("0", "1", "2"))
