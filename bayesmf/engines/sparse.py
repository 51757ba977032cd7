"""Rating arrays on the device and the per-row sparse reductions the classical engines share.

:class:`RatingArrays` is the (users, items, values) triple as JAX arrays, checked once on the host
(indices in range, something to fit), so the jitted engines can trust it. The block helpers work
on the degree-bucketed layout of :mod:`bayesmf.engines.blocks` and cost O(nnz k), for the
engine that never needs per-row Gram matrices (NMF's multiplicative updates; the Gram matrices
of the exact engines are :func:`bayesmf.engines.chunks.gram_rhs`, O(nnz k^2)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from bayesmf.engines.blocks import EXACT, in_row_order
from bayesmf.errors import DataError


class RatingArrays(NamedTuple):
    """Ratings as device arrays: ``users``, ``items`` (nnz,) int32 and ``values`` (nnz,) float."""

    users: jnp.ndarray
    items: jnp.ndarray
    values: jnp.ndarray


def check_ratings(ratings) -> None:
    """Raise :class:`~bayesmf.errors.DataError` for an empty set and for indices outside
    ``[0, n_users)`` / ``[0, n_items)`` (a ``Ratings`` built by its raw constructor is not
    validated, and an out-of-range index would otherwise be silently clamped by JAX's gather)."""
    if ratings.nnz == 0:
        raise DataError("the training set is empty")
    for name, idx, n in (("user", ratings.users, ratings.n_users), ("item", ratings.items, ratings.n_items)):
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name} index {int(idx[row])} at row {row} is outside [0, {n})")


def rating_arrays(ratings, dtype=np.float32) -> RatingArrays:
    """:func:`check_ratings`, then move the triple to the device."""
    check_ratings(ratings)
    return RatingArrays(
        jnp.asarray(ratings.users, dtype=jnp.int32),
        jnp.asarray(ratings.items, dtype=jnp.int32),
        jnp.asarray(ratings.values, dtype=dtype),
    )


def entry_dot(user_factors, item_factors, users, items):
    """``p_u . q_i`` for every rating: (nnz,)."""
    return jnp.einsum("nk,nk->n", user_factors[users], item_factors[items], precision=EXACT)


def gather_other(blocks, other):
    """The other side's factors for every padded slot: a tuple of (n_b, w_b, k) arrays."""
    return tuple(other[c] for c in blocks.cols)


def slot_dot(blocks, own, gathered):
    """``x_r . f_j`` for every padded slot of row ``r``: a tuple of (n_b, w_b) arrays."""
    return tuple(jnp.einsum("nwk,nk->nw", f, own[rows], precision=EXACT)
                 for rows, f in zip(blocks.rows, gathered, strict=True))


def weighted_row_sum(blocks, gathered, weights, n_rows: int):
    """``s_r = sum_{j in N(r)} w_rj f_j`` -> (n_rows, k); padding is masked, empty rows get 0.

    ``gathered`` comes from :func:`gather_other`; ``weights`` is laid out like ``blocks.vals``,
    optionally with a trailing axis of ``c`` weight sets (one pass over ``gathered`` for all of
    them) -> (n_rows, k, c).
    """
    del n_rows  # implied by the blocks (blocks.slot)
    parts = []
    for f, w, m in zip(gathered, weights, blocks.mask, strict=True):
        m = m.reshape(m.shape + (1,) * (w.ndim - m.ndim))
        parts.append(jnp.einsum("nwk,nw...->nk...", f, w * m, precision=EXACT))
    return in_row_order(blocks, parts)
