"""results.csv and results.json: what a run of an experiment produced, and where.

``results.csv`` is tidy: one row per (run, metric) with the columns :data:`CSV_COLUMNS`:
``model`` (the label), ``params`` (JSON of the file's hyperparameters at this grid point),
``dataset``, ``split`` (split instance: ``fold3``, ``u1``, ``random``...), ``seed`` (repetition
seed), ``metric``, ``value``, then per run ``fit_seconds``, ``predict_seconds``,
``peak_memory_mb``, ``status`` (``ok``/``error``), ``error`` and ``run_key``. A failed run has
one row with ``metric = "error"`` and an empty value. Floats are written with ``repr``, which
round-trips exactly, so identical runs give identical files.

``results.json`` holds the same rows plus every run record (without curves; a failed run with
its traceback), the resolved
configuration, the data notes, the status (``complete``/``interrupted``) and the environment:
Python, package and dependency versions, JAX backend, device count and devices, x64 mode,
platform, CPU count, and which bayesmf wrote the file: ``bayesmf_version`` (the imported package's
``__version__``), ``bayesmf_install`` (``"checkout"`` when it was imported from a source tree,
editable install included; ``"wheel"`` when from an installed distribution), ``bayesmf_path``,
and ``git``: the commit (with a dirty flag) of a checkout that is a git work tree, else null. An
installed wheel records no commit: the git repository around a virtual environment is not the
package's source.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bayesmf.experiments.store import atomic_write_text

CSV_COLUMNS = ("model", "params", "dataset", "split", "seed", "metric", "value", "fit_seconds", "predict_seconds",
               "peak_memory_mb", "status", "error", "run_key")
PACKAGES = ("bayesmf", "jax", "jaxlib", "numpyro", "numpy", "scipy", "arviz", "pandas", "optax", "matplotlib",
            "tqdm")


def tidy_rows(records: list) -> list[dict]:
    """The rows of results.csv for run records in grid order."""
    rows = []
    for r in records:
        base = {"model": r["model"], "params": json.dumps(r["params"]), "dataset": r["dataset"],
                "split": r["split"], "seed": r["seed"], "fit_seconds": r.get("fit_seconds"),
                "predict_seconds": r.get("predict_seconds"), "peak_memory_mb": r.get("peak_memory_mb"),
                "status": r["status"], "error": r.get("error", ""), "run_key": r["key"]}
        if r["status"] != "ok":
            rows.append({**base, "metric": "error", "value": None})
            continue
        rows.extend({**base, "metric": name, "value": value} for name, value in r["metrics"].items())
    return rows


def git_commit(folder: Path) -> dict | None:
    """``{"commit", "dirty"}`` when ``folder`` is the top of a git work tree, else None."""
    try:
        top, commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout.split()
        if Path(top).resolve() != Path(folder).resolve():
            return None  # a folder inside some other repository
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def installation() -> dict:
    """Version, kind of install, location and (for a checkout) git commit of the imported bayesmf."""
    import bayesmf

    package = Path(bayesmf.__file__).resolve().parent
    root = package.parent
    checkout = (root / "pyproject.toml").is_file()  # a source tree; site-packages has none
    return {"bayesmf_version": bayesmf.__version__, "bayesmf_install": "checkout" if checkout else "wheel",
            "bayesmf_path": str(package), "git": git_commit(root) if checkout else None}


def environment() -> dict:
    """Versions, JAX backend and devices, platform and the bayesmf install (see the module docstring)."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "jax_backend": jax.default_backend(),
        "jax_device_count": jax.device_count(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_x64": bool(jax.config.jax_enable_x64),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **installation(),
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(out_dir, experiment, specs, records: list, status: str, notes: dict | None = None) -> None:
    """Write results.csv and results.json into ``out_dir``, each whole
    (:func:`~bayesmf.experiments.store.atomic_write`)."""
    out_dir = Path(out_dir)
    rows = tidy_rows(records)
    atomic_write_text(out_dir / "results.csv", csv_text(rows))
    lean = [{k: v for k, v in r.items() if k != "curves"} for r in records]  # failures keep their traceback
    notes = {**_previous_notes(out_dir), **(notes or {})}  # data sets not loaded this time (all runs cached)
    payload = {
        "status": status,
        "n_runs": len(specs),
        "n_finished": sum(r["status"] == "ok" for r in records),
        "n_failed": sum(r["status"] != "ok" for r in records),
        "config": experiment.resolved(),
        "metrics": [m.name for m in experiment.metrics],
        "data_notes": notes,
        "environment": environment(),
        "runs": lean,
        "rows": rows,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=1, default=str))


def csv_text(rows: list[dict]) -> str:
    """results.csv's text for tidy rows (None written as an empty field)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _previous_notes(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / "results.json").read_text()).get("data_notes", {})
    except (OSError, ValueError):
        return {}


def read_results(out_dir) -> dict:
    """results.json of an output directory (a clear error when there is none)."""
    from bayesmf.errors import ConfigError

    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run `bayesmf run FILE.toml --out {out_dir}` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: not a readable results file ({exc}); `bayesmf run FILE.toml --out {out_dir}` "
                          "rewrites it from the cached runs") from None
