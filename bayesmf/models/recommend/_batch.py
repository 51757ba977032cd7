"""Batched top-k over score blocks, shared by recommendation and similarity search.

A request over ``n`` rows (users, or query items) and ``m`` columns is cut into batches whose
``b x m`` score block fits :data:`SCORE_BUDGET_BYTES`; batch heights are powers of two so that a
handful of compiled shapes serve any request, and a short last batch is padded by repeating its
last row (results discarded). Each block goes through :func:`masked_top_k`, one jitted call.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.idmap import IdMap
from bayesmf.errors import ConfigError, DataError
from bayesmf.validate import check_positive_int

__all__ = [
    "SCORE_BUDGET_BYTES", "batch_height", "check_k", "exact_matmul", "lookup_ids", "masked_top_k", "pad_to",
    "store_rows", "top_rows",
]

SCORE_BUDGET_BYTES = 64 * 2**20
"""Memory allowed for one batch's score block and its masks (about 13 bytes per user-item cell)."""

_BYTES_PER_CELL = 13  # float32 scores + float32 ranked copy + bool mask + matmul temporary


@partial(jax.jit, static_argnames="k")
def masked_top_k(scores, allowed, weights, k: int):
    """Top ``k`` of ``where(allowed, scores * weights, -inf)`` per row.

    ``scores`` (b, m) float, ``allowed`` (b, m) bool, ``weights`` (m,) float. Returns ``values``
    (b, k) (``-inf`` where fewer than ``k`` entries are allowed), ``columns`` (b, k) int32 and
    ``row_ok`` (b,) bool: False where an allowed score is NaN or infinite (the caller raises; a
    NaN must never be ranked, and numpy would even rank it first).
    """
    row_ok = jnp.all(jnp.isfinite(scores) | ~allowed, axis=1)
    ranked = jnp.where(allowed, scores * weights, -jnp.inf)
    values, columns = jax.lax.top_k(ranked, k)
    return values, columns, row_ok


def exact_matmul(a, b):
    """``a @ b`` in full float32 precision: on GPUs the default would use TF32 (10-bit
    mantissa), whose ~1e-3 relative error reorders near-tied items against the exact ranking."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def check_k(k, limit: int, what: str) -> int:
    """``k`` as an ``int`` in ``1..limit``; ConfigError naming ``what`` (the thing ``limit`` counts) otherwise."""
    k = check_positive_int("k", k)
    if k > limit:
        raise ConfigError(f"k={k} is larger than the {what} ({limit})")
    return int(k)


def lookup_ids(idmap: IdMap, raw, what: str) -> np.ndarray:
    """Indices of raw IDs; an unknown one raises a DataError naming it."""
    idx = idmap.lookup(np.atleast_1d(np.asarray(raw)), missing=-1).astype(np.int64)
    if (idx < 0).any():
        unknown = np.atleast_1d(np.asarray(raw))[idx < 0]
        raise DataError(f"unknown {what} ID {unknown[0].item()!r} ({unknown.size} unknown in all)")
    return idx


def batch_height(n_rows: int, n_cols: int, batch_size: int | None) -> int:
    """Rows per batch: a power of two, at most ``batch_size`` (default: what fits the budget)."""
    if batch_size is None:
        batch_size = max(1, SCORE_BUDGET_BYTES // (_BYTES_PER_CELL * n_cols))
    else:
        batch_size = check_positive_int("batch_size", batch_size)
    height = 1 << int(np.floor(np.log2(batch_size)))
    return min(height, 1 << int(np.ceil(np.log2(max(n_rows, 1)))))


def pad_to(rows: np.ndarray, height: int) -> np.ndarray:
    """Pad a batch of row indices to ``height`` by repeating its last entry (results discarded)."""
    return rows if rows.size == height else np.concatenate([rows, np.full(height - rows.size, rows[-1])])


def top_rows(raw, allowed, weights, k, rows):
    """:func:`masked_top_k` plus the NaN guard; ``rows`` name the batch's rows in the error
    (None: the cold-start scores)."""
    values, columns, row_ok = masked_top_k(raw, allowed, weights, k)
    if not bool(jnp.all(row_ok)):
        which = "the cold-start scores" if rows is None else f"row index {int(rows[int(np.argmin(row_ok))])}"
        raise DataError(f"the scores for {which} contain NaN or inf; refusing to rank them")
    return values, columns


def store_rows(rows, top, cols, items, scores):
    """Write a batch's top-k ``(values, columns)`` into rows ``rows`` of ``items``/``scores`` (in
    place), mapping columns back to item indices through ``cols`` (None: the catalogue)."""
    values, columns = (np.asarray(t)[: rows.size] for t in top)
    k = columns.shape[1]
    items[rows, :k] = columns if cols is None else cols[columns]
    scores[rows, :k] = values  # -inf marks padding; the caller turns it into NaN / -1
