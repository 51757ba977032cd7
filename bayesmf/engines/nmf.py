"""Nonnegative matrix factorisation on the observed entries by multiplicative updates (Lee & Seung 2001).

Prediction ``r_hat(u, i) = o_ui + p_u . q_i`` with ``p_u, q_i >= 0`` and offset ``o_ui = 0``, or
``o_ui = mu + b_u + c_i`` with free-sign biases (as Surprise's ``NMF(biased=True)``).

Frobenius objective (sums over the observed pairs only; ``n_u``, ``n_i`` rating counts)::

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
from bayesmf.engines.chunks import Chunks, in_row_order, to_rows
from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays, entry_dot

TINY = 1e-12  # floor on denominators and on predictions inside the KL logarithm

# Width of the virtual rows of NMF's chunked layout (:mod:`bayesmf.engines.chunks`). A half step
# only needs per-slot dot products and per-row weighted sums, O(nnz k), which run as elementwise
# products and reductions (not batched matmuls, whose per-row call overhead dominates at these
# sizes), so narrow rows that pad little win (timings over widths: benchmarks/RESULTS.md).
NMF_WIDTH = 8


class NMFData(NamedTuple):
    user_chunks: Chunks
    item_chunks: Chunks
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


def update_side(chunks, counts, own, own_bias, other, other_bias, mu, config: NMFConfig, with_loss: bool = False):
    """One multiplicative update of one side's factors (the other side and the biases fixed).

    Returns ``(factors, fit)``: ``fit`` is None, or with ``with_loss`` the pair ``(sse, kl)`` of
    the updated factors over this side's ratings — the squared error and the KL data term
    (:func:`objective`'s, 0 for the Frobenius loss). Chunk by chunk (a row's ratings never
    straddle two chunks, so each chunk's rows are updated completely inside it): the other
    side's factors are gathered once per chunk and, while they are in cache, give the current
    predictions, numerator and denominator, the new rows and the loss terms at the new rows.
    """
    n_other, k = other.shape
    dtype = own.dtype
    pad = jnp.zeros((1,), dtype)
    factors = jnp.concatenate([other, jnp.zeros((1, k), dtype)])
    start = jnp.concatenate([own, jnp.zeros((1, k), dtype)])
    count = jnp.concatenate([counts, pad])
    row_bias = jnp.concatenate([own_bias, pad])
    col_bias = jnp.concatenate([other_bias, pad])
    n_local = chunks.cols.shape[1]

    def one_chunk(chunk):
        cols, vals, owner, rows = chunk
        f = factors[cols]  # (C, W, k), zero on padding slots
        real = cols < n_other
        x = start[rows]  # (n_local, k)
        est = jnp.sum(f * x[owner][:, None, :], axis=-1)  # (C, W)
        if config.loss == "kl":
            targets = vals
            num_w, den_w = vals / jnp.maximum(est, TINY), real.astype(dtype)
        else:
            targets = vals - mu - (row_bias[rows][owner][:, None] + col_bias[cols] if config.biases else 0.0)
            num_w, den_w = jnp.maximum(targets, 0), est + jnp.maximum(-targets, 0)
        num = to_rows(owner, jnp.sum(f * num_w[..., None], axis=1), n_local)
        den = to_rows(owner, jnp.sum(f * den_w[..., None], axis=1), n_local)
        den = den + config.reg * count[rows][:, None] * (1.0 if config.loss == "kl" else x)
        new = x * num / jnp.maximum(den, TINY)
        if not with_loss:
            return new, jnp.zeros((), dtype), jnp.zeros((), dtype)
        fitted = jnp.sum(f * new[owner][:, None, :], axis=-1)
        sse = jnp.sum(jnp.where(real, (targets - fitted) ** 2, 0.0))
        kl = jnp.sum(jnp.where(real, _kl_terms(targets, fitted), 0.0)) if config.loss == "kl" else jnp.zeros((), dtype)
        return new, sse, kl

    new, sse, kl = jax.lax.map(one_chunk, (chunks.cols, chunks.vals, chunks.owner, chunks.rows))
    new = in_row_order(chunks, new)
    return new, ((jnp.sum(sse), jnp.sum(kl)) if with_loss else None)


def _kl_terms(r, s):
    """``r log(r / s) - r + s`` elementwise, with ``s`` floored at TINY and ``0 log 0 = 0``."""
    s = jnp.maximum(s, TINY)
    return jnp.where(r > 0, r * jnp.log(jnp.maximum(r, TINY) / s), 0.0) - r + s


def _offset(state: FactorState, data: NMFData, config: NMFConfig):
    users, items, _ = data.ratings
    if not config.biases:
        return 0.0
    return data.mu + state.user_bias[users] + state.item_bias[items]


def _loss(state: FactorState, data: NMFData, config: NMFConfig, sse, kl):
    """``(F or D, train RMSE)`` from the data terms ``sse`` and ``kl`` plus the penalties."""
    p, q = state.user_factors, state.item_factors
    rmse = jnp.sqrt(sse / data.ratings.values.shape[0])
    if config.loss == "kl":
        return kl + config.reg * (data.user_counts @ p.sum(1) + data.item_counts @ q.sum(1)), rmse
    penalty = config.reg * (data.user_counts @ jnp.sum(p**2, 1) + data.item_counts @ jnp.sum(q**2, 1))
    penalty += config.bias_reg * (jnp.sum(state.user_bias**2) + jnp.sum(state.item_bias**2))
    return 0.5 * (sse + penalty), rmse


def objective(state: FactorState, data: NMFData, config: NMFConfig):
    """``(F or D, train RMSE)`` as in the module docstring, from the ratings."""
    users, items, r = data.ratings
    s = entry_dot(state.user_factors, state.item_factors, users, items)
    sse = jnp.sum((r - _offset(state, data, config) - s) ** 2)
    kl = jnp.sum(_kl_terms(r, s)) if config.loss == "kl" else 0.0
    return _loss(state, data, config, sse, kl)


def update_biases(state: FactorState, data: NMFData, config: NMFConfig) -> FactorState:
    """Exact minimisation over the item biases, then the user biases (damped mean residuals)."""
    users, items, r = data.ratings
    resid = r - data.mu - entry_dot(state.user_factors, state.item_factors, users, items)
    item_bias = damped_mean(resid - state.user_bias[users], items, data.item_counts, config.bias_reg)
    user_bias = damped_mean(resid - item_bias[items], users, data.user_counts, config.bias_reg)
    return state._replace(user_bias=user_bias, item_bias=item_bias)


@partial(jax.jit, donate_argnums=0)
def step(state: FactorState, data: NMFData, config: NMFConfig):
    """One sweep: biases (if any), then users, then items. ``info``: ``loss`` and ``rmse`` after
    the sweep (the data terms from the item half step, no extra pass over the ratings)."""
    if config.biases:
        state = update_biases(state, data, config)
    p, _ = update_side(data.user_chunks, data.user_counts, state.user_factors, state.user_bias,
                       state.item_factors, state.item_bias, data.mu, config)
    q, (sse, kl) = update_side(data.item_chunks, data.item_counts, state.item_factors, state.item_bias,
                               p, state.user_bias, data.mu, config, with_loss=True)
    state = state._replace(user_factors=p, item_factors=q)
    loss, rmse = _loss(state, data, config, sse, kl)
    return state, {"loss": loss, "rmse": rmse}
