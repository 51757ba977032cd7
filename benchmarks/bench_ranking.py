"""Top-N recommenders side by side on the leave-one-out protocols of issue 25.

Protocols (every rating an implicit positive, :func:`bayesmf.data.to_implicit`):

* ``ml-1m``: MovieLens-1M, one positive per user held out (the NCF protocol of He et al. 2017
  holds out the latest; the shared ML-1M copy lacks some timestamps, so a random one,
  ``leave_one_out(by="random")``, as ``experiments/ncf-sampled-vs-full-ml1m.toml``);
* ``ml-latest-small``: MovieLens latest-small, a temporal leave-last-out
  (``leave_one_out(by="time")``: its timestamps are complete);
* ``synthetic`` (``--quick``): a small BPMF synthetic set, a random positive held out.

Each model is scored on the held-out positive over the full catalogue (HR@10, NDCG@10, training
items excluded) and with the sampled protocol (1 positive + 99 sampled negatives, as in NCF)
plus its Krichene-Rendle corrected estimate (:mod:`bayesmf.metrics.sampled`); the table ranks the
models under both so that a change of order shows. Hyperparameters of ``EASE``, ``ImplicitALS``
and ``BPR`` are chosen on a validation split carved from TRAINING
(:func:`bayesmf.data.splits.validation_split`: one training positive per user, the latest when
the timestamps are complete, else a random one) by
full-catalogue NDCG@10, then the model is refitted on the whole training set. ``BPMF`` is fitted
on the training positives with their star ratings as values ("BPMF-on-positives"; on the
all-ones implicit values it would have nothing to fit); the others on the implicit values (1).

    BAYESMF_DATA=/work/shared/data python benchmarks/bench_ranking.py --models EASE ImplicitALS BPMF Popularity
    python benchmarks/bench_ranking.py --quick --models EASE Popularity      # seconds, synthetic

Models are catalogue names (:mod:`bayesmf.experiments.catalogue`); an unknown name is an error.
Fit seconds include JAX compilation. Prints a Markdown table and writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ("NeuMF", "GMF", "MLP", "BPR", "EASE", "ImplicitALS", "BPMF")
DATASETS = {"ml-1m": "movielens-1m", "ml-latest-small": "movielens-latest-small", "ml-100k": "movielens-100k"}
K = 10
N_NEGATIVES = 99

# Tuned on the validation split (full grid, NDCG@10); other models use FIXED.
GRIDS = {
    "EASE": {"regularization": [50.0, 200.0, 500.0, 1500.0]},
    "ImplicitALS": {"regularization": [0.1, 10.0], "alpha": [1.0, 10.0]},
    "BPR": {"regularization": [1e-5, 1e-4, 1e-3]},
}
QUICK_GRIDS = {
    "EASE": {"regularization": [5.0, 50.0]},
    "ImplicitALS": {"regularization": [0.1, 1.0]},
    "BPR": {"regularization": [1e-4, 1e-3]},
}
FIXED = {
    "ImplicitALS": {"rank": 64, "n_iter": 15},
    "BPMF": {"rank": 10, "n_samples": 100, "n_warmup": 50},
}
QUICK_FIXED = {
    "ImplicitALS": {"rank": 8, "n_iter": 3},
    "BPMF": {"rank": 4, "n_samples": 10, "n_warmup": 5},
    "NeuMF": {"n_epochs": 1}, "GMF": {"n_epochs": 1}, "MLP": {"n_epochs": 1}, "BPR": {"n_epochs": 2},
    "MultVAE": {"n_epochs": 2}, "MultDAE": {"n_epochs": 2},
}
LABELS = {"BPMF": "BPMF-on-positives"}
EXPLICIT_VALUES = ("BPMF",)  # fitted on the star ratings of the training positives


def resolve_models(names) -> dict:
    """Catalogue name -> class; an unknown name is a SystemExit naming it and the known ones."""
    import bayesmf
    from bayesmf.experiments.catalogue import model_class

    out = {}
    for name in names:
        if name not in bayesmf.ESTIMATOR_MODULES:
            raise SystemExit(f"unknown model {name!r}; the catalogue has {sorted(bayesmf.ESTIMATOR_MODULES)}")
        out[name] = model_class(name)
    return out


def settings(name: str, quick: bool, epochs: dict | None = None) -> tuple[dict, dict]:
    """(fixed parameters, grid) of model ``name``, checked against its constructor; ``epochs``
    (name -> n_epochs, from ``--n-epochs``) overrides the model's number of epochs."""
    from bayesmf.experiments.catalogue import model_parameters

    fixed = dict((QUICK_FIXED if quick else FIXED).get(name, {}))
    if epochs and name in epochs:
        fixed["n_epochs"] = epochs[name]
    grid = dict((QUICK_GRIDS if quick else GRIDS).get(name, {}))
    accepted = model_parameters(name)
    for param in [*fixed, *grid]:
        if param not in accepted:
            raise SystemExit(f"benchmark setting {param!r} is not a parameter of {name} ({sorted(accepted)})")
    return fixed, grid


def fit_timed(cls, params: dict, train, **fit_kwargs):
    start = time.perf_counter()
    model = cls(**params).fit(train, **fit_kwargs)
    return model, time.perf_counter() - start


def tune(cls, fixed: dict, grid: dict, train, log) -> tuple[dict, list]:
    """Best grid point by full-catalogue NDCG@10 on a validation split carved from ``train``."""
    from bayesmf.data.splits import validation_split
    from bayesmf.metrics import full_ranking

    if not grid:
        return fixed, []
    complete = train.timestamps is not None and not train.missing_timestamps
    fit_part, val = validation_split(train, by="time" if complete else "random")
    trials = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        model, _ = fit_timed(cls, {**fixed, **point}, fit_part)
        score = full_ranking(model, fit_part, val, ks=(K,))[f"ndcg@{K}"]
        trials.append((point, score))
        log(f"    {cls.__name__} {point}: validation NDCG@{K} {score:.4f}")
    best = max(trials, key=lambda t: t[1])[0]
    return {**fixed, **best}, trials


def load_protocol(dataset: str, data_dir, quick: bool):
    """(explicit train, explicit test, description) of a leave-one-out protocol."""
    from bayesmf import datasets, splits
    from bayesmf.data import synthetic

    if dataset == "synthetic":
        ratings = synthetic(n_users=150, n_items=400, n_ratings=3000, rank=3, seed=0).ratings
        split = splits.leave_one_out(ratings, seed=0, by="random")
        return split.train, split.test, "synthetic 150 x 400, a random positive per user held out"
    ratings = datasets.load(DATASETS[dataset], data_dir)
    if ratings.missing_timestamps:  # ML-1M: "latest" would be a guess for some users
        split = splits.leave_one_out(ratings, seed=0, by="random")
        return split.train, split.test, (f"{dataset}, a random positive per user held out (leave_one_out by='random'; "
                                         f"{ratings.missing_timestamps:,} ratings have no timestamp)")
    split = splits.leave_one_out(ratings, seed=0, by="time")
    return split.train, split.test, f"{dataset}, latest positive per user held out (leave_one_out by='time')"


def evaluate(model, train, test, seed: int = 0) -> dict:
    from bayesmf.metrics import full_ranking, sampled_ranking

    full = full_ranking(model, train, test, ks=(K,))
    sampled = sampled_ranking(model, train, test, ks=(K,), n_negatives=N_NEGATIVES, seed=seed)
    return {"full_hr": full[f"hr@{K}"], "full_ndcg": full[f"ndcg@{K}"],
            "sampled_hr": sampled[f"hr@{K}"], "sampled_ndcg": sampled[f"ndcg@{K}"],
            "corrected_hr": sampled[f"hr@{K}_corrected"], "corrected_ndcg": sampled[f"ndcg@{K}_corrected"]}


def run_dataset(dataset: str, models: dict, data_dir, quick: bool, log, epochs: dict | None = None) -> dict:
    from bayesmf.data import to_implicit

    explicit_train, explicit_test, description = load_protocol(dataset, data_dir, quick)
    train, _ = to_implicit(explicit_train)
    test, _ = to_implicit(explicit_test)
    log(f"{dataset}: {description}; train {train.nnz} positives, test {test.nnz}")
    rows = []
    for name, cls in models.items():
        fixed, grid = settings(name, quick, epochs)
        fit_on = explicit_train if name in EXPLICIT_VALUES else train
        params, trials = tune(cls, fixed, grid, fit_on, log)
        model, seconds = fit_timed(cls, params, fit_on)
        metrics = evaluate(model, train, test)
        chosen = {k: params[k] for k in grid} if grid else {}
        rows.append({"model": LABELS.get(name, name), "params": chosen, "fixed": fixed, "fit_s": seconds,
                     "tuned_on_validation": bool(grid), "trials": [[p, s] for p, s in trials], **metrics})
        log(f"  {LABELS.get(name, name)}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})} "
            f"fit {seconds:.1f} s {chosen}")
    for key in ("full_ndcg", "sampled_hr", "corrected_ndcg"):
        order = sorted(range(len(rows)), key=lambda r: -rows[r][key])
        for position, r in enumerate(order):
            rows[r][f"rank_by_{key}"] = position + 1
    return {"dataset": dataset, "protocol": description, "train_positives": int(train.nnz),
            "test_positives": int(test.nnz), "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"**{result['protocol']}** ({result['train_positives']:,} training positives, "
             f"{result['test_positives']:,} held out)", "",
             f"| model | HR@{K} full | NDCG@{K} full | HR@{K} sampled 1+{N_NEGATIVES} | NDCG@{K} sampled | "
             f"HR@{K} corrected | NDCG@{K} corrected | rank full / sampled | fit (s) | hyperparameters |",
             "|---|---:|---:|---:|---:|---:|---:|:-:|---:|---|"]
    for r in sorted(result["rows"], key=lambda r: r["rank_by_full_ndcg"]):
        params = ", ".join(f"{k}={v:g}" for k, v in r["params"].items())
        params = f"{params} (validation)" if r["tuned_on_validation"] else "fixed"
        lines.append(
            f"| {r['model']} | {r['full_hr']:.4f} | {r['full_ndcg']:.4f} | {r['sampled_hr']:.4f} | "
            f"{r['sampled_ndcg']:.4f} | {r['corrected_hr']:.4f} | {r['corrected_ndcg']:.4f} | "
            f"{r['rank_by_full_ndcg']} / {r['rank_by_sampled_hr']} | {r['fit_s']:.1f} | {params} |")
    return "\n".join(lines)


def parse_epochs(parser: argparse.ArgumentParser, items) -> dict:
    """``--n-epochs MODEL=N ...`` as ``{MODEL: N}``; anything else is a parser error naming the item."""
    epochs = {}
    for item in items:
        name, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            parser.error(f"--n-epochs takes MODEL=N with N a positive integer, got {item!r}")
        epochs[name] = int(value)
    return epochs


def check_epochs(epochs: dict, models: dict) -> None:
    """Every ``--n-epochs`` name must be among the models run."""
    unknown = sorted(set(epochs) - set(models))
    if unknown:
        raise SystemExit(f"--n-epochs names {unknown}, which are not among --models {sorted(models)}")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="catalogue names")
    parser.add_argument("--datasets", nargs="+", choices=[*DATASETS, "synthetic"],
                        default=["ml-1m", "ml-latest-small"])
    parser.add_argument("--quick", action="store_true", help="synthetic data, tiny grids and fits (smoke run)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $BAYESMF_DATA)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--n-epochs", nargs="+", default=[], metavar="MODEL=N",
                        help="fewer (or more) epochs than a model's default, e.g. NeuMF=5 BPR=10")
    args = parser.parse_args(argv)
    args.epochs = parse_epochs(parser, args.n_epochs)
    if args.quick:
        args.datasets = ["synthetic"]
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    models = resolve_models(args.models)
    check_epochs(args.epochs, models)
    for name in models:
        settings(name, args.quick, args.epochs)  # bad settings fail before any fit

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    results = [run_dataset(d, models, args.data_dir, args.quick, log, args.epochs) for d in args.datasets]
    for result in results:
        print(markdown(result) + "\n")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
