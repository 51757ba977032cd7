"""Stochastic gradient descent for biased MF (Funk 2006; "SVD" in Surprise) and SVD++ (Koren 2008).

Biased MF predicts ``r_hat = mu + b_u + c_i + p_u . q_i``; SVD++ replaces ``p_u`` by
``p_u + z_u`` with ``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j``, the implicit feedback of the
items ``N(u)`` the user rated. Each rating's error ``e = r - r_hat`` moves every parameter
group ``g`` by ``lr_g (e * d r_hat / d theta - reg_g theta)``, as Surprise does one rating at a time.

Vectorisation: an epoch is one ``lax.scan`` over minibatches of a fresh random permutation of the
ratings. Within a batch every rating's update is computed from the parameters at the start of
the batch and scatter-added (a rating repeated user is moved by the sum of its ratings' steps,
which equals sequential SGD to first order in the learning rate). To make the updates one
gather and one scatter per side, parameters are stored augmented,

    U_u = [b_u, 1, p_u],   V_i = [1, c_i, q_i],   r_hat = mu + U_u . V_i,

with a zero learning rate on the constant slots.

SVD++ splits each epoch into ``chunks``: ``z`` is recomputed from ``y`` at the start of a chunk
(one segment sum, O(nnz k)); inside the chunk each rating adds ``e q_i |N(u)|^-1/2`` to an
accumulator ``g_u``; at the end of the chunk ``y_j`` receives ``lr_y sum_{u: j in N(u)} g_u`` and
is shrunk by ``(1 - lr_y reg_y)^{a_j}``, ``a_j`` the number of chunk ratings whose users rated
``j`` — exactly what Surprise's per-rating decay of every ``y_j, j in N(u)`` multiplies to.
The summed gradient of a popular item adds up thousands of ratings that sequential SGD would
have applied one by one, each seeing the previous ones' effect; applied at once it overshoots
(moving ``y_j`` moves ``z_u`` of every user who rated ``j``, and all of a user's ``y_j`` move
together). It is therefore damped as the proximal step ``lr_y g_j / (1 + lr_y h_j)`` with
``h_j = sum_{u: j in N(u)} sum_i |q_i|^2`` (inner sum over the user's ratings in the chunk), a
bound on the curvature including that coupling: equal to ``lr_y g_j`` when ``lr_y h_j`` is small.
This makes SVD++ stable at Surprise's learning rates; it is not step-for-step Surprise.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bayesmf.engines.sparse import RatingArrays

GROUPS = ("user_bias", "item_bias", "user_factors", "item_factors", "implicit_factors")


class SGDState(NamedTuple):
    user_params: jnp.ndarray  # (n_users, k + 2) = [b_u, 1, p_u]
    item_params: jnp.ndarray  # (n_items, k + 2) = [1, c_i, q_i]
    implicit: jnp.ndarray  # (n_items, k) y_j (SVD++; unused zeros for biased MF)


class SGDData(NamedTuple):
    """Ratings plus, for SVD++, the user-sorted view: ``by_user`` (nnz,) positions in rating order,
    ``user_norm`` (n_users,) = |N(u)|^-1/2 (0 for users without ratings), ``mu`` scalar."""

    ratings: RatingArrays
    by_user: jnp.ndarray
    user_norm: jnp.ndarray
    mu: jnp.ndarray


class SGDConfig(NamedTuple):
    lr: tuple  # per group in GROUPS order
    reg: tuple
    batch_size: int = 512
    implicit: bool = False  # SVD++
    chunks: int = 8


def init(key, n_users: int, n_items: int, rank: int, std: float, dtype=jnp.float32) -> SGDState:
    """``N(0, std^2)`` factors (as Surprise: ``init_std_dev``), zero biases."""
    ku, ki, ky = jax.random.split(key, 3)
    p = std * jax.random.normal(ku, (n_users, rank), dtype)
    q = std * jax.random.normal(ki, (n_items, rank), dtype)
    zero_u, one_u = jnp.zeros((n_users, 1), dtype), jnp.ones((n_users, 1), dtype)
    zero_i, one_i = jnp.zeros((n_items, 1), dtype), jnp.ones((n_items, 1), dtype)
    return SGDState(
        jnp.concatenate([zero_u, one_u, p], 1),
        jnp.concatenate([one_i, zero_i, q], 1),
        std * jax.random.normal(ky, (n_items, rank), dtype),
    )


def _group_vectors(config: SGDConfig, k: int, dtype):
    """Per-slot learning rates and regularisations of the augmented user and item vectors."""
    lr, reg = dict(zip(GROUPS, config.lr, strict=True)), dict(zip(GROUPS, config.reg, strict=True))

    def vec(bias_slot_user: bool, table):
        head = [table["user_bias"], 0.0] if bias_slot_user else [0.0, table["item_bias"]]
        group = "user_factors" if bias_slot_user else "item_factors"
        return jnp.asarray(head + [table[group]] * k, dtype)

    return vec(True, lr), vec(True, reg), vec(False, lr), vec(False, reg)


def implicit_sum(state: SGDState, data: SGDData, n_users: int):
    """``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j`` for every user (n_users, k), by one sorted segment sum."""
    users, items, _ = data.ratings
    order = data.by_user
    sums = jax.ops.segment_sum(state.implicit[items[order]], users[order], num_segments=n_users,
                               indices_are_sorted=True)
    return sums * data.user_norm[:, None]


def _batches(key, nnz: int, batch_size: int, n_chunks: int):
    """A random permutation padded to ``n_chunks x n_batches x batch_size`` and its 0/1 mask."""
    per_chunk = -(-nnz // (batch_size * n_chunks))
    total = per_chunk * batch_size * n_chunks
    perm = jnp.concatenate([jax.random.permutation(key, nnz), jnp.zeros((total - nnz,), jnp.int32)])
    mask = (jnp.arange(total) < nnz)
    return perm.reshape(n_chunks, per_chunk, batch_size), mask.reshape(n_chunks, per_chunk, batch_size)


@partial(jax.jit, static_argnames="config")
def epoch(key, state: SGDState, data: SGDData, config: SGDConfig):
    """One shuffled pass over the ratings. ``info``: ``loss`` (the regularised objective after the
    epoch, penalties weighted by how often Surprise's per-rating updates apply them) and ``rmse``."""
    users, items, values = data.ratings
    n_users, n_items = state.user_params.shape[0], state.item_params.shape[0]
    k = state.implicit.shape[1]
    dtype = state.user_params.dtype
    lr_u, reg_u, lr_v, reg_v = _group_vectors(config, k, dtype)
    lr_y, reg_y = config.lr[4], config.reg[4]
    n_chunks = config.chunks if config.implicit else 1
    idx, mask = _batches(key, users.shape[0], config.batch_size, n_chunks)
    pad = jnp.zeros((n_users, 2), dtype)

    def batch_step(z, carry, batch):
        U, V, acc, seen, energy = carry
        b, m = batch
        u, i, r = users[b], items[b], values[b]
        m = m.astype(dtype)
        Uu, Vi = U[u], V[i]
        Ue = Uu + z[u] if config.implicit else Uu  # z is padded to the augmented width
        e = (r - data.mu - jnp.sum(Ue * Vi, -1)) * m
        U = U.at[u].add(lr_u * (e[:, None] * Vi - reg_u * Uu * m[:, None]))
        V = V.at[i].add(lr_v * (e[:, None] * Ue - reg_v * Vi * m[:, None]))
        if config.implicit:
            acc = acc.at[u].add(e[:, None] * Vi[:, 2:] * data.user_norm[u][:, None])
            seen = seen.at[u].add(m)
            energy = energy.at[u].add(m * jnp.sum(Vi[:, 2:] ** 2, -1))
        return (U, V, acc, seen, energy), None

    def chunk_step(carry, chunk):
        U, V, Y = carry
        state_now = SGDState(U, V, Y)
        z = jnp.concatenate([pad, implicit_sum(state_now, data, n_users)], 1) if config.implicit else None
        acc0, seen0 = jnp.zeros((n_users, k), dtype), jnp.zeros((n_users,), dtype)
        (U, V, acc, seen, energy), _ = jax.lax.scan(partial(batch_step, z), (U, V, acc0, seen0, seen0), chunk)
        if config.implicit:
            grad = jax.ops.segment_sum(acc[users], items, num_segments=n_items)
            decays = jax.ops.segment_sum(seen[users], items, num_segments=n_items)
            curvature = jax.ops.segment_sum(energy[users], items, num_segments=n_items)
            Y = Y * (1 - lr_y * reg_y) ** decays[:, None] + (lr_y / (1 + lr_y * curvature))[:, None] * grad
        return (U, V, Y), None

    (U, V, Y), _ = jax.lax.scan(chunk_step, (state.user_params, state.item_params, state.implicit), (idx, mask))
    state = SGDState(U, V, Y)
    loss, rmse = objective(state, data, config)
    return state, {"loss": loss, "rmse": rmse}


def effective_user_factors(state: SGDState, data: SGDData, config: SGDConfig):
    """``p_u`` (+ ``z_u`` for SVD++): the user vector that multiplies ``q_i`` in a prediction."""
    p = state.user_params[:, 2:]
    return p + implicit_sum(state, data, p.shape[0]) if config.implicit else p


def objective(state: SGDState, data: SGDData, config: SGDConfig):
    """``(sum e^2 + sum_ratings sum_g reg_g |theta_g|^2, train RMSE)``."""
    users, items, r = data.ratings
    U, V = state.user_params, state.item_params
    p = effective_user_factors(state, data, config)
    pred = data.mu + U[users, 0] + V[items, 1] + jnp.einsum("nk,nk->n", p[users], V[items, 2:])
    sse = jnp.sum((r - pred) ** 2)
    n_u = jax.ops.segment_sum(jnp.ones_like(r), users, num_segments=U.shape[0])
    n_i = jax.ops.segment_sum(jnp.ones_like(r), items, num_segments=V.shape[0])
    reg = dict(zip(GROUPS, config.reg, strict=True))
    penalty = (reg["user_bias"] * n_u @ U[:, 0] ** 2 + reg["item_bias"] * n_i @ V[:, 1] ** 2
               + reg["user_factors"] * n_u @ jnp.sum(U[:, 2:] ** 2, 1)
               + reg["item_factors"] * n_i @ jnp.sum(V[:, 2:] ** 2, 1))
    if config.implicit:
        a = jax.ops.segment_sum(n_u[users], items, num_segments=V.shape[0])
        penalty += reg["implicit_factors"] * a @ jnp.sum(state.implicit**2, 1)
    return sse + penalty, jnp.sqrt(sse / r.shape[0])
