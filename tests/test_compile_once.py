"""Similar data sets share compiled sweeps: chunk shapes on a coarse grid (engines/chunks.py)."""

import logging

import jax
import numpy as np
import pytest

from bayesmf import ALS, BPMF, splits
from bayesmf.data import synthetic
from bayesmf.engines.chunks import build_chunks, shape_bucket


@pytest.mark.parametrize("n", [1, 7, 16, 17, 100, 583, 793, 1000, 1024, 1025, 70_001])
def test_shape_bucket_rounds_up_by_at_most_an_eighth(n):
    b = shape_bucket(n)
    assert n <= b <= max(n, n + n / 8)
    # the grid: multiples of 1/8 of the leading power of two
    if n > 8:
        step = 2 ** (int(np.log2(n))) // 8
        assert b % step == 0


def test_shape_bucket_maps_nearby_sizes_together():
    assert len({shape_bucket(n) for n in range(578, 584)}) == 1
    assert len({shape_bucket(n) for n in range(787, 795)}) == 1


def test_padded_chunks_keep_every_rating_once():
    rng = np.random.default_rng(0)
    n_rows, n_cols, nnz = 50, 40, 900
    pairs = rng.choice(n_rows * n_cols, nnz, replace=False)
    rows, cols = pairs // n_cols, pairs % n_cols
    vals = rng.normal(size=nnz).astype(np.float32)
    ch = build_chunks(rows, cols, vals, n_rows, n_cols, width=8, chunk_slots=128)
    c, v, owner, grow = (np.asarray(a) for a in (ch.cols, ch.vals, ch.owner, ch.rows))
    real = c < n_cols
    assert real.sum() == nnz
    # each real slot's (row, col, value) is one input triple, each triple appears once
    local_row = np.broadcast_to(owner[..., None], c.shape)
    global_row = np.take_along_axis(grow, local_row.reshape(len(grow), -1), axis=1).reshape(c.shape)
    got = sorted(zip(global_row[real].tolist(), c[real].tolist(), v[real].tolist()))
    assert got == sorted(zip(rows.tolist(), cols.tolist(), vals.tolist()))
    assert np.all(np.diff(owner, axis=1) >= 0)  # sorted segment ids


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


def _compiled_names(fit_each, folds) -> list[str]:
    """Names of the functions XLA compiled while ``fit_each(train)`` ran on every fold."""
    handler, logger = _Compiles(), logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            for train, _ in folds:
                fit_each(train)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return handler.names


@pytest.mark.slow
def test_als_compiles_its_sweep_once_across_cross_validation_folds():
    data = synthetic(n_users=300, n_items=200, n_ratings=9000, rank=3, seed=4).ratings
    names = _compiled_names(lambda train: ALS(rank=4, n_iter=2).fit(train), splits.kfold(data, k=5, seed=0))
    sweeps = [n for n in names if n.endswith("(sweep)")]
    assert sweeps, f"no sweep compilation seen among {names}"
    assert len(sweeps) == 1, names


@pytest.mark.slow
def test_bpmf_compiles_its_gibbs_sweep_once_across_folds():
    # the 'auto' noise and offset priors are scaled to each fold's ratings: traced, not static
    data = synthetic(n_users=200, n_items=150, n_ratings=6000, rank=3, seed=5).ratings
    names = _compiled_names(lambda train: BPMF(rank=3, biases=True, n_warmup=2, n_samples=3).fit(train),
                            splits.kfold(data, k=3, seed=0))
    sweeps = [n for n in names if n.endswith("_chains_sweep)")]
    assert sweeps, f"no Gibbs sweep compilation seen among {names}"
    assert len(sweeps) == 1, names
