"""report.md and its figures, from an output directory alone (``bayesmf report DIR``).

Tables: for every data set, one row per model configuration (label + hyperparameters) and one
column per requested metric, each cell the mean over the configuration's runs (seeds x split
instances; a run repeating an earlier one's configuration, split instance and seed is left out
and noted) and, with n >= 2 runs, the half-width of the 95% Student-t interval of that mean,
``t_{0.975, n-1} s / sqrt(n)`` (s the sample standard deviation); plus median fit seconds and peak
memory. Figures (PNG, matplotlib's Agg backend, in ``figures/``): calibration curves and
risk-coverage curves (averaged over a configuration's runs, for models with a predictive
distribution), RMSE versus iterations (training RMSE from ``history_``) and versus posterior
draws (test RMSE of the running posterior mean), and ArviZ trace and rank plots with an R-hat/ESS
table of the hyperparameters of sampler runs (Gibbs, NUTS; first run of each configuration).
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path

import numpy as np

from bayesmf.errors import ConfigError
from bayesmf.experiments.results import read_results
from bayesmf.experiments.store import RunCache, atomic_savefig, atomic_write_text, output_lock

TRAIN_RMSE_KEYS = ("rmse", "train_rmse")  # history_ keys holding the training RMSE per iteration
TRACE_FACTORS = 2  # factor components shown in trace/rank plots


def mean_interval(values) -> tuple[float, float, int]:
    """``(mean, 95% Student-t half-width (NaN for n < 2), n)`` of a sample."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        return float(x.mean()) if n else float("nan"), float("nan"), n
    half = t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(half), n


def _cell(values) -> str:
    if not values:
        return "—"
    mean, half, n = mean_interval(values)
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {half:.4f}"


def _groups(records: list) -> tuple[dict, int]:
    """Successful runs grouped by (dataset, label, params), in grid order, each configuration
    counted once per (split instance, seed): ``(groups, number of duplicate runs left out)``.
    A configuration listed twice in a grid (which the schema now refuses) ran under two run keys;
    counting both would double n and narrow the interval."""
    groups, seen, duplicates = {}, set(), 0
    for r in records:
        if r["status"] != "ok":
            continue
        key = (r["dataset"], r["model"], json.dumps(r["params"]))
        if (*key, r["split"], r["seed"]) in seen:
            duplicates += 1
            continue
        seen.add((*key, r["split"], r["seed"]))
        groups.setdefault(key, []).append(r)
    return groups, duplicates


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _curves(out_dir: Path, record: dict) -> dict:
    """The curves kept in a run's cached record ({} when the record is gone; an unreadable one is
    an error, not a figure quietly averaged over fewer runs)."""
    path = RunCache(out_dir).json_path(record["key"])
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("curves", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise _unreadable(path, out_dir, exc) from None


def _unreadable(path: Path, out_dir: Path, problem) -> ConfigError:
    return ConfigError(f"{path}: {problem}; `bayesmf run FILE.toml --out {out_dir}` computes the run again")


def _params_text(params_json: str) -> str:
    params = json.loads(params_json)
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def write_report(out_dir, wait: bool = False) -> Path:
    """(Re)write ``out_dir/report.md`` and ``out_dir/figures/*.png`` from results.json and the
    cached run records, holding the directory's lock (busy: an
    :class:`~bayesmf.errors.OutputBusyError`, or with ``wait`` wait); returns the report's path."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: no such output directory; run `bayesmf run FILE.toml --out {out_dir}` first")
    with output_lock(out_dir, wait):
        return render_report(out_dir)


# backends that draw to files only: a report can use them as they are
FILE_BACKENDS = ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


@contextlib.contextmanager
def _agg_backend():
    """Draw without a display. A GUI backend is swapped for Agg and restored afterwards; a file
    backend, or a notebook's (``module://...``, e.g. the inline backend, which a swap would leave
    unable to show the caller's later figures), is kept: the report closes every figure it draws."""
    import matplotlib

    previous = matplotlib.get_backend()
    if previous.lower() in FILE_BACKENDS or previous.startswith("module://"):
        yield
        return
    matplotlib.use("Agg")
    try:
        yield
    finally:
        matplotlib.use(previous)


def render_report(out_dir) -> Path:
    """:func:`write_report` for a caller that holds the directory's lock (the runner). Every file
    is written whole, so an interruption leaves the previous report and figures; figures of the
    previous report that this one does not draw are removed last. Figures are drawn without a
    display (:func:`_agg_backend`); the caller's matplotlib backend is the same afterwards."""
    with _agg_backend():
        return _render_report(out_dir)


def _render_report(out_dir) -> Path:
    out_dir = Path(out_dir)
    results = read_results(out_dir)
    config, records, metrics = results["config"], results["runs"], results["metrics"]
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    groups, duplicates = _groups(records)
    exp = config["experiment"]
    lines = [f"# {exp['name']}", ""]
    if exp["description"]:
        lines += [exp["description"], ""]
    if exp["reference"]:
        lines += [f"Expected numbers: {exp['reference']}", ""]
    lines += [f"Experiment file: `{exp['file']}`. Status: **{results['status']}** "
              f"({results['n_finished']} of {results['n_runs']} runs finished, {results['n_failed']} failed). "
              f"Reproduce: `bayesmf run {exp['file']} --out {out_dir}`.", ""]
    lines += [f"Split: `{json.dumps(config['split'])}`; seeds {exp['seeds']}; "
              f"evaluation `{json.dumps(config['evaluation'])}`.", ""]
    datasets = list(dict.fromkeys(key[0] for key in groups))
    drawn = set()
    for dataset in datasets:
        mine = {k: v for k, v in groups.items() if k[0] == dataset}
        lines += [f"## {dataset}", ""]
        lines += [f"- {note}" for note in results.get("data_notes", {}).get(dataset, [])]
        lines += ["", *_table(mine, metrics), ""]
        lines += ["Cells: mean ± half-width of the 95% Student-t interval over the runs (seeds × split "
                  "instances); n runs per row. Fit time includes JIT compilation the first time a model meets "
                  "a data shape in the process.", ""]
        suffix = _slug(dataset)
        curves = {key: [_curves(out_dir, r) for r in runs] for key, runs in mine.items()}
        for title, name, plot in (("Calibration", "calibration", _plot_calibration),
                                  ("Risk-coverage", "risk_coverage", _plot_risk_coverage),
                                  ("RMSE versus iterations and posterior draws", "rmse_iterations", _plot_rmse)):
            path = figures / f"{name}_{suffix}.png"
            if plot(curves, path):
                drawn.add(path.name)
                lines += [f"### {title}", "", f"![{title}](figures/{path.name})", ""]
        sampler_lines, sampler_figures = _sampler_section(out_dir, mine, figures, suffix)
        lines += sampler_lines
        drawn.update(sampler_figures)
    if duplicates:
        lines += [f"Note: {duplicates} duplicate runs (the same configuration, split instance and seed as an "
                  "earlier run) are left out of the tables.", ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", "", "| model | params | dataset | split | seed | error |", "|---" * 6 + "|"]
        lines += [f"| {r['model']} | {_params_text(json.dumps(r['params']))} | {r['dataset']} | {r['split']} | "
                  f"{r['seed']} | {r['error'].replace('|', '/')} |" for r in failed]
        lines.append("")
    env = results["environment"]
    git = env.get("git") or {}
    install = env.get("bayesmf_install", "unknown install")  # results.json written before the key existed
    source = f"git {git['commit']}{' (dirty)' if git.get('dirty') else ''}" if git else "no git commit"
    lines += ["## Environment", "",
              f"bayesmf {env.get('bayesmf_version') or env['packages'].get('bayesmf')} ({install}, {source}); "
              f"Python {env['python']}, JAX backend `{env['jax_backend']}` with {env['jax_device_count']} device(s) "
              f"{env['jax_devices']}, x64 {env['jax_x64']}; {env['platform']}, {env['cpu_count']} CPUs; "
              f"written {env['written_at']}.",
              "", "Packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v), ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    for old in figures.glob("*.png"):
        if old.name not in drawn:
            old.unlink(missing_ok=True)
    return path


def _table(groups: dict, metrics: list) -> list[str]:
    head = ["model", "params", "n", *metrics, "fit s (median)", "peak MiB (max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (_, label, params), runs in groups.items():
        cells = [label, _params_text(params), str(len(runs))]
        cells += [_cell([r["metrics"][m] for r in runs if m in r["metrics"]]) for m in metrics]
        cells += [f"{np.median([r['fit_seconds'] for r in runs]):.2f}",
                  f"{max(r['peak_memory_mb'] for r in runs):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _legend_name(key) -> str:
    _, label, params = key
    text = _params_text(params)
    return label if text == "defaults" else f"{label} ({text})"


def _plot_label(key) -> str:
    """Legend text: the full name, wrapped so that long parameter lists stay inside the figure."""
    import textwrap

    return textwrap.fill(_legend_name(key), 40)


def _figure(ncols: int = 1):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _mean_curve(runs: list, name: str, x: str, y: str):
    found = [c[name] for c in runs if name in c]
    if not found:
        return None
    return np.asarray(found[0][x]), np.mean([np.asarray(c[y]) for c in found], axis=0)


def _plot_mean_curves(curves: dict, path: Path, name: str, x: str, y: str, **axes) -> bool:
    """One line per model: the ``(x, y)`` curve ``name`` averaged over the model's runs.
    ``axes`` go to ``Axes.set``; ``diagonal=True`` adds the y = x reference. False if no curve."""
    diagonal = axes.pop("diagonal", False)
    fig, (ax,) = _figure()
    drawn = False
    for key, runs in curves.items():
        curve = _mean_curve(runs, name, x, y)
        if curve is not None:
            ax.plot(*curve, label=_plot_label(key))
            drawn = True
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return False
    if diagonal:
        ax.plot([0, 1], [0, 1], "k:", label="calibrated")
    ax.set(**axes)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _plot_calibration(curves: dict, path: Path) -> bool:
    return _plot_mean_curves(curves, path, "calibration", "nominal", "observed", diagonal=True,
                             xlabel="nominal central-interval level", ylabel="observed coverage",
                             title="Calibration", xlim=(0, 1), ylim=(0, 1))


def _plot_risk_coverage(curves: dict, path: Path) -> bool:
    return _plot_mean_curves(curves, path, "risk_coverage", "coverage", "risk",
                             xlabel="coverage (most confident fraction kept)", ylabel="RMSE of kept predictions",
                             title="Risk-coverage (lower is better)")


def _plot_rmse(curves: dict, path: Path) -> bool:
    history, draws = {}, {}
    for key, runs in curves.items():
        first = runs[0] if runs else {}
        hist = first.get("history", {})
        train_key = next((k for k in TRAIN_RMSE_KEYS if k in hist), None)
        if train_key:
            history[key] = hist[train_key]
        if "rmse_vs_draws" in first:
            draws[key] = first["rmse_vs_draws"]
    if not history and not draws:
        return False
    panels = [p for p in (history, draws) if p]
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes, panels):
        for key, values in panel.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=_plot_label(key))
        if panel is history:
            ax.set(xlabel="iteration (sweep / epoch)", ylabel="training RMSE", title="Training RMSE per iteration")
        else:
            ax.set(xlabel="posterior draws averaged (per chain)", ylabel="test RMSE",
                   title="Test RMSE of the running posterior mean")
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _inference_data(draws: dict):
    import arviz as az

    posterior = {k: v for k, v in draws.items() if k != "diverging"}
    dims = {k: ["factor"] for k, v in posterior.items() if v.ndim == 3}
    stats = {"diverging": draws["diverging"].astype(bool)} if "diverging" in draws else None
    return az.from_dict(posterior=posterior, sample_stats=stats, dims=dims)


def _sampler_section(out_dir: Path, groups: dict, figures: Path, suffix: str) -> tuple[list[str], list[str]]:
    """Trace and rank plots plus an R-hat/ESS table for the first run of each sampler
    configuration: ``(report lines, names of the figures written)``."""
    import arviz as az
    import matplotlib.pyplot as plt

    cache = RunCache(out_dir)
    lines, rows, written = [], [], []
    for key, runs in groups.items():
        run = next((r for r in runs if r.get("has_draws")), None)
        if run is None:
            continue
        draws = cache.load_draws(run["key"])
        if draws is None:
            raise _unreadable(cache.draws_path(run["key"]), out_dir, "the sampler draws are missing or unreadable")
        idata = _inference_data(draws)
        names = list(idata.posterior.data_vars)
        rank = idata.posterior.sizes.get("factor", 0)
        coords = {"factor": list(range(min(TRACE_FACTORS, rank)))} if rank else {}
        slug = f"{_slug(_legend_name(key))}_{suffix}"
        with warnings.catch_warnings():
            # ArviZ 0.23 calls a matplotlib helper deprecated in 3.11, and warns on one-chain runs
            warnings.simplefilter("ignore")
            axes = az.plot_trace(idata, var_names=names, coords=coords, compact=True)
            _save(np.asarray(axes).ravel()[0].figure, figures / f"trace_{slug}.png")
            axes = az.plot_rank(idata, var_names=names, coords=coords)
            _save(np.asarray(axes).ravel()[0].figure, figures / f"rank_{slug}.png")
            plt.close("all")
            summary = az.summary(idata, var_names=names, kind="diagnostics")
        written += [f"trace_{slug}.png", f"rank_{slug}.png"]
        for name in names:
            part = summary[summary.index.str.startswith(name)]
            divergent = int(draws["diverging"].sum()) if "diverging" in draws else "—"
            rows.append(f"| {_legend_name(key)} | {name} | {part['r_hat'].max():.3f} | {part['ess_bulk'].min():.0f} "
                        f"| {part['ess_tail'].min():.0f} | {divergent} |")
        lines += [f"### Sampler diagnostics: {_legend_name(key)} ({run['split']}, seed {run['seed']})", "",
                  f"![trace](figures/trace_{slug}.png)", "", f"![rank](figures/rank_{slug}.png)", ""]
    if rows:
        lines += ["Hyperparameters (first run of each sampler configuration; Lambda: diagonal entries): worst "
                  "R-hat and smallest bulk/tail ESS over components (R-hat needs 2+ chains to compare chains). "
                  "The factor-space hyperparameters mu and Lambda are identified only up to a rotation of the "
                  "factors, so slow mixing there is expected and harmless for predictions; the noise precision "
                  "alpha (when learned) is identified.", "",
                  "| model | variable | max R-hat | min ESS bulk | min ESS tail | divergences |",
                  "|---|---|---|---|---|---|", *rows, ""]
    return lines, written
