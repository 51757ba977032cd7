"""Run jobs as subprocesses in their own environments, alternate sides, take medians.

Every job — bayesmf's included — is a fresh process: ``<python> -P benchmarks/peers/<script>.py``
with the same thread settings (:func:`thread_env`), so no side inherits another's warm caches or
thread pools. The runner measures the whole process too: wall time from spawn to exit and the
peak resident memory of the process tree (sampled from /proc every 0.1 s, so Spark's JVM
counts), never less than the job's own high-water mark.

Order within a repeat alternates (bayesmf first on even repeats, last on odd ones) so that a
slow drift of the shared machine does not favour one side; each figure reported is the median
over repeats.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import envs
from benchmarks.pairs import Job, Pair

PEERS_DIR = Path(__file__).resolve().parent / "peers"
REPO = PEERS_DIR.parent.parent
TIMEOUT_S = 1800
MEDIAN_FIELDS = ("rmse", "mae", "recall_at_10", "ndcg_at_10", "sampled_hr_at_10", "sampled_ndcg_at_10",
                 "fit_seconds", "fit_seconds_warm", "predict_seconds",
                 "seconds_per_iteration", "wall_seconds", "peak_rss_mb", "fit_cpu_seconds", "nll", "rps", "ece")


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables pinning every library's thread pools to ``threads``."""
    t = str(threads)
    return {
        "OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "MKL_NUM_THREADS": t, "BLIS_NUM_THREADS": t,
        "VECLIB_MAXIMUM_THREADS": t, "NUMEXPR_NUM_THREADS": t, "RAYON_NUM_THREADS": t,
        "LK_NUM_THREADS": t, "LK_NUM_BACKEND_THREADS": t, "LK_NUM_PROCS": "1",
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                     f"intra_op_parallelism_threads={t}",
        "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2", "TQDM_DISABLE": "1",
    }


def python_for(side: str) -> Path:
    """The interpreter of a side: bayesmf's own (the one running the harness) or the peer's venv."""
    return Path(sys.executable) if side == "bayesmf" else envs.python_of(side)


def run_job(job: Job, split: Path, *, threads: int, seed: int = 0, params: dict | None = None,
            timeout: float = TIMEOUT_S, log_dir: Path | None = None) -> dict:
    """One fresh process for ``job`` on ``split``; returns its result dict, or ``{"error": why}``."""
    python = python_for(job.side)
    if not python.exists():
        return {"error": envs.status_of(job.side)["reason"]}
    cmd = [str(python), "-P", str(PEERS_DIR / f"{job.script}.py"), "--data", str(split), "--algo", job.algo,
           "--params", json.dumps(job.params if params is None else params), "--threads", str(threads),
           "--seed", str(seed)]
    env = {**os.environ, **thread_env(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    if job.side == "bayesmf":
        env["PYTHONPATH"] = str(REPO)  # the checkout under test, even without an editable install
        # every process compiles from scratch, like the peers, unless the caller asks for the cache
        env.setdefault("BAYESMF_COMPILATION_CACHE", "0")
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True)
        status, tree_peak_kib = _wait(proc.pid, timeout)
        wall = time.perf_counter() - start
        proc.returncode = status
        log.seek(0)
        out = log.read()
    if log_dir is not None:
        (log_dir / f"{job.side}-{job.algo}-{split.stem}.log").write_text(out)
    if status is None:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")]
    if not lines:
        tail = [ln for ln in out.strip().splitlines() if ln.strip()][-3:]
        return {"error": f"exit {proc.returncode}: " + (" | ".join(tail)[-400:] if tail else "no output")}
    result = json.loads(lines[-1][len("BENCH_RESULT "):])
    result["wall_seconds"] = wall
    result["peak_rss_mb"] = max(tree_peak_kib / 1024.0, result.get("peak_rss_mb_self") or 0.0)
    return result


def _tree_rss_kib(pid: int) -> int:
    """Current resident memory of ``pid`` and all its descendants (KiB, from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            with open(f"/proc/{p}/status") as f:
                total += next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue  # the process ended between listing and reading
    return total


def _wait(pid: int, timeout: float):
    """(exit status or None on timeout, peak KiB) of child ``pid``; kills it after ``timeout`` s.

    Every 0.1 s the resident memory of the job's whole process tree is summed (Spark's JVM is a
    grandchild the job never reaps, so ``wait4``'s ``ru_maxrss`` would miss it; that figure also
    starts from the runner's own size, carried over ``exec``). The job's own ``VmHWM`` covers
    peaks shorter than the sampling period for the job process itself.
    """
    deadline, peak = time.monotonic() + timeout, 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), peak
        peak = max(peak, _tree_rss_kib(pid))
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, peak
        time.sleep(0.1)


def median_row(runs: list[dict]) -> dict:
    """Medians over the successful repeats of one job (and how many succeeded)."""
    ok = [r for r in runs if "error" not in r and "unavailable" not in r]
    row = {"repeats": len(ok), "of": len(runs)}
    if not ok:
        why = next((r.get("unavailable") or r.get("error") for r in runs), "not run")
        return {**row, "error": why}
    for key in MEDIAN_FIELDS:
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
    for key in ("library", "version", "params_used", "params_ignored", "predict_note", "n_iter"):
        if key in ok[-1]:
            row[key] = ok[-1][key]
    errors = [r.get("error") for r in runs if "error" in r]
    if errors:
        row["failed_repeats"] = errors
    return row


def run_pair(pair: Pair, protocol: str, split: Path, *, repeats: int, threads: int, quick: bool = False,
             bayesmf: bool = True, peers: bool = True, log_dir: Path | None = None, progress=print) -> dict:
    """All jobs of ``pair`` on one split, alternating order, ``repeats`` times; medians per job.

    ``quick``: the bayesmf job runs with the pair's tiny ``quick_params`` and no warm refit.
    """
    jobs = ([pair.bayesmf] if bayesmf else []) + (list(pair.peers) if peers else [])
    runs: dict[str, list[dict]] = {job.name: [] for job in jobs}
    for rep in range(repeats):
        for job in jobs if rep % 2 == 0 else jobs[::-1]:
            if runs[job.name] and "unavailable" in runs[job.name][0]:
                continue  # a missing estimator stays missing: one try is enough
            params = {**job.params, **pair.quick_params, "warm": False} if quick and job.side == "bayesmf" else None
            result = run_job(job, split, threads=threads, params=params, log_dir=log_dir)
            runs[job.name].append(result)
            progress(f"  [{pair.name} / {protocol} / rep {rep + 1}] {job.name}: {_summary(result)}")
    return {"pair": pair.name, "protocol": protocol, "note": pair.note,
            "jobs": {job.name: {"side": job.side, "algo": job.algo, "params": job.params, **median_row(runs[job.name])}
                     for job in jobs},
            "raw": runs}


def _summary(result: dict) -> str:
    if "unavailable" in result:
        return "unavailable: " + result["unavailable"]
    if "error" in result:
        return "ERROR " + result["error"]
    if "rmse" in result:
        quality = f"rmse {result['rmse']:.4f}"
    else:
        quality = f"recall@10 {result.get('recall_at_10', float('nan')):.4f}"
    return f"{quality}, fit {result['fit_seconds']:.2f} s, wall {result['wall_seconds']:.1f} s"
