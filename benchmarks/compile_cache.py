"""Whole-process time of a small BPMF fit with the persistent compilation cache cold, then warm.

    BAYESMF_DATA=../shared/data XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/compile_cache.py --runs 3 [--min-compile-time 0.0]

Each run is a fresh process that loads MovieLens-100K u1 and fits BPMF rank 10 (200 draws, no
burn-in, biases, noise learned), with ``XDG_CACHE_HOME`` pointed at a temporary directory: the
cold runs each start from an empty directory, the warm runs reuse the one a first run filled.
Cold and warm runs alternate (``--warm-only``: warm runs only). Prints the wall time of every
process, its fit time, the test RMSE, the number of cache files and how many lines of stderr
mention SIGILL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, time
start = time.perf_counter()
import bayesmf
from bayesmf import splits
split = splits.predefined("movielens-100k", "u1")
model = bayesmf.BPMF(rank=10, n_samples=200, n_warmup=0, biases=True, noise_prior=(1.0, 1.0))
fit_start = time.perf_counter()
model.fit(split.train)
fit = time.perf_counter() - fit_start
err = model.predict_ratings(split.test, unknown="fallback") - split.test.values
print(json.dumps({"fit": fit, "rmse": float((err ** 2).mean() ** 0.5)}))
"""


def run_once(xdg: Path, min_time: str | None) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg), "PYTHONPATH": str(REPO)}
    env.pop("BAYESMF_COMPILATION_CACHE", None)
    if min_time is not None:
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = min_time
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    files = [p for p in xdg.rglob("*-cache") if p.is_file()]
    return {"wall": wall, **out, "files": len(files), "sigill_lines": proc.stderr.count("SIGILL"),
            "stderr_lines": len(proc.stderr.splitlines())}


def show(kind: str, result: dict) -> None:
    print(kind, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-compile-time", default=None,
                        help="JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS for the children (default: bayesmf's)")
    parser.add_argument("--warm-only", action="store_true", help="after the first run, only warm runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        warm_dir = Path(tmp) / "warm"
        show("fill", run_once(warm_dir, args.min_compile_time))
        for i in range(args.runs):
            if not args.warm_only:
                show("cold", run_once(Path(tmp) / f"cold{i}", args.min_compile_time))
            show("warm", run_once(warm_dir, args.min_compile_time))


if __name__ == "__main__":
    main()
