"""Scale: BPMF Gibbs (rank 10) and ALS (rank 32) on Netflix-shaped synthetic data of growing size.

    python benchmarks/bench_scale.py                                  # 1 M and 10 M ratings
    python benchmarks/bench_scale.py --sizes 1e6 1e7 1e8 --timeout 3000
    python benchmarks/bench_scale.py --devices 2                      # also the sweep on 2 CPU devices
    python benchmarks/bench_scale.py --data synthetic --sizes 1e7 --users 48018   # datasets.synthetic

Data: ``datasets.synthetic_large`` (default) with Netflix's shape scaled to the size — 17,770
items and ``480,189 * n / 100,480,507`` users, power-law degrees, whole stars — or, with
``--data synthetic``, ``datasets.synthetic(n_users, 17770, n, rank=10)`` (continuous values), the
call a new user would make. Every (size, model, devices) configuration runs in a fresh Python
process, so its whole-process peak RSS (``ru_maxrss``) is its own and nothing is compiled before
(the imports of bayesmf, JAX and SciPy are done before the clocks start).

Per configuration: seconds to generate the data; seconds of set-up of the fit before its first
sweep — everything from ``fit()`` until the first sweep ends, less one warm sweep (host layouts,
the PMF MAP start for BPMF, compilation) — split into the time before the first iteration of
the driver (host layouts and everything before the MAP start or the ALS loop), the MAP start
(BPMF) and the first sweep's extra time (mostly compilation); seconds per warm sweep (median over
sweeps 2..n); rating-updates per second (``nnz / sweep seconds``: every sweep visits every
rating once from each side) and the same per thread; the process's CPU seconds of the set-up and
of a warm sweep (all threads; steadier than wall time on a machine shared with other work); peak
RSS after generating the data and at the end. The sweep times come from the driver's per-sweep
progress updates (the one sampling loop, :func:`bayesmf.engines.driver.run`, syncs on every
sweep's Info), read through a recording progress bar. BPMF keeps every ``--keep-every``-th
draw (the factors of every kept draw stay in memory: ``n_users x rank`` floats a draw).
``--devices 2`` runs the same fits with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
and ``devices=jax.devices()`` when the estimators take ``devices=``; otherwise it says so and
skips.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

NETFLIX = (480_189, 17_770, 100_480_507)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def make_data(cfg):
    from bayesmf import datasets

    n, items = int(cfg["ratings"]), int(cfg["items"])
    users = int(cfg["users"]) or max(1, round(NETFLIX[0] * n / NETFLIX[2]))
    if cfg["data"] == "synthetic":
        return datasets.synthetic(n_users=users, n_items=items, n_ratings=n, rank=10, seed=0).ratings
    return datasets.synthetic_large(n_users=users, n_items=items, n_ratings=n, rank=10, seed=0).ratings


def estimator(cfg, devices):
    from bayesmf import ALS, BPMF

    extra = {"devices": devices} if devices is not None else {}
    if cfg["model"] == "gibbs":
        return BPMF(rank=10, n_warmup=0, n_samples=int(cfg["sweeps"]), keep_every=int(cfg["keep_every"]),
                    progress=True, seed=0, **extra)
    return ALS(rank=32, n_iter=int(cfg["sweeps"]), progress=True, **extra)


def takes_devices() -> bool:
    import inspect

    from bayesmf import ALS, BPMF

    return all("devices" in inspect.signature(cls.__init__).parameters for cls in (ALS, BPMF))


def child(cfg) -> dict:
    """One configuration, in this (fresh) process."""
    import numpy as np

    import bayesmf.datasets  # noqa: F401  (imports are not timed: JAX, SciPy)
    from bayesmf import ALS  # noqa: F401

    t0 = time.perf_counter()
    train = make_data(cfg)
    gen = time.perf_counter() - t0
    rss_data = peak_rss_gib()
    devices = None
    if int(cfg["devices"]) > 1:
        import jax

        devices = jax.devices()[: int(cfg["devices"])]
    from bayesmf.engines import driver

    bars = []  # (desc, creation time, [time after each iteration])
    cpu = []  # process CPU seconds after each iteration of every loop

    class Recorder:
        def __init__(self, total, desc, enabled):
            self.times = []
            bars.append((desc, time.perf_counter(), self.times))

        def update(self, n=1):
            if n:
                self.times.append(time.perf_counter())
                cpu.append(time.process_time())

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    driver.progress_bar = Recorder
    model = estimator(cfg, devices)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(train)
    total = time.perf_counter() - start
    main_desc = "BPMF Gibbs" if cfg["model"] == "gibbs" else None
    desc, created, times = next(b for b in bars if main_desc is None or b[0] == main_desc)
    steps = np.diff(np.array([created, *times]))
    sweep = float(np.median(steps[1:])) if steps.size > 1 else float("nan")
    first_driver = bars[0][1] - start  # before the first loop of the driver (MAP start or the ALS loop)
    setup = times[0] - start - sweep
    cpu_main = np.diff(np.array(cpu[-len(times):]))  # the main loop's iterations are the last ones
    cpu_sweep = float(np.median(cpu_main)) if cpu_main.size else float("nan")
    cpu_setup = cpu[-len(times)] - cpu_start - cpu_sweep
    nnz = train.nnz
    return {
        **cfg, "nnz": nnz, "n_users": train.n_users, "n_items": train.n_items, "generate_s": round(gen, 2),
        "setup_s": round(setup, 2), "before_driver_s": round(first_driver, 2),
        "map_start_s": round(created - bars[0][1], 2) if cfg["model"] == "gibbs" else 0.0,
        "first_sweep_extra_s": round(float(steps[0]) - sweep, 2), "sweep_s": round(sweep, 6),
        "sweeps_timed": int(steps.size - 1), "fit_s": round(total, 2), "cpu_setup_s": round(cpu_setup, 2),
        "cpu_sweep_s": round(cpu_sweep, 6),
        "updates_per_s": round(nnz / sweep), "updates_per_s_per_thread": round(nnz / sweep / (os.cpu_count() or 1)),
        "peak_rss_data_gib": round(rss_data, 3), "peak_rss_gib": round(peak_rss_gib(), 3),
    }


def run_config(cfg, timeout: float) -> dict:
    env = dict(os.environ)
    if int(cfg["devices"]) > 1:
        flag = f"--xla_force_host_platform_device_count={cfg['devices']}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**cfg, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def table(rows) -> str:
    head = ("| ratings | model | devices | users | generate s | set-up s | (before driver / MAP / 1st sweep extra) "
            "| s / sweep | rating-updates/s | CPU s: set-up / sweep | peak RSS GiB (data / end) |")
    out = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            out.append(f"| {int(r['ratings']):,} | {r['model']} | {r['devices']} | | | | | {r['error']} | | | |")
            continue
        parts = f"{r['before_driver_s']:.1f} / {r['map_start_s']:.1f} / {r['first_sweep_extra_s']:.1f}"
        out.append(
            f"| {r['nnz']:,} | {r['model']} | {r['devices']} | {r['n_users']:,} | {r['generate_s']:.1f} "
            f"| {r['setup_s']:.1f} | {parts} | {r['sweep_s']:.3f} | {r['updates_per_s'] / 1e6:.1f} M "
            f"| {r['cpu_setup_s']:.1f} / {r['cpu_sweep_s']:.3f} "
            f"| {r['peak_rss_data_gib']:.2f} / {r['peak_rss_gib']:.2f} |")
    return "\n".join(out)


def growth(rows) -> list[str]:
    """log-log slope of seconds per sweep against ratings, per model (1 = linear)."""
    import numpy as np

    out = []
    for model in ("gibbs", "als"):
        pts = [(r["nnz"], r["sweep_s"]) for r in rows if r.get("model") == model and "error" not in r
               and int(r["devices"]) == 1]
        if len(pts) >= 2:
            n, t = np.log(np.array(pts, float)).T
            out.append(f"{model}: seconds per sweep grow as ratings^{np.polyfit(n, t, 1)[0]:.2f}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument("--models", nargs="+", choices=("gibbs", "als"), default=["gibbs", "als"])
    parser.add_argument("--sweeps", type=int, default=6, help="sweeps per fit (the first one compiles)")
    parser.add_argument("--keep-every", type=int, default=1, help="BPMF keep_every")
    parser.add_argument("--users", type=int, default=0, help="users (default: Netflix's per rating)")
    parser.add_argument("--items", type=int, default=NETFLIX[1])
    parser.add_argument("--data", choices=("large", "synthetic"), default="large")
    parser.add_argument("--devices", type=int, default=1, help="also run each fit on this many CPU devices")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    device_counts = [1]
    if args.devices > 1:
        if takes_devices():
            device_counts.append(args.devices)
        else:
            print(f"--devices {args.devices}: skipped, the estimators take no devices= argument in this version")
    rows = []
    for size in args.sizes:
        for model in args.models:
            for devices in device_counts:
                cfg = {"ratings": int(size), "model": model, "devices": devices, "sweeps": args.sweeps,
                       "keep_every": args.keep_every, "users": args.users, "items": args.items, "data": args.data}
                row = run_config(cfg, args.timeout)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(table(rows))
    for line in growth(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
