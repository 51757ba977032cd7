"""Strong generalization (held-out users) on MovieLens-1M, the Mult-VAE protocol (issue 25).

Protocol (Liang, Krishnan, Hoffman & Jebara 2018): ratings >= 4 are the positives
(``to_implicit(threshold=4)``); 600 test and 600 validation users, drawn among users with at
least 5 positives, are held out (:func:`bayesmf.data.splits.strong_generalization`, seed 0).
Models are fitted on the other users; each held-out user gives 80% of their positives to
``model.fold_in`` and the remaining 20% are ranked over the whole catalogue, the folded-in items
excluded (:func:`bayesmf.metrics.strong_generalization_ranking`): Recall@20, Recall@50 (hits
divided by ``min(k, |targets|)``, as the paper) and NDCG@100.

Hyperparameters of ``EASE`` and ``ImplicitALS`` are chosen by NDCG@100 on the validation users
(fit on the training users, fold in the validation users' 80%, rank their 20%); the test users
are scored once, with the chosen setting refitted.

``MultVAE`` and ``MultDAE`` run at the paper's settings (encoder [I, 600, 200], decoder mirrored,
dropout 0.5 on the input, Adam 1e-3, 500 users per batch, 200 epochs: the models' defaults) and,
as the paper, keep the parameters of the epoch with the best NDCG@100 on the validation users
(``fit(train, heldout=(validation_fold_in, validation_target))``). Mult-VAE's KL weight is annealed
linearly to the cap 0.2 on the paper's schedule measured in epochs: its code (ML-20M, 234 updates
per epoch, ``T = 200,000``) reaches 0.2 after 40,000 updates, 85.5% of its 200 epochs; here
``anneal_steps`` is set so that 0.2 is reached after the same fraction of the epochs run (the
model's default ``T = 200,000`` would leave beta near 0.01 on ML-1M's 10 updates per epoch).

    BAYESMF_DATA=/work/shared/data python benchmarks/bench_strong_generalization.py --models EASE ImplicitALS Popularity
    python benchmarks/bench_strong_generalization.py --quick --models EASE Popularity   # seconds, synthetic
    BAYESMF_DATA=/work/shared/data python benchmarks/bench_strong_generalization.py --max-users 1000 \
        --n-epochs MultVAE=3 MultDAE=3                                                  # smoke run on real data

Models are catalogue names; an unknown name is an error. Fit seconds include JAX compilation.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import sys
from pathlib import Path

try:
    from benchmarks.bench_ranking import check_epochs, fit_timed, parse_epochs, resolve_models, settings
except ImportError:  # run as a script from benchmarks/
    from bench_ranking import check_epochs, fit_timed, parse_epochs, resolve_models, settings

DEFAULT_MODELS = ("MultVAE", "MultDAE", "EASE", "ImplicitALS")
KS = (20, 50, 100)
SELECT = "ndcg@100"
N_HELDOUT, QUICK_HELDOUT = 600, 20
HELDOUT_SELECTED = ("MultVAE", "MultDAE")  # best epoch by the validation users' NDCG@100
ANNEAL_FRACTION = 40_000 / (234 * 200)  # of the epochs, where the paper's schedule reaches the cap


def anneal_steps(n_train_users: int, batch_size: int, n_epochs: int, cap: float) -> int:
    """``T`` such that ``beta = min(cap, t / T)`` reaches ``cap`` after ``ANNEAL_FRACTION`` of the
    ``n_epochs`` epochs of ``ceil(n_train_users / batch_size)`` updates each."""
    updates = math.ceil(n_train_users / batch_size) * n_epochs
    return max(1, round(ANNEAL_FRACTION * updates / cap))


def load_split(quick: bool, data_dir, seed: int = 0, max_users: int | None = None):
    from bayesmf import datasets
    from bayesmf.data import synthetic, to_implicit
    from bayesmf.data.splits import strong_generalization

    if quick:
        ratings = synthetic(n_users=200, n_items=300, n_ratings=6000, rank=3, seed=0).ratings
        positives, _ = to_implicit(ratings, threshold=3.5)
        n = QUICK_HELDOUT
    else:
        positives, _ = to_implicit(datasets.load("movielens-1m", data_dir), threshold=4)
        n = N_HELDOUT
        if max_users is not None:  # the first users only, with min(600, max_users // 5) held out of each kind
            positives = positives.subset(positives.users < max_users).compact()
            n = min(N_HELDOUT, max_users // 5)
    return strong_generalization(positives, n, fold_in_fraction=0.8, seed=seed, n_validation_users=n)


def heldout_score(model, fold_in, target) -> dict:
    """The protocol on a copy of ``model`` (fold-in adds users to the model it is given)."""
    from bayesmf.metrics import strong_generalization_ranking

    return strong_generalization_ranking(copy.deepcopy(model), fold_in, target, ks=KS)


def model_settings(name: str, quick: bool, epochs: dict, split) -> tuple[dict, dict, dict]:
    """(fixed parameters, grid, fit keyword arguments) of ``name`` on ``split``."""
    from bayesmf.experiments.catalogue import model_class

    fixed, grid = settings(name, quick, epochs)
    fit_kwargs = {}
    if name in HELDOUT_SELECTED:
        fit_kwargs["heldout"] = (split.validation_fold_in, split.validation_target)
    if name == "MultVAE" and "anneal_steps" not in fixed:
        defaults = model_class(name)()
        fixed["anneal_steps"] = anneal_steps(split.train.n_users, fixed.get("batch_size", defaults.batch_size),
                                             fixed.get("n_epochs", defaults.n_epochs),
                                             fixed.get("anneal_cap", defaults.anneal_cap))
    return fixed, grid, fit_kwargs


def run(models: dict, split, quick: bool, log, epochs: dict | None = None) -> list[dict]:
    rows = []
    for name, cls in models.items():
        fixed, grid, fit_kwargs = model_settings(name, quick, epochs or {}, split)
        trials = []
        for values in itertools.product(*grid.values()) if grid else ():
            point = dict(zip(grid, values, strict=True))
            model, _ = fit_timed(cls, {**fixed, **point}, split.train)
            score = heldout_score(model, split.validation_fold_in, split.validation_target)[SELECT]
            trials.append((point, score))
            log(f"    {name} {point}: validation {SELECT} {score:.4f}")
        chosen = max(trials, key=lambda t: t[1])[0] if trials else {}
        model, seconds = fit_timed(cls, {**fixed, **chosen}, split.train, **fit_kwargs)
        report = heldout_score(model, split.fold_in, split.target)
        metrics = {f"{m}@{k}": report[f"{m}@{k}"] for m, k in (("recall", 20), ("recall", 50), ("ndcg", 100))}
        history = getattr(model, "history_", {}) or {}
        selection = {}
        if fit_kwargs.get("heldout") is not None:
            selection = {"epochs_run": len(history["valid_loss"]), "best_epoch": int(history["best_epoch"][0]) + 1,
                         "validation_ndcg@100": -min(history["valid_loss"])}
        rows.append({"model": name, "params": chosen, "fixed": fixed, "fit_s": seconds, "tuned_on_validation":
                     bool(grid), "trials": [[p, s] for p, s in trials], "n_users": report["n_users"], **selection,
                     **metrics})
        log(f"  {name}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})} fit {seconds:.1f} s {chosen} "
            f"{json.dumps(selection)}")
    return rows


def markdown(rows: list[dict], split) -> str:
    lines = [f"Training users {split.train.n_users:,} ({split.train.nnz:,} positives, {split.train.n_items:,} "
             f"items); {split.fold_in.n_users} test users ({split.fold_in.nnz:,} folded in, {split.target.nnz:,} "
             f"ranked); {split.validation_fold_in.n_users} validation users; {split.dropped} held-out positives "
             "dropped (item unseen in training)", "",
             "| model | Recall@20 | Recall@50 | NDCG@100 | fit (s) | hyperparameters |",
             "|---|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: -r["ndcg@100"]):
        params = ", ".join(f"{k}={v:g}" for k, v in r["params"].items())
        params = f"{params} (validation users)" if r["tuned_on_validation"] else "fixed"
        if "best_epoch" in r:
            params += (f"; best epoch {r['best_epoch']} of {r['epochs_run']} by validation NDCG@100 "
                       f"{r['validation_ndcg@100']:.4f}")
        lines.append(f"| {r['model']} | {r['recall@20']:.4f} | {r['recall@50']:.4f} | {r['ndcg@100']:.4f} | "
                     f"{r['fit_s']:.1f} | {params} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="catalogue names")
    parser.add_argument("--quick", action="store_true", help="synthetic data, 20 + 20 held-out users (smoke run)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $BAYESMF_DATA)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--n-epochs", nargs="+", default=[], metavar="MODEL=N",
                        help="fewer (or more) epochs than a model's default, e.g. MultVAE=3")
    parser.add_argument("--max-users", type=int, default=None,
                        help="ML-1M's first N users only (smoke run on real data); "
                             "min(600, N // 5) held out of each kind")
    args = parser.parse_args(argv)
    epochs = parse_epochs(parser, args.n_epochs)
    if args.max_users is not None and args.max_users < 15:
        parser.error(f"--max-users must be at least 15, got {args.max_users}")
    models = resolve_models(args.models)
    check_epochs(epochs, models)
    for name in models:
        settings(name, args.quick, epochs)  # bad settings fail before any fit

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    split = load_split(args.quick, args.data_dir, max_users=args.max_users)
    rows = run(models, split, args.quick, log, epochs)
    print(markdown(rows, split))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
