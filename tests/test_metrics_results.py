"""EvaluationResult: what evaluate_ratings / evaluate_ranking return — a dict that prints as a compact
table of its scalar metrics, with the curves as DataFrames and plots."""

import json
import pickle

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import norm  # noqa: E402

import bayesmf  # noqa: E402
from bayesmf import splits  # noqa: E402
from bayesmf.data import synthetic  # noqa: E402
from bayesmf.errors import ConfigError, DataError  # noqa: E402
from bayesmf.metrics import evaluate_ranking, evaluate_ratings  # noqa: E402
from bayesmf.metrics.results import EvaluationResult  # noqa: E402


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=150, n_items=90, n_ratings=4000, rank=3, noise=0.5, seed=3)
    return splits.random(data.ratings, 0.2, seed=0)


@pytest.fixture(scope="module")
def gaussian(split):
    """A Gaussian predictive in NumPy and the evaluation of it: the metrics recomputed here."""
    _, test = split
    rng = np.random.default_rng(0)
    mean = test.values + rng.normal(0.0, 0.5, test.nnz)
    std = rng.uniform(0.3, 0.8, test.nnz)
    return mean, std, evaluate_ratings(test, (mean, std), n_boot=200, levels=(0.5, 0.9))


@pytest.fixture(scope="module")
def als(split):
    train, _ = split
    return bayesmf.ALS(rank=3, regularization=0.05, n_iter=8, seed=0).fit(train)


def test_a_rating_result_is_the_dict_it_was(split, gaussian):
    _, test = split
    mean, std, res = gaussian
    assert isinstance(res, EvaluationResult) and isinstance(res, dict) and res.kind == "ratings"
    y = test.values.astype(np.float64)
    assert res["clipped_to"] is None  # synthetic data have no rating scale
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean((mean - y) ** 2)), rel=1e-12)
    assert "coverage@0.9" in res and set(res.keys()) == set(dict(res)) and list(res) == list(res.keys())
    # the scalars serialise as the experiment runner stores them; arrays stay arrays
    row = res.scalars()
    assert json.loads(json.dumps(row)) == row and "calibration_curve" not in row and row["n"] == test.nnz
    assert isinstance(res["calibration_curve"]["observed"], np.ndarray)
    back = pickle.loads(pickle.dumps(res))
    assert back.kind == "ratings" and back["rmse"] == res["rmse"] and back.keys() == res.keys()


def test_the_repr_is_a_compact_table_of_the_scalars(gaussian):
    *_, res = gaussian
    text = repr(res)
    lines = text.splitlines()
    assert lines[0] == f"EvaluationResult(ratings, n={res['n']:,})"
    scalar_lines = [line for line in lines[1:] if not line.lstrip().startswith(("curve", "warning"))]
    assert [line.split()[0] for line in scalar_lines] == list(res.scalars())
    lo, hi = res["rmse_ci"]
    rmse_line = next(line for line in lines if line.split()[0] == "rmse")
    assert rmse_line.split()[1:] == [f"{res['rmse']:.4f}", f"[{lo:.4f},", f"{hi:.4f}]"]
    # the curves (101 calibration points, one risk-coverage point per rating) are named, not printed
    assert "curve 'calibration_curve': 101 points" in text
    assert f"curve 'risk_coverage': {res['n']:,} points" in text
    assert "curve 'rmse_by_std_decile': 10 points" in text
    assert "array(" not in text and len(lines) == 1 + len(res.scalars()) + 3
    html = res._repr_html_()
    assert html.count("<tr>") == 1 + len(res.scalars()) and "array(" not in html
    assert f"<td>{res['rmse']:.4f}</td><td>[{lo:.4f}, {hi:.4f}]</td>" in html


def test_the_table_carries_the_bootstrap_intervals(gaussian):
    *_, res = gaussian
    table = res.table()
    assert list(table.index) == list(res.scalars()) and list(table.columns) == ["value", "lo", "hi"]
    assert tuple(table.loc["mae", ["lo", "hi"]]) == res["mae_ci"]
    assert np.isnan(table.loc["crps", "lo"]) and table.loc["crps", "value"] == res["crps"]


def test_curves_as_dataframes_match_closed_forms(split, gaussian):
    _, test = split
    mean, std, res = gaussian
    y = test.values.astype(np.float64)
    cal = res.calibration
    assert list(cal.columns) == ["nominal", "observed"] and len(cal) == 101
    # observed coverage of the central p-interval of N(mean, std^2), counted directly
    half = norm.ppf(0.5 + cal["nominal"].to_numpy()[:, None] / 2) * std
    inside = np.abs(y - mean) <= half
    np.testing.assert_allclose(cal["observed"].to_numpy()[1:-1], inside.mean(axis=1)[1:-1], atol=1.0 / y.size)
    rc = res.risk_coverage_curve
    assert list(rc.columns) == ["coverage", "risk"] and len(rc) == test.nnz
    pred = mean  # no rating scale, nothing clipped
    order = np.argsort(std, kind="stable")
    np.testing.assert_allclose(rc["risk"].iloc[-1], np.sqrt(np.mean((pred - y) ** 2)), rtol=1e-9)
    np.testing.assert_allclose(rc["risk"].iloc[0], abs(pred - y)[order[0]], rtol=1e-9)
    bins = res.rmse_by_std
    assert list(bins.columns) == ["std_lo", "std_hi", "count", "rmse", "rms_std"] and bins["count"].sum() == test.nnz
    first = (std >= bins["std_lo"].iloc[0]) & (std < bins["std_hi"].iloc[0])
    assert bins["count"].iloc[0] == first.sum()
    assert bins["rmse"].iloc[0] == pytest.approx(np.sqrt(np.mean((pred - y)[first] ** 2)), rel=1e-9)


def test_plots_draw_the_curves(gaussian):
    *_, res = gaussian
    ax = res.plot_calibration(label="Gaussian")
    curve, diagonal = ax.get_lines()
    np.testing.assert_array_equal(curve.get_ydata(), res["calibration_curve"]["observed"])
    assert curve.get_label() == "Gaussian" and diagonal.get_label() == "calibrated"
    assert len(res.plot_calibration(ax=ax).get_lines()) == 3  # a second curve, one diagonal
    plt.close(ax.figure)
    ax = res.plot_risk_coverage()
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), res["risk_coverage"]["coverage"])
    assert line.get_label() == f"AURC {res['aurc']:.4f}"
    plt.close(ax.figure)
    ax = res.plot_rmse_by_std()
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), res["rmse_by_std_decile"]["rmse"])
    plt.close(ax.figure)


def test_a_point_model_has_no_curves(split, als):
    _, test = split
    res = evaluate_ratings(test, als, n_boot=50)
    assert "coverage@0.9" not in res and res.kind == "ratings"
    assert "curve" not in repr(res)
    with pytest.raises(DataError, match="no 'calibration_curve' curve"):
        _ = res.calibration
    with pytest.raises(DataError, match="no 'risk_coverage' curve"):
        res.plot_risk_coverage()


def test_ranking_results_print_their_protocol_and_warning(split, als):
    train, test = split
    full = evaluate_ranking(als, train, test, ks=(5, 10))
    assert isinstance(full, EvaluationResult) and full.kind == "ranking"
    assert repr(full).splitlines()[0] == "EvaluationResult(ranking, protocol=full)"
    assert {"ndcg@5", "recall@10", "mrr", "auc", "n_users"} <= set(full.scalars())
    assert 0.0 <= full["ndcg@10"] <= 1.0
    sampled = evaluate_ranking(als, train, test, ks=(10,), protocol="sampled", n_negatives=10)
    text = repr(sampled)
    assert text.splitlines()[0] == "EvaluationResult(ranking, protocol=sampled)"
    assert f"warning: {sampled['warning']}" in text and "hr@10_corrected" in text


def test_a_result_kind_is_checked():
    with pytest.raises(ConfigError, match="kind must be one of .* got 'rating'"):
        EvaluationResult({"rmse": 1.0}, kind="rating")
