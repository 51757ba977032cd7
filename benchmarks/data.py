"""The data every side of a comparison reads: one ``.npz`` per protocol, written by the runner.

Peers run in their own virtual environments without bayesmf, so the runner turns bayesmf's
loaders and splits into plain arrays once and every process (bayesmf's included) reads the same
file. Indices are the contiguous training index space (``0..n_users-1``, ``0..n_items-1``); test
pairs whose user or item has no training rating are dropped (``drop_unseen=True``) so that no
library's cold-start fallback enters the comparison, and the number dropped is recorded.

Array layout of a split file::

    train_users, train_items (int32, nnz_train)   train_values (float32, nnz_train)
    test_users,  test_items  (int32, nnz_test)    test_values  (float32, nnz_test)
    n_users, n_items (int), rating_min, rating_max (float), kind ("explicit" | "implicit"),
    dropped_unseen (int), name (str)
    user_ids, item_ids: the raw IDs of the index spaces (``user_ids[k]`` is user index ``k``)
    train_timestamps, test_timestamps (int64, Unix seconds; -1 = unknown): present when the
    ratings have timestamps (the factorization machine's time features need them)
    data_dir (str): the data directory the split was read from ("" = the default)

Factorization-machine pairs also read a design file next to the split (``benchmarks.fm_features``).

For ``kind == "implicit"`` the train values are all 1 (a positive interaction) and the test pairs
are the held-out positives; the confidence weighting is a hyperparameter of each job. Implicit
splits also store ``candidates`` (int32, nnz_test x 100): column 0 the held-out item, then 99
items the user rated in neither train nor test (bayesmf.candidate_sets, seed 0), for the sampled
ranking protocol next to the full-catalogue one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROTOCOLS = {
    "ml100k-u1": "MovieLens-100K predefined u1.base / u1.test",
    "ml1m-90-10": "MovieLens-1M random 90/10 (rng(42) permutation, first 90% train)",
    "ml1m-implicit": "MovieLens-1M 90/10 as above, ratings >= 4 kept as positives (train and test)",
    "ml1m-loo": "MovieLens-1M as implicit feedback (every rating a positive), one random positive per user "
    "held out (leave_one_out by='random', seed 0; NCF protocol): full-catalogue ranking and the sampled "
    "1 + 99 negatives protocol",
    "synthetic": "BPMF synthetic, 300 users x 200 items, 6000 ratings, rank 5, clipped to 1..5, random 80/20 "
    "(smoke test only)",
    "synthetic-implicit": "the synthetic split above, ratings >= the training median kept as positives "
    "(smoke test only)",
    "synthetic-ordinal": "the synthetic split above, ratings rounded to the integers 1..5 (smoke test of "
    "ordinal models only)",
}

IMPLICIT_THRESHOLD = 4.0
N_NEGATIVES = 99


def _split(protocol: str, data_dir=None):
    """(train, test, kind, dropped) for ``protocol`` from bayesmf's loaders."""
    import bayesmf
    from bayesmf import datasets, splits

    if protocol == "ml100k-u1":
        split = splits.predefined("movielens-100k", "u1", data_dir=data_dir, drop_unseen=True)
        return split.train, split.test, "explicit", split.dropped
    if protocol in ("ml1m-90-10", "ml1m-implicit"):
        split = splits.random(datasets.load("movielens-1m", data_dir), 0.1, seed=42, drop_unseen=True)
        if protocol == "ml1m-90-10":
            return split.train, split.test, "explicit", split.dropped
        train, _ = bayesmf.to_implicit(split.train, threshold=IMPLICIT_THRESHOLD)
        test, _ = bayesmf.to_implicit(split.test, threshold=IMPLICIT_THRESHOLD)
        return train, test, "implicit", split.dropped
    if protocol == "ml1m-loo":
        positives, _ = bayesmf.to_implicit(datasets.load("movielens-1m", data_dir))
        split = splits.leave_one_out(positives, seed=0, by="random", drop_unseen=True)
        return split.train, split.test, "implicit", split.dropped
    if protocol in ("synthetic", "synthetic-implicit", "synthetic-ordinal"):
        toy = datasets.synthetic(n_users=300, n_items=200, n_ratings=6000, rank=5, noise=0.5, seed=0)
        # clipped to a 1..5 scale like MovieLens (NMF needs values >= 0)
        values = np.clip(toy.ratings.values, 1.0, 5.0)
        ratings = toy.ratings.with_values(np.rint(values) if protocol == "synthetic-ordinal" else values)
        ratings = ratings.with_scale((1.0, 5.0))
        split = splits.random(ratings, 0.2, seed=0, drop_unseen=True)
        if protocol != "synthetic-implicit":
            return split.train, split.test, "explicit", split.dropped
        threshold = float(np.median(split.train.values))
        train, _ = bayesmf.to_implicit(split.train, threshold=threshold)
        test, _ = bayesmf.to_implicit(split.test, threshold=threshold)
        return train, test, "implicit", split.dropped
    raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")


def write_split(protocol: str, directory, data_dir=None) -> Path:
    """Write ``protocol``'s split to ``directory/<protocol>.npz`` and return the path."""
    train, test, kind, dropped = _split(protocol, data_dir)
    scale = train.rating_scale or (float(train.values.min()), float(train.values.max()))
    path = Path(directory) / f"{protocol}.npz"
    extra = {}
    for part, ratings in (("train", train), ("test", test)):
        if ratings.timestamps is not None:
            extra[f"{part}_timestamps"] = np.asarray(ratings.timestamps, np.int64)
    if kind == "implicit":  # the sampled protocol's candidates (shown in the leave-one-out tables)
        from bayesmf.data import candidate_sets

        _, extra["candidates"] = candidate_sets(train, test, N_NEGATIVES, seed=0)
        extra["candidates"] = extra["candidates"].astype(np.int32)
    np.savez(
        path,
        train_users=train.users.astype(np.int32), train_items=train.items.astype(np.int32),
        train_values=train.values.astype(np.float32),
        test_users=test.users.astype(np.int32), test_items=test.items.astype(np.int32),
        test_values=test.values.astype(np.float32),
        n_users=train.n_users, n_items=train.n_items, rating_min=scale[0], rating_max=scale[1],
        kind=kind, dropped_unseen=int(dropped), name=protocol, user_ids=train.user_map.ids(),
        item_ids=train.item_map.ids(), data_dir="" if data_dir is None else str(data_dir), **extra,
    )
    return path
