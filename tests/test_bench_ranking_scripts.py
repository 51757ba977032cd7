"""Smoke tests of the issue-25 benchmark scripts (``--quick``: synthetic data, seconds)."""

import json

import numpy as np
import pytest

from benchmarks import bench_ranking, bench_strong_generalization


@pytest.mark.slow
def test_bench_ranking_quick(tmp_path, capsys):
    out = tmp_path / "rank.json"
    (result,) = bench_ranking.main(["--quick", "--models", "EASE", "Popularity", "--out", str(out)])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"EASE", "Popularity"}
    assert rows["EASE"]["tuned_on_validation"] and rows["EASE"]["params"]["regularization"] in (5.0, 50.0)
    # Popularity's full-catalogue HR@10 recomputed in NumPy on the same split
    from bayesmf.data import to_implicit

    train_x, test_x, _ = bench_ranking.load_protocol("synthetic", None, quick=True)
    train, _ = to_implicit(train_x)
    counts = train.item_counts.astype(float)
    hits = []
    for u, i in zip(test_x.users, test_x.items, strict=True):
        seen = train.items[train.users == u]
        others = np.setdiff1d(np.arange(train.n_items), np.append(seen, i))
        hits.append((counts[others] >= counts[i]).sum() < 10)  # pessimistic ties
    assert rows["Popularity"]["full_hr"] == pytest.approx(np.mean(hits))
    assert 0 < rows["EASE"]["corrected_hr"] < rows["EASE"]["sampled_hr"]
    assert json.loads(out.read_text())[0]["rows"][0]["model"] in rows
    assert "| EASE |" in capsys.readouterr().out


def test_bench_strong_generalization_quick(capsys):
    rows = bench_strong_generalization.main(["--quick", "--models", "EASE", "Popularity"])
    by_model = {r["model"]: r for r in rows}
    assert by_model["EASE"]["n_users"] == bench_strong_generalization.QUICK_HELDOUT
    for r in rows:
        assert 0 < r["recall@20"] <= 1 and 0 < r["recall@50"] <= 1
    assert "| Popularity |" in capsys.readouterr().out


def test_vae_annealing_reaches_the_cap_at_the_papers_fraction_of_the_epochs():
    # ML-1M's 4,838 training users in batches of 500: 10 updates per epoch, 200 epochs
    steps = bench_strong_generalization.anneal_steps(4838, 500, 200, 0.2)
    # the paper's code: 0.2 after 40,000 of its 234 x 200 updates, in epoch 171
    assert min(0.2, 170 * 10 / steps) < 0.2 <= min(0.2, 171 * 10 / steps)


def test_bench_strong_generalization_runs_the_autoencoders_with_validation_users(capsys):
    rows = bench_strong_generalization.main(["--quick", "--models", "MultDAE", "--n-epochs", "MultDAE=3"])
    (row,) = rows
    assert row["epochs_run"] == 3 and 1 <= row["best_epoch"] <= 3 and 0 < row["validation_ndcg@100"] <= 1
    assert row["fixed"]["n_epochs"] == 3
    assert "best epoch" in capsys.readouterr().out


@pytest.mark.parametrize("script", [bench_ranking, bench_strong_generalization])
def test_unknown_model_is_an_error(script):
    with pytest.raises(SystemExit, match="unknown model 'NoSuchModel'"):
        script.main(["--quick", "--models", "EASE", "NoSuchModel"])
