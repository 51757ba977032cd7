"""Baseline predictors: global mean plus user and item biases, ``r_hat = mu + b_u + c_i``.

The biases minimise (Koren 2010, as Surprise's ``BaselineOnly`` with ``method="als"``)

    sum_{(u,i)} (r_ui - mu - b_u - c_i)^2 + reg_user sum_u b_u^2 + reg_item sum_i c_i^2

by alternating exact minimisation: with the user biases fixed each item bias is a damped mean ::

    c_i = sum_{u in N(i)} (r_ui - mu - b_u) / (reg_item + |N(i)|)

and then symmetrically for users. Each half step is an exact block minimiser, so the objective
never increases. A user or item without ratings gets 0 (its regularised solution).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


class BiasState(NamedTuple):
    user_bias: jnp.ndarray  # (n_users,)
    item_bias: jnp.ndarray  # (n_items,)


def damped_mean(residual, index, counts, reg):
    """``sum_{n: index[n] = g} residual[n] / (reg + counts[g])`` per group g; 0 for empty groups.

    The exact minimiser over ``b_g`` of ``sum (residual - b_g)^2 + reg b_g^2``. Shapes:
    ``residual``, ``index`` (nnz,); ``counts`` (n_groups,) float.
    """
    sums = jax.ops.segment_sum(residual, index, num_segments=counts.shape[0])
    return jnp.where(counts > 0, sums / jnp.maximum(reg + counts, 1e-30), 0.0)


def init(n_users: int, n_items: int, dtype=jnp.float32) -> BiasState:
    return BiasState(jnp.zeros((n_users,), dtype), jnp.zeros((n_items,), dtype))


@partial(jax.jit, static_argnames=("reg_user", "reg_item"))
def step(state: BiasState, data, user_counts, item_counts, mu, reg_user: float, reg_item: float):
    """One alternating sweep (items, then users, as Surprise); returns ``(state, info)``.

    ``data`` is a :class:`~bayesmf.engines.sparse.RatingArrays`; ``info`` has the objective
    ``loss`` and the training ``rmse`` after the sweep.
    """
    users, items, r = data
    item_bias = damped_mean(r - mu - state.user_bias[users], items, item_counts, reg_item)
    user_bias = damped_mean(r - mu - item_bias[items], users, user_counts, reg_user)
    err = r - mu - user_bias[users] - item_bias[items]
    sse = jnp.sum(err * err)
    loss = sse + reg_user * jnp.sum(user_bias**2) + reg_item * jnp.sum(item_bias**2)
    return BiasState(user_bias, item_bias), {"loss": loss, "rmse": jnp.sqrt(sse / r.shape[0])}
