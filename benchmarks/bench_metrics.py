"""Speed of the evaluation layer (issue 5).

Targets: full-catalogue NDCG@10, Recall@20 and HR@10 for all 6,040 MovieLens-1M users over 3,706
items in < 2 s; coverage/NLL/CRPS on 100,000 predictions with 200 samples each in < 1 s.

Ranking: random rank-64 factors (speed does not depend on their values) scored by a FactorModel,
the real ML-1M 90/10 split (rng 42), training items excluded, every test item relevant (the
largest workload: 100k relevant pairs). Reference in the same run: a plain NumPy pipeline
(matmul, mask, full argsort per user batch, ranks of the relevant items, NDCG/recall/HR) — the
obvious implementation, which breaks ties by sort order rather than pessimistically.
Uncertainty: 100,000 predictions with 200 empirical draws each (float32); reference: the same
numbers from ``np.quantile`` per level and a sort-based CRPS. Runs alternate and medians are
reported (the machine is shared, so timings are noisy).

    BAYESMF_DATA=/work/shared/data .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bayesmf
from bayesmf.metrics import evaluate_ranking
from bayesmf.metrics.uncertainty import calibration_area, crps, gaussian_nll, interval_scores
from bayesmf.models.base import FactorModel
from bayesmf.predictive import PredictiveDistribution

START = time.perf_counter()


class RandomFactors(FactorModel):
    """Random factors of the right shapes (speed only)."""

    def __init__(self, rank: int = 64, seed: int = 0):
        self.rank, self.seed = rank, seed

    def _fit(self, train):
        rng = np.random.default_rng(self.seed)
        self.global_mean_ = float(train.values.mean())
        self.user_bias_ = self.item_bias_ = None
        self.user_factors_ = rng.normal(0, 0.3, (train.n_users, self.rank)).astype(np.float32)
        self.item_factors_ = rng.normal(0, 0.3, (train.n_items, self.rank)).astype(np.float32)


def numpy_ranking(model, train, test, batch=1024):
    """The obvious NumPy pipeline: full argsort of each user's scores (reference only)."""
    users = np.unique(test.users)
    rel = np.zeros((0,))
    ndcg, recall, hr = [], [], []
    disc = 1 / np.log2(np.arange(2, 12))
    for start in range(0, users.size, batch):
        u = users[start:start + batch]
        s = model.score_users(u)
        tu = np.isin(train.users, u)
        s[np.searchsorted(u, train.users[tu]), train.items[tu]] = -np.inf
        order = np.argsort(-s, axis=1)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(s.shape[1])[None, :] + 1, axis=1)
        te = np.isin(test.users, u)
        row, item = np.searchsorted(u, test.users[te]), test.items[te]
        rel = ranks[row, item]
        n_rel = np.bincount(row, minlength=u.size)
        hits10 = np.bincount(row, rel <= 10, minlength=u.size)
        hits20 = np.bincount(row, rel <= 20, minlength=u.size)
        dcg = np.bincount(row, np.where(rel <= 10, 1 / np.log2(rel + 1), 0), minlength=u.size)
        idcg = np.cumsum(disc)[np.minimum(n_rel, 10) - 1]
        ndcg.append(dcg / idcg)
        recall.append(hits20 / n_rel)
        hr.append(hits10 > 0)
    return float(np.concatenate(ndcg).mean()), float(np.concatenate(recall).mean()), float(np.concatenate(hr).mean())


def bayesmf_uncertainty(y, dist):
    out = {f"coverage@{lv}": interval_scores(y, dist, lv)[0] for lv in (0.5, 0.8, 0.9, 0.95)}
    out["nll"] = float(gaussian_nll(y, dist.mean, dist.std).mean())
    out["crps"] = crps(y, dist)
    return out


def numpy_uncertainty(y, draws):
    out = {}
    for lv in (0.5, 0.8, 0.9, 0.95):
        lo, hi = np.quantile(draws, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
        out[f"coverage@{lv}"] = float(np.mean((lo <= y) & (y <= hi)))
    m, s = draws.mean(0), draws.std(0)
    out["nll"] = float(np.mean(0.5 * np.log(2 * np.pi * s * s) + (y - m) ** 2 / (2 * s * s)))
    xs = np.sort(draws, axis=0)
    S = xs.shape[0]
    w = 2 * np.arange(1, S + 1) - S - 1
    out["crps"] = float(np.mean(np.abs(xs - y).mean(0) - (w @ xs) / S**2))
    return out


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    split = bayesmf.splits.random(bayesmf.datasets.load("movielens-1m"), 0.1, seed=42, drop_unseen=True)
    train, test = split.train, split.test
    model = RandomFactors().fit(train)
    print(f"ML-1M 90/10: {train.n_users} users x {train.n_items} items, {test.nnz} test ratings "
          f"({np.unique(test.users).size} test users)")

    times = {"bayesmf ranking": [], "numpy ranking": []}
    for _ in range(args.repeats):  # alternate the two implementations
        t, report = timed(evaluate_ranking, model, train, test, (10, 20))
        times["bayesmf ranking"].append(t)
        t, ref = timed(numpy_ranking, model, train, test)
        times["numpy ranking"].append(t)
    print(f"  bayesmf ndcg@10 {report['ndcg@10']:.6f} recall@20 {report['recall@20']:.6f} hr@10 {report['hr@10']:.6f}")
    print(f"  numpy   ndcg@10 {ref[0]:.6f} recall@20 {ref[1]:.6f} hr@10 {ref[2]:.6f}")

    rng = np.random.default_rng(0)
    n, S = 100_000, 200
    centre = rng.uniform(1, 5, n).astype(np.float32)
    draws = (centre + rng.normal(0, 0.9, (S, n))).astype(np.float32)
    y = centre + rng.normal(0, 0.9, n)
    times.update({"bayesmf uncertainty": [], "numpy uncertainty": []})
    for _ in range(args.repeats):
        dist = PredictiveDistribution.from_samples(draws)  # construction (moments) counts too
        t, unc = timed(lambda: (bayesmf_uncertainty(y, PredictiveDistribution.from_samples(draws))))
        times["bayesmf uncertainty"].append(t)
        t, unc_ref = timed(numpy_uncertainty, y, draws)
        times["numpy uncertainty"].append(t)
    t_area, area = timed(calibration_area, y, dist)
    print(f"  bayesmf {', '.join(f'{k} {v:.5f}' for k, v in unc.items())}; calibration area {area:.5f} "
          f"({t_area:.2f} s)")
    print(f"  numpy   {', '.join(f'{k} {v:.5f}' for k, v in unc_ref.items())}")

    print("median seconds over", args.repeats, "alternating runs:")
    for name, ts in times.items():
        print(f"  {name:22s} {np.median(ts):7.3f}   (min {min(ts):.3f})")
    for what in ("ranking", "uncertainty"):
        ratio = np.median(times[f"numpy {what}"]) / np.median(times[f"bayesmf {what}"])
        print(f"  {what}: numpy reference / bayesmf = {ratio:.2f}x")
    print(f"whole process: {time.perf_counter() - START:.1f} s")


if __name__ == "__main__":
    main()
