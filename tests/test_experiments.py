"""Experiment runner: schema errors, grid expansion, seeds, cache, reproducibility, files, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bayesmf
from bayesmf.errors import ConfigError, DataNotFoundError
from bayesmf.experiments import (
    CSV_COLUMNS,
    derive_seed,
    expand,
    load_experiment,
    load_template,
    run_experiment,
    template_names,
    template_text,
    write_report,
)
from bayesmf.experiments import runner as runner_module

TINY = """
[experiment]
name = "tiny"
seeds = [0, 1]

[data]
name = "synthetic"

[data.synthetic]
n_users = 60
n_items = 40
n_ratings = 900
rank = 2
noise = 0.5
seed = 3

[split]
method = "random"
test_fraction = 0.2
seed = 1

[evaluation]
metrics = ["rmse", "mae", "rmse_truth", "coverage@0.9", "crps", "calibration_area", "ndcg@5"]
threshold = 3.5
n_boot = 20

[[models]]
model = "BPMF"
label = "bpmf"
rank = 2
chains = 2
n_warmup = 5
n_samples = 10
map_iter = 2
noise_prior = [1.0, 1.0]

[[models]]
model = "Baseline"
n_iter = 3

[[models]]
model = "NMF"          # fails in every run: synthetic ratings can be negative
rank = 2
n_iter = 2
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- schema -----------------------------------------------------------------------------------
BAD = [
    # (replace this, with this, the message must contain all of these)
    ('name = "tiny"', 'name = "tiny"\ncolour = "red"', ["[experiment].colour", "allowed keys", "seeds"]),
    ('model = "Baseline"', 'model = "SVD"', ["models[1].model", "'SVD'", "FunkSVD", "BPMF"]),
    ('"ndcg@5"]', '"ndcg@5", "rsme"]', ["[evaluation].metrics[7]", "'rsme'", "coverage@L"]),
    ("n_iter = 3", 'n_iter = "three"', ["models[1].n_iter", "integer", "'three'"]),
    ("n_iter = 3", "n_iters = 3", ["models[1].n_iters", "unknown hyperparameter of Baseline", "reg_user"]),
    ('method = "random"', 'method = "shuffle"', ["[split].method", "'shuffle'", "kfold", "predefined"]),
    ("test_fraction = 0.2", "k = 5", ["[split].k", "method = 'random'", "test_fraction"]),
    ("chains = 2", 'chains = 2\ninference = "mcmc"', ["models[0]", "inference must be one of", "gibbs"]),
    ("chains = 2", "chains = 2\nseed = 4", ["models[0].seed", "set by the runner"]),
    ('name = "synthetic"', 'name = "movielens-7m"', ["[data].name", "movielens-100k", "synthetic"]),
    ("seeds = [0, 1]", "seeds = [0, 0]", ["[experiment].seeds", "repeats"]),
]


@pytest.mark.parametrize("old, new, expected", BAD, ids=[b[2][0] for b in BAD])
def test_bad_input_names_the_file_the_key_and_the_allowed_values(tmp_path, old, new, expected):
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment(write(tmp_path, "[experiment\nname = 1"))
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "absent.toml")


def test_missing_data_set_fails_before_any_computation(tmp_path, monkeypatch):
    text = TINY.replace('name = "synthetic"', f'name = "movielens-100k"\ndata_dir = "{tmp_path}"')
    text = text[:text.index("[data.synthetic]")] + text[text.index("[split]"):]
    text = text.replace('"rmse_truth", ', "")
    experiment = load_experiment(write(tmp_path, text))
    monkeypatch.setattr(runner_module, "execute", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(DataNotFoundError) as info:
        run_experiment(experiment, tmp_path / "out", progress=False)
    assert "[data].name" in str(info.value) and str(tmp_path / "ml-100k" / "u.data") in str(info.value)


# -- grid and seeds ---------------------------------------------------------------------------
GRID = TINY.replace('method = "random"\ntest_fraction = 0.2', 'method = "kfold"\nk = 3').replace(
    "n_iter = 3", "n_iter = 3\nreg_user = [5.0, 15.0]\nreg_item = [1.0, 2.0, 3.0]")


def test_grid_expands_datasets_folds_models_points_and_seeds_in_order(tmp_path):
    runs = expand(load_experiment(write(tmp_path, GRID)))
    # 3 folds x (1 BPMF + 2*3 Baseline points + 1 NMF) x 2 seeds
    assert len(runs) == 3 * (1 + 6 + 1) * 2
    assert [r.index for r in runs] == list(range(len(runs)))
    fold1_baseline = [r for r in runs if r.split == "fold1" and r.model == "Baseline"]
    # last axis fastest, seeds innermost
    expected = [(u, i, s) for u in (5.0, 15.0) for i in (1.0, 2.0, 3.0) for s in (0, 1)]
    assert [(r.params["reg_user"], r.params["reg_item"], r.seed) for r in fold1_baseline] == expected
    assert [r.position for r in fold1_baseline[::2]] == [(0, 0, 1, g) for g in range(6)]
    assert {r.split for r in runs} == {"fold1", "fold2", "fold3"}
    assert len({r.key for r in runs}) == len(runs)


def test_derived_seeds_follow_the_documented_formula_and_do_not_depend_on_later_entries(tmp_path):
    runs = expand(load_experiment(write(tmp_path, GRID)))
    for r in runs[:10]:
        by_hand = np.random.SeedSequence(entropy=r.seed, spawn_key=r.position).generate_state(1)[0] % 2**31
        assert r.derived_seed == derive_seed(r.seed, r.position) == int(by_hand)
        assert r.config["derived_seed"] == r.derived_seed
    bpmf = [r for r in runs if r.model == "BPMF"]
    assert len({r.derived_seed for r in bpmf}) == len(bpmf)  # folds and seeds never share a stream
    assert bpmf[0].estimator_params()["seed"] == bpmf[0].derived_seed
    more = expand(load_experiment(write(tmp_path, GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"), "b.toml")))
    same = {(r.position, r.seed): (r.derived_seed, r.key) for r in more}
    assert all(same[(r.position, r.seed)] == (r.derived_seed, r.key) for r in runs)


def test_run_keys_change_with_the_numbers_not_with_labels(tmp_path):
    base = {r.position + (r.seed,): r.key for r in expand(load_experiment(write(tmp_path, TINY)))}
    relabelled = expand(load_experiment(write(tmp_path, TINY.replace('label = "bpmf"', 'label = "B"'), "l.toml")))
    assert {r.position + (r.seed,): r.key for r in relabelled} == base
    changed = expand(load_experiment(write(tmp_path, TINY.replace("n_samples = 10", "n_samples = 11"), "c.toml")))
    keys = {r.position + (r.seed,): r.key for r in changed}
    assert [keys[p] != base[p] for p in base] == [p[2] == 0 for p in base]  # only the BPMF runs change


# -- running ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The tiny experiment through the CLI in a subprocess."""
    folder = tmp_path_factory.mktemp("cli")
    path = write(folder, TINY)
    out = folder / "out"
    command = [sys.executable, "-m", "bayesmf", "run", str(path), "--out", str(out), "--quiet"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=240)
    first_csv = (out / "results.csv").read_text() if (out / "results.csv").is_file() else None
    return path, out, first, first_csv


def metric_values(csv_text: str) -> list[tuple]:
    return [(r["model"], r["seed"], r["metric"], r["value"]) for r in csv.DictReader(csv_text.splitlines())]


@pytest.mark.slow
def test_cli_writes_tidy_results_report_and_figures(cli_run):
    path, out, first, first_csv = cli_run
    assert first.returncode == 1, first.stderr  # the NMF runs failed, the others finished
    assert "6 runs: 4 computed, 0 from the cache, 2 failed" in first.stdout
    rows = read_csv(out / "results.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["model"], r["seed"]) for r in ok} == {("bpmf", "0"), ("bpmf", "1"), ("Baseline", "0"), ("Baseline", "1")}
    bpmf_metrics = {r["metric"] for r in ok if r["model"] == "bpmf"}
    assert bpmf_metrics == {"rmse", "mae", "rmse_truth", "coverage@0.9", "crps", "calibration_area", "ndcg@5"}
    # a point model has no predictive distribution: no uncertainty rows, never a made-up value
    assert {r["metric"] for r in ok if r["model"] == "Baseline"} == {"rmse", "mae", "rmse_truth", "ndcg@5"}
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 2 and all(r["metric"] == "error" and "needs values >= 0" in r["error"] for r in errors)
    assert all(float(r["fit_seconds"]) > 0 and float(r["peak_memory_mb"]) > 50 for r in ok)

    # the numbers are the package's: refit the deterministic baseline on the same split by hand
    data = bayesmf.datasets.synthetic(n_users=60, n_items=40, n_ratings=900, rank=2, noise=0.5, seed=3)
    train, test = bayesmf.splits.random(data.ratings, 0.2, seed=1)
    model = bayesmf.Baseline(n_iter=3).fit(train)
    expected = bayesmf.metrics.rmse(test.values, model.predict(test.users, test.items, clip=False))
    got = [float(r["value"]) for r in ok if r["model"] == "Baseline" and r["metric"] == "rmse"]
    assert got == [pytest.approx(expected, rel=1e-6)] * 2

    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["n_finished"] == 4 and results["n_failed"] == 2
    env = results["environment"]
    assert env["jax_backend"] == "cpu" and env["jax_device_count"] >= 1 and env["packages"]["jax"]
    assert results["config"]["models"][0]["fixed"]["n_samples"] == 10
    report = (out / "report.md").read_text()
    assert "| bpmf |" in report and "## Failed runs" in report and "Sampler diagnostics" in report
    for name in ("calibration", "risk_coverage", "rmse_iterations"):
        assert (out / "figures" / f"{name}_synthetic.png").stat().st_size > 5000
    assert len(list((out / "figures").glob("trace_*.png"))) == 1
    assert len(list((out / "figures").glob("rank_*.png"))) == 1


def test_rerun_is_served_from_the_cache_with_identical_results(cli_run, monkeypatch):
    path, out, _, first_csv = cli_run
    attempted = []

    def record_only(spec, *args, **kwargs):
        attempted.append(spec.model)
        return {**runner_module.base_record(spec), "status": "error", "error": "not run"}, None

    monkeypatch.setattr(runner_module, "execute", record_only)
    outcome = run_experiment(load_experiment(path), out, progress=False, log=lambda *_: None)
    assert attempted == ["NMF", "NMF"]  # failed runs are tried again; finished ones come from the cache
    assert (outcome.computed, outcome.cached, outcome.failed) == (0, 4, 2)
    assert metric_values((out / "results.csv").read_text()) == metric_values(first_csv)


@pytest.mark.slow
def test_force_recomputes_bit_identical_metrics(cli_run):
    path, out, _, first_csv = cli_run
    forced = run_experiment(load_experiment(path), out, force=True, progress=False, log=lambda *_: None)
    assert (forced.computed, forced.cached, forced.failed) == (4, 0, 2)
    # this process recomputed what the CLI's subprocess computed, to the last bit (floats written with repr)
    assert metric_values((out / "results.csv").read_text()) == metric_values(first_csv)


def test_ctrl_c_keeps_finished_runs_and_a_rerun_resumes(tmp_path, monkeypatch):
    text = TINY[:TINY.index("[[models]]")] + '[[models]]\nmodel = "Baseline"\nn_iter = [2, 3]\n'
    experiment = load_experiment(write(tmp_path, text))
    real = runner_module.execute
    calls = []

    def interrupt_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "execute", interrupt_on_third)
    stopped = run_experiment(experiment, tmp_path / "out", progress=False, log=lambda *_: None)
    assert stopped.interrupted and stopped.computed == 2
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["n_finished"] == 2
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 2
    resumed = run_experiment(experiment, tmp_path / "out", progress=False, log=lambda *_: None)
    assert (resumed.computed, resumed.cached, resumed.interrupted) == (2, 2, False)


@pytest.mark.slow
def test_a_report_leaves_the_callers_matplotlib_backend_as_it_was(cli_run, monkeypatch):
    import matplotlib

    _, out, _, _ = cli_run
    previous = matplotlib.get_backend()
    switched = []
    monkeypatch.setattr(matplotlib, "use", lambda name, *a, **k: switched.append(name))
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "module://matplotlib_inline.backend_inline")
    write_report(out)  # a notebook's backend: kept (the test of notebook 6 checks its later figures show)
    assert switched == []
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "TkAgg")
    write_report(out)  # a GUI backend: Agg while drawing, then back
    assert switched == ["Agg", "TkAgg"]
    monkeypatch.undo()
    assert matplotlib.get_backend() == previous
    assert {p.name.split("_")[0] for p in (out / "figures").glob("*.png")} >= {"calibration", "risk"}


def test_shipped_experiment_files_are_valid():
    folder = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(folder.glob("*.toml"))
    assert {f.stem for f in files} >= {"surprise-ml100k", "surprise-ml1m", "pmf-vs-bpmf-ml1m",
                                       "ncf-sampled-vs-full-ml1m", "uncertainty-study"}
    experiments = [load_experiment(f) for f in files] + [load_template(name) for name in template_names()]
    for experiment in experiments:
        assert expand(experiment) and experiment.reference  # every shipped file states its expected numbers


def test_the_demo_experiment_ships_inside_the_package_only():
    assert "quickstart" in template_names()
    experiment = load_template("quickstart")
    assert experiment.path == "bayesmf:experiments/templates/quickstart.toml"
    assert experiment.datasets == ["synthetic"]  # no download
    # one copy: the repository's experiments/ folder holds the other examples, not a duplicate
    assert not (Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml").exists()
    with pytest.raises(ConfigError, match="no shipped experiment named 'nope'; shipped: .*quickstart"):
        load_template("nope")


def test_demo_print_writes_the_shipped_file(capsys):
    from bayesmf.cli import main

    assert main(["demo", "--print"]) == 0
    assert capsys.readouterr().out == template_text("quickstart")
