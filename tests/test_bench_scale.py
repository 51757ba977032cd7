"""Smoke test of benchmarks/bench_scale.py at a tiny size: one fresh process per configuration,
and its figures are consistent with each other."""

import json
import math

from benchmarks import bench_scale


def test_bench_scale_tiny_als(tmp_path, capsys):
    out = tmp_path / "rows.json"
    code = bench_scale.main(["--sizes", "2000", "--items", "40", "--users", "100", "--models", "als", "--sweeps", "3",
                             "--timeout", "240", "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert (row["nnz"], row["n_users"], row["n_items"], row["devices"]) == (2000, 100, 40, 1)
    assert row["sweeps_timed"] == 2 and row["sweep_s"] > 0
    assert math.isclose(row["updates_per_s"], 2000 / row["sweep_s"], rel_tol=1e-3)
    assert 0 < row["setup_s"] < row["fit_s"] and row["before_driver_s"] < row["setup_s"]
    assert 0 < row["peak_rss_data_gib"] <= row["peak_rss_gib"] < 4
    printed = capsys.readouterr().out
    assert "| 2,000 | als | 1 | 100 |" in printed


def test_bench_scale_reports_a_failing_configuration(capsys):
    # more ratings than the matrix holds: the child fails, the row says why, the exit code is 1
    code = bench_scale.main(["--sizes", "5000", "--items", "10", "--users", "20", "--models", "als",
                             "--timeout", "120"])
    assert code == 1
    assert "must lie between" in capsys.readouterr().out
