"""Cold-start users on MovieLens-1M: BayesFM from side features against the bias fallbacks.

Protocol: ``frac`` of the users with ratings (``default_rng(seed)``, uniformly) are cold: ALL their
ratings are held out. From the other (warm) users' ratings a random ``warm_frac`` is held out too,
as a reference; the models are fitted on the rest (``train``, compacted: cold users, and items
rated by cold users only, are outside its index spaces). Scored on the cold users' ratings (and
on the warm reference ratings), with :func:`bayesmf.metrics.evaluate_ratings`: RMSE (clipped to
the rating scale), MAE, coverage and mean width of the central 90% interval, Gaussian NLL, CRPS,
calibration area.

Models (``--models``):

* ``fm_side``: :class:`bayesmf.BayesFM` with user one-hot, user side (age, gender, occupation,
  zip prefix), item one-hot and item side (year, genres); cold users enter through their side
  features only (their one-hot rows are empty), predicted by ``predict_design`` on the fitted
  feature set's design of the test pairs. Two rows: ``fm_side`` (``new="prior"``: a new user's
  one-hot terms integrated over the user group's prior) and ``fm_side:empty`` (``new="empty"``,
  libFM's ``x_u = 0``).
* ``fm_item_side``: the same FM without user side features: a cold user has the item part only
  (the FM's bias fallback), again as ``fm_item_side`` (prior) and ``fm_item_side:empty``.
* ``bpmf``: :class:`bayesmf.BPMF` (``biases=True``) with ``unknown="fallback"`` (a new user's
  vector and bias drawn from the users' prior per draw, the item's own terms kept).
* ``global_mean``: the training mean with the training ratings' standard deviation as a Gaussian.

Side levels that no training user or item has go to each column's ``<unknown>`` level
(``Features(unknown="level")``).

    BAYESMF_DATA=/work/shared/data python benchmarks/fm_cold_start.py --rank 10 --warmup 50 --samples 100 \\
        --out /tmp/cold.json

Prints a markdown table; ``--out`` writes everything as JSON. Fit seconds include JAX compilation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("fm_side", "fm_item_side", "bpmf", "global_mean")
USER_COLUMNS = ("age", "gender", "occupation", "zip_prefix")
ITEM_COLUMNS = ("year", "genres")
SCORES = ("n", "rmse", "mae", "coverage@0.9", "width@0.9", "nll", "crps", "calibration_area")


def cold_start_split(ratings, frac: float = 0.1, seed: int = 0, warm_frac: float = 0.1) -> dict:
    """``{"train", "cold", "warm", "cold_users"}``: ``round(frac * n)`` of the ``n`` users with
    ratings drawn without replacement (``default_rng(seed)``) hold out all their ratings
    (``cold``); ``round(warm_frac * m)`` of the ``m`` other ratings, drawn by the same generator,
    are the warm reference (``warm``; None for ``warm_frac=0``). ``train`` is the rest,
    compacted; the test sets are in index spaces extending ``train``'s (raw IDs kept), so new
    users and items have indices ``>= train.n_users`` / ``train.n_items``."""
    from bayesmf import Ratings
    from bayesmf.errors import DataError
    from bayesmf.validate import check_fraction

    frac = check_fraction("frac", frac)
    warm_frac = 0.0 if warm_frac == 0 else check_fraction("warm_frac", warm_frac)
    rng = np.random.default_rng(seed)
    active = np.flatnonzero(ratings.user_counts > 0)
    n_cold = int(round(frac * active.size))
    if not 0 < n_cold < active.size:
        raise DataError(f"frac={frac} of {active.size} users gives {n_cold} cold users; need at least one cold "
                        "and one warm user")
    cold_users = np.sort(rng.choice(active, n_cold, replace=False))
    is_cold = np.zeros(ratings.n_users, bool)
    is_cold[cold_users] = True
    cold_rows = is_cold[ratings.users]
    warm_rows = np.flatnonzero(~cold_rows)
    held = np.zeros(ratings.nnz, bool)
    held[rng.choice(warm_rows, int(round(warm_frac * warm_rows.size)), replace=False)] = True
    train = ratings.subset(~cold_rows & ~held).compact()

    def test(mask):
        part = ratings.subset(mask)
        return Ratings.from_ids(part.user_map.ids(part.users), part.item_map.ids(part.items), part.values,
                                rating_scale=ratings.rating_scale, user_map=train.user_map, item_map=train.item_map)

    return {"train": train, "cold": test(cold_rows), "warm": test(held) if held.any() else None,
            "cold_users": ratings.user_map.ids(cold_users)}


def scores(test, dist) -> dict:
    """The :data:`SCORES` of :func:`bayesmf.metrics.evaluate_ratings` for ``dist`` on ``test``."""
    from bayesmf.metrics import evaluate_ratings

    report = evaluate_ratings(test, dist, levels=(0.9,), n_boot=200)
    return {k: report[k] for k in SCORES}


def feature_spec(user_side, item_side, with_user_side: bool, user_columns=None, item_columns=None):
    from bayesmf.features import Features

    user = {"user_side": user_side, "user_columns": user_columns} if with_user_side else {}
    return Features(item_side=item_side, item_columns=item_columns, unknown="level", **user)


def _predictions(name, split, user_side, item_side, settings, user_columns, item_columns, fm_params=None):
    """``(fit seconds, {row name: {part: PredictiveDistribution}})`` of model ``name``;
    ``fm_params``: further keyword arguments of the ``BayesFM`` models only."""
    import bayesmf
    from bayesmf.predictive import PredictiveDistribution

    train = split["train"]
    parts = {p: split[p] for p in ("cold", "warm") if split[p] is not None}
    start = time.perf_counter()
    if name in ("fm_side", "fm_item_side"):
        spec = feature_spec(user_side, item_side, name == "fm_side", user_columns, item_columns)
        model = bayesmf.BayesFM(features=spec, **settings, **(fm_params or {})).fit(train)
        seconds = time.perf_counter() - start
        designs = {p: model.fitted_features_.design_of(t) for p, t in parts.items()}
        return seconds, {f"{name}{suffix}": {p: model.predict_design(d, new=new) for p, d in designs.items()}
                         for suffix, new in (("", "prior"), (":empty", "empty"))}
    if name == "bpmf":
        model = bayesmf.BPMF(biases=True, **settings).fit(train)
        seconds = time.perf_counter() - start
        return seconds, {name: {p: model.predict_dist(t.users, t.items, unknown="fallback") for p, t in parts.items()}}
    if name == "global_mean":
        mean, sd = float(np.mean(train.values)), float(np.std(train.values))
        return 0.0, {name: {p: PredictiveDistribution(mean=np.full(t.nnz, mean), std=np.full(t.nnz, sd))
                            for p, t in parts.items()}}
    raise ValueError(f"unknown model {name!r}; known: {list(MODELS)}")


def run(ratings, user_side, item_side, *, rank: int = 10, n_samples: int = 100, n_warmup: int = 50, seed: int = 0,
        frac: float = 0.1, warm_frac: float = 0.1, models=MODELS, user_columns=None, item_columns=None,
        fm_params=None, log=None) -> dict:
    """The benchmark on ``ratings`` with side tables ``user_side`` / ``item_side`` (columns
    ``user_columns`` / ``item_columns``, default all): a JSON-able dict with ``settings``,
    ``split`` (counts) and ``rows`` (one per prediction: ``model``, ``fit_s``, ``cold`` and
    ``warm`` :data:`SCORES`); ``fm_params``: further ``BayesFM`` keyword arguments."""
    log = log or (lambda msg: None)
    split = cold_start_split(ratings, frac, seed, warm_frac)
    train, cold = split["train"], split["cold"]
    settings = {"rank": rank, "n_samples": n_samples, "n_warmup": n_warmup, "seed": seed}
    counts = {"users": int(np.count_nonzero(ratings.user_counts)), "cold_users": int(split["cold_users"].size),
              "train_ratings": train.nnz, "train_users": train.n_users, "train_items": train.n_items,
              "cold_ratings": cold.nnz, "cold_ratings_on_new_items": int(np.sum(cold.items >= train.n_items)),
              "warm_ratings": split["warm"].nnz if split["warm"] is not None else 0}
    log(f"split: {counts}")
    rows = []
    for name in models:
        seconds, dists = _predictions(name, split, user_side, item_side, settings, user_columns, item_columns,
                                      fm_params)
        for row, parts in dists.items():
            result = {"model": row, "fit_s": seconds, **{p: scores(split[p], d) for p, d in parts.items()}}
            rows.append(result)
            log(f"  {row}: cold {json.dumps({k: round(float(v), 4) for k, v in result['cold'].items()})} "
                f"fit {seconds:.1f} s")
    return {"settings": {**settings, "fm_params": fm_params or {}, "frac": frac, "warm_frac": warm_frac,
                         "user_columns": user_columns, "item_columns": item_columns}, "split": counts, "rows": rows}


def markdown(result: dict) -> str:
    lines = ["| model | cold RMSE | cold coverage@0.9 | cold width@0.9 | cold NLL | cold CRPS | warm RMSE | "
             "warm coverage@0.9 | fit (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        c, w = r["cold"], r.get("warm", {})
        warm = f"{w['rmse']:.4f} | {w['coverage@0.9']:.3f}" if w else " | "
        lines.append(f"| {r['model']} | {c['rmse']:.4f} | {c['coverage@0.9']:.3f} | {c['width@0.9']:.3f} | "
                     f"{c['nll']:.4f} | {c['crps']:.4f} | {warm} | {r['fit_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data folder (default: $BAYESMF_DATA)")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--samples", type=int, default=100, help="kept Gibbs sweeps")
    parser.add_argument("--warmup", type=int, default=50, help="burn-in sweeps")
    parser.add_argument("--seed", type=int, default=0, help="cold users, warm reference ratings and samplers")
    parser.add_argument("--frac", type=float, default=0.1, help="fraction of users held out entirely")
    parser.add_argument("--warm-frac", type=float, default=0.1, help="fraction of warm ratings held out")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--fm-params", type=json.loads, default=None,
                        help='further BayesFM keyword arguments as JSON, e.g. \'{"hyper_prior": [0.5, 0.5]}\'')
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    from bayesmf import datasets

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    ratings = datasets.load("movielens-1m", args.data)
    users, items = datasets.side("movielens-1m", args.data)
    start = time.perf_counter()
    result = run(ratings, users, items, rank=args.rank, n_samples=args.samples, n_warmup=args.warmup,
                 seed=args.seed, frac=args.frac, warm_frac=args.warm_frac, models=args.models,
                 user_columns=USER_COLUMNS, item_columns=ITEM_COLUMNS, fm_params=args.fm_params, log=log)
    result["wall_s"] = time.perf_counter() - start
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
