"""Stochastic gradient descent for biased MF (Funk 2006; "SVD" in Surprise) and SVD++ (Koren 2008).

Biased MF predicts ``r_hat = mu + b_u + c_i + p_u . q_i``; SVD++ replaces ``p_u`` by
``p_u + z_u`` with ``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j``, the implicit feedback of the
items ``N(u)`` the user rated. Each rating's error ``e = r - r_hat`` moves every parameter
group ``g`` by ``lr_g (e * d r_hat / d theta - reg_g theta)``, as Surprise does one rating at a time.

Vectorisation: an epoch is one ``lax.scan`` over minibatches. Within a batch every rating's update
is computed from the parameters at the start of the batch and scatter-added (a user repeated in
a batch is moved by the sum of its ratings' steps, which equals sequential SGD to first order in
the learning rate). To make the updates one gather and one scatter per side, parameters are
stored augmented,

    U_u = [b_u, 1, p_u],   V_i = [1, c_i, q_i],   r_hat = mu + U_u . V_i,

with a zero learning rate on the constant slots.

Shuffling: a full random permutation per epoch costs more than the epoch itself on CPU (XLA's
sort of one key per rating), and re-dealing the ratings into new batches by a per-rating gather still adds
a large share of a k=10 epoch. The ratings are therefore shuffled
once on the host into a grid of ``n_batches x batch_size`` (:func:`shuffled_batches`), and every
epoch visits the rows of that grid in a fresh random order (a permutation of a few hundred rows,
each fetched as one contiguous slice): the order of the updates changes every epoch, the
composition of each minibatch does not. Since a minibatch's ratings are applied simultaneously,
only the order across batches matters to first order in the learning rate, and the test RMSE
matches that of a full per-epoch permutation within the seed-to-seed spread (benchmarks/RESULTS.md).

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
import numpy as np

from bayesmf.engines.config import engine_config
from bayesmf.engines.sparse import RatingArrays

GROUPS = ("user_bias", "item_bias", "user_factors", "item_factors", "implicit_factors")

# Indices are validated on the host (check_ratings) and padding points at row 0, so the gathers
# and scatters skip XLA's bounds handling (clamping / dropping is a sizeable share of an epoch).
IN_BOUNDS = "promise_in_bounds"


class SGDState(NamedTuple):
    user_params: jnp.ndarray  # (n_users, k + 2) = [b_u, 1, p_u]
    item_params: jnp.ndarray  # (n_items, k + 2) = [1, c_i, q_i]
    implicit: jnp.ndarray  # (n_items, k) y_j (SVD++; unused zeros for biased MF)


class Batches(NamedTuple):
    """The ratings shuffled once into a padded grid: ``users``, ``items`` (n_batches, batch_size)
    int32, ``values`` and ``mask`` (1 real, 0 padding) (n_batches, batch_size) float."""

    users: jnp.ndarray
    items: jnp.ndarray
    values: jnp.ndarray
    mask: jnp.ndarray


class SGDData(NamedTuple):
    """Ratings in their original order (``ratings``) and as the shuffled grid (``batches``);
    counts ``user_counts`` (n_users,), ``item_counts`` (n_items,) and ``implicit_counts``
    (n_items,) ``a_j = sum_{u: j in N(u)} n_u`` weighting the penalties; for SVD++ the
    user-sorted view ``by_user`` (nnz,) positions in rating order and ``user_norm`` (n_users,)
    ``|N(u)|^-1/2`` (0 for users without ratings); ``mu`` scalar."""

    ratings: RatingArrays
    batches: Batches
    by_user: jnp.ndarray
    user_norm: jnp.ndarray
    user_counts: jnp.ndarray
    item_counts: jnp.ndarray
    implicit_counts: jnp.ndarray
    mu: jnp.ndarray


@engine_config("batch_size", "implicit", "chunks")
class SGDConfig:
    lr: tuple  # per group in GROUPS order
    reg: tuple
    batch_size: int = 1024
    implicit: bool = False  # SVD++
    chunks: int = 8


def shuffled_batches(users, items, values, batch_size: int, n_chunks: int, seed, dtype=np.float32) -> Batches:
    """Host-side: a random permutation of the ratings padded to ``n_batches x batch_size``, with
    ``n_batches`` a multiple of ``n_chunks`` (padding: user 0, item 0, value 0, mask 0)."""
    nnz = len(values)
    n_batches = n_chunks * -(-nnz // (batch_size * n_chunks))
    total = n_batches * batch_size
    order = np.random.default_rng(seed).permutation(nnz)

    def grid(a, dt):
        out = np.zeros(total, dt)
        out[:nnz] = np.asarray(a)[order]
        return jnp.asarray(out.reshape(n_batches, batch_size))

    mask = np.ones(nnz, dtype)
    return Batches(grid(users, np.int32), grid(items, np.int32), grid(values, dtype), grid(mask, dtype))


def sgd_data(ratings: RatingArrays, users, items, user_counts, item_counts, batches: Batches, dtype) -> SGDData:
    """Assemble :class:`SGDData` from device ratings, the host index arrays and counts."""
    user_counts = np.asarray(user_counts)
    by_user = np.argsort(np.asarray(users), kind="stable")
    implicit_counts = np.bincount(np.asarray(items), weights=user_counts[np.asarray(users)],
                                  minlength=len(item_counts))
    norm = np.where(user_counts > 0, 1 / np.sqrt(np.maximum(user_counts, 1)), 0)
    return SGDData(ratings, batches, jnp.asarray(by_user, jnp.int32), jnp.asarray(norm, dtype),
                   jnp.asarray(user_counts, dtype), jnp.asarray(item_counts, dtype),
                   jnp.asarray(implicit_counts, dtype), jnp.mean(ratings.values))


def init(seed, n_users: int, n_items: int, rank: int, std: float, dtype=np.float32) -> SGDState:
    """``N(0, std^2)`` factors (as Surprise: ``init_std_dev``), zero biases.

    Drawn on the host (NumPy, ``seed``): XLA compiles JAX's threefry sampler anew for every
    shape, which would cost more than a whole k=10 fit (benchmarks/RESULTS.md, section 9).
    """
    rng = np.random.default_rng(seed)
    p, q, y = (std * rng.standard_normal((n, rank)) for n in (n_users, n_items, n_items))
    user = np.concatenate([np.zeros((n_users, 1)), np.ones((n_users, 1)), p], 1)
    item = np.concatenate([np.ones((n_items, 1)), np.zeros((n_items, 1)), q], 1)
    return SGDState(*(jnp.asarray(a, dtype) for a in (user, item, y)))


def epoch_orders(seed, n_epochs: int, n_batches: int) -> np.ndarray:
    """Host-side: the order in which each epoch visits the grid's rows, (n_epochs, n_batches)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_batches) for _ in range(n_epochs)]).astype(np.int32)


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


def deal(batches: Batches, row):
    """Row ``row`` of the grid: (users, items, values, mask), each (batch_size,)."""
    return tuple(jax.lax.dynamic_index_in_dim(a, row, keepdims=False) for a in batches)


@partial(jax.jit, donate_argnums=1)
def epoch(order, state: SGDState, data: SGDData, config: SGDConfig):
    """One pass over the ratings, visiting the grid's rows in ``order`` (n_batches,) (a
    permutation, from :func:`epoch_orders`). ``info``: ``loss``, the regularised objective with the
    squared errors summed as the epoch goes (each rating's error just before its own update, as
    Surprise's and Cornac's running loss; no extra pass over the data) and the penalties of the
    final parameters weighted by how often the per-rating updates apply them; ``rmse``, the
    running training RMSE. :func:`objective` gives the exact end-of-epoch values."""
    n_users, n_items = state.user_params.shape[0], state.item_params.shape[0]
    users, items, _ = data.ratings
    k = state.implicit.shape[1]
    dtype = state.user_params.dtype
    lr_u, reg_u, lr_v, reg_v = _group_vectors(config, k, dtype)
    lr_y, reg_y = config.lr[4], config.reg[4]
    n_chunks = config.chunks if config.implicit else 1
    rows = order.reshape(n_chunks, -1)
    pad = jnp.zeros((n_users, 2), dtype)

    def batch_step(z, carry, row):
        U, V, acc, seen, energy, sse = carry
        u, i, r, m = deal(data.batches, row)
        Uu, Vi = U.at[u].get(mode=IN_BOUNDS), V.at[i].get(mode=IN_BOUNDS)
        Ue = Uu + z.at[u].get(mode=IN_BOUNDS) if config.implicit else Uu  # z padded to the augmented width
        e = (r - data.mu - jnp.sum(Ue * Vi, -1)) * m
        U = U.at[u].add(lr_u * (e[:, None] * Vi - reg_u * Uu * m[:, None]), mode=IN_BOUNDS)
        V = V.at[i].add(lr_v * (e[:, None] * Ue - reg_v * Vi * m[:, None]), mode=IN_BOUNDS)
        if config.implicit:
            acc = acc.at[u].add(e[:, None] * Vi[:, 2:] * data.user_norm[u][:, None], mode=IN_BOUNDS)
            seen = seen.at[u].add(m, mode=IN_BOUNDS)
            energy = energy.at[u].add(m * jnp.sum(Vi[:, 2:] ** 2, -1), mode=IN_BOUNDS)
        return (U, V, acc, seen, energy, sse + jnp.sum(e * e)), None

    def chunk_step(carry, chunk):
        U, V, Y, sse = carry
        z = jnp.concatenate([pad, implicit_sum(SGDState(U, V, Y), data, n_users)], 1) if config.implicit else None
        if config.implicit:
            acc0, seen0 = jnp.zeros((n_users, k), dtype), jnp.zeros((n_users,), dtype)
        else:  # unused carries: keep them scalar
            acc0 = seen0 = jnp.zeros((), dtype)
        (U, V, acc, seen, energy, sse), _ = jax.lax.scan(partial(batch_step, z), (U, V, acc0, seen0, seen0, sse),
                                                         chunk)
        if config.implicit:
            grad = jax.ops.segment_sum(acc[users], items, num_segments=n_items)
            decays = jax.ops.segment_sum(seen[users], items, num_segments=n_items)
            curvature = jax.ops.segment_sum(energy[users], items, num_segments=n_items)
            Y = Y * (1 - lr_y * reg_y) ** decays[:, None] + (lr_y / (1 + lr_y * curvature))[:, None] * grad
        return (U, V, Y, sse), None

    start = (state.user_params, state.item_params, state.implicit, jnp.zeros((), dtype))
    (U, V, Y, sse), _ = jax.lax.scan(chunk_step, start, rows)
    state = SGDState(U, V, Y)
    return state, {"loss": sse + penalty(state, data, config), "rmse": jnp.sqrt(sse / users.shape[0])}


def effective_user_factors(state: SGDState, data: SGDData, config: SGDConfig):
    """``p_u`` (+ ``z_u`` for SVD++): the user vector that multiplies ``q_i`` in a prediction."""
    p = state.user_params[:, 2:]
    return p + implicit_sum(state, data, p.shape[0]) if config.implicit else p


def penalty(state: SGDState, data: SGDData, config: SGDConfig):
    """``sum_g reg_g sum_rows count_row |theta_row|^2``: each rating's update shrinks its user's
    and item's parameters (SVD++: every ``y_j`` of its user), so a row is penalised once per rating."""
    U, V = state.user_params, state.item_params
    n_u, n_i = data.user_counts, data.item_counts
    reg = dict(zip(GROUPS, config.reg, strict=True))
    total = (reg["user_bias"] * n_u @ U[:, 0] ** 2 + reg["item_bias"] * n_i @ V[:, 1] ** 2
             + reg["user_factors"] * n_u @ jnp.sum(U[:, 2:] ** 2, 1)
             + reg["item_factors"] * n_i @ jnp.sum(V[:, 2:] ** 2, 1))
    if config.implicit:
        total += reg["implicit_factors"] * data.implicit_counts @ jnp.sum(state.implicit**2, 1)
    return total


def objective(state: SGDState, data: SGDData, config: SGDConfig):
    """``(sum e^2 + penalty, train RMSE)`` of the current parameters (one pass over the ratings)."""
    users, items, r = data.ratings
    U, V = state.user_params, state.item_params
    p = effective_user_factors(state, data, config)
    pred = data.mu + U[users, 0] + V[items, 1] + jnp.einsum("nk,nk->n", p[users], V[items, 2:])
    sse = jnp.sum((r - pred) ** 2)
    return sse + penalty(state, data, config), jnp.sqrt(sse / r.shape[0])
