"""Nonnegative matrix factorisation on the observed entries by multiplicative updates (Lee & Seung 2001).

Prediction ``r_hat(u, i) = o_ui + p_u . q_i`` with ``p_u, q_i >= 0`` and offset ``o_ui = 0``, or
``o_ui = mu + b_u + c_i`` with free-sign biases (as Surprise's ``NMF(biased=True)``).

Frobenius objective (sums over the observed pairs only; ``n_u``, ``n_i`` rating counts):

    F = 1/2 sum (y_ui - p_u . q_i)^2 + reg/2 (sum_u n_u |p_u|^2 + sum_i n_i |q_i|^2)
        + bias_reg/2 (sum_u b_u^2 + sum_i c_i^2),                 y_ui = r_ui - o_ui.

With the items fixed, user ``u``'s update is

    p_u <- p_u * (sum_i y+_ui q_i) / (sum_i (p_u . q_i + y-_ui) q_i + reg n_u p_u)

(``y = y+ - y-``, elementwise product and quotient). It is the minimiser of the Lee-Seung
auxiliary function ``K = diag((Q^T Q p + Q^T y- + reg n p) / p)``, which dominates the Hessian
``Q^T Q + reg n I`` because ``diag(Q^T Q p / p) - Q^T Q`` is positive semidefinite for
``Q, p >= 0`` and the added terms are nonnegative diagonals; so ``F`` never increases, for any
sign of the targets. For ``o = 0`` and ``r >= 0`` it is Lee & Seung's rule restricted to the
observed entries. The biases are updated by exact block minimisation (damped means).

KL objective (no biases; ratings must be >= 0): ``D = sum (r log(r / s) - r + s) + reg (sum_u n_u
sum_a p_ua + sum_i n_i sum_a q_ia)`` with ``s = p . q``, and the update
``p_u <- p_u * (sum_i q_i r_ui / s_ui) / (sum_i q_i + reg n_u)``, also monotone (Lee & Seung).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines.als import FactorState
from bayesmf.engines.baseline import damped_mean
from bayesmf.engines.blocks import Blocks
from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays, entry_dot, gather_other, slot_dot, weighted_row_sum

TINY = 1e-12  # floor on denominators and on predictions inside the KL logarithm


class NMFData(NamedTuple):
    user_blocks: Blocks
    item_blocks: Blocks
    user_counts: jnp.ndarray
    item_counts: jnp.ndarray
    ratings: RatingArrays
    mu: jnp.ndarray  # scalar; 0 without biases


@engine_config("biases", "loss")
class NMFConfig:
    reg: float
    bias_reg: float = 0.0
    biases: bool = False
    loss: str = "frobenius"  # or "kl"


def init_factors(seed, n_users: int, n_items: int, rank: int, target: float, dtype=jnp.float32) -> FactorState:
    """Uniform(0, a) factors with ``a`` chosen so that ``E[p . q] = rank a^2 / 4 = target``; drawn
    on the host (NumPy, ``seed``), which avoids compiling JAX's sampler for each shape."""
    a = np.sqrt(4.0 * max(float(target), TINY) / rank)
    rng = np.random.default_rng(seed)
    u, v = (a * rng.uniform(size=(n, rank)) for n in (n_users, n_items))
    return FactorState(*(jnp.asarray(x, dtype) for x in (u, v, np.zeros(n_users), np.zeros(n_items))))


def update_side(blocks, counts, own, own_bias, other, other_bias, mu, config: NMFConfig):
    """One multiplicative update of one side's factors (the other side and the biases fixed)."""
    gathered = gather_other(blocks, other)
    est = slot_dot(blocks, own, gathered)
    if config.loss == "kl":
        ratio = tuple(v / jnp.maximum(s, TINY) for v, s in zip(blocks.vals, est, strict=True))
        num = weighted_row_sum(blocks, gathered, ratio, own.shape[0])
        den = weighted_row_sum(blocks, gathered, blocks.mask, own.shape[0]) + config.reg * counts[:, None]
    else:
        targets = tuple(
            v - mu - (own_bias[rows][:, None] + other_bias[c] if config.biases else 0.0)
            for rows, v, c in zip(blocks.rows, blocks.vals, blocks.cols, strict=True)
        )
        num = weighted_row_sum(blocks, gathered, tuple(jnp.maximum(y, 0) for y in targets), own.shape[0])
        den_w = tuple(s + jnp.maximum(-y, 0) for s, y in zip(est, targets, strict=True))
        den = weighted_row_sum(blocks, gathered, den_w, own.shape[0]) + config.reg * counts[:, None] * own
    return own * num / jnp.maximum(den, TINY)


def _offset(state: FactorState, data: NMFData, config: NMFConfig):
    users, items, _ = data.ratings
    if not config.biases:
        return 0.0
    return data.mu + state.user_bias[users] + state.item_bias[items]


def objective(state: FactorState, data: NMFData, config: NMFConfig):
    """``(F or D, train RMSE)`` as in the module docstring."""
    users, items, r = data.ratings
    s = entry_dot(state.user_factors, state.item_factors, users, items)
    pred = _offset(state, data, config) + s
    rmse = jnp.sqrt(jnp.mean((r - pred) ** 2))
    p, q = state.user_factors, state.item_factors
    if config.loss == "kl":
        s = jnp.maximum(s, TINY)
        data_term = jnp.sum(jnp.where(r > 0, r * jnp.log(jnp.maximum(r, TINY) / s), 0.0) - r + s)
        return data_term + config.reg * (data.user_counts @ p.sum(1) + data.item_counts @ q.sum(1)), rmse
    penalty = config.reg * (data.user_counts @ jnp.sum(p**2, 1) + data.item_counts @ jnp.sum(q**2, 1))
    penalty += config.bias_reg * (jnp.sum(state.user_bias**2) + jnp.sum(state.item_bias**2))
    return 0.5 * (jnp.sum((r - pred) ** 2) + penalty), rmse


def update_biases(state: FactorState, data: NMFData, config: NMFConfig) -> FactorState:
    """Exact minimisation over the item biases, then the user biases (damped mean residuals)."""
    users, items, r = data.ratings
    resid = r - data.mu - entry_dot(state.user_factors, state.item_factors, users, items)
    item_bias = damped_mean(resid - state.user_bias[users], items, data.item_counts, config.bias_reg)
    user_bias = damped_mean(resid - item_bias[items], users, data.user_counts, config.bias_reg)
    return state._replace(user_bias=user_bias, item_bias=item_bias)


@partial(jax.jit, donate_argnums=0)
def step(state: FactorState, data: NMFData, config: NMFConfig):
    """One sweep: biases (if any), then users, then items. ``info``: ``loss`` and ``rmse``."""
    if config.biases:
        state = update_biases(state, data, config)
    p = update_side(data.user_blocks, data.user_counts, state.user_factors, state.user_bias,
                    state.item_factors, state.item_bias, data.mu, config)
    q = update_side(data.item_blocks, data.item_counts, state.item_factors, state.item_bias,
                    p, state.user_bias, data.mu, config)
    state = state._replace(user_factors=p, item_factors=q)
    loss, rmse = objective(state, data, config)
    return state, {"loss": loss, "rmse": rmse}
