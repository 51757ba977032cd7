"""Peer virtual environments: one per peer library, outside the repository.

Every peer lives in its own venv under ``$BAYESMF_PEERS`` (default ``/work/peers``, else
``~/.cache/bayesmf/peers``) so that its dependencies (torch for LensKit, pandas < 3, setuptools < 81
for myFM, a JVM bridge for Spark) never touch bayesmf's own environment nor each other.  The
versions are pinned here; ``python -m benchmarks --setup`` (re)creates the environments, and an
install that fails leaves a ``setup-failed.txt`` whose last lines become the peer's row in
RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class PeerEnv:
    """How to build one peer's venv.

    ``first`` is installed before ``packages`` so that a dependency the resolver would otherwise
    pick badly is already satisfied (LensKit: the CPU torch wheel, else pip fetches the multi-GB
    CUDA build; myFM: setuptools < 81, which still ships ``pkg_resources`` that ``import myfm``
    needs).  ``probe`` is a statement run in the new venv to prove the install imports.
    """

    name: str
    packages: tuple[str, ...]
    probe: str
    first: tuple[str, ...] = ()
    note: str = ""


PEER_ENVS: dict[str, PeerEnv] = {
    env.name: env
    for env in (
        PeerEnv("surprise", ("scikit-surprise==1.1.5", "numpy<3"), "import surprise"),
        PeerEnv("implicit", ("implicit==0.7.3", "numpy<3", "scipy"), "import implicit"),
        PeerEnv("cornac", ("cornac==3.0.1", "numpy<3", "scipy"), "import cornac"),
        PeerEnv(
            "lenskit",
            ("lenskit==2025.8.1",),
            "import lenskit, torch",
            first=("torch==2.13.0",),
            note="torch 2.13.0 CPU wheel installed first; lenskit pins pandas < 3",
        ),
        PeerEnv(
            "myfm",
            ("myfm==0.4.0", "scipy"),
            "import myfm",
            first=("setuptools<81",),
            note="setuptools < 81: import myfm needs pkg_resources",
        ),
        PeerEnv("smurff", ("smurff==1.1", "scipy"), "import smurff"),
        PeerEnv("spark", ("pyspark==4.3.0", "numpy<3", "pandas"), "import pyspark"),
        PeerEnv(
            "numpyro",
            ("jax==0.9.2", "jaxlib==0.9.2", "numpyro==0.22.0", "numpy<3"),
            "import numpyro, jax",
            note="same jax/numpyro pins as bayesmf",
        ),
    )
}


def peers_root() -> Path:
    """Directory holding one venv per peer (``$BAYESMF_PEERS`` overrides the default)."""
    if "BAYESMF_PEERS" in os.environ:
        return Path(os.environ["BAYESMF_PEERS"])
    if Path("/work").is_dir():
        return Path("/work/peers")
    return Path.home() / ".cache" / "bayesmf" / "peers"


def python_of(peer: str) -> Path:
    """The interpreter of ``peer``'s venv (it may not exist yet)."""
    return peers_root() / peer / "bin" / "python"


def status_of(peer: str) -> dict:
    """``{"ok": bool, "reason": str, "versions": {...}}`` for an already set-up peer venv."""
    root = peers_root() / peer
    failed = root / "setup-failed.txt"
    done = root / "setup-ok.json"
    if done.exists():
        return json.loads(done.read_text())
    if failed.exists():
        return {"ok": False, "reason": failed.read_text().strip().splitlines()[-1][:300], "versions": {}}
    return {"ok": False, "reason": f"not set up (run: python -m benchmarks --setup {peer})", "versions": {}}


def _run(cmd: list[str], log) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)


def setup(peer: str, *, force: bool = False) -> dict:
    """Create ``peer``'s venv and install its pinned packages; record the outcome on disk.

    Returns the status dict (see :func:`status_of`).  Never raises for an install failure: the
    reason (last line of pip's output) is stored in ``setup-failed.txt`` and returned.
    """
    spec = PEER_ENVS[peer]
    root = peers_root() / peer
    if not force and (root / "setup-ok.json").exists():
        return status_of(peer)
    root.mkdir(parents=True, exist_ok=True)
    for stale in ("setup-ok.json", "setup-failed.txt"):
        (root / stale).unlink(missing_ok=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    started = time.time()
    with open(root / "setup.log", "a") as log:
        try:
            if not (root / "bin" / "python").exists():
                _run([sys.executable, "-m", "venv", str(root)], log)
            if spec.first:
                _run(pip + list(spec.first), log)
            _run(pip + list(spec.packages), log)
            _run([str(root / "bin" / "python"), "-c", spec.probe], log)
        except subprocess.CalledProcessError as err:
            log.flush()
            tail = (root / "setup.log").read_text().strip().splitlines()[-20:]
            reason = next((ln for ln in reversed(tail) if "rror" in ln), tail[-1] if tail else str(err))
            (root / "setup-failed.txt").write_text("\n".join(tail) + f"\nsetup failed: {reason.strip()}\n")
            return status_of(peer)
    freeze = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout
    (root / "freeze.txt").write_text(freeze)
    versions = dict(ln.split("==", 1) for ln in freeze.splitlines() if "==" in ln)
    status = {
        "ok": True,
        "reason": spec.note,
        "versions": versions,
        "python": subprocess.run(
            [str(root / "bin" / "python"), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True, text=True,
        ).stdout.strip(),
        "setup_seconds": round(time.time() - started, 1),
    }
    (root / "setup-ok.json").write_text(json.dumps(status, indent=1))
    return status


if __name__ == "__main__":  # python -m benchmarks.envs PEER [PEER ...]
    for name in [a for a in sys.argv[1:] if not a.startswith("-")] or list(PEER_ENVS):
        result = setup(name, force="--force" in sys.argv)
        print(name, "ok" if result["ok"] else f"FAILED: {result['reason']}", flush=True)
