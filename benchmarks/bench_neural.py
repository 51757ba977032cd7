"""Seconds per epoch of the Optax-trained models on MovieLens-1M as implicit feedback, and
NeuMF's hit rate on the NCF protocol (issue 25).

Data: every ML-1M rating is a positive; ``leave_one_out(by="random", seed=0)`` holds out one positive
per user (the shared copy of ML-1M lacks some timestamps, so not the latest one as in the
NCF paper; the ml1m-loo protocol of benchmarks/data.py). ``speed`` fits each model for 1 and for 1 + ``--epochs``
epochs and reports the difference per epoch, so compilation and set-up are excluded (they are
reported separately as the 1-epoch fit). ``quality`` fits a model with its defaults and reports
HR@10 / NDCG@10 with 1 + 99 sampled negatives (``bayesmf.metrics.sampled.sampled_ranking``,
with the Krichene-Rendle corrected values) and the full-catalogue HR@10.

    BAYESMF_DATA=/work/shared/data python benchmarks/bench_neural.py speed --models NeuMF MultVAE
    BAYESMF_DATA=/work/shared/data python benchmarks/bench_neural.py quality --models NeuMF
    BAYESMF_DATA=/work/shared/data python benchmarks/bench_neural.py quality --models NeuMF --n-epochs 10 \
        --params '{"pretrain": false}'
"""

from __future__ import annotations

import argparse
import json
import os
import time

import bayesmf
from bayesmf import datasets
from bayesmf.data.splits import leave_one_out
from bayesmf.metrics.ranking import full_ranking
from bayesmf.metrics.sampled import sampled_ranking

SPEED_SETTINGS = {  # models whose per-epoch time is measured; pre-training off: one model's epochs
    "NeuMF": {"pretrain": False},
    "GMF": {},
    "MLP": {},
    "BPR": {},
    "MultVAE": {},
    "MultDAE": {},
}


def load_split():
    ratings = datasets.load("movielens-1m", os.environ.get("BAYESMF_DATA"))
    implicit, _ = bayesmf.to_implicit(ratings)
    return leave_one_out(implicit, seed=0, by="random")


def speed(split, names, epochs: int) -> list[dict]:
    rows = []
    for name in names:
        cls = getattr(bayesmf, name)
        times = {}
        for n in (1, 1 + epochs):
            start = time.perf_counter()
            cls(n_epochs=n, **SPEED_SETTINGS[name]).fit(split.train)
            times[n] = time.perf_counter() - start
        rows.append({"model": name, "fit_1_epoch_s": round(times[1], 2),
                     "s_per_epoch": round((times[1 + epochs] - times[1]) / epochs, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def quality(split, names, n_epochs, params: dict) -> list[dict]:
    rows = []
    for name in names:
        kwargs = {**params, **({} if n_epochs is None else {"n_epochs": n_epochs})}
        start = time.perf_counter()
        model = getattr(bayesmf, name)(**kwargs).fit(split.train)
        fit_s = time.perf_counter() - start
        sampled = sampled_ranking(model, split.train, split.test, ks=(10,), n_negatives=99, seed=0)
        full = full_ranking(model, split.train, split.test, ks=(10,))
        rows.append({"model": name, "params": kwargs, "fit_s": round(fit_s, 1),
                     "sampled_hr@10": round(sampled["hr@10"], 4),
                     "sampled_ndcg@10": round(sampled["ndcg@10"], 4),
                     "sampled_hr@10_corrected": round(sampled["hr@10_corrected"], 4),
                     "full_hr@10": round(full["hr@10"], 4), "full_ndcg@10": round(full["ndcg@10"], 4),
                     "final_loss": round(model.history_["loss"][-1], 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("speed", "quality"))
    parser.add_argument("--models", nargs="+", default=["NeuMF", "MultVAE"], choices=sorted(SPEED_SETTINGS))
    parser.add_argument("--epochs", type=int, default=1, help="speed: epochs timed after the first")
    parser.add_argument("--n-epochs", type=int, default=None, help="quality: override the models' n_epochs")
    parser.add_argument("--params", type=json.loads, default={}, help="quality: other hyperparameters, as JSON")
    args = parser.parse_args(argv)
    split = load_split()
    print(json.dumps({"train": split.train.nnz, "test": split.test.nnz, "users": split.train.n_users,
                      "items": split.train.n_items}), flush=True)
    if args.mode == "speed":
        speed(split, args.models, args.epochs)
    else:
        quality(split, args.models, args.n_epochs, args.params)


if __name__ == "__main__":
    main()
