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

    BAYESMF_DATA=/work/shared/data python benchmarks/bench_strong_generalization.py --models EASE ImplicitALS Popularity
    python benchmarks/bench_strong_generalization.py --quick --models EASE Popularity   # seconds, synthetic

Models are catalogue names; an unknown name is an error. Fit seconds include JAX compilation.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path

try:
    from benchmarks.bench_ranking import fit_timed, resolve_models, settings
except ImportError:  # run as a script from benchmarks/
    from bench_ranking import fit_timed, resolve_models, settings

DEFAULT_MODELS = ("MultVAE", "MultDAE", "EASE", "ImplicitALS")
KS = (20, 50, 100)
SELECT = "ndcg@100"
N_HELDOUT, QUICK_HELDOUT = 600, 20


def load_split(quick: bool, data_dir, seed: int = 0):
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
    return strong_generalization(positives, n, fold_in_fraction=0.8, seed=seed, n_validation_users=n)


def heldout_score(model, fold_in, target) -> dict:
    """The protocol on a copy of ``model`` (fold-in adds users to the model it is given)."""
    from bayesmf.metrics import strong_generalization_ranking

    return strong_generalization_ranking(copy.deepcopy(model), fold_in, target, ks=KS)


def run(models: dict, split, quick: bool, log) -> list[dict]:
    rows = []
    for name, cls in models.items():
        fixed, grid = settings(name, quick)
        trials = []
        for values in itertools.product(*grid.values()) if grid else ():
            point = dict(zip(grid, values, strict=True))
            model, _ = fit_timed(cls, {**fixed, **point}, split.train)
            score = heldout_score(model, split.validation_fold_in, split.validation_target)[SELECT]
            trials.append((point, score))
            log(f"    {name} {point}: validation {SELECT} {score:.4f}")
        chosen = max(trials, key=lambda t: t[1])[0] if trials else {}
        model, seconds = fit_timed(cls, {**fixed, **chosen}, split.train)
        report = heldout_score(model, split.fold_in, split.target)
        metrics = {f"{m}@{k}": report[f"{m}@{k}"] for m, k in (("recall", 20), ("recall", 50), ("ndcg", 100))}
        rows.append({"model": name, "params": chosen, "fixed": fixed, "fit_s": seconds, "tuned_on_validation":
                     bool(grid), "trials": [[p, s] for p, s in trials], "n_users": report["n_users"], **metrics})
        log(f"  {name}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})} fit {seconds:.1f} s {chosen}")
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
        lines.append(f"| {r['model']} | {r['recall@20']:.4f} | {r['recall@50']:.4f} | {r['ndcg@100']:.4f} | "
                     f"{r['fit_s']:.1f} | {params} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="catalogue names")
    parser.add_argument("--quick", action="store_true", help="synthetic data, 20 + 20 held-out users (smoke run)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $BAYESMF_DATA)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    models = resolve_models(args.models)
    for name in models:
        settings(name, args.quick)  # bad settings fail before any fit

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    split = load_split(args.quick, args.data_dir)
    rows = run(models, split, args.quick, log)
    print(markdown(rows, split))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
