r"""The Gaussian likelihood's sum of squares over the observed ratings, with a gradient that
never scatters.

For targets ``y_ij`` (ratings minus a shift) observed at the pairs ``(i, j)``,

.. math::

    S(U, V) = \sum_{(i,j)} (y_{ij} - u_i^\top v_j)^2, \qquad
    \frac{\partial S}{\partial u_i} = -2 \sum_{j \in \Omega_i} e_{ij} v_j, \qquad
    \frac{\partial S}{\partial v_j} = -2 \sum_{i \in \Omega_j} e_{ij} u_i,

with ``e_ij = y_ij - u_i' v_j``. Written as ``sum((y - sum(U[users] * V[items], -1))**2)``, JAX
differentiates the two gathers into two scatter-adds of an (nnz, k) block, which XLA:CPU runs
one rating at a time. Here each gradient is a
per-row sum, computed from the ratings packed by rows (:mod:`bayesmf.engines.chunks`): one pass
over the user chunks gives ``S`` and ``dS/dU`` (gather ``v_j`` into the chunk, residuals by a
batched matrix-vector product, their weighted sum per virtual row by another, then the sorted
per-row sum), one pass over the item chunks gives ``dS/dV`` (timings: benchmarks/RESULTS.md).
Memory: the two layouts, O(nnz), and one chunk's gathered block
at a time.

The reverse-mode rule is written by hand (:func:`sum_of_squares` is a ``jax.custom_vjp``): the
forward pass under differentiation runs both passes and keeps the two gradients, the backward
pass only scales them. Forward-mode differentiation (``jax.jvp``) is not defined; HMC, SVI and
the optimizers only take gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines.chunks import Chunks, build_chunks, in_row_order, to_rows
from bayesmf.engines.linalg import EXACT

# Virtual-row width and chunk size of the two passes (matrix-vector products, not Gram matrices),
# chosen by timing value and gradient over widths and chunk sizes (benchmarks/RESULTS.md).
WIDTH = 32
CHUNK_SLOTS = 8192


class RatingLayout(NamedTuple):
    """The same targets packed twice: by user rows (``by_user``, columns = items) and by item
    rows (``by_item``, columns = users); values ``y_ij`` on the slots, 0 on padding."""

    by_user: Chunks
    by_item: Chunks


def rating_layout(users, items, targets, n_users: int, n_items: int, dtype=np.float32, width: int = WIDTH,
                  chunk_slots: int = CHUNK_SLOTS) -> RatingLayout:
    """Pack the targets ``targets`` (nnz,) observed at ``(users, items)`` for :func:`sum_of_squares`
    (host-side, once per fit; ``width`` and ``chunk_slots`` as in
    :func:`~bayesmf.engines.chunks.build_chunks`). Every rating lands in one slot of each layout."""
    by_user = build_chunks(users, items, targets, n_users, n_items, width, chunk_slots, dtype)
    by_item = build_chunks(items, users, targets, n_items, n_users, width, chunk_slots, dtype)
    return RatingLayout(by_user, by_item)


def _one_side(chunks: Chunks, rows, other):
    """One pass over one side's chunks: ``(S, g)`` with ``g_r = sum_j e_rj f_j`` (n_rows, k) for
    the rows ``x_r`` = ``rows`` and the other side's factors ``f_j`` = ``other``."""
    k = other.shape[1]
    padded_other = jnp.concatenate([other, jnp.zeros((1, k), other.dtype)])
    padded_rows = jnp.concatenate([rows, jnp.zeros((1, k), rows.dtype)])  # unused local rows
    n_local = chunks.cols.shape[1]

    def one_chunk(chunk):
        cols, vals, owner, local_rows = chunk
        f = padded_other[cols]  # (C, W, k), zero on padding
        x = padded_rows[local_rows][owner]  # (C, k): each virtual row's own factor row
        fitted = jnp.matmul(f, x[..., None], precision=EXACT)[..., 0]
        e = vals - fitted  # 0 on padding: its target is 0 and its gathered row is the zero row
        g = jnp.matmul(jnp.swapaxes(f, 1, 2), e[..., None], precision=EXACT)[..., 0]
        return to_rows(owner, g, n_local), jnp.sum(e * e)

    g, sse = jax.lax.map(one_chunk, (chunks.cols, chunks.vals, chunks.owner, chunks.rows))
    return jnp.sum(sse), in_row_order(chunks, g)


@jax.custom_vjp
def sum_of_squares(layout: RatingLayout, U, V):
    """``S(U, V) = sum_(i,j) (y_ij - u_i . v_j)^2`` over the ratings of ``layout``, a scalar;
    ``U`` (n_users, k), ``V`` (n_items, k). Rows without ratings get a zero gradient."""
    return _one_side(layout.by_user, U, V)[0]


def _forward(layout, U, V):
    sse, g_users = _one_side(layout.by_user, U, V)
    _, g_items = _one_side(layout.by_item, V, U)
    # gradients in the factors' own dtype: with x64 on, float64 targets meet float32 factors
    return sse, (g_users.astype(U.dtype), g_items.astype(V.dtype))


def _backward(residual_sums, cotangent):
    g_users, g_items = residual_sums
    # the layout holds data (indices, targets): no cotangent
    return (None, (-2.0 * cotangent * g_users).astype(g_users.dtype),
            (-2.0 * cotangent * g_items).astype(g_items.dtype))


sum_of_squares.defvjp(_forward, _backward)
