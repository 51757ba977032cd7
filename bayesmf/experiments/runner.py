"""Run an experiment's grid: cache, progress, failures, interruption, timing and memory.

Output directory layout (``bayesmf run FILE --out DIR``)::

    DIR/runs/<key>.json    one finished run: metrics, timings, curves (the cache)
    DIR/runs/<key>.npz     hyperparameter draws of a sampler run (trace and rank plots)
    DIR/results.csv        tidy rows, see bayesmf.experiments.results
    DIR/results.json       the same, the resolved configuration and the environment
    DIR/report.md, DIR/figures/*.png
    DIR/.lock              held by the bayesmf command working in DIR (bayesmf.experiments.store)

**Cache.** A run is skipped when ``runs/<key>.json`` exists with status ``ok``; the key hashes
the run's resolved configuration (:mod:`bayesmf.experiments.grid`), so a rerun of the same file
(or of an edited one: only the changed runs) or a resumed interrupted run computes only what is
missing. Each file is written to a temporary name and renamed, so an interruption never leaves a
half-written result. ``force=True`` recomputes every run and overwrites its entry.

**Output directory.** Before any computation ``DIR`` is created (with missing parents) and a file
is written to it and removed: a ``DIR`` that is a file, lies under a file, or cannot be written
is a :class:`~bayesmf.errors.ConfigError` (exit status 2 on the command line), and the folders
created for the check are removed again, so a refused ``--out`` leaves nothing behind.

**One command per directory.** The whole run (cache, results, report) holds the lock of ``DIR``;
a second ``bayesmf run`` or ``bayesmf report`` on the same directory is refused with
:class:`~bayesmf.errors.OutputBusyError` naming the process that holds it, or waits for it with
``wait=True`` (``--wait``; it then finds the first one's runs in the cache).

**Failures.** An exception inside one run (fit, prediction or evaluation) is recorded with its
message and traceback as a run with status ``error`` (not cached: the next invocation tries it
again) and the other runs continue. Data loading and splitting errors stop the experiment: they
are configuration problems shared by every run.

**Ctrl-C** stops after the current step: finished runs are already cached, and results.csv,
results.json and the report are written for them (status ``interrupted``). Ctrl-C while the
report is written returns with ``report_written=False``: the results are complete and the
previous report and figures are left whole (``bayesmf report DIR`` redoes it). Python sees the
interrupt only between JAX calls: the Gibbs sampler and the classical engines return to Python
every sweep, but NumPyro's NUTS and SVI without progress bars run as one compiled call, so an
interrupt during them takes effect when that call returns.

**Measurements.** ``fit_seconds`` is the wall time of ``fit`` (including JIT compilation the
first time a model meets a data shape in the process), ``predict_seconds`` the time to predict
the test pairs (``predict_dist`` when available), ``eval_seconds`` the metrics. ``peak_memory_mb``
is the process's peak resident set size during the run: on Linux the peak (``VmHWM``) is reset
before each run through ``/proc/self/clear_refs``; elsewhere it is the process peak so far
(``peak_memory_scope`` in the record says which).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bayesmf.errors import ConfigError
from bayesmf.experiments import catalogue
from bayesmf.experiments.data import check_available, make_splits, prepare
from bayesmf.experiments.grid import RunSpec, expand
from bayesmf.experiments.measure import evaluate, hyper_draws
from bayesmf.experiments.report import render_report
from bayesmf.experiments.results import write_results
from bayesmf.experiments.store import RunCache, output_lock


@dataclass
class Outcome:
    """What :func:`run_experiment` did: every record (grid order), and the counts."""

    records: list
    computed: int
    cached: int
    failed: int
    interrupted: bool
    report_written: bool = True


# -- memory -----------------------------------------------------------------------------------
def reset_peak_memory() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    """Peak resident set size in MiB: ``VmHWM`` on Linux, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# -- one run ----------------------------------------------------------------------------------
def build_estimator(spec: RunSpec, progress: bool):
    """The estimator of a run (a :class:`~bayesmf.metrics.BootstrapEnsemble` when ``bootstrap``)."""
    params = spec.estimator_params()
    if "progress" in catalogue.model_parameters(spec.model):
        params["progress"] = progress and not spec.bootstrap
    estimator = catalogue.model_class(spec.model)(**params)
    if spec.bootstrap:
        from bayesmf.metrics import BootstrapEnsemble

        return BootstrapEnsemble(estimator, n_models=spec.bootstrap, seed=spec.derived_seed)
    return estimator


def base_record(spec: RunSpec) -> dict:
    return {"key": spec.key, "index": spec.index, "model": spec.label, "model_class": spec.model,
            "params": spec.params, "bootstrap": spec.bootstrap, "dataset": spec.dataset, "split": spec.split,
            "seed": spec.seed, "derived_seed": spec.derived_seed, "position": list(spec.position),
            "config": spec.config}


def execute(spec: RunSpec, split, prepared, experiment, progress: bool = False) -> tuple[dict, dict | None]:
    """Fit and evaluate one run; returns ``(record, sampler draws or None)``. Exceptions other
    than KeyboardInterrupt become a record with status ``error``."""
    record = base_record(spec)
    scoped = reset_peak_memory()
    try:
        model = build_estimator(spec, progress)
        start = time.perf_counter()
        model.fit(split.train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics, curves, predict_seconds = evaluate(model, split.train, split.test, experiment, prepared)
        eval_seconds = time.perf_counter() - start - predict_seconds
        draws = hyper_draws(model)
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the grid
        record.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return record, None
    record.update(status="ok", error="", metrics=metrics, fit_seconds=fit_seconds, predict_seconds=predict_seconds,
                  eval_seconds=eval_seconds, peak_memory_mb=peak_memory_mb(),
                  peak_memory_scope="run" if scoped else "process", curves=curves,
                  split_report=split.report(), has_draws=bool(draws))
    return record, draws


# -- the grid ---------------------------------------------------------------------------------
def prepare_out_dir(out_dir) -> Path:
    """Create ``out_dir`` and check that files can be written there (see the module docstring)."""
    out_dir = Path(out_dir)
    created = []
    try:
        missing, existing = [], out_dir
        while not existing.exists() and existing != existing.parent:
            missing.append(existing)
            existing = existing.parent
        if not existing.is_dir():
            where = "is" if existing == out_dir else f"lies under {existing}, which is"
            raise ConfigError(f"{out_dir}: the output directory {where} a file, not a directory; "
                              f"choose another --out")
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise ConfigError(f"{out_dir}: cannot write to the output directory ({exc.strerror or exc}); "
                          f"choose another --out or fix its permissions") from None
    return out_dir



def run_experiment(experiment, out_dir, *, force: bool = False, progress: bool = True, data_dir=None,
                   log=print, wait: bool = False) -> Outcome:
    """Run every run of ``experiment`` not already cached in ``out_dir``, then write
    results.csv, results.json and the report, holding the directory's lock throughout (busy:
    :class:`~bayesmf.errors.OutputBusyError`, or with ``wait`` wait). See the module docstring."""
    check_available(experiment, data_dir)  # before any computation
    specs = expand(experiment)
    out_dir = prepare_out_dir(out_dir)
    with output_lock(out_dir, wait):
        records, prepared, interrupted, counts = _run_grid(experiment, specs, out_dir, force, progress, data_dir, log)
        ordered = [records[s.key] for s in specs if s.key in records]
        write_results(out_dir, experiment, specs, ordered, "interrupted" if interrupted else "complete",
                      notes={name: p.notes for name, p in prepared.items()})
        try:
            render_report(out_dir)
        except KeyboardInterrupt:  # results are written; the previous report and figures stay whole
            return Outcome(ordered, *counts, interrupted=True, report_written=False)
    return Outcome(ordered, *counts, interrupted=interrupted)


def _run_grid(experiment, specs, out_dir: Path, force: bool, progress: bool, data_dir, log):
    """The grid loop: ``(records by key, prepared data sets, interrupted, (computed, cached, failed))``.
    Ctrl-C ends the loop; what finished is kept."""
    cache = RunCache(out_dir)
    records, prepared, splits = {}, {}, {}
    computed = cached = failed = 0
    interrupted = False
    bar = _grid_bar(len(specs), experiment.name, progress)
    say = bar.write if progress else log
    try:
        for spec in specs:
            hit = None if force else cache.load(spec.key)
            if hit is not None:
                hit.update(model=spec.label, index=spec.index)  # labels are not part of the key
                records[spec.key] = hit
                cached += 1
                bar.update(1)
                continue
            if spec.dataset not in prepared:
                prepared[spec.dataset] = prepare(experiment, spec.dataset, data_dir)
                splits[spec.dataset] = make_splits(experiment, prepared[spec.dataset], data_dir)
            bar.set_description(f"{experiment.name}: {spec.label} {spec.split} seed {spec.seed}")
            record, draws = execute(spec, splits[spec.dataset][spec.split], prepared[spec.dataset], experiment,
                                    progress)
            records[spec.key] = record
            if record["status"] == "ok":
                cache.save(record, draws)
                computed += 1
            else:
                failed += 1
            say(_summary_line(spec, record, len(specs)))
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return records, prepared, interrupted, (computed, cached, failed)


def _grid_bar(total: int, name: str, enabled: bool):
    """The progress bar of the whole grid (tqdm; a disabled bar still counts)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="run", disable=not enabled)


def _summary_line(spec: RunSpec, record: dict, total: int) -> str:
    head = f"[{spec.index + 1}/{total}] {spec.label} ({spec.params_text or 'defaults'}) | {spec.dataset} " \
           f"{spec.split} | seed {spec.seed}"
    if record["status"] != "ok":
        return f"{head}: FAILED {record['error']}"
    shown = ", ".join(f"{k} {v:.4g}" for k, v in list(record["metrics"].items())[:4])
    return f"{head}: {shown} (fit {record['fit_seconds']:.1f} s)"
