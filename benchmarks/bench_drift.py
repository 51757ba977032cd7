"""Noise-precision drift of BPMF Gibbs on real splits (issue 19, item 2): test RMSE, alpha's
posterior mean and 90% coverage after a short (50 + 200) and a long (200 + 1,000) chain, from the
MAP and a random start, for several noise/factor prior variants. Markdown table on stdout.

    BAYESMF_DATA=../shared/data python -m benchmarks.bench_drift [--data flixster ...] \
        [--variants default learned fixed2] [--seeds 0 1 2] [--starts map random]
    python -m benchmarks.bench_drift --summarize LOG [LOG ...]

Each chain's rows are printed (and flushed) as soon as it finishes, so an interrupted run keeps
the rows of the chains it completed. ``--summarize`` reads the rows of one or more such logs and
prints mean +- seed-to-seed sd per (data, variant, sweeps, start) and, per data set, the status
of the three targets of :func:`targets`.

Data (protocols):

* ``flixster``, ``douban``, ``yahoo``: the 3000 x 3000 Monti et al. (2017) sub-matrices, their own
  train/test masks (``is_test`` of ``*_ratings.npz``); scales 0.5-5, 1-5, 1-100;
* ``ml-100k-u1``: MovieLens-100K predefined u1.base / u1.test;
* ``filmtrust``: the four ``ratings_*.txt`` concatenated, the 3 repeated (user, item) pairs merged
  by their mean (``duplicates="mean"``), random 80/20 (seed 0);
* ``ml-latest-small``: random 80/20 (seed 0);
* ``ml-1m``: random 90/10 (seed 42).

Test pairs whose user or item has no training rating are kept (``unknown="fallback"``: the
global mean and the prior-predictive variance) on the Monti sets, as their protocol has it, and
dropped elsewhere (``drop_unseen=True``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import bayesmf
from bayesmf import datasets, splits
from bayesmf.data.ratings import Ratings

MONTI = {"flixster": ("flixster-monti", "flixster_ratings.npz", (0.5, 5.0)),
         "douban": ("douban-monti", "douban_ratings.npz", (1.0, 5.0)),
         "yahoo": ("yahoo_music-monti", "yahoo_music_ratings.npz", (1.0, 100.0))}
DATA = ("flixster", "douban", "yahoo", "ml-100k-u1", "filmtrust", "ml-latest-small", "ml-1m")
LENGTHS = {250: (50, 250), 1200: (200, 1200)}  # sweeps: the window [lo, hi) of one chain


def data_dir() -> Path:
    return Path(os.environ.get("BAYESMF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load(name: str):
    """(train, test) of a protocol of the module docstring."""
    root = data_dir()
    if name in MONTI:
        folder, file, scale = MONTI[name]
        with np.load(root / folder / file) as npz:
            users, items, values, test = (npz[k] for k in ("user", "item", "rating", "is_test"))
            n_users, n_items = (int(x) for x in npz["shape"])
        test = test.astype(bool)
        parts = [Ratings.from_arrays(users[mask], items[mask], values[mask].astype(np.float32), n_users=n_users,
                                     n_items=n_items, rating_scale=scale) for mask in (~test, test)]
        return parts[0], parts[1]
    if name == "ml-100k-u1":
        split = splits.predefined("movielens-100k", "u1", data_dir=root, drop_unseen=True)
    elif name == "ml-1m":
        split = splits.random(datasets.load("movielens-1m", root), 0.1, seed=42, drop_unseen=True)
    elif name == "ml-latest-small":
        split = splits.random(datasets.load("movielens-latest-small", root), 0.2, seed=0, drop_unseen=True)
    elif name == "filmtrust":
        rows = []
        for k in range(4):
            for line in (root / "filmtrust" / f"ratings_{k}.txt").read_text().split():
                rows.append(line)
        triples = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        ratings = Ratings.from_ids(triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64),
                                   triples[:, 2].astype(np.float32), rating_scale=(0.5, 4.0), duplicates="mean")
        split = splits.random(ratings, 0.2, seed=0, drop_unseen=True)
    else:
        raise SystemExit(f"unknown data set {name!r}; choose from {DATA}")
    return split.train, split.test


# Variants: keyword arguments of BPMF on top of rank 10, biases=True. "learned" is the README's
# configuration before this change (alpha ~ Gamma(1, 1)); "fixed2" the authors' fixed alpha = 2;
# "nobias" the estimator's ``biases=False``.
VARIANTS = {
    "default": {},
    "learned": {"noise_prior": (1.0, 1.0)},
    "fixed2": {"noise_prior": None, "alpha": 2.0},
    "nobias": {"biases": False},
}


def window_metrics(model, test: Ratings, warmup: int, lo: int, hi: int, keep: int):
    """Test RMSE (predictions clipped to the scale), alpha's mean and the 90% interval's coverage
    from the draws of sweeps ``[lo, hi)`` of one chain (``warmup`` sweeps discarded, every
    ``keep``-th draw kept): the posterior-predictive mean over those draws, and its variance
    plus ``E[1/alpha]`` (Gaussian interval), as ``predict_dist`` computes them."""
    a, b = (lo - warmup) // keep, (hi - warmup) // keep
    U, V = model.user_samples_[0, a:b], model.item_samples_[0, a:b]
    f = np.einsum("snk,snk->sn", U[:, test.users], V[:, test.items])
    f += model.offset_samples_[0, a:b, None] if model.offset_samples_ is not None else model.global_mean_
    if model.b_U_samples_ is not None:
        f += model.b_U_samples_[0, a:b][:, test.users] + model.b_V_samples_[0, a:b][:, test.items]
    alpha = np.asarray(model.history_["alpha"][lo:hi])
    mean = f.mean(axis=0)
    sd = np.sqrt(f.var(axis=0) + np.mean(1.0 / alpha))
    pred = np.clip(mean, *model.rating_scale_) if model.rating_scale_ is not None else mean
    rmse = float(np.sqrt(np.mean((pred - test.values) ** 2)))
    cover = float(np.mean(np.abs(test.values - mean) <= 1.6448536 * sd))
    return rmse, float(alpha.mean()), cover


def run(train, test, variant, seed, start, rank=10, keep=5):
    """One 1,200-sweep chain; metrics of its sweeps 50-250 ("250": 50 + 200) and 200-1,200
    ("1200": 200 + 1,000)."""
    kwargs = {"rank": rank, "biases": True, "n_warmup": 50, "n_samples": 1150, "init": start, "seed": seed,
              "keep_every": keep, **VARIANTS[variant]}
    model = bayesmf.BPMF(**kwargs).fit(train)
    return {sweeps: window_metrics(model, test, 50, lo, hi, keep) for sweeps, (lo, hi) in LENGTHS.items()}


def parse_rows(text: str) -> list[tuple]:
    """The per-chain rows ``(data, variant, seed, sweeps, start, rmse, alpha, cover)`` that
    :func:`main` prints, read back from a log (other lines are skipped)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[2].isdigit() and cells[3].isdigit():
            rows.append((cells[0], cells[1], int(cells[2]), int(cells[3]), cells[4], float(cells[5]),
                         float(cells[6]), float(cells[7])))
    return rows


def group(rows) -> dict:
    """``{(data, variant, sweeps, start): (seeds, rmse mean, rmse sd, alpha mean, cover mean)}``; the
    sd is the seed-to-seed sample sd (``ddof=1``, NaN for one seed). A (data, variant, seed,
    sweeps, start) given twice keeps its last row."""
    unique = {r[:5]: r for r in rows}
    cells: dict = {}
    for data, variant, _seed, sweeps, start, rmse, alpha, cover in unique.values():
        cells.setdefault((data, variant, sweeps, start), []).append((rmse, alpha, cover))
    out = {}
    for key, values in cells.items():
        a = np.asarray(values, dtype=np.float64)
        sd = float(a[:, 0].std(ddof=1)) if len(a) > 1 else float("nan")
        out[key] = (len(a), float(a[:, 0].mean()), sd, float(a[:, 1].mean()), float(a[:, 2].mean()))
    return out


def _compare(a, b, label: str, two_sided: bool = False) -> str:
    """'met' or 'missed' for ``mean(a) - mean(b) <= 2 max(sd_a, sd_b)`` (``|mean(a) - mean(b)|``
    when ``two_sided``), with the difference and the tolerance."""
    (n_a, m_a, s_a, *_), (n_b, m_b, s_b, *_) = a, b
    diff, tol = m_a - m_b, 2.0 * max(s_a, s_b)
    if not np.isfinite(tol):
        return f"{label}: {diff:+.4f} (no sd: {min(n_a, n_b)} seed)"
    met = abs(diff) <= tol if two_sided else diff <= tol
    return f"{label}: {'met' if met else '**missed**'} ({diff:+.4f}, tolerance {tol:.4f})"


def targets(table: dict, data: str) -> list[str]:
    """Status lines of the targets on one data set, from :func:`group`'s table (each line names
    the difference of the means and the tolerance, two seed-to-seed sd, the larger of the two
    cells'):

    1. the default's RMSE at 1,200 sweeps no worse than at 250 (per start);
    2. MAP and random starts agree (per length; ``|MAP - random| <= tolerance``);
    3. the default no worse than ``learned``, ``fixed2`` and ``nobias`` (per length and start).
    """
    lines = []
    for start in ("map", "random"):
        long, short = table.get((data, "default", 1200, start)), table.get((data, "default", 250, start))
        if long and short:
            lines.append(_compare(long, short, f"1,200 vs 250 sweeps, {start} start"))
    for sweeps in (250, 1200):
        a, b = table.get((data, "default", sweeps, "map")), table.get((data, "default", sweeps, "random"))
        if a and b:
            lines.append(_compare(a, b, f"MAP vs random, {sweeps} sweeps", two_sided=True))
    for other in ("learned", "fixed2", "nobias"):
        for sweeps in (250, 1200):
            for start in ("map", "random"):
                a, b = table.get((data, "default", sweeps, start)), table.get((data, other, sweeps, start))
                if a and b:
                    lines.append(_compare(a, b, f"default vs {other}, {sweeps} sweeps, {start} start"))
    return lines


def summarize(texts) -> None:
    """Print the mean +- sd table of the rows in ``texts`` and the target status per data set."""
    table = group([row for text in texts for row in parse_rows(text)])
    print("| data | variant | sweeps | start | seeds | test RMSE mean ± sd | alpha mean | cov@0.9 |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for (data, variant, sweeps, start), (n, mean, sd, alpha, cover) in sorted(table.items()):
        print(f"| {data} | {variant} | {sweeps} | {start} | {n} | {mean:.4f} ± {sd:.4f} | {alpha:.3g} | {cover:.3f} |")
    for data in sorted({key[0] for key in table}):
        print(f"\n{data}:")
        for line in targets(table, data):
            print(f"- {line}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--starts", nargs="+", default=["map", "random"])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--summarize", nargs="+", metavar="LOG", help="summarise the rows of these logs instead")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize([Path(p).read_text() for p in args.summarize])
        return
    print("| data | variant | seed | sweeps | start | test RMSE | alpha mean | cov@0.9 |")
    print("|---|---|---:|---:|---|---:|---:|---:|", flush=True)
    for name in args.data:
        train, test = load(name)
        for variant in args.variants:
            for start in args.starts:
                for seed in args.seeds:
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = run(train, test, variant, seed, start, args.rank)
                    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                    for sweeps, (rmse, alpha, cover) in out.items():
                        print(f"| {name} | {variant} | {seed} | {sweeps} | {start} | {rmse:.4f} | {alpha:.3g} | "
                              f"{cover:.3f} |", flush=True)
                    print(f"<!-- {name} {variant} seed {seed} {start}: 1,200 sweeps in {seconds:.0f} s "
                          f"({cpu:.0f} CPU s) -->",
                          flush=True)


if __name__ == "__main__":
    main()
