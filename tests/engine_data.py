"""Shared synthetic data for the engine tests (one data set -> each engine compiles once)."""

from __future__ import annotations

import numpy as np

from bayesmf.data import Ratings, synthetic

NOISE = 0.3
RANK = 3


def signed_split():
    """Rank-3 BPMF data (signed factors), noise 0.3, ~80 ratings per user; 90/10 split."""
    d = synthetic(n_users=300, n_items=200, n_ratings=24_000, rank=RANK, noise=NOISE, seed=3)
    return d, *_split(d.ratings)


def nonnegative_split():
    """Nonnegative rank-3 truth ``r = p.q + noise`` on the same kind of pattern; 90/10 split."""
    d = synthetic(n_users=300, n_items=200, n_ratings=24_000, rank=RANK, noise=NOISE, seed=3)
    rng = np.random.default_rng(4)
    p, q = rng.uniform(0.2, 1.3, (300, RANK)), rng.uniform(0.2, 1.3, (200, RANK))
    r = d.ratings
    values = np.einsum("nk,nk->n", p[r.users], q[r.items]) + NOISE * rng.standard_normal(r.nnz)
    nonneg = Ratings.from_arrays(r.users, r.items, np.maximum(values, 0), n_users=300, n_items=200)
    return (p, q), *_split(nonneg)


def _split(r):
    idx = np.random.default_rng(0).permutation(r.nnz)
    cut = int(0.9 * r.nnz)
    return r.subset(np.sort(idx[:cut])), r.subset(np.sort(idx[cut:]))


def rmse(model, test):
    return float(np.sqrt(np.mean((model.predict(test.users, test.items, clip=False) - test.values) ** 2)))
