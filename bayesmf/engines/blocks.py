"""Degree-bucketed padded layout of a sparse matrix, for NMF's light per-row passes.

Rows are put into buckets by degree rounded up to the next width of the form 2^p or 3 * 2^p;
inside a bucket each row's ratings are padded to the bucket width ``w``, so per-row sums over a
row's ratings are reductions over the last axis of an ``(n_b, w, ...)`` block, one batched op per
bucket. Padding wastes at most a third of each row's slots (about 1.2 slots per rating on
MovieLens-1M) and keeps memory O(nnz k), never a dense users x items array.

:class:`Blocks` is a pytree (a NamedTuple of tuples of arrays); the number of buckets and their
shapes are static, so a jitted function that takes one compiles once per data set, but with one
body per bucket (9-11 per side on MovieLens-1M), which XLA takes 1.4-1.9 s per side to compile.

The engines that build per-row Gram matrices (explicit ALS, the Gibbs sampler, PMF MAP, the
fold-ins) and implicit ALS use :mod:`bayesmf.engines.chunks` instead: equal-shape chunks compile
once per side (~0.4 s) and run the Gram pass as fast as these buckets (measured 34-47 ms against
38-44 ms per side at rank 10 on MovieLens-1M, one thread). NMF stays here: at rank 15 its two
light passes per half step were slower chunked (warm fit on MovieLens-100K 1.16 s against 0.65 s).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Full float32 products: on GPUs the default would use TF32 (10-bit mantissa), ~1e-3 relative error
# in every Gram matrix and row sum that the solvers and the reported losses then inherit.
EXACT = jax.lax.Precision.HIGHEST


class Blocks(NamedTuple):
    """Ratings of one side grouped by row, bucketed by padded degree.

    For bucket ``b``: ``rows[b]`` (n_b,) row indices; ``cols[b]`` (n_b, w_b) column indices
    (padding points at column 0); ``vals[b]`` (n_b, w_b) rating values; ``mask[b]`` (n_b, w_b)
    1 for real entries and 0 for padding; ``pos[b]`` (n_b, w_b) the position of each entry in the
    original rating arrays (-1 for padding), for per-rating quantities computed elsewhere.
    Rows without ratings are in no bucket. ``slot`` (n_rows,) is each row's position in the
    concatenation of the buckets (``concatenate(rows)``), or the number of rows with ratings
    for a row without any: :func:`in_row_order` uses it to put per-bucket results back in row
    order with one gather instead of one scatter per bucket.
    """

    rows: tuple
    cols: tuple
    vals: tuple
    mask: tuple
    pos: tuple
    slot: jnp.ndarray

    @property
    def n_slots(self) -> int:
        """Total padded entries (>= nnz)."""
        return int(sum(np.prod(m.shape) for m in self.mask))


def build_blocks(row_idx, col_idx, values, n_rows: int, dtype=np.float32, min_width: int = 4) -> Blocks:
    """Bucket the (row, col, value) triples by row degree (vectorised; loops over buckets only)."""
    row_idx = np.asarray(row_idx)
    col_idx = np.asarray(col_idx)
    values = np.asarray(values)
    order = np.argsort(row_idx, kind="stable")
    counts = np.bincount(row_idx, minlength=n_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    # Widths from {4, 6, 8, 12, 16, 24, ...} (powers of two and three times powers of two): a row
    # wastes at most a third of its slots (about 1.2 slots per rating on MovieLens-1M, against 1.43
    # with powers of two alone) for twice the number of buckets, each still one batched matmul.
    grid = np.unique(np.concatenate([2 ** np.arange(1, 40), 3 * 2 ** np.arange(0, 39)]))
    width = grid[np.searchsorted(grid, np.maximum(counts, min_width))].astype(np.int64)
    sorted_rows = row_idx[order]
    slot = np.arange(order.size) - indptr[sorted_rows]
    buckets = ([], [], [], [], [])
    row_slot = np.full(n_rows, np.count_nonzero(counts), dtype=np.int32)
    filled = 0
    for w in np.unique(width[counts > 0]):
        members = np.flatnonzero((width == w) & (counts > 0))
        local = np.full(n_rows, -1, dtype=np.int64)
        local[members] = np.arange(members.size)
        sel = local[sorted_rows] >= 0
        r_local, s = local[sorted_rows[sel]], slot[sel]
        src = order[sel]
        cols = np.zeros((members.size, w), dtype=np.int32)
        vals = np.zeros((members.size, w), dtype=dtype)
        mask = np.zeros((members.size, w), dtype=dtype)
        pos = np.full((members.size, w), -1, dtype=np.int32)
        cols[r_local, s] = col_idx[src]
        vals[r_local, s] = values[src]
        mask[r_local, s] = 1
        pos[r_local, s] = src
        for store, arr in zip(buckets, (members.astype(np.int32), cols, vals, mask, pos)):
            store.append(jnp.asarray(arr))
        row_slot[members] = filled + np.arange(members.size)
        filled += members.size
    return Blocks(*(tuple(b) for b in buckets), jnp.asarray(row_slot))


def blocks_for(ratings, side: str, values=None, dtype=np.float32) -> Blocks:
    """:class:`Blocks` of a :class:`~bayesmf.data.Ratings` by ``side="user"`` or ``"item"``."""
    vals = ratings.values if values is None else values
    if side == "user":
        return build_blocks(ratings.users, ratings.items, vals, ratings.n_users, dtype)
    if side == "item":
        return build_blocks(ratings.items, ratings.users, vals, ratings.n_items, dtype)
    raise ValueError(f"side must be 'user' or 'item', got {side!r}")


def in_row_order(blocks: Blocks, per_bucket):
    """Per-bucket results ``per_bucket[b]`` (n_b, ...) as one array in row order (n_rows, ...),
    zeros for rows without ratings: a concatenation and one gather (no scatter)."""
    tail = per_bucket[0].shape[1:]
    return jnp.concatenate([*per_bucket, jnp.zeros((1, *tail), per_bucket[0].dtype)])[blocks.slot]
