"""The experiment runner under faults and bad input: concurrent runs on one output directory,
duplicate grid values, wrongly typed values in nested TOML tables, Ctrl-C in the report phase.

Every case must end with a clear message and a documented exit status (2: configuration or
a busy output directory, 130: interrupted), never a traceback, and never leave a half-written
or temporary file behind.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bayesmf import cli
from bayesmf.errors import ConfigError
from bayesmf.experiments import expand, load_experiment, results, run_experiment, write_report

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[experiment]
name = "tiny"
seeds = [0, 1]

[data]
name = "synthetic"

[data.synthetic]
n_users = 40
n_items = 30
n_ratings = 400
rank = 2
noise = 0.5
seed = 3

[split]
method = "random"
test_fraction = 0.2
seed = 1

[evaluation]
metrics = ["rmse", "mae"]
n_boot = 5

[[models]]
model = "Baseline"
n_iter = [2, 3]
"""
N_ROWS = 2 * 2 * 2  # grid points x seeds x metrics


def write(folder: Path, text: str, name: str = "exp.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under ``folder`` (what an interrupted writer could leave)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith(".tmp"))]


def is_complete_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


def main(argv, capsys) -> tuple[int, str]:
    """``bayesmf ARGV`` in this process: (exit status, stderr). An exception escaping main fails
    (the command line would print a traceback)."""
    try:
        code = cli.main([str(a) for a in argv])
    except KeyboardInterrupt:  # pytest would stop the session instead of failing the test
        pytest.fail("KeyboardInterrupt escaped bayesmf's main: a raw traceback on the command line")
    return code, capsys.readouterr().err


# -- defect 6: two runs on one output directory -----------------------------------------------
def hold_lock(out: Path):
    """Take the output directory's lock the way another bayesmf process would."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.seek(0)
    handle.truncate()
    handle.write("4242\n")
    handle.flush()
    return handle


def test_a_second_run_on_a_busy_output_directory_is_refused_with_a_clear_message(tmp_path, capsys):
    path, out = write(tmp_path, TINY), tmp_path / "out"
    handle = hold_lock(out)
    try:
        code, err = main(["run", path, "--out", out, "--quiet"], capsys)
        assert code == 2
        assert str(out / ".lock") in err and "pid 4242" in err and "--wait" in err
        assert not (out / "results.csv").exists() and not (out / "runs").exists()  # nothing was touched
        code, err = main(["report", out], capsys)
        assert code == 2 and str(out / ".lock") in err
    finally:
        handle.close()


def test_with_wait_the_second_run_waits_for_the_first(tmp_path, capsys, monkeypatch):
    path, out = write(tmp_path, TINY), tmp_path / "out"
    handle = hold_lock(out)
    real_flock = fcntl.flock

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX:  # the blocking wait: the other run finishes a moment later
            threading.Timer(0.3, handle.close).start()
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    code, err = main(["run", path, "--out", out, "--quiet", "--wait"], capsys)
    assert code == 0, err
    assert f"waiting for the run holding {out / '.lock'} (pid 4242)" in err
    assert len(list(csv.DictReader((out / "results.csv").open()))) == N_ROWS


def test_results_survive_an_interleaved_writer_of_the_same_directory(tmp_path, monkeypatch):
    """A second writer finishing between the first one's write and rename (the crash of two
    concurrent runs: a shared temporary name) must not break either of them."""
    experiment = load_experiment(write(tmp_path, TINY))
    specs = expand(experiment)
    records = [{"key": s.key, "model": s.label, "params": s.params, "dataset": s.dataset, "split": s.split,
                "seed": s.seed, "status": "error", "error": "not run"} for s in specs]
    out = tmp_path / "out"
    out.mkdir()
    real_replace, nested = os.replace, []

    def replace_after_another_writer(src, dst):
        if not nested:
            nested.append(dst)
            results.write_results(out, experiment, specs, records[:1], "complete")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_another_writer)
    results.write_results(out, experiment, specs, records, "complete")
    assert json.loads((out / "results.json").read_text())["n_failed"] == len(records)  # the last writer wins
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(records)
    assert leftovers(out) == []


def test_atomic_writes_keep_the_old_file_when_interrupted_and_never_share_a_temporary_name(tmp_path):
    from bayesmf.experiments.store import atomic_write

    target = tmp_path / "data.txt"
    target.write_text("old")

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_text() == "old" and leftovers(tmp_path) == []

    def with_a_concurrent_writer(f):
        f.write(b"outer")
        atomic_write(target, lambda g: g.write(b"inner"))  # same target, same process, meanwhile

    atomic_write(target, with_a_concurrent_writer)
    assert target.read_text() == "outer" and leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_concurrent_cli_runs_on_one_output_directory_never_crash(tmp_path):
    path, out = write(tmp_path, TINY), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "bayesmf", "run", str(path), "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for cmd in (base, [*base, "--wait"])]
    outcomes = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    (plain, plain_err), (waiting, waiting_err) = outcomes
    assert "Traceback" not in plain_err + waiting_err
    assert waiting == 0, waiting_err
    assert plain == 0 or (plain == 2 and "in use by another bayesmf run" in plain_err), plain_err
    assert len(list(csv.DictReader((out / "results.csv").open()))) == N_ROWS
    assert leftovers(out) == []


# -- defect 7: duplicate grid values ----------------------------------------------------------
DUPLICATES = [
    ("n_iter = [2, 3]", "n_iter = [2, 2]", ["models[0].n_iter", "2"]),
    ("n_iter = [2, 3]", "reg_user = [1, 1.0]", ["models[0].reg_user", "1.0"]),  # equal once resolved
    ('model = "Baseline"\nn_iter = [2, 3]',
     'model = "BPMF"\nnoise_prior = [[1, 2], [1.0, 2.0]]', ["models[0].noise_prior", "[1.0, 2.0]"]),
    ('name = "synthetic"', 'name = ["synthetic", "synthetic"]', ["[data].name", "synthetic"]),
    ('method = "random"\ntest_fraction = 0.2\nseed = 1', 'method = "predefined"\nfolds = ["u1", "u1"]',
     ["[split].folds", "u1"]),
]


@pytest.mark.parametrize("old, new, expected", DUPLICATES, ids=[d[2][0] for d in DUPLICATES])
def test_a_repeated_grid_value_is_a_config_error_naming_the_key_and_value(tmp_path, old, new, expected):
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "repeat" in message
    for part in expected:
        assert part in message


def test_a_repeated_grid_value_exits_2_from_the_cli(tmp_path, capsys):
    path = write(tmp_path, TINY.replace("n_iter = [2, 3]", "n_iter = [2, 2]"))
    code, err = main(["run", path, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2 and "models[0].n_iter" in err and not (tmp_path / "out").exists()


def test_the_report_counts_a_configuration_run_once_per_split_and_seed(tmp_path, capsys):
    """A results.json holding the same configuration twice (as written before duplicates were
    refused) must not double n and narrow the interval."""
    path, out = write(tmp_path, TINY.replace("n_iter = [2, 3]", "n_iter = 2")), tmp_path / "out"
    assert main(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    payload = json.loads((out / "results.json").read_text())
    copies = [{**r, "key": r["key"][::-1], "metrics": {k: v + 1.0 for k, v in r["metrics"].items()}}
              for r in payload["runs"]]
    payload["runs"] += copies
    (out / "results.json").write_text(json.dumps(payload))
    report = write_report(out).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| Baseline |"))
    assert row.split(" | ")[2] == "2"  # n: seeds 0 and 1, each once
    assert "2 duplicate runs" in report


# -- defect 8: wrongly typed values inside tables, and friends --------------------------------
SGD = TINY.replace('model = "Baseline"\nn_iter = [2, 3]', 'model = "FunkSVD"\nrank = 2\nn_epochs = 2')
BAD_VALUES = [
    # (replace, with, the message must contain)
    ("n_epochs = 2", 'n_epochs = 2\nlearning_rates = {user_bias = "x"}',
     ["models[0].learning_rates.user_bias", "number", "'x'"]),
    ("n_epochs = 2", "n_epochs = 2\nlearning_rates = {user_bias = [1, 2]}",
     ["models[0].learning_rates.user_bias", "number"]),
    ("n_epochs = 2", "n_epochs = 2\nregularizations = {item_bias = {a = 1}}",
     ["models[0].regularizations.item_bias", "number"]),
    ("n_epochs = 2", "n_epochs = 2\nregularizations = {item_bias = nan}", ["models[0].regularizations.item_bias"]),
    ("n_epochs = 2", "n_epochs = 2\nlearning_rates = {nope = 0.1}", ["models[0]", "nope"]),
    ("n_epochs = 2", "n_epochs = 2\nlearning_rates = [{user_bias = 0.1}, {user_bias = 0.1}]",
     ["models[0].learning_rates", "repeat"]),
    ("n_epochs = 2", 'n_epochs = 2\nregularizations = "x"', ["models[0].regularizations", "table"]),
    ("n_epochs = 2", "n_epochs = 2\nlearning_rate = [[0.1]]", ["models[0].learning_rate[0]", "number"]),
    ("rank = 2\nn_epochs", "rank = -1\nn_epochs", ["models[0]", "rank"]),
    ("rank = 2\nn_epochs", "rank = true\nn_epochs", ["models[0].rank", "integer"]),
    ("rank = 2\nn_epochs", "rank = nan\nn_epochs", ["models[0].rank", "integer"]),
    ("n_epochs = 2", "n_epochs = 2\nlearning_rate = nan", ["models[0].learning_rate", "finite"]),
    ("n_epochs = 2", "n_epochs = 2\nfoo = 1", ["models[0].foo", "unknown hyperparameter"]),
    ("n_boot = 5", "n_boot = 5\nthreshold = nan", ["[evaluation].threshold", "finite"]),
    ("noise = 0.5", "noise = nan", ["[data.synthetic].noise", "finite"]),
    ("noise = 0.5", "noise = -1.0", ["[data.synthetic].noise", ">= 0"]),
    ("n_users = 40", "n_users = 0", ["[data.synthetic].n_users", ">= 1"]),
    ("n_ratings = 400", "n_ratings = 40000", ["[data.synthetic]", "n_ratings"]),
]


@pytest.mark.parametrize("old, new, expected", BAD_VALUES, ids=[f"{i}-{b[2][0]}" for i, b in enumerate(BAD_VALUES)])
def test_a_wrongly_typed_or_invalid_value_exits_2_naming_file_and_key(tmp_path, capsys, old, new, expected):
    assert old in SGD
    path = write(tmp_path, SGD.replace(old, new, 1))
    code, err = main(["run", path, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2, err
    assert err.startswith(f"bayesmf: error: {path}: ") and err.count("\n") == 1
    for part in expected:
        assert part in err


@pytest.mark.slow
def test_the_cli_reports_a_string_in_a_table_without_a_traceback(tmp_path):
    path = write(tmp_path, SGD.replace("n_epochs = 2", 'n_epochs = 2\nlearning_rates = {user_bias = "x"}'))
    done = subprocess.run([sys.executable, "-m", "bayesmf", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}: models[0].learning_rates.user_bias: must be a number, got 'x'" in done.stderr


# -- unreadable files in an output directory --------------------------------------------------
@pytest.fixture
def finished(tmp_path, capsys):
    """A finished tiny experiment: (experiment file, output directory)."""
    path, out = write(tmp_path, TINY), tmp_path / "out"
    assert main(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    return path, out


def test_an_output_directory_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    path = write(tmp_path, TINY)
    code, err = main(["run", path, "--out", path, "--quiet"], capsys)
    assert code == 2 and err.startswith(f"bayesmf: error: {path}: the output directory is a file")
    assert err.count("\n") == 1


def test_an_unreadable_results_file_is_a_clear_error_and_a_rerun_rewrites_it(finished, capsys):
    path, out = finished
    text = (out / "results.json").read_text()
    (out / "results.json").write_text(text[: len(text) // 2])
    code, err = main(["report", out], capsys)
    assert code == 2 and f"{out / 'results.json'}: not a readable results file" in err
    assert main(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["n_finished"] == 4


def test_an_unreadable_run_record_is_a_clear_error_and_a_rerun_recomputes_it(finished, capsys):
    path, out = finished
    record = sorted((out / "runs").glob("*.json"))[0]
    record.write_text(record.read_text()[:50])
    code, err = main(["report", out], capsys)
    assert code == 2 and str(record) in err and "computes the run again" in err
    outcome = run_experiment(load_experiment(path), out, progress=False, log=lambda *_: None)
    assert (outcome.computed, outcome.cached) == (1, 3)
    assert json.loads(record.read_text())["status"] == "ok"


def test_unreadable_sampler_draws_are_a_clear_error_and_not_a_cache_hit(finished, capsys):
    from bayesmf.experiments.store import RunCache

    _, out = finished
    payload = json.loads((out / "results.json").read_text())
    key = payload["runs"][0]["key"]
    payload["runs"][0]["has_draws"] = True
    (out / "results.json").write_text(json.dumps(payload))
    cached = json.loads((out / "runs" / f"{key}.json").read_text())
    (out / "runs" / f"{key}.json").write_text(json.dumps({**cached, "has_draws": True}))
    (out / "runs" / f"{key}.npz").write_bytes(b"PK\x03\x04 not a whole zip file")
    code, err = main(["report", out], capsys)
    assert code == 2 and str(out / "runs" / f"{key}.npz") in err and "unreadable" in err
    assert RunCache(out).load(key) is None and RunCache(out).load(payload["runs"][1]["key"]) is not None


# -- defect 8: Ctrl-C during the report phase -------------------------------------------------
def interrupt_savefig(monkeypatch):
    """Make matplotlib write half a PNG to its target and then receive Ctrl-C."""
    import io

    from matplotlib.figure import Figure

    real = Figure.savefig

    def half_then_interrupt(self, fname, *args, **kwargs):
        buffer = io.BytesIO()
        real(self, buffer, *args, **{**kwargs, "format": "png"})
        data = buffer.getvalue()
        if hasattr(fname, "write"):
            fname.write(data[: len(data) // 2])
        else:
            Path(fname).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half_then_interrupt)


@pytest.mark.parametrize("command", ["run", "report"])
def test_ctrl_c_in_the_report_phase_exits_130_and_keeps_whole_files(tmp_path, capsys, monkeypatch, command):
    path, out = write(tmp_path, TINY), tmp_path / "out"
    assert main(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    figures = sorted((out / "figures").glob("*.png"))
    before = {p.name: p.read_bytes() for p in figures}
    report = (out / "report.md").read_text()
    assert figures and all(is_complete_png(p) for p in figures)

    interrupt_savefig(monkeypatch)
    argv = ["run", path, "--out", out, "--quiet"] if command == "run" else ["report", out]
    code, err = main(argv, capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"bayesmf: interrupted; finished runs are kept in {out}; "
                                            f"rerun `bayesmf report {out}`")
    assert {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")} == before  # old, whole files
    assert (out / "report.md").read_text() == report
    assert leftovers(out) == []
    monkeypatch.undo()
    assert main(["report", out], capsys)[0] == 0  # the lock was released


def test_a_ctrl_c_lost_in_a_garbage_collector_callback_still_stops_the_run(tmp_path, capsys, monkeypatch):
    """Python cannot raise a KeyboardInterrupt out of a gc callback or ``__del__`` (JAX's gc
    callback catches many a Ctrl-C): it prints "Exception ignored" and runs on. The CLI must
    deliver it again and stop."""
    import signal
    import time

    from bayesmf.experiments import runner as runner_module

    class InterruptsWhenCollected:
        def __del__(self):
            raise KeyboardInterrupt

    real = runner_module.execute

    def execute(*args, **kwargs):
        InterruptsWhenCollected()  # collected at once: an unraisable KeyboardInterrupt
        for _ in range(1000):
            time.sleep(0.01)  # where the Ctrl-C is delivered again (within 10 s even on a loaded machine)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "execute", execute)
    path, out = write(tmp_path, TINY), tmp_path / "out"
    # Python's own SIGINT handler, which _thread.interrupt_main runs, whatever ran before this test
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, err = main(["run", path, "--out", out, "--quiet"], capsys)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    assert code == 130 and "Exception ignored" not in err
    assert err.strip().splitlines()[-1] == (f"bayesmf: interrupted; finished runs are kept in {out}; "
                                            "run the same command again to resume")
