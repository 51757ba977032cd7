r"""Exact Gibbs sampler of the Bayesian factorization machine over relation blocks.

The model (Freudenthaler, Schmidt-Thieme & Rendle 2011; Rendle 2013; myFM's grouped hyperpriors):
a second-order factorization machine over a :class:`~bayesmf.data.design.Design`,

.. math::

    f(x) &= w_0 + \sum_j w_j x_j + \sum_{j < j'} \langle v_j, v_{j'} \rangle x_j x_{j'},
    \qquad y_r \sim \mathcal N(f(x_r), 1/\alpha),\quad \alpha \sim \mathrm{Gamma}(a_0, b_0), \\
    w_j &\sim \mathcal N(\mu^w_g, 1/\lambda^w_g),\qquad v_{jf} \sim \mathcal N(\mu^v_{gf}, 1/\lambda^v_{gf})
    \qquad (g = \text{group of column } j), \\
    \mu \mid \lambda &\sim \mathcal N(0, 1/(\gamma_0 \lambda)),\qquad
    \lambda \sim \mathrm{Gamma}(\alpha_\lambda, \beta_\lambda)
    \quad\text{(each } (\mu^w_g, \lambda^w_g) \text{ and } (\mu^v_{gf}, \lambda^v_{gf})\text{)},\qquad
    w_0 \sim \mathcal N(m_0, s_0^2).

One sweep draws, each from its exact full conditional:

1. every group's ``(mu, lambda)`` pair, jointly (Normal-Gamma conjugacy, ``mu`` integrated out
   for ``lambda``): with ``n`` columns of mean ``xbar`` and scatter ``ss`` in the group,
   ``lambda ~ Gamma(alpha_l + n/2, beta_l + ss/2 + gamma0 n xbar^2 / (2 (gamma0 + n)))`` and
   ``mu | lambda ~ N(n xbar / (gamma0 + n), 1 / ((gamma0 + n) lambda))``;
2. each block's parameters in turn (below);
3. ``w0 ~ N(P^{-1} (m_0/s_0^2 + alpha sum_r (y_r - f_r + w_0)), P^{-1})``, ``P = 1/s_0^2 + alpha nnz``;
4. ``alpha ~ Gamma(a_0 + nnz/2, b_0 + SSE/2)``;
5. with ``w0`` learned, an exact move along each translation ``w0 -> w0 + d``, ``w_j -> w_j - d``
   of a one-hot group (:func:`translate_move`), as BPMF's sampler has for its offset and biases.

**A column's conditional.** Given everything else, ``f`` is linear in the (K+1)-vector
``theta_j = (w_j, v_j)`` of one column: ``f_r = const_r + h_r . theta_j`` with
``h_r = x_rj [1, q_r - x_rj v_j]`` (``q_r = sum_j x_rj v_j``), so
``theta_j | rest ~ N(P^{-1} s, P^{-1})``, ``P = diag(lambda^w_g, lambda^v_g) + alpha sum_r h_r h_r^T``,
``s = diag(lambda) mu + alpha sum_r h_r (y_r - const_r)`` — a BPMF row update with "other-side
vectors" ``h_r``.

**Relation-block statistics** (Rendle 2013). For block ``b`` write ``Q_b = X_b V``,
``L_b = X_b w`` and the within-row pairwise term ``P_b = (|Q_b|^2 - X_b^{\circ 2} |v|^2)/2`` per
block row; for rating ``r`` with block row ``i = index_b[r]``, ``O_r = q_r - Q_b[i]`` (the other
blocks' part) and ``z_r = y_r`` minus every term not involving block ``b``. Then
``f_r = (y_r - z_r) + a_i + Q_b[i] . O_r`` with ``a_i = L_b[i] + P_b[i]``, and block ``b``'s
likelihood depends on the ratings only through the per-block-row sums ``G_i = sum_r [1, O_r][1, O_r]^T``
(``n_i``, ``sum O``, ``sum O O^T``) and ``c_i = sum_r z_r [1, O_r]`` (``sum z``, ``sum z O``): one
chunked Gram pass (:func:`~bayesmf.engines.chunks.gram_rhs`), O(nnz K^2) per block. A column
``j`` of block ``b`` with entries ``x`` in rows ``i`` then has, with ``c = Q_b[i] - x v_j``,
``u = [a_i - x w_j - x v_j . c, c]`` (the row's parts without ``j``) and
``M = [[1, 0], [c, I]]``,

.. math::
    P = \mathrm{diag}(\lambda) + \alpha \sum_{i \ni j} x^2 M G_i M^\top,\qquad
    s = \mathrm{diag}(\lambda)\mu + \alpha \sum_{i \ni j} x M (c_i - G_i u),

O(block entries K^3) per block, within-block pairwise terms (two genres of one movie, two items
of a user's implicit set) included through ``c`` and ``u``.

**Which columns are drawn together.** Columns that share no block row are conditionally
independent given the other columns (their conditionals read only their own rows). The columns
of each block are coloured greedily (:func:`colour_columns`: no two columns of a colour share a
row) and a ``lax.scan`` over colours (one per batch of colours of similar size, padded to one
shape) draws each colour's columns as one batched Gaussian draw
(:func:`~bayesmf.engines.linalg.sample_gaussian`), updating the block rows' ``L_b``, ``Q_b`` and
squared norms in place. A one-hot block (user, item, time-bin ids) is one colour: one batched
draw over all its columns, as BPMF draws all rows of a side. The sweep is exact Gibbs in either
case (a blocked scan over conditionally independent columns).

Likelihood plug-in: the step reads the targets from the state (``FMState.target``, the centred
ratings for the Gaussian likelihood, never changed); a latent-variable likelihood (ordered probit)
replaces them with its latent draws at the start of a sweep and fixes ``alpha`` (``noise_prior=None``).

Ordinal likelihood (``FMPrior.gap_prior`` set, Albert & Chib 1993; :mod:`bayesmf.posterior.ordinal`):
``y_r = k`` iff ``z_r in (c_{k-1}, c_k]``, ``z_r ~ N(f(x_r), 1)``, cutpoints ``c_0 = 0 < c_1 < ...``
(the level is carried by ``w0``). Each sweep first draws ``(c, z) | f`` with
:func:`~bayesmf.posterior.ordinal.sample_ordinal` at the state's predictions ``f``, sets
``target = z - centre``, then runs the Gaussian sweep above with ``alpha = 1`` fixed.

Shapes: ``w`` (F,), ``V`` (F, K), ``mu_w``, ``lambda_w`` (G,), ``mu_v``, ``lambda_v`` (G, K),
``target`` (nnz,); a leading chain axis when batched.

Several devices (:func:`shard`, :mod:`bayesmf.engines.sharding`): the O(nnz K^2) part of a sweep,
every block's row statistics ``G_i``, ``c_i``, is split over a one-axis device mesh by each
block's rating chunks (whole block rows; the chunk axis padded to a multiple of the mesh size):
each device computes its block rows' statistics from its own chunks and the statistics are
all-gathered in block-row order. The rest is replicated on every device: the parameters, the
hyperparameters, the per-rating gathers ``Q_b[i]``, ``a_b[i]`` (O(nnz K) per block), the colour
scans, and the sums over ratings behind ``w0`` and ``alpha`` (taken over the whole replicated
``(nnz,)`` arrays, in the same order as on one device), and every random number (each drawn
whole from the sweep's keys, as on one device: the colours' normals, the ordinal latent values).
A sharded sweep therefore gives the same numbers on any number of devices, bit for bit; against
the unsharded path (``devices=None``) the per-row statistics are the same sums formed in another
program, so they agree to float rounding. Both likelihoods (Gaussian and ordinal) run sharded.

References
----------
Freudenthaler, C., Schmidt-Thieme, L. and Rendle, S. (2011). Bayesian factorization machines.
NIPS workshop on sparse representation and low-rank approximation.
Rendle, S. (2012). Factorization machines with libFM. ACM TIST.
Rendle, S. (2013). Scaling factorization machines to relational data. VLDB.
Ohtsuki, T. (2020). myFM (grouped hyperpriors, relation blocks). https://github.com/tohtsky/myFM
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.design import Design
from bayesmf.engines import sharding
from bayesmf.engines.chunks import Chunks, build_gram_chunks
from bayesmf.engines.driver import Kernel
from bayesmf.engines.linalg import EXACT, all_finite, sample_gaussian, solve_spd, standard_gamma, standard_normal
from bayesmf.errors import ConfigError
from bayesmf.posterior import ordinal

__all__ = ["COLOUR_BATCHES", "ColourBatch", "FMBlockData", "FMData", "FMInfo", "FMMapInfo", "FMPrior", "FMState",
           "block_statistics", "build_kernel", "build_map_kernel", "colour_columns", "colour_conditional",
           "draw_global", "group_posterior", "init", "latent_targets", "map_state", "map_sweep", "predict",
           "predict_centred", "prepare", "shard", "step", "translatable_groups", "translate_move"]


class FMPrior(NamedTuple):
    """Hyperparameters of the model (module docstring). ``noise_prior``: ``(a0, b0)`` or None
    (``alpha`` fixed at ``alpha``); ``offset_prior``: ``(m0, s0)`` or None (``w0`` fixed at the
    data's centre)."""

    rank: int
    alpha: float = 2.0
    noise_prior: tuple[float, float] | None = (1.0, 1.0)
    offset_prior: tuple[float, float] | None = None
    hyper_shape: float = 0.5  # alpha_lambda
    hyper_rate: float = 0.5  # beta_lambda
    gamma0: float = 1.0
    init_std: float = 0.1
    gap_prior: tuple[float, float] | None = None  # ordinal: the cutpoints' log gaps ~ N(m_g, s_g^2)
    n_categories: int = 0  # ordinal: the number of rating levels K

    @property
    def ordinal(self) -> bool:
        """The ordered probit likelihood (``gap_prior`` set)."""
        return self.gap_prior is not None

    def validate(self) -> FMPrior:
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}")
        for name in ("alpha", "hyper_shape", "hyper_rate", "gamma0", "init_std"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
        if self.noise_prior is not None and (len(self.noise_prior) != 2 or min(self.noise_prior) <= 0):
            raise ConfigError(f"noise_prior must be a positive (shape, rate) pair, got {self.noise_prior!r}")
        if self.offset_prior is not None and (len(self.offset_prior) != 2 or not np.all(np.isfinite(self.offset_prior))
                                              or self.offset_prior[1] <= 0):
            raise ConfigError(f"offset_prior must be a finite (mean, scale) pair with scale > 0, "
                              f"got {self.offset_prior!r}")
        if self.ordinal:
            if self.noise_prior is not None or self.alpha != 1.0:
                raise ConfigError("the ordinal likelihood fixes alpha at 1: noise_prior must be None and alpha 1, "
                                  f"got noise_prior={self.noise_prior!r}, alpha={self.alpha!r}")
            if isinstance(self.n_categories, bool) or int(self.n_categories) < 2:
                raise ConfigError(f"the ordinal likelihood needs n_categories >= 2, got {self.n_categories!r}")
        return self


class FMBlockData(NamedTuple):
    """One relation block laid out for the sampler.

    ``index`` (nnz,): block row of each rating; ``entry_rows``, ``entry_cols``, ``entry_vals``
    (block_nnz,): ``X_b`` as (row, column, value) triples; ``chunks``: the ratings packed by block
    row (:func:`~bayesmf.engines.chunks.build_gram_chunks`, one "column" per rating) for the
    block-row statistics; ``colours``: the colours of the block's columns as a tuple of
    :class:`ColourBatch` (colours of similar size padded together, at most
    :data:`COLOUR_BATCHES`)."""

    index: jnp.ndarray
    entry_rows: jnp.ndarray
    entry_cols: jnp.ndarray
    entry_vals: jnp.ndarray
    chunks: Chunks
    colours: tuple

    @property
    def n_rows(self) -> int:
        if sharding.is_sharded(self.chunks):
            return self.chunks.n_rows
        return int(self.chunks.slot.shape[0])

    @property
    def n_colours(self) -> int:
        return sum(int(batch.cols.shape[0]) for batch in self.colours)

    def colour(self, c: int):
        """``(batch, index within it)`` of colour ``c`` (host-side)."""
        for batch in self.colours:
            if c < batch.cols.shape[0]:
                return batch, c
            c -= int(batch.cols.shape[0])
        raise IndexError(f"colour {c} out of range")


class ColourBatch(NamedTuple):
    """Colours padded to one shape: ``cols`` (C, J) the columns of each colour (``F`` on
    padding); ``rows``, ``vals``, ``slot`` (C, E): each colour's entries, their value (0 on
    padding) and their column's position in ``cols``."""

    cols: jnp.ndarray
    rows: jnp.ndarray
    vals: jnp.ndarray
    slot: jnp.ndarray


# Colours of one block are padded in at most this many batches of similar sizes (each batch is
# one scan, compiled on its own).
COLOUR_BATCHES = 3

# Colours of at most this many columns sum their entries' pieces per column by a product with an
# (E, J) membership matrix (a dense product: faster on CPU than a scatter-add while J is small,
# benchmarks/RESULTS.md); wider colours (a one-hot block's single colour) scatter-add.
MEMBERSHIP_COLUMNS = 8


def _batch_split(sizes: np.ndarray, n_batches: int) -> list:
    """Split points of ascending ``sizes`` into at most ``n_batches`` contiguous batches that
    minimise the padded total ``sum_b count_b * max_b`` (an exhaustive search over two split
    points, vectorised)."""
    C = sizes.size
    if n_batches < 3 or C < 3:
        return []
    i = np.arange(1, C)[:, None]
    j = np.arange(1, C)[None, :]
    cost = i * sizes[i - 1] + (j - i) * sizes[j - 1] + (C - j) * sizes[C - 1]
    cost = np.where(j > i, cost, np.iinfo(np.int64).max)
    a, b = np.unravel_index(np.argmin(cost), cost.shape)
    return [int(a + 1), int(b + 1)]


class FMData(NamedTuple):
    """A design laid out for the sampler: its blocks, each column's group, ``y`` the ratings
    minus ``centre``, ``group_sizes`` (G,) the columns per group and ``translatable`` (T,) the
    groups that :func:`translate_move` moves."""

    blocks: tuple
    groups: jnp.ndarray
    group_sizes: jnp.ndarray
    y: jnp.ndarray
    centre: jnp.ndarray
    translatable: jnp.ndarray
    category: jnp.ndarray | None = None
    """(nnz,) int32 category index of each rating (ordinal likelihood only)."""


class FMState(NamedTuple):
    """One chain's state (a leading chain axis when batched)."""

    w0: jnp.ndarray
    """Scalar global bias."""
    w: jnp.ndarray
    """(F,) linear weights."""
    V: jnp.ndarray
    """(F, K) factors."""
    mu_w: jnp.ndarray
    """(G,) group means of the linear weights."""
    lambda_w: jnp.ndarray
    """(G,) group precisions of the linear weights."""
    mu_v: jnp.ndarray
    """(G, K) group means of the factors."""
    lambda_v: jnp.ndarray
    """(G, K) group precisions of the factors."""
    alpha: jnp.ndarray
    """Scalar noise precision."""
    target: jnp.ndarray
    """(nnz,) the regression targets minus the data's centre (the likelihood's plug-in point)."""
    cutpoints: jnp.ndarray | None = None
    """(K - 1,) cutpoints of the ordered probit (ordinal likelihood only; ``c_0 = 0``)."""


class FMInfo(NamedTuple):
    """Diagnostics of one sweep (per chain when batched)."""

    train_rmse: jnp.ndarray
    """Training RMSE of the sweep's noise-free predictions (before the ``w0`` draw)."""
    alpha: jnp.ndarray
    """The noise precision drawn."""
    finite: jnp.ndarray
    """False when a factorisation failed (NaN)."""
    cutpoint_accept: jnp.ndarray = 0.0
    """Whether the cutpoints' Metropolis-Hastings proposal was accepted (ordinal only; else 0)."""


# ---------------------------------------------------------------------------------------------
# host-side layout


def colour_columns(rows: np.ndarray, cols: np.ndarray, n_rows: int):
    """A greedy colouring of a block's columns such that no two columns of a colour share a row.

    ``rows``, ``cols`` (block_nnz,): the block's entries. Columns are taken by decreasing number
    of entries and put in the first colour where they clash with no column already there and
    whose entries stay under ``cap`` (the larger of the largest column and the block's entries
    divided by its longest row, a lower bound on the number of colours): colours of similar size,
    so that padding every colour to the largest stays small. A block whose rows hold one entry
    each is one colour. Returns ``colour`` per distinct column (aligned with ``np.unique(cols)``).
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    uniq, col_pos = np.unique(cols, return_inverse=True)
    if uniq.size == 0:
        return np.zeros(0, np.int64)
    per_row = np.bincount(rows, minlength=n_rows)
    if per_row.max() <= 1:
        return np.zeros(uniq.size, np.int64)
    sizes = np.bincount(col_pos, minlength=uniq.size)
    cap = max(int(sizes.max()), -(-rows.size // int(per_row.max())))
    order = np.argsort(col_pos, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    used = np.zeros((0, n_rows), bool)
    load = np.zeros(0, np.int64)
    colour = np.empty(uniq.size, np.int64)
    for j in np.argsort(-sizes, kind="stable"):  # host-side, once per fit: a loop over columns
        r = rows[order[starts[j]:starts[j + 1]]]
        free = ~used[:, r].any(axis=1) & (load + sizes[j] <= cap)
        c = int(np.argmax(free)) if free.any() else used.shape[0]
        if c == used.shape[0]:
            used = np.vstack([used, np.zeros((1, n_rows), bool)])
            load = np.append(load, 0)
        used[c, r] = True
        load[c] += sizes[j]
        colour[j] = c
    return colour


def _block_data(block, n_features: int, nnz: int, rank: int, dtype, colouring: bool = True) -> FMBlockData:
    rows = np.repeat(np.arange(block.n_rows), np.diff(block.indptr)).astype(np.int32)
    cols = np.asarray(block.columns, np.int32)
    vals = np.asarray(block.values, dtype)
    uniq = np.unique(cols)
    colour = colour_columns(rows, cols, block.n_rows)
    if not colouring and colour.size and colour.max() > 0:  # column by column: one colour per column
        colour = np.arange(uniq.size)
    n_colours = int(colour.max()) + 1 if colour.size else 1
    counts = np.bincount(colour, weights=np.bincount(np.searchsorted(uniq, cols), minlength=uniq.size),
                         minlength=n_colours).astype(np.int64)
    by_size = np.argsort(counts, kind="stable")  # colours in batches of similar sizes
    rank_of = np.empty(n_colours, np.int64)
    rank_of[by_size] = np.arange(n_colours)
    colour = rank_of[colour]
    counts = counts[by_size]
    bounds = [0] + _batch_split(counts, COLOUR_BATCHES) + [n_colours]
    col_colour = np.zeros(n_features, np.int64)
    col_colour[uniq] = colour
    slot_of = np.zeros(n_features, np.int64)
    per_colour = [uniq[colour == c] for c in range(n_colours)]
    for p in per_colour:  # a loop over colours
        slot_of[p] = np.arange(len(p))
    entry_colour = col_colour[cols]
    order = np.argsort(entry_colour, kind="stable")
    pos = np.arange(order.size) - np.concatenate([[0], np.cumsum(counts)])[entry_colour[order]]
    batches = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # a loop over the (at most three) batches
        J = max(1, max(len(p) for p in per_colour[lo:hi]))
        E = max(1, int(counts[lo:hi].max()))
        b_cols = np.full((hi - lo, J), n_features, np.int32)
        for c in range(lo, hi):
            b_cols[c - lo, :len(per_colour[c])] = per_colour[c]
        b_rows = np.zeros((hi - lo, E), np.int32)
        b_vals = np.zeros((hi - lo, E), dtype)
        b_slot = np.zeros((hi - lo, E), np.int32)
        mine = (entry_colour[order] >= lo) & (entry_colour[order] < hi)
        at = (entry_colour[order][mine] - lo, pos[mine])
        b_rows[at], b_vals[at], b_slot[at] = rows[order][mine], vals[order][mine], slot_of[cols[order][mine]]
        batches.append(ColourBatch(*(jnp.asarray(x) for x in (b_cols, b_rows, b_vals, b_slot))))
    index = np.asarray(block.index, np.int32)
    chunks = build_gram_chunks(index, np.arange(nnz), np.zeros(nnz, dtype), block.n_rows, nnz, rank + 1, dtype)
    return FMBlockData(jnp.asarray(index), jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(vals), chunks,
                       tuple(batches))


def prepare(design: Design, values, rank: int, centre: float = 0.0, dtype=np.float32,
            colouring: bool = True, category=None) -> FMData:
    """Lay out a design and its ratings ``values`` (nnz,) for the sampler (host-side, once per
    fit); ``centre`` is subtracted from the stored targets (keeps float32 sums small).
    ``colouring=False``: the columns of a multi-hot block are drawn one at a time (exact
    coordinate Gibbs, a scan over columns) instead of by colours; one-hot blocks are one
    batched draw either way."""
    values = np.asarray(values, np.float64)
    if values.shape != (design.nnz,):
        raise ConfigError(f"values has shape {values.shape}; the design describes {design.nnz} ratings")
    F = design.n_features
    groups = np.asarray(design.groups, np.int32)
    blocks = tuple(_block_data(b, F, design.nnz, rank, dtype, colouring) for b in design.blocks)
    sizes = np.bincount(groups, minlength=len(design.group_names)).astype(dtype)
    return FMData(blocks, jnp.asarray(groups), jnp.asarray(sizes), jnp.asarray((values - centre).astype(dtype)),
                  jnp.asarray(centre, dtype), jnp.asarray(translatable_groups(design), jnp.int32),
                  None if category is None else jnp.asarray(np.asarray(category), jnp.int32))


def translatable_groups(design: Design) -> np.ndarray:
    """The groups along which ``w0 -> w0 + d``, ``w_j -> w_j - d`` (j in the group) leaves every
    prediction unchanged: all the group's columns in one block, and every block row that a
    rating points to holds exactly one entry, of value 1 (a one-hot block such as the user's or
    the item's index)."""
    out = []
    groups = np.asarray(design.groups)
    for b in design.blocks:
        g = np.unique(groups[b.columns])
        if g.size != 1 or np.count_nonzero(groups == g[0]) != np.unique(b.columns).size:
            continue
        used = np.unique(b.index)
        counts = np.diff(b.indptr)[used]
        first = np.asarray(b.indptr)[used]
        if np.all(counts == 1) and np.all(np.asarray(b.values)[first] == 1.0):
            out.append(int(g[0]))
    return np.asarray(out, np.int64)


# ---------------------------------------------------------------------------------------------
# the model's pieces


def _row_parts(block: FMBlockData, theta):
    r"""``R = [L, Q, S]`` (n_rows, K+2) per block row: ``L = X_b w``, ``Q = X_b V`` and
    ``S = X_b^{\circ 2} |v|^2``, from ``theta = [w, V]`` (F or F+1, K+1)."""
    x = block.entry_vals
    t = theta[block.entry_cols]
    v = t[:, 1:]
    per_entry = jnp.concatenate([x[:, None] * t, (x * x * jnp.sum(v * v, axis=1))[:, None]], axis=1)
    return jax.ops.segment_sum(per_entry, block.entry_rows, block.n_rows)


def _rating_parts(data: FMData, theta):
    """:func:`_gather` of every block's row parts at ``theta = [w, V]``."""
    return [_gather(block, _row_parts(block, theta)) for block in data.blocks]


def _totals(gathered):
    """Running per-rating sums over the blocks of :func:`_gather`'s parts: ``q = sum_b Q_b[i]``
    (nnz, K), ``sum_b a_b[i]`` and ``sum_b |Q_b[i]|^2`` (nnz,)."""
    return tuple(sum(g[k] for g in gathered) for k in range(3))


def _predict_totals(w0c, totals):
    """``f_r - centre`` from :func:`_totals`: ``w0 + sum_b a_b + (|q|^2 - sum_b |Q_b|^2)/2``."""
    q, a, qq = totals
    return w0c + a + 0.5 * (jnp.sum(q * q, axis=1) - qq)


def _theta(w, V):
    """``[w, V]`` (F, K+1)."""
    return jnp.concatenate([w[..., None], V], axis=-1)


def predict(data: FMData, w0, w, V):
    """Noise-free predictions ``f_r`` (nnz,) of one parameter set (``w0`` absolute)."""
    return data.centre + predict_centred(data, w0, w, V)


def predict_centred(data: FMData, w0, w, V):
    """``f_r - centre`` (nnz,) of one parameter set (``w0`` absolute): per block-row sums
    ``X_b w``, ``X_b V``, ``X_b^2 |v|^2`` gathered by rating (module docstring), never the
    design matrix."""
    return _predict_totals(w0 - data.centre, _totals(_rating_parts(data, _theta(w, V))))


def block_statistics(data: FMData, b: int, w0c, w, V, target):
    r"""Block ``b``'s row statistics given every other block (module docstring): ``G`` (n_rows,
    K+1, K+1) ``= sum_r [1, O_r][1, O_r]^T`` and ``c`` (n_rows, K+1) ``= sum_r z_r [1, O_r]``
    over each block row's ratings, with ``w0c`` the global bias minus the centre."""
    gathered = _rating_parts(data, _theta(w, V))
    return _statistics(data.blocks[b], gathered[b], _totals(gathered), w0c, target)


def _colour_system(batch: ColourBatch, c: int, theta, R, G, rhs, alpha, prior_prec, prior_shift):
    """Precision (J, K+1, K+1) and shift (J, K+1) of the columns of colour ``c`` of ``batch``
    (module docstring), and the entries' pieces the update needs. ``theta = [w, V]`` (F+1, K+1)
    extended by the dummy column, ``R = [L, Q, S]`` (n_rows, K+2) the block rows' parts;
    ``prior_prec``, ``prior_shift`` (F+1, K+1)."""
    cols, rows, x, slot = batch.cols[c], batch.rows[c], batch.vals[c], batch.slot[c]
    J = cols.shape[0]
    old = theta[cols[slot]]  # (E, K+1): each entry's column before the draw
    w_old, v_old = old[:, 0], old[:, 1:]
    Re = R[rows]
    Qr = Re[:, 1:-1]
    cvec = Qr - x[:, None] * v_old
    a_rest = Re[:, 0] + 0.5 * (jnp.sum(Qr * Qr, axis=1) - Re[:, -1]) - x * w_old - x * jnp.sum(v_old * cvec, axis=1)
    u = jnp.concatenate([a_rest[:, None], cvec], axis=1)  # the row's parts without column j
    Ge = G[rows]
    # With c_hat = [0, c] and M = I + c_hat e_0^T: M G M^T = G + c_hat t^T + t c_hat^T, where
    # t = G e_0 + n c_hat / 2 (G e_0 = [n, s]), and M r = r + r_0 c_hat: each column's sum of
    # x^2 G over its entries plus a sum of outer products of (K+1)-vectors.
    c_hat = jnp.concatenate([jnp.zeros_like(cvec[:, :1]), cvec], axis=1)
    t = Ge[:, :, 0] + 0.5 * Ge[:, :1, 0] * c_hat
    r = rhs[rows] - jnp.einsum("ekl,el->ek", Ge, u, precision=EXACT)
    rhs_e = r + r[:, :1] * c_hat
    k1 = c_hat.shape[1]
    if J <= MEMBERSHIP_COLUMNS:  # sums over each column's entries as products with (E, J) memberships
        member = (slot[:, None] == jnp.arange(J)[None, :]).astype(x.dtype)
        weighted = ((member * (x * x)[:, None])[:, :, None] * c_hat[:, None, :]).reshape(-1, J * k1)
        low = jnp.dot(weighted.T, t, precision=EXACT).reshape(J, k1, k1)
        gram = jnp.dot((member * (x * x)[:, None]).T, Ge.reshape(-1, k1 * k1), precision=EXACT).reshape(J, k1, k1)
        rhs_sum = jnp.dot((member * x[:, None]).T, rhs_e, precision=EXACT)
    else:
        # G = G/2 + G/2 (symmetric) goes into low + low^T
        low = jax.ops.segment_sum((x * x)[:, None, None] * (0.5 * Ge + c_hat[:, :, None] * t[:, None, :]), slot, J)
        gram = jnp.zeros_like(low)
        rhs_sum = jax.ops.segment_sum(rhs_e * x[:, None], slot, J)
    prec_sum = gram + low + jnp.swapaxes(low, 1, 2)
    precision = jax.vmap(jnp.diag)(prior_prec[cols]) + alpha * prec_sum
    shift = prior_shift[cols] + alpha * rhs_sum
    return precision, shift, (cols, rows, x, slot, old)


def colour_conditional(data: FMData, state: FMState, b: int, c: int):
    """The exact conditional ``N(P^{-1} s, P^{-1})`` of every column of colour ``c`` of block
    ``b`` given the rest of ``state``: ``(columns (J,), P (J, K+1, K+1), s (J, K+1))``, padding
    columns (index ``F``) included (their rows are the prior's). For tests and diagnostics."""
    w0c = state.w0 - data.centre
    G, rhs = block_statistics(data, b, w0c, state.w, state.V, state.target)
    theta = _extended(_theta(state.w, state.V))
    R = _row_parts(data.blocks[b], theta)
    prior_prec, prior_shift = _column_priors(data, state)
    batch, c = data.blocks[b].colour(c)
    P, s, pieces = _colour_system(batch, c, theta, R, G, rhs, state.alpha, prior_prec, prior_shift)
    return pieces[0], P, s


def _extended(theta):
    """``theta = [w, V]`` (F, K+1) with the dummy column (index F) that padding points to."""
    return jnp.concatenate([theta, jnp.zeros((1, theta.shape[1]), theta.dtype)])


def _column_priors(data: FMData, state: FMState):
    """Prior precision ``diag(lambda^w_g, lambda^v_g)`` (as (F+1, K+1) diagonals) and shift
    ``lambda * mu`` of every column (the dummy column: group 0's)."""
    g = jnp.concatenate([data.groups, jnp.zeros((1,), data.groups.dtype)])
    prec = jnp.concatenate([state.lambda_w[g][:, None], state.lambda_v[g]], axis=1)
    mean = jnp.concatenate([state.mu_w[g][:, None], state.mu_v[g]], axis=1)
    return prec, prec * mean


def group_posterior(x, groups, n_groups: int, prior: FMPrior):
    r"""Normal-Gamma posterior of each group's ``(mu, lambda)`` given its columns' values ``x``
    (F,) or (F, K) (module docstring, item 1): ``(shape, rate, mean, kappa)`` with
    ``lambda ~ Gamma(shape, rate)``, ``mu | lambda ~ N(mean, 1/(kappa lambda))``; shapes (G,)
    or (G, K)."""
    ones = jnp.ones(x.shape[:1], x.dtype)
    n = jax.ops.segment_sum(ones, groups, n_groups)
    n = n.reshape(n.shape + (1,) * (x.ndim - 1))
    xbar = jax.ops.segment_sum(x, groups, n_groups) / jnp.maximum(n, 1.0)
    dev = x - xbar[groups]
    ss = jax.ops.segment_sum(dev * dev, groups, n_groups)
    kappa = prior.gamma0 + n
    shape = prior.hyper_shape + 0.5 * n + jnp.zeros_like(xbar)
    rate = prior.hyper_rate + 0.5 * ss + 0.5 * prior.gamma0 * n * xbar * xbar / kappa
    return shape, rate, n * xbar / kappa, kappa + jnp.zeros_like(xbar)


def _draw_hypers(key, state: FMState, data: FMData, prior: FMPrior, extra_shapes=None):
    """Every group's ``(mu, lambda)`` (module docstring, item 1). ``extra_shapes``: the shapes
    of further standard Gamma variates drawn in the same call (one Gamma call site per sweep
    keeps the compiled sweep small), returned last."""
    G = data.group_sizes.shape[0]
    K = state.V.shape[1]
    post_w = group_posterior(state.w, data.groups, G, prior)
    post_v = group_posterior(state.V, data.groups, G, prior)
    k_gamma, k_normal = jax.random.split(key)
    shapes = [post_w[0], post_v[0].reshape(-1)] + ([] if extra_shapes is None else [extra_shapes])
    gammas = standard_gamma(k_gamma, jnp.concatenate(shapes))
    n_hyper = G + G * K
    lam = gammas[:n_hyper] / jnp.concatenate([post_w[1], post_v[1].reshape(-1)])
    kappa = jnp.concatenate([post_w[3], post_v[3].reshape(-1)])
    mean = jnp.concatenate([post_w[2], post_v[2].reshape(-1)])
    mu = mean + standard_normal(k_normal, mean.shape, mean.dtype) / jnp.sqrt(kappa * lam)
    return mu[:G], lam[:G], mu[G:].reshape(G, K), lam[G:].reshape(G, K), gammas[n_hyper:]


def _gather(block: FMBlockData, R):
    """Per rating from the block rows' ``R = [L, Q, S]``: ``Q_b[i]`` (nnz, K), ``a_b[i] = L + P``
    and ``|Q_b[i]|^2`` (nnz,)."""
    Q = R[:, 1:-1]
    qq = jnp.sum(Q * Q, axis=1)
    return Q[block.index], (R[:, 0] + 0.5 * (qq - R[:, -1]))[block.index], qq[block.index]


def _statistics(block: FMBlockData, mine, totals, w0c, target):
    """:func:`block_statistics` from the block's own gathered per-rating parts ``mine`` and the
    running sums over every block ``totals`` (:func:`_totals`)."""
    other = totals[0] - mine[0]  # O_r: the other blocks' part of q_r
    rest = w0c + (totals[1] - mine[1]) + 0.5 * (jnp.sum(other * other, axis=1) - (totals[2] - mine[2]))
    E = jnp.concatenate([jnp.ones_like(other[:, :1]), other], axis=1)
    # sharded (inside sharding.call): this device's block rows from its own chunks, all-gathered
    G, c, _ = sharding.row_stats(block.chunks, E, other_bias=-(target - rest))
    return sharding.gather_rows(block.chunks, G), sharding.gather_rows(block.chunks, c)


def _update_block(key, block: FMBlockData, G, rhs, alpha, theta, R, prior_prec, prior_shift, jitter,
                  mode: bool = False):
    """Draw every column of one block (a scan over its colours per colour batch) given its row
    statistics ``G``, ``rhs`` (``mode``: set it to its conditional mean instead); ``theta = [w, V]``
    extended by the dummy column, ``R`` the block rows' parts. Returns ``theta`` and ``R`` at the
    new values."""
    carry = (theta, R)
    for batch, k in zip(block.colours, jax.random.split(key, len(block.colours))):  # at most COLOUR_BATCHES
        carry = _scan_colours(k, batch, G, rhs, alpha, carry, prior_prec, prior_shift, jitter, mode)
    return carry


def _scan_colours(key, batch: ColourBatch, G, rhs, alpha, carry, prior_prec, prior_shift, jitter, mode=False):
    n_colours, J = batch.cols.shape
    k1 = carry[0].shape[1]

    def one_colour(carry, xs):
        theta, R = carry
        c, z = xs
        P, s, (cols, rows, x, slot, old) = _colour_system(batch, c, theta, R, G, rhs, alpha, prior_prec,
                                                          prior_shift)
        drawn = solve_spd(P, s, jitter) if mode else sample_gaussian(None, P, s, jitter, normals=z)[0]
        theta = theta.at[cols].set(drawn)
        new = drawn[slot]
        dv2 = jnp.sum(new[:, 1:] ** 2, axis=1) - jnp.sum(old[:, 1:] ** 2, axis=1)
        R = R.at[rows].add(jnp.concatenate([x[:, None] * (new - old), (x * x * dv2)[:, None]], axis=1))
        return (theta, R), None

    # every colour's standard normals drawn at once, outside the scan
    z = standard_normal(key, (n_colours, J, k1), carry[0].dtype)
    carry, _ = jax.lax.scan(one_colour, carry, (jnp.arange(n_colours), z))
    return carry


def _sweep_blocks(key, state: FMState, data: FMData, jitter=0.0, mode: bool = False):
    """Every block's columns in turn given the state's hyperparameters, ``w0`` and ``alpha``
    (module docstring, item 2): drawn from their conditionals, or with ``mode`` set to their
    conditional means (exact block coordinate ascent). Returns ``w`` (F,), ``V`` (F, K) and the
    predictions minus the centre at them (nnz,).

    Every block's row parts ``[L, Q, S]``, their per-rating gathers and the gathers' sums over
    the blocks (:func:`_totals`) are computed once at the start; after a block's update only its
    own parts are gathered again (from the colour scan's carry) and the sums corrected by the
    difference, so a sweep over ``B`` blocks costs ``B`` Gram passes and ``B`` gathers."""
    prior_prec, prior_shift = _column_priors(data, state)
    theta = _extended(_theta(state.w, state.V))
    parts = [_row_parts(blk, theta) for blk in data.blocks]
    gathered = [_gather(blk, R) for blk, R in zip(data.blocks, parts)]
    totals = _totals(gathered)
    w0c = state.w0 - data.centre
    for b, k in enumerate(jax.random.split(key, len(data.blocks))):  # a loop over blocks (a few)
        block = data.blocks[b]
        G, rhs = _statistics(block, gathered[b], totals, w0c, state.target)
        theta, R = _update_block(k, block, G, rhs, state.alpha, theta, parts[b], prior_prec, prior_shift, jitter,
                                 mode)
        fresh = _gather(block, R)
        totals = tuple(t + (n - o) for t, n, o in zip(totals, fresh, gathered[b]))  # only block b's parts changed
    return theta[:-1, 0], theta[:-1, 1:], _predict_totals(w0c, totals)


def step(key, state: FMState, data: FMData, prior: FMPrior, jitter=0.0) -> tuple[FMState, FMInfo]:
    """One Gibbs sweep (module docstring). ``prior`` static (close over it before jitting); the
    blocks' columns by :func:`_sweep_blocks`."""
    k_hyper, k_blocks, k_w0 = jax.random.split(key, 3)
    nnz = state.target.shape[0]
    dtype = state.V.dtype
    accept = jnp.zeros((), dtype)
    if prior.ordinal:  # its own key: the Gaussian sweep's random streams stay as they were
        state, accept = latent_targets(jax.random.fold_in(key, 11), state, data, prior)
    a0 = 1.0 if prior.noise_prior is None else prior.noise_prior[0]
    mu_w, lambda_w, mu_v, lambda_v, gamma = _draw_hypers(k_hyper, state, data, prior,
                                                         jnp.asarray([a0 + 0.5 * nnz], dtype))
    state = state._replace(mu_w=mu_w, lambda_w=lambda_w, mu_v=mu_v, lambda_v=lambda_v)
    w, V, f = _sweep_blocks(k_blocks, state, data, jitter)
    w0, alpha, rmse = draw_global(k_w0, None, state, data, prior, w, V, f=f, gamma=gamma[0])
    new = state._replace(w0=w0, w=w, V=V, alpha=alpha)
    if prior.offset_prior is not None and data.translatable.shape[0]:
        new = translate_move(jax.random.fold_in(key, 1), new, data, prior)
    return new, FMInfo(rmse, alpha, all_finite(new.w, V, new.w0, alpha), accept)


def latent_targets(key, state: FMState, data: FMData, prior: FMPrior):
    """The ordinal likelihood's block at the start of a sweep: ``(c, z) | f``
    (:func:`bayesmf.posterior.ordinal.sample_ordinal`) at the state's predictions ``f``
    (:func:`predict`); returns the state with ``target = z - centre`` and the new cutpoints, and
    whether the cutpoints' proposal was accepted (as a float)."""
    f = predict(data, state.w0, state.w, state.V)
    z, cutpoints, accepted = ordinal.sample_ordinal(key, f, data.category, state.cutpoints, prior.gap_prior)
    target = (z - data.centre).astype(state.target.dtype)
    return state._replace(target=target, cutpoints=cutpoints.astype(state.V.dtype)), accepted.astype(state.V.dtype)


def draw_global(k_w0, k_alpha, state: FMState, data: FMData, prior: FMPrior, w, V, f=None, gamma=None):
    """``w0`` then ``alpha`` from their conditionals (module docstring, items 3 and 4) given the
    new ``w``, ``V``: returns ``(w0, alpha, training RMSE before the w0 draw)``. With
    ``offset_prior`` None ``w0`` stays, with ``noise_prior`` None ``alpha`` stays. ``f``: the
    predictions minus the centre at ``w``, ``V`` and the current ``w0`` when known; ``gamma``: a
    standard Gamma variate of shape ``a0 + nnz/2`` drawn by the caller (else from ``k_alpha``)."""
    nnz = state.target.shape[0]
    dtype = V.dtype
    w0c = state.w0 - data.centre
    if f is None:
        f = _predict_totals(w0c, _totals(_rating_parts(data, _theta(w, V))))
    e = state.target - f
    total, sse = jnp.sum(e), jnp.sum(e * e)
    rmse = jnp.sqrt(sse / nnz)
    w0 = state.w0
    if prior.offset_prior is not None:
        m0, s0 = prior.offset_prior
        precision = 1.0 / s0**2 + state.alpha * nnz
        mean_c = ((m0 - data.centre) / s0**2 + state.alpha * (total + nnz * w0c)) / precision
        new_c = mean_c + standard_normal(k_w0, (), dtype) / jnp.sqrt(precision)
        delta = new_c - w0c
        sse = jnp.maximum(sse - 2.0 * delta * total + nnz * delta * delta, 0.0)
        w0 = (data.centre + new_c).astype(dtype)
    alpha = state.alpha
    if prior.noise_prior is not None:
        a0, b0 = prior.noise_prior
        if gamma is None:
            gamma = standard_gamma(k_alpha, jnp.asarray([a0 + 0.5 * nnz], dtype))[0]
        alpha = (gamma / (b0 + 0.5 * sse)).astype(dtype)
    return w0, alpha, rmse


def translate_move(key, state: FMState, data: FMData, prior: FMPrior) -> FMState:
    r"""Group moves (Liu & Sabatti 2000) along the likelihood's translations, one per group of
    ``data.translatable`` in turn: ``w0 -> w0 + d``, ``w_j -> w_j - d`` for the group's columns
    and ``mu^w_g -> mu^w_g - d``. Every prediction and every ``N(w_j; mu^w_g, 1/lambda^w_g)`` is
    unchanged; only the priors of ``w0`` and ``mu^w_g`` change (Jacobian 1, uniform Haar
    measure), so ``d`` is drawn exactly from

    .. math::
        \pi(d) \propto \exp\Big(-\frac{(w_0 + d - m_0)^2}{2 s_0^2}
                                - \frac{\gamma_0 \lambda^w_g}{2} (\mu^w_g - d)^2\Big).

    Without it ``w0`` moves by its conditional spread given the biases per sweep, a random walk
    along the ridge ``w0 + mu^w_user + mu^w_item``."""
    m0, s0 = prior.offset_prior
    z = standard_normal(key, data.translatable.shape, state.w.dtype)
    w0, w, mu_w = state.w0, state.w, state.mu_w
    for k in range(data.translatable.shape[0]):  # a loop over the translatable groups (one or two)
        g = data.translatable[k]
        lam = prior.gamma0 * state.lambda_w[g]
        precision = 1.0 / s0**2 + lam
        d = ((m0 - w0) / s0**2 + lam * mu_w[g]) / precision + z[k] / jnp.sqrt(precision)
        w0, w, mu_w = w0 + d, jnp.where(data.groups == g, w - d, w), mu_w.at[g].add(-d)
    return state._replace(w0=w0.astype(state.w0.dtype), w=w, mu_w=mu_w)


def init(key, data: FMData, prior: FMPrior, chains: int = 1, dtype=jnp.float32) -> FMState:
    """Starting states of ``chains`` chains (leading axis): ``w = 0``, ``V ~ N(0, s^2)`` with
    ``s = init_std`` for chain 0 and ``3 init_std`` for the others (over-dispersed starts, so that
    R-hat can see chains that have not forgotten them), ``w0`` at the centre, hyperparameters
    at ``mu = 0``, ``lambda = 1``, ``alpha`` at ``prior.alpha``."""
    F = data.groups.shape[0]
    G = data.group_sizes.shape[0]
    K = prior.rank
    scale = jnp.where(jnp.arange(chains) == 0, 1.0, 3.0).astype(dtype) * prior.init_std
    V = standard_normal(key, (chains, F, K), dtype) * scale[:, None, None]

    def rep(x):
        return jnp.broadcast_to(jnp.asarray(x, dtype), (chains, *jnp.shape(x)))

    cutpoints = None
    if prior.ordinal:
        cutpoints = rep(ordinal.initial_cutpoints(int(prior.n_categories), dtype))
    return FMState(rep(data.centre), jnp.zeros((chains, F), dtype), V, rep(jnp.zeros(G)), rep(jnp.ones(G)),
                   rep(jnp.zeros((G, K))), rep(jnp.ones((G, K))), rep(prior.alpha), rep(data.y), cutpoints)


@functools.partial(jax.jit, static_argnames=("prior",))
def _chains_sweep(key, states, jitter, data, prior):
    keys = jax.random.split(key, states.w.shape[0])
    # the chains one after another: a chain's colour scans are many small sequential steps that
    # gain nothing from batching (benchmarks/RESULTS.md), and one chain's temporaries at a time
    return jax.lax.map(lambda a: step(a[0], a[1], data, prior, jitter), (keys, states))


# The jitter of the retry of a sweep whose factorisation failed.
RETRY_JITTER = 1e-5


def build_kernel(data: FMData, prior: FMPrior) -> Kernel:
    """The sampler as a :class:`~bayesmf.engines.driver.Kernel` over a batch of chains:
    ``init(key, chains)`` (:func:`init`), ``step(key, states)`` one sweep of every chain (chain
    ``c`` keyed by ``split(key, chains)[c]``), ``retry`` the same with :data:`RETRY_JITTER`.
    ``data`` from :func:`shard`: every sweep runs over its mesh (:func:`shard`)."""
    prior = prior.validate()
    if sharding.mesh_of(data) is not None:
        def sweep(key, states, jitter):
            return sharding.call(_chains_sweep_on_mesh, key, states, jitter, data=data, prior=prior)

        def start(key, chains=1, **kw):  # plain arrays (as the sweeps return), not the mesh's
            return jax.tree.map(lambda a: a.addressable_data(0), init(key, data, prior, chains, **kw))
    else:
        def sweep(key, states, jitter):
            return _chains_sweep(key, states, jitter, data, prior)

        def start(key, chains=1, **kw):
            return init(key, data, prior, chains, **kw)

    return Kernel(init=start, step=lambda key, states: sweep(key, states, 0.0),
                  retry=lambda key, states: sweep(key, states, RETRY_JITTER), jitter=RETRY_JITTER)


def _chains_sweep_on_mesh(key, states, jitter, data, prior):
    return _chains_sweep.__wrapped__(key, states, jitter, data, prior)


def shard(data: FMData, mesh) -> FMData:
    """``data`` with every block's rating chunks (:attr:`FMBlockData.chunks`, whole block rows)
    split over the one-axis ``mesh`` and every other array replicated
    (:func:`bayesmf.engines.sharding.shard_data`): :func:`build_kernel` then runs every sweep over
    the mesh (module docstring, "Several devices")."""
    nnz = int(data.y.shape[0])
    blocks = tuple(sharding.shard_data(block, mesh, {"chunks": nnz}) for block in data.blocks)
    return sharding.shard_data(data._replace(blocks=()), mesh, {})._replace(blocks=blocks)


class FMMapInfo(NamedTuple):
    """Diagnostics of one coordinate-ascent sweep of :func:`build_map_kernel`."""

    objective: jnp.ndarray
    """Minus the log joint up to a constant (:func:`map_sweep`) after the sweep."""
    train_rmse: jnp.ndarray
    """Training RMSE after the sweep."""


def map_state(state: FMState, prior: FMPrior) -> FMState:
    """``state`` (one chain) with the quantities the MAP fit holds fixed at the values of the
    model it maximises: ``mu = 0``, ``lambda = alpha_lambda / beta_lambda`` (the Gamma prior's
    mean) for every group, ``alpha = prior.alpha``, ``w0`` at the data's centre (as in
    :func:`init`)."""
    lam = prior.hyper_shape / prior.hyper_rate
    return state._replace(mu_w=jnp.zeros_like(state.mu_w), lambda_w=jnp.full_like(state.lambda_w, lam),
                          mu_v=jnp.zeros_like(state.mu_v), lambda_v=jnp.full_like(state.lambda_v, lam),
                          alpha=jnp.full_like(state.alpha, prior.alpha))


@jax.jit
def map_sweep(state: FMState, data: FMData) -> tuple[FMState, FMMapInfo]:
    r"""One sweep of exact block coordinate ascent on the log joint over ``(w, V)`` with the
    hyperparameters, ``w0`` and ``alpha`` of ``state`` fixed: every colour's columns set to
    their conditional mean given the rest (the Gibbs step's ``P^{-1} s``, module docstring), so
    the objective

    .. math::
        \frac{\alpha}{2} \sum_r (y_r - f_r)^2 + \frac12 \sum_j \Big(\lambda^w_{g(j)} (w_j - \mu^w_{g(j)})^2
        + \sum_f \lambda^v_{g(j)f} (v_{jf} - \mu^v_{g(j)f})^2\Big)

    never increases."""
    w, V, f = _sweep_blocks(jax.random.PRNGKey(0), state, data, mode=True)
    e = state.target - f
    sse = jnp.sum(e * e)
    g = data.groups
    penalty = (jnp.sum(state.lambda_w[g] * (w - state.mu_w[g]) ** 2)
               + jnp.sum(state.lambda_v[g] * (V - state.mu_v[g]) ** 2))
    return state._replace(w=w, V=V), FMMapInfo(0.5 * state.alpha * sse + 0.5 * penalty, jnp.sqrt(sse / e.shape[0]))


def build_map_kernel(data: FMData, prior: FMPrior) -> Kernel:
    """The MAP fit (:func:`map_sweep`) as a deterministic
    :class:`~bayesmf.engines.driver.Kernel`: ``init(key, dtype=)`` the sampler's chain-0 start
    (:func:`init`) with the fixed quantities of :func:`map_state`, ``step(key, state)`` one
    sweep."""
    prior = prior.validate()
    if prior.ordinal:
        raise ConfigError("the MAP fit is the Gaussian likelihood's: likelihood='ordinal' needs inference='gibbs'")

    def start(key, dtype=jnp.float32):
        return map_state(jax.tree_util.tree_map(lambda x: x[0], init(key, data, prior, 1, dtype)), prior)

    return Kernel(init=start, step=lambda _key, state: map_sweep(state, data))
