"""Rows packed into equal-shape, cache-sized chunks: the one layout for per-row sums over ratings.

Every alternating engine needs, for each row ``r`` (a user, or an item for the other side), sums
over the row's ratings of the other side's factors ``f_j``: Gram matrices ``sum_j f_j f_j^T`` and
right-hand sides (explicit ALS, the Gibbs sampler, PMF MAP, the fold-ins: :func:`gram_rhs`),
conjugate-gradient products (implicit ALS), weighted sums (NMF). Gathering ``f_j`` for every
rating at once and then reducing is bound by memory traffic (at rank 64 that block is ~150 MB
on MovieLens-1M, streamed from DRAM by every pass) and, with one batched op per degree bucket,
slow to compile. Here the rows of one side are packed into chunks of ``C x W`` slots
(``chunk_slots`` = ``C W``, a cache-sized block of gathered factors), and a ``lax.map`` runs
one chunk's whole computation — gather, every pass over it — while the block stays in cache.
Every chunk has the same shape, so the body compiles once per side whatever the degree
distribution (the degree buckets this replaced compiled one body per bucket).

Layout: a row with ``d`` ratings occupies ``ceil(d / W)`` consecutive *virtual rows* of width
``W`` inside one chunk (a row never straddles two chunks, so a chunk's rows are complete inside
it). Per-row sums are the sums over a row's virtual rows (:func:`to_rows`, a sorted segment sum
of ``C`` entries). The width is the engine's choice: batched matmuls (Gram matrices) want wide
rows, 64 (:data:`GRAM_WIDTH`); implicit ALS's CG uses 32; NMF's elementwise passes 8
(``nmf.NMF_WIDTH``); each chosen by timing (benchmarks/RESULTS.md).

Packing: rows sorted by size (virtual rows), each chunk takes the largest remaining rows that
fit and fills what is left with the smallest ones (a loop over chunks, vectorised inside), then
the capacity is tightened so that the same number of chunks is evenly filled, then rounded up to
a coarse grid of sizes (:func:`shape_bucket`) so that similar data sets share compiled code. The
waste is the padding inside each row's last virtual row, the unfilled tail of some chunks and
the rounding (at most 1/8 of a chunk).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Grouping, group_rows
from bayesmf.engines.linalg import EXACT


class Chunks(NamedTuple):
    """One side's ratings in ``n_chunks`` chunks of ``C`` virtual rows of width ``W``.

    ``cols`` (n_chunks, C, W) int32: the other side's index for each slot, ``n_cols`` on padding
    (callers append a zero row to the other side's factors, so padding gathers zeros);
    ``vals`` (n_chunks, C, W): the rating value, 0 on padding; ``owner`` (n_chunks, C) int32: the
    chunk-local row (0..C-1) each virtual row belongs to, non-decreasing (padding: C - 1);
    ``rows`` (n_chunks, C) int32: the global row of each local row (``n_rows`` for an unused one);
    ``slot`` (n_rows,) int32: each row's position in ``rows.reshape(-1)``, ``n_chunks * C`` for a
    row without ratings (:func:`in_row_order` puts a zero there); ``rating`` (n_chunks, C, W)
    int32 or None: the index of each slot's rating in the input triples, ``nnz`` on padding
    (built on request, ``build_chunks(..., rating_index=True)``: per-rating weights of
    :func:`gram_rhs`, the same draw laid out in both sides' chunks).
    """

    cols: jnp.ndarray
    vals: jnp.ndarray
    owner: jnp.ndarray
    rows: jnp.ndarray
    slot: jnp.ndarray
    rating: jnp.ndarray | None = None

    @property
    def n_slots(self) -> int:
        """Total slots, padding included (>= nnz)."""
        return int(np.prod(self.cols.shape))


def _pack(sizes: np.ndarray, capacity: int):
    """Assign items of ``sizes`` (descending, each <= capacity) to bins of ``capacity``.

    Each bin takes the largest remaining items that fit, then as many of the smallest as fit in
    what is left. Returns (bin, offset within the bin, index within the bin) per item, and the
    number of bins. Loops over bins only.
    """
    n = sizes.size
    cum = np.concatenate([[0], np.cumsum(sizes)])
    bin_of = np.empty(n, np.int64)
    offset = np.empty(n, np.int64)
    local = np.empty(n, np.int64)
    lo, hi, b = 0, n, 0
    while lo < hi:
        j = min(int(np.searchsorted(cum, cum[lo] + capacity, side="right")) - 1, hi)
        used = cum[j] - cum[lo]
        t = max(int(np.searchsorted(cum, cum[hi] - (capacity - used), side="left")), j)
        bin_of[lo:j] = bin_of[t:hi] = b
        offset[lo:j] = cum[lo:j] - cum[lo]
        offset[t:hi] = used + cum[t:hi] - cum[t]
        local[lo:j] = np.arange(j - lo)
        local[t:hi] = (j - lo) + np.arange(hi - t)
        lo, hi, b = j, t, b + 1
    return bin_of, offset, local, b


def build_chunks(row_idx, col_idx, values, n_rows: int, n_cols: int, width: int = 32,
                 chunk_slots: int = 8192, dtype=np.float32, rating_index: bool = False,
                 grouping: Grouping | None = None, grouped_cols=None) -> Chunks:
    """Pack the (row, col, value) triples by row (see the module docstring).

    ``width`` is ``W``; ``chunk_slots`` the target ``C W``, raised to the largest row's padded
    degree when a row would not fit, lowered to the side's total when the side is smaller, and
    then to the least that packs the rows into the same number of chunks (evenly filled chunks).
    Every rating lands in exactly one slot (nothing is dropped). ``rating_index``: also record
    each slot's rating (``Chunks.rating``). ``grouping``: the triples already grouped by row
    (:attr:`Ratings.by_user <bayesmf.data.Ratings.by_user>` or ``by_item``, which a fit computes
    anyway), else it is computed here; the layout is the same either way. ``grouped_cols``:
    ``col_idx[grouping.order]`` when the caller has it already
    (:attr:`Ratings.items_by_user <bayesmf.data.Ratings.items_by_user>`), else gathered here.
    """
    row_idx = np.asarray(row_idx)
    col_idx = np.asarray(col_idx)
    values = np.asarray(values)
    if grouping is None:
        grouping = group_rows(row_idx, n_rows)
    counts = grouping.counts
    n_virtual = -(-counts // width)
    # no larger than the whole side needs: a small side is one chunk without idle virtual rows
    capacity = max(min(chunk_slots // width, int(n_virtual.sum())), int(n_virtual.max(initial=1)), 1)
    filled = np.flatnonzero(counts)
    by_size = filled[np.argsort(-n_virtual[filled], kind="stable")]
    sizes, largest, total = n_virtual[by_size], int(n_virtual.max(initial=1)), int(n_virtual.sum())
    packed = _pack(sizes, capacity)
    # the same number of chunks, as evenly filled as the packing allows: a last, mostly empty
    # chunk would cost as much as a full one (on MovieLens-100K it doubled the padding)
    for tighter in (-(-total // max(packed[3], 1)), -(-total // max(packed[3], 1)) + largest):
        if tighter < capacity:
            again = _pack(sizes, max(tighter, largest))
            if again[3] == packed[3]:
                packed, capacity = again, max(tighter, largest)
                break
    chunk_of_row, first_vrow, local_of_row, n_chunks = packed
    n_chunks = max(n_chunks, 1)
    # chunks padded to a size on a coarse grid: data sets of nearly the same size (the folds of
    # a cross-validation, the points of a grid, a refit) give the same shapes and reuse one
    # compiled sweep; the packing above is unchanged, the extra virtual rows are padding
    if n_chunks == 1:
        # one chunk holds the whole side: size it by a bound that depends only on the row count
        # and the number of ratings (sum_r ceil(d_r / W) <= n_rows + nnz // W), so that folds of
        # one data set agree exactly; a small side's padding is cheap
        capacity = max(capacity, min(n_rows + row_idx.size // width, chunk_slots // width))
    capacity = shape_bucket(capacity)
    # per row (in global order): its chunk, first virtual row and local index
    chunk = np.zeros(n_rows, np.int64)
    start = np.zeros(n_rows, np.int64)
    local = np.zeros(n_rows, np.int64)
    chunk[by_size], start[by_size], local[by_size] = chunk_of_row, first_vrow, local_of_row

    # the k-th rating of row r (in input order) goes to flat slot (chunk C + start) W + k:
    # one repeat of a per-row base and one add per rating
    order = grouping.order
    base = (chunk * capacity + start) * width - grouping.indptr[:-1]
    flat = np.repeat(base, counts)  # base[segment_ids], written sequentially
    flat += np.arange(order.size)
    cols = np.full((n_chunks, capacity, width), n_cols, np.int32)
    vals = np.zeros((n_chunks, capacity, width), dtype)
    cols.reshape(-1)[flat] = col_idx[order] if grouped_cols is None else grouped_cols
    vals.reshape(-1)[flat] = values[order]

    owner = np.full((n_chunks, capacity), capacity - 1, np.int32)
    vrow_row = np.repeat(filled, n_virtual[filled])  # one entry per virtual row
    vrow_rank = np.arange(vrow_row.size) - np.repeat(np.cumsum(n_virtual[filled]) - n_virtual[filled],
                                                       n_virtual[filled])
    owner[chunk[vrow_row], start[vrow_row] + vrow_rank] = local[vrow_row]
    rows = np.full((n_chunks, capacity), n_rows, np.int32)
    rows[chunk[filled], local[filled]] = filled
    slot = np.full(n_rows, n_chunks * capacity, np.int32)
    slot[filled] = chunk[filled] * capacity + local[filled]
    rating = None
    if rating_index:
        rating = np.full((n_chunks, capacity, width), order.size, np.int32)
        rating.reshape(-1)[flat] = order
        rating = jnp.asarray(rating)
    return Chunks(*(jnp.asarray(a) for a in (cols, vals, owner, rows, slot)), rating)


def shape_bucket(n: int, steps: int = 8) -> int:
    """``n`` rounded up to the grid of ``steps`` sizes per power of two (multiples of
    ``2**floor(log2 n) / steps``): at most a ``1 / steps`` fraction of padding, and the sizes of
    similar data sets coincide. Small ``n`` (``<= steps``) is returned as it is."""
    n = int(n)
    if n <= steps:
        return n
    step = (1 << (n.bit_length() - 1)) // steps
    return -(-n // step) * step


def chunks_for(ratings, side: str, values=None, width: int = 32, chunk_slots: int = 8192,
               dtype=np.float32, rating_index: bool = False) -> Chunks:
    """:class:`Chunks` of a :class:`~bayesmf.data.Ratings` by ``side="user"`` or ``"item"``."""
    vals = ratings.values if values is None else values
    if side == "user":
        return build_chunks(ratings.users, ratings.items, vals, ratings.n_users, ratings.n_items,
                            width, chunk_slots, dtype, rating_index, ratings.by_user, ratings.items_by_user)
    if side == "item":
        return build_chunks(ratings.items, ratings.users, vals, ratings.n_items, ratings.n_users,
                            width, chunk_slots, dtype, rating_index, ratings.by_item)
    raise ValueError(f"side must be 'user' or 'item', got {side!r}")


# Width of the virtual rows for the Gram matrices (one batched (k x W) @ (W x k) matmul per
# virtual row: wide rows amortise the per-matmul cost; benchmarks/RESULTS.md has the timings).
GRAM_WIDTH = 64


def gram_chunks_for(ratings, side: str, rank: int, values=None, dtype=np.float32,
                    rating_index: bool = False) -> Chunks:
    """:func:`chunks_for` sized for :func:`gram_rhs` with ``rank`` columns of gathered factors."""
    return chunks_for(ratings, side, values, GRAM_WIDTH, cache_chunk_slots(rank), dtype, rating_index)


def build_gram_chunks(row_idx, col_idx, values, n_rows: int, n_cols: int, rank: int,
                      dtype=np.float32) -> Chunks:
    """:func:`build_chunks` sized for :func:`gram_rhs` with ``rank`` columns of gathered factors."""
    return build_chunks(row_idx, col_idx, values, n_rows, n_cols, GRAM_WIDTH, cache_chunk_slots(rank), dtype)


def cache_chunk_slots(rank: int, budget_bytes: int = 2 << 20, itemsize: int = 4) -> int:
    """Slots per chunk whose gathered factors (``slots x rank`` floats) fill ``budget_bytes``
    (2 MiB: stays in a CPU core's L2/L3 across a chunk's passes)."""
    return max(256, budget_bytes // (itemsize * rank))


def to_rows(owner, per_virtual_row, n_local: int):
    """Sum per-virtual-row quantities ``(C, ...)`` into the chunk's local rows ``(n_local, ...)``."""
    return jax.ops.segment_sum(per_virtual_row, owner, num_segments=n_local, indices_are_sorted=True)


def in_row_order(chunks: Chunks, per_chunk):
    """Per-chunk, per-local-row results ``(n_chunks, C, ...)`` as one array in row order
    ``(n_rows, ...)``, zeros for rows without ratings."""
    flat = per_chunk.reshape(-1, *per_chunk.shape[2:])
    # rows without ratings point one past the end: filled with zeros by the gather itself, so
    # the (possibly large) per-slot array is not copied into a zero-extended one first
    return jnp.take(flat, chunks.slot, axis=0, mode="fill", fill_value=0)


def gram_rhs(chunks: Chunks, other, other_bias=None, shift=0.0, sums: bool = False, weights=None):
    """Every row's ``G_r = sum_j f_j f_j^T`` and ``b_r = sum_j y_rj f_j``, chunk by chunk.

    ``other`` (n_other, k): the other side's factors ``f_j`` (``chunks`` built with
    ``n_cols = n_other``, so padding slots gather an appended zero row); targets
    ``y_rj = v_rj - shift - c_j`` with ``v`` the chunks' values and ``c = other_bias``
    (n_other,), 0 when None. Returns ``G`` (n_rows, k, k), ``b`` (n_rows, k) (zeros for rows
    without ratings) and ``yy = sum_r sum_j y_rj^2`` over every rating, so that a caller gets
    the sum of squared errors of rows ``x_r`` as ``yy - 2 sum x_r.b_r + sum x_r^T G_r x_r``
    without another pass over the ratings. Memory: one chunk's gathered block at a time.

    With ``sums``, also ``s_r = sum_j f_j`` (n_rows, k) and ``sum_r sum_j y_rj``: then the sum
    of the residuals of rows ``x_r`` is ``sum_r (sum_j y_rj - x_r.s_r)`` (:func:`residual_sum`),
    which the sampler's offset conditional needs; a reduction of the block already gathered.

    ``weights`` (nnz,), per rating in the order of the triples the chunks were built from
    (``chunks.rating`` needed): every sum weighted, ``G_r = sum_j w_rj f_j f_j^T``,
    ``b_r = sum_j w_rj y_rj f_j``, ``yy = sum w y^2``, ``s_r = sum_j w_rj f_j`` and
    ``sum w y`` (the non-Gaussian noise models of the sampler; one more gather per slot).
    """
    k = other.shape[1]
    out = gram_rhs_chunks(chunks, other, other_bias, shift, sums, weights)
    product = in_row_order(chunks, out[0])
    result = (product[:, :k, :k], product[:, k, :k], jnp.sum(out[1]))
    if sums:
        result += (in_row_order(chunks, out[2]), jnp.sum(out[3]))
    return result


def gram_rhs_chunks(chunks: Chunks, other, other_bias=None, shift=0.0, sums: bool = False, weights=None,
                    finish=None):
    """:func:`gram_rhs` chunk by chunk, before the rows are put in order and the sums added: per
    chunk the products ``(n_chunks, C, k + 1, k or k + 1)`` (``G`` in ``[:k, :k]``, ``b^T`` in row ``k``)
    and ``yy`` (n_chunks,); with ``sums`` also ``s`` (n_chunks, C, k) and the targets' sum
    (n_chunks,) (the sharded half steps, :mod:`bayesmf.engines.sharding`, use them as they are).

    ``finish(rows, product, yy, ...)``: run on each chunk's outputs inside the map, with the
    chunk's ``rows`` (C,) (:attr:`Chunks.rows`: each local row's global row, ``n_rows`` on
    padding); the map then returns what ``finish`` returns, stacked over the chunks. A half step
    that solves its rows there (explicit ALS) never holds every chunk's ``(C, k + 1, k)``
    products at once: its memory is ``O(n_chunks C k)``, not ``O(n_chunks C k^2)``, which at
    tens of millions of ratings and rank 32 is the difference between fitting in memory or not."""
    n_other, k = other.shape
    factors = jnp.concatenate([other, jnp.zeros((1, k), other.dtype)])
    if other_bias is not None:
        bias = jnp.concatenate([other_bias.astype(other.dtype), jnp.zeros((1,), other.dtype)])
    n_local = chunks.cols.shape[1]

    # G and b from one batched matmul of the block extended by the targets' column, [f, y]^T
    # times [f, y] when k + 1 is a multiple of 4, else times f (row k of the product: b^T).
    # XLA:CPU's small batched matmuls are much faster when their shapes suit its vector width,
    # and a separate (k, W) @ (W, 1) product for b costs nearly what the Gram matrices do
    # (timings per k: benchmarks/RESULTS.md).
    square = (k + 1) % 4 == 0

    weighted = weights is not None
    if weighted:
        if chunks.rating is None:
            raise ValueError("per-rating weights need chunks built with rating_index=True")
        w_ext = jnp.concatenate([weights.astype(other.dtype), jnp.zeros((1,), other.dtype)])

    def one_chunk(chunk):
        cols, vals, owner = chunk[:3]
        rows = chunk[-1] if finish is not None else None
        f = factors[cols]  # (C, W, k), zero on padding
        shifted = vals - shift if other_bias is None else vals - shift - bias[cols]
        y = jnp.where(cols < n_other, shifted, 0.0)
        # weighted: the right-hand block times w (zero on padding), the left one as it is
        fw, yw = (f, y) if not weighted else (f * w_ext[chunk[3]][..., None], y * w_ext[chunk[3]])
        # transposed explicitly, then a plain batched matmul: XLA:CPU runs the equivalent einsum
        # "cwk,cwl->ckl" much slower
        if square:
            extended = jnp.concatenate([f, y[..., None]], axis=2)  # (C, W, k + 1)
            right = extended if not weighted else jnp.concatenate([fw, yw[..., None]], axis=2)
            product = jnp.matmul(jnp.swapaxes(extended, 1, 2), right, precision=EXACT)
        else:  # the same product's first k columns; transposing the extended block instead
            # (the same values) made XLA choose a slower layout at k = 33
            left = jnp.concatenate([jnp.swapaxes(f, 1, 2), y[:, None, :]], axis=1)  # (C, k + 1, W)
            product = jnp.matmul(left, fw, precision=EXACT)
        out = (to_rows(owner, product, n_local), jnp.sum(y * yw))
        if sums:
            out += (to_rows(owner, jnp.sum(fw, axis=1), n_local), jnp.sum(yw))
        return out if finish is None else finish(rows, *out)

    blocks = (chunks.cols, chunks.vals, chunks.owner) + ((chunks.rating,) if weighted else ())
    blocks += (chunks.rows,) if finish is not None else ()
    return jax.lax.map(one_chunk, blocks)


def residual_sum(x, feature_sum, target_sum):
    """``sum_r sum_j (y_rj - x_r.f_j) = sum_r sum_j y_rj - sum_r x_r.s_r`` from the sums of
    :func:`gram_rhs` (``sums=True``) and the rows ``x`` (n_rows, k)."""
    return target_sum - jnp.sum(x * feature_sum)


def squared_error(x, gram, rhs, yy):
    """``sum_r |y_r - F_r x_r|^2 = yy - 2 sum_r x_r.b_r + sum_r x_r^T G_r x_r`` from the outputs
    of :func:`gram_rhs` and the rows ``x`` (n_rows, k); clipped at 0 (the expanded square can
    round below it)."""
    sse = yy - 2 * jnp.sum(x * rhs) + jnp.einsum("nk,nkl,nl->", x, gram, x, precision=EXACT)
    return jnp.maximum(sse, 0.0)
