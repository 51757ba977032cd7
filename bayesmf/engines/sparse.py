"""Rating arrays on the device, checked once, and per-rating products of the factors.

:class:`RatingArrays` is the (users, items, values) triple as JAX arrays, checked once on the host
(indices in range, something to fit), so the jitted engines can trust it; per-rating products
of the two sides' factors. Per-row sums over a row's ratings live with the layout that groups
them, :mod:`bayesmf.engines.chunks`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from bayesmf.engines.linalg import EXACT
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
