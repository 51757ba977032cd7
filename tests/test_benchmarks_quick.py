"""The benchmark harness must not rot: its shared scoring code is right, and ``--quick`` runs the
bayesmf side of every pair on tiny synthetic data (peers run only in the full mode, not here)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import __main__ as bench_main
from benchmarks import pairs, report, runner

sys.path.append(str(Path(runner.PEERS_DIR)))
_common = importlib.import_module("_common")
bayesmf_side = importlib.import_module("bayesmf_side")

# Each quick job is a fresh process that compiles its estimator's JAX programs: 10-90 s per pair
# on a loaded 2-core machine, almost all of it compilation. One pair stays in the fast suite;
# the rest run with the slow marker (``make test`` runs them all).
FAST_PAIR = "funk-sgd"


def _split(train, test, n_users, n_items, kind="explicit", scale=(1.0, 5.0)):
    (tu, ti, tv), (su, si, sv) = (np.asarray(a).T for a in (train, test))
    return {"train_users": tu.astype(np.int32), "train_items": ti.astype(np.int32), "train_values": tv,
            "test_users": su.astype(np.int32), "test_items": si.astype(np.int32), "test_values": sv,
            "n_users": n_users, "n_items": n_items, "rating_min": scale[0], "rating_max": scale[1], "kind": kind}


def test_explicit_metrics_clip_then_score():
    data = _split([(0, 0, 3.0)], [(0, 1, 4.0), (1, 0, 1.0), (1, 1, 5.0)], 2, 2)
    # predictions 6 -> clipped to 5 (error 1), 0.5 -> clipped to 1 (error 0), 3 (error -2)
    m = _common.explicit_metrics([6.0, 0.5, 3.0], data)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0 + 4) / 3))
    assert m["mae"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        _common.explicit_metrics([1.0, 2.0], data)


def test_ranking_metrics_exclude_training_positives():
    # user 0 trained on item 0 (scored highest, must be skipped); test positive item 2
    # user 1 test positives items 0 and 3; ranked 3 first, then 0 -> both hit within the top 10
    n_items = 12
    data = _split([(0, 0, 1.0), (1, 5, 1.0)], [(0, 2, 1.0), (1, 0, 1.0), (1, 3, 1.0)], 2, n_items, "implicit")
    base = -np.arange(n_items, dtype=float)  # item j scores -j: items 0, 1, 2, ... in that order

    def score_users(batch):
        s = np.tile(base, (len(batch), 1))
        s[batch == 1, 3] = 10.0
        return s

    m = _common.ranking_metrics(score_users, data)
    disc = 1 / np.log2(np.arange(2, 12))
    # user 0: ranking 1, 2, 3, ... (item 0 excluded): item 2 at position 2 -> recall 1, ndcg disc[1]/disc[0]
    # user 1: ranking 3, 0, 1, 2, 4, ... (item 5 excluded): hits at positions 1, 2 -> recall 1, ndcg 1
    assert m["recall_at_10"] == pytest.approx(1.0)
    assert m["ndcg_at_10"] == pytest.approx((disc[1] / disc[0] + 1.0) / 2)


def test_sampled_metrics_rank_among_candidates_with_expected_ties():
    # two test rows; candidates: column 0 the held-out item, then 99 negatives
    n_items = 200
    data = _split([(0, 199, 1.0)], [(0, 0, 1.0), (1, 1, 1.0)], 2, n_items, "implicit")
    data["candidates"] = np.array([[0, *range(100, 199)], [1, *range(100, 199)]], dtype=np.int32)

    def score_users(batch):
        s = np.zeros((len(batch), n_items))
        s[batch == 0, 100:104] = 1.0  # user 0: 4 negatives above the held-out item (score 0.5)
        s[batch == 0, 0] = 0.5
        s[batch == 1, 100:108] = 1.0  # user 1: 8 negatives above it, 4 tied with it at 0.5
        s[batch == 1, 108:112] = 0.5
        s[batch == 1, 1] = 0.5
        return s

    m = _common.ranking_metrics(score_users, data)
    disc = 1 / np.log2(np.arange(2, 102))
    # user 0: rank 4 exactly -> hit, ndcg disc[4]
    # user 1: 8 above, 4 tied: rank uniform on 8..12 -> P(rank < 10) = 2/5, E[ndcg] = (disc[8] + disc[9]) / 5
    assert m["sampled_hr_at_10"] == pytest.approx((1.0 + 2 / 5) / 2)
    assert m["sampled_ndcg_at_10"] == pytest.approx((disc[4] + (disc[8] + disc[9]) / 5) / 2)


def test_canonical_params_map_onto_constructor_names():
    class Toy:
        def __init__(self, rank=1, n_epochs=1, learning_rate=0.1, regularization=0.0, n_warmup=0):
            pass

    kwargs, ignored = bayesmf_side.map_params(Toy, {"rank": 5, "n_iter": 7, "lr": 0.01, "reg": 0.2,
                                                    "burn_in": 3, "alpha": 9.0})
    assert kwargs == {"rank": 5, "n_epochs": 7, "learning_rate": 0.01, "regularization": 0.2, "n_warmup": 3}
    assert ignored == ["alpha"]


def test_thread_env_pins_every_pool_to_the_same_count():
    env = runner.thread_env(2)
    assert {env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LK_NUM_THREADS")} == {"2"}
    assert "intra_op_parallelism_threads=2" in env["XLA_FLAGS"]
    assert "--xla_cpu_multi_thread_eigen=false" in runner.thread_env(1)["XLA_FLAGS"]


def test_median_row_takes_medians_and_reports_failures():
    runs = [{"rmse": 0.9, "fit_seconds": 3.0}, {"error": "exit 1: boom"}, {"rmse": 0.8, "fit_seconds": 1.0},
            {"rmse": 1.0, "fit_seconds": 2.0}]
    row = runner.median_row(runs)
    assert (row["repeats"], row["of"], row["rmse"], row["fit_seconds"]) == (3, 4, 0.9, 2.0)
    assert row["failed_repeats"] == ["exit 1: boom"]
    assert runner.median_row([{"unavailable": "bayesmf.X not available yet"}])["error"].endswith("not available yet")


def test_report_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Someone else's section\nkeep me\n")
    report.write(path, f"{report.BEGIN}\nfirst\n{report.END}\n")
    path.write_text(path.read_text() + "\n## Appended later by someone\nkeep me too\n")
    report.write(path, f"{report.BEGIN}\nsecond\n{report.END}\n")
    text = path.read_text()
    assert "keep me\n" in text and "keep me too" in text and "second" in text and "first" not in text
    assert text.count(report.BEGIN) == 1



def test_merge_keeps_earlier_rows_that_were_not_rerun_in_pair_order():
    earlier = [{"pair": "nmf", "protocol": "ml100k-u1", "v": 1}, {"pair": "funk-sgd", "protocol": "ml1m-90-10", "v": 1},
               {"pair": "bpmf-gibbs", "protocol": "ml100k-u1", "v": 1}]
    new = [{"pair": "bpmf-gibbs", "protocol": "ml100k-u1", "v": 2}]
    merged = bench_main.merge_records(earlier, new)
    assert [(r["pair"], r["protocol"], r["v"]) for r in merged] == [
        ("funk-sgd", "ml1m-90-10", 1), ("nmf", "ml100k-u1", 1), ("bpmf-gibbs", "ml100k-u1", 2)]

def test_missing_estimator_is_reported_not_failed(tmp_path):
    from benchmarks.data import write_split

    split = write_split("synthetic", tmp_path)
    result = runner.run_job(pairs.Job("bayesmf", "NoSuchEstimator", {}), split, threads=1)
    assert "not available yet" in result["unavailable"]


@pytest.mark.parametrize(
    "pair", [pytest.param(p.name, marks=[] if p.name == FAST_PAIR else [pytest.mark.slow]) for p in pairs.PAIRS])
def test_quick_mode_runs_the_bayesmf_side(pair, tmp_path):
    out = tmp_path / "quick.json"
    code = bench_main.main(["--quick", "--pairs", pair, "--json", str(out)])
    (record,) = json.loads(out.read_text())
    (row,) = record["jobs"].values()
    if "not available yet" in row.get("error", ""):  # a pair written ahead of its estimator
        pytest.skip(row["error"])
    assert code == 0, row.get("error")  # an estimator that fails to import fails here, never skips
    assert row["repeats"] == 1 and row["fit_seconds"] > 0 and row["peak_rss_mb"] > 0
    quality = row["recall_at_10"] if record["protocol"].endswith("implicit") else row["rmse"]
    assert np.isfinite(quality) and quality > 0
    if "rmse" in row:  # synthetic ratings on 1..5 with unit signal: any fitted model beats 2.0
        assert row["rmse"] < 2.0
