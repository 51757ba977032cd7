r"""Rows of one side spread over a one-axis device mesh: the sharded sweeps of ALS, implicit ALS
and the BPMF Gibbs sampler (the design of ALX, Mehta et al. 2021, arXiv 2112.02194).

Each side's ratings are already packed into equal-shape chunks (:mod:`bayesmf.engines.chunks`);
a chunk holds whole rows. Sharding splits the *chunk axis* over the devices of a one-axis
:class:`jax.sharding.Mesh` (:func:`shard_chunks`): device ``d`` owns chunks
``d n_pad / P .. (d + 1) n_pad / P - 1``, and with them those rows' ratings and solves. The
chunk count is padded with empty chunks to a multiple of the mesh size ``P`` (automatically:
any mesh size works with any data). One sweep runs as one SPMD program (:func:`jax.shard_map`,
:func:`call`) in which

* the factors, biases and hyperparameters are *replicated* on every device;
* each half step computes its rows' Gram matrices and right-hand sides from its own chunks
  (:func:`row_stats`, listed compactly: :class:`ShardedChunks`), solves or draws those rows,
  and all-gathers the new rows (:func:`gather_rows`, ``all_gather`` along the mesh axis, then
  the rows put in order): O(n k) communication per half step, the ALX all-gather of the other
  side's table (here every device keeps both tables whole: O((n + m) k) memory per device);
* the sums over ratings (the sum of squared residuals behind the loss and the noise precision,
  the residual sum behind the offset) are summed per chunk on the owning device, all-gathered
  as one number per chunk and added in chunk order (:func:`chunk_total`); the sums over rows
  (the Normal-Wishart statistics ``sum_i x_i``, ``sum_i x_i x_i^T``, the bias and shift moves)
  are computed from the replicated gathered factors.

Every reduction therefore runs in an order that does not depend on the number of devices, and
so do the random numbers: a Gibbs half step draws the standard normals of *all* the side's rows
from the half step's key (the same call, and the same numbers, as one device:
``standard_normal(key, (n_rows, D))``, row ``r`` gets row ``r``) and each device keeps its
rows' (:func:`local`) — a counter-based scheme indexed by the global row, at the price of
O(n D) normals drawn on every device. A sharded fit
gives the same numbers on 1, 2, 3 or 4 devices (or any count), bit for bit. Against the
unsharded code path (``devices=None``) the per-row work is the same, but the sums are grouped
per chunk instead of over all rows, so results agree to float rounding (the tests state the
tolerances); ALS's factors (its sums feed only the reported loss) and implicit ALS (whose sums
already go chunk by chunk) agree bit for bit.

Several processes (``jax.distributed.initialize``): every process builds the same layouts from
the same ratings; :func:`shard_chunks` places each process's chunks on its own devices, and
:func:`call` hands the replicated results back as process-local arrays, so the driver loop
(:func:`bayesmf.engines.driver.run`) runs unchanged in every process.

At the end of a fit the factors are ordinary host arrays: a model fitted on one mesh predicts,
recommends, folds in, saves and loads without a mesh (or on another one: ``devices`` is a
setting of the fit only, never saved).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bayesmf.engines import chunks as layout
from bayesmf.engines.chunks import Chunks, gram_rhs, gram_rhs_chunks
from bayesmf.errors import ConfigError

AXIS = "rows"
"""The mesh axis name of :func:`device_mesh` for a list of devices."""

ROW_BLOCK = 128
"""Each device's row count is padded to a multiple of this (:func:`shard_chunks`)."""


def device_mesh(devices) -> Mesh | None:
    """A one-axis mesh from ``devices``: None (no sharding), a sequence of distinct JAX devices,
    or a :class:`jax.sharding.Mesh` with one axis (returned as it is). Raises
    :class:`~bayesmf.errors.ConfigError` otherwise, naming the value."""
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise ConfigError(f"devices: a mesh with one axis is needed, got axes {devices.axis_names}")
        return devices
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise ConfigError(f"devices must be a list of JAX devices or a one-axis Mesh, got {devices!r}")
    devices = list(devices)
    if not devices:
        raise ConfigError("devices: the list is empty")
    for d in devices:
        if not isinstance(d, jax.Device):
            raise ConfigError(f"devices: {d!r} is not a JAX device (use jax.devices())")
    if len({(d.platform, d.id) for d in devices}) != len(devices):
        raise ConfigError(f"devices: a device is listed twice in {devices}")
    return Mesh(np.array(devices, dtype=object), (AXIS,))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["chunks", "index", "row", "position"],
                   meta_fields=["axis", "n_chunks", "mesh"])
@dataclasses.dataclass(frozen=True)
class ShardedChunks:
    """A :class:`~bayesmf.engines.chunks.Chunks` layout whose chunk axis is split over ``mesh``.

    ``chunks``: the layout with ``n_pad`` chunks (a multiple of the mesh size ``P``; the chunks
    after ``n_chunks`` are empty), its per-chunk arrays sharded along ``axis`` (``slot`` is not
    used). A device's chunks have ``L`` local-row slots (chunks x ``C``), more than its rows (a
    chunk has a slot per virtual row), so each device's rows are listed compactly, ``R`` per
    device (the largest count; the rest padding): ``index`` (P R,) sharded, each row's local slot
    (``L`` on padding); ``row`` (P R,) sharded, its global row (``n_rows`` on padding);
    ``position`` (n_rows,) replicated, each row's place in the all-gathered ``(P R,)`` order
    (``P R`` for a row without ratings). Inside :func:`call` the sharded arrays are this
    device's part only.
    """

    chunks: Chunks
    index: jax.Array
    row: jax.Array
    position: jax.Array
    axis: str
    n_chunks: int
    mesh: Mesh

    @property
    def n_rows(self) -> int:
        return self.position.shape[0]


def is_sharded(chunks) -> bool:
    return isinstance(chunks, ShardedChunks)


def _put(array, sharding: NamedSharding):
    """A global array of ``sharding`` from a host array that every process holds whole."""
    array = np.asarray(array)
    array = array.astype(jax.dtypes.canonicalize_dtype(array.dtype), copy=False)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_chunks(chunks: Chunks, mesh: Mesh, n_cols: int) -> ShardedChunks:
    """Pad ``chunks`` to a multiple of the mesh size with empty chunks and split the chunk axis over
    ``mesh`` (module docstring). ``n_cols``: the other side's size (the padding column index)."""
    axis, n_dev = mesh.axis_names[0], mesh.size
    n_chunks, capacity, width = chunks.cols.shape
    n_pad = -(-n_chunks // n_dev) * n_dev
    extra = n_pad - n_chunks

    def pad(a, value):
        a = np.asarray(a)
        return np.concatenate([a, np.full((extra, *a.shape[1:]), value, a.dtype)])

    rows = pad(chunks.rows, chunks.slot.shape[0])
    n_rows = chunks.slot.shape[0]
    # each device's rows, compactly (a loop over devices): local slot, global row, gathered place
    per_device = rows.reshape(n_dev, -1)
    real = [np.flatnonzero(r < n_rows) for r in per_device]
    # R rounded up to a multiple of ROW_BLOCK: XLA:CPU's vectorised loops over rows handle a
    # tail that is not a whole vector with other instructions (different rounding), so a row's
    # result would depend on where the device count puts it
    width_r = -(-max(max(len(r) for r in real), 1) // ROW_BLOCK) * ROW_BLOCK
    index = np.full((n_dev, width_r), per_device.shape[1], np.int32)
    row = np.full((n_dev, width_r), n_rows, np.int32)
    position = np.full(n_rows, n_dev * width_r, np.int32)
    for d, local in enumerate(real):
        index[d, :len(local)] = local
        row[d, :len(local)] = per_device[d, local]
        position[per_device[d, local]] = d * width_r + np.arange(len(local))
    split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    # padding as build_chunks pads: the other side's zero row, value 0, the last local row, no
    # row, rating nnz (the number of ratings: every slot that is not padding)
    nnz = int(np.count_nonzero(np.asarray(chunks.cols) < n_cols))
    parts = [_put(pad(chunks.cols, n_cols), split), _put(pad(chunks.vals, 0), split),
             _put(pad(chunks.owner, capacity - 1), split), _put(rows, split), _put(np.zeros(1, np.int32), whole),
             None if chunks.rating is None else _put(pad(chunks.rating, nnz), split)]
    return ShardedChunks(Chunks(*parts), _put(index.reshape(-1), split), _put(row.reshape(-1), split),
                         _put(position, whole), axis, n_chunks, mesh)


def shard_data(data, mesh: Mesh, sizes: dict):
    """A data NamedTuple with every :class:`Chunks` field named in ``sizes`` (field -> the other
    side's size) sharded by :func:`shard_chunks` and every other array replicated on ``mesh``."""
    whole = NamedSharding(mesh, P())
    fields = {}
    for name, value in data._asdict().items():
        if name in sizes:
            fields[name] = shard_chunks(value, mesh, sizes[name])
        else:
            fields[name] = jax.tree.map(lambda a: _put(a, whole), value)
    return type(data)(**fields)


def mesh_of(data) -> Mesh | None:
    """The mesh of the first :class:`ShardedChunks` in ``data``, None when there is none."""
    for leaf in jax.tree_util.tree_leaves(data, is_leaf=is_sharded):
        if is_sharded(leaf):
            return leaf.mesh
    return None


def _specs(data):
    def spec(x):
        if not is_sharded(x):
            return P()
        split = P(x.axis)
        c = x.chunks
        return ShardedChunks(Chunks(split, split, split, split, P(), None if c.rating is None else split),
                             split, split, P(), x.axis, x.n_chunks, x.mesh)

    return jax.tree.map(spec, data, is_leaf=is_sharded)


@functools.lru_cache(maxsize=64)
def _program(fn, statics, mesh, n_args, specs):
    def body(*args):
        return fn(*args, **dict(statics))

    in_specs = (P(),) * n_args + (specs,)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False))


def _to_mesh(tree, mesh: Mesh):
    """Replicate every array of ``tree`` on ``mesh`` (Python scalars stay as they are)."""
    whole = NamedSharding(mesh, P())

    def put(a):
        if isinstance(a, (bool, int, float)) or a is None:
            return a
        if isinstance(a, jax.Array) and a.sharding == whole:
            return a
        if jax.process_count() == 1:
            return jax.device_put(a, whole)
        return _put(a.addressable_data(0) if isinstance(a, jax.Array) else a, whole)

    return jax.tree.map(put, tree)


def call(fn, *args, data, **statics):
    """``fn(*args, data, **statics)`` as one SPMD program over ``data``'s mesh: ``args`` (state,
    keys, traced settings) replicated, ``data``'s :class:`ShardedChunks` split along the mesh
    axis, the result replicated and returned as arrays on this process's first device of the
    mesh (so the driver handles them as it handles unsharded ones). Compiled once per function,
    static settings, mesh and data structure."""
    mesh = mesh_of(data)
    program = _program(fn, tuple(sorted(statics.items())), mesh, len(args), _specs(data))
    out = program(*_to_mesh(args, mesh), data)
    return jax.tree.map(lambda a: a.addressable_data(0), out)


# ---- inside the SPMD program: the per-device side of a half step ----------------------------------

def row_stats(chunks, other, other_bias=None, shift=0.0, sums: bool = False, weights=None):
    """:func:`~bayesmf.engines.chunks.gram_rhs` for plain chunks (every row, in row order); for
    :class:`ShardedChunks`, this device's rows ``(R, ...)`` (:attr:`ShardedChunks.index` order)
    with ``yy`` (and the targets' sum) per local chunk instead of in total."""
    if not is_sharded(chunks):
        return gram_rhs(chunks, other, other_bias, shift, sums, weights)
    k = other.shape[1]
    out = gram_rhs_chunks(chunks.chunks, other, other_bias, shift, sums, weights)
    product = compact(chunks, out[0].reshape(-1, *out[0].shape[2:]))
    result = (product[:, :k, :k], product[:, k, :k], out[1])
    if sums:
        result += (compact(chunks, out[2].reshape(-1, k)), out[3])
    return result


def chunk_map(chunks, other, other_bias, shift, finish):
    """:func:`~bayesmf.engines.chunks.gram_rhs_chunks` with a per-chunk ``finish``, over this
    device's chunks when ``chunks`` is a :class:`ShardedChunks`, else over all of them: the
    stacked per-chunk results ``(local chunks, ...)``."""
    plain = chunks.chunks if is_sharded(chunks) else chunks
    return gram_rhs_chunks(plain, other, other_bias, shift, finish=finish)


def rows_in_order(chunks, per_chunk_rows):
    """Per-chunk, per-local-row results ``(local chunks, C, ...)`` of :func:`chunk_map` as one
    replicated array in row order ``(n_rows, ...)`` (zeros for rows without ratings)."""
    if not is_sharded(chunks):
        return layout.in_row_order(chunks, per_chunk_rows)
    return gather_rows(chunks, compact(chunks, per_chunk_rows.reshape(-1, *per_chunk_rows.shape[2:])))


def total(chunks, per_chunk_numbers):
    """The sum of per-chunk numbers ``(local chunks,)`` over the whole side: in chunk order over
    every device for :class:`ShardedChunks` (:func:`chunk_total`), a plain sum otherwise."""
    if not is_sharded(chunks):
        return jnp.sum(per_chunk_numbers)
    return chunk_total(chunks, per_chunk_numbers)


def compact(chunks: ShardedChunks, per_slot):
    """Per-local-slot values ``(L, ...)`` at this device's rows ``(R, ...)`` (zeros on padding)."""
    return jnp.take(per_slot, chunks.index, axis=0, mode="fill", fill_value=0)


def local(chunks, values):
    """Per-row ``values`` (n_rows, ...) for the rows the half step works on: all of them for plain
    chunks, this device's rows for :class:`ShardedChunks` (zeros on padding)."""
    if not is_sharded(chunks):
        return values
    ext = jnp.concatenate([values, jnp.zeros((1, *values.shape[1:]), values.dtype)])
    return ext[chunks.row]


def gather_rows(chunks, x):
    """The half step's rows as one replicated array in row order: ``x`` itself for plain chunks;
    for :class:`ShardedChunks` the all-gather of every device's rows ``(R, ...)``, put in row
    order (zeros for rows without ratings)."""
    if not is_sharded(chunks):
        return x
    full = jax.lax.all_gather(x, chunks.axis, tiled=True)
    return jnp.concatenate([full, jnp.zeros((1, *full.shape[1:]), full.dtype)])[chunks.position]


def empty_rows(chunks):
    """(n_rows,) bool: rows without ratings (in no chunk) of a :class:`ShardedChunks`."""
    return chunks.position == chunks.row.shape[0] * jax.lax.axis_size(chunks.axis)


def chunk_total(chunks, per_chunk):
    """The sum of this device's per-chunk numbers ``(local chunks,)`` over every device, added in
    chunk order (the same order for any device count)."""
    full = jax.lax.all_gather(per_chunk, chunks.axis, tiled=True)
    return jnp.sum(full[:chunks.n_chunks])


def per_chunk(chunks, per_row):
    """Per-row numbers ``(R,)`` of this device summed per local chunk (over the chunk's slots,
    zeros on the slots without a row: the same sums whatever ``R`` is)."""
    n_slots = chunks.chunks.rows.size
    slots = jnp.zeros((n_slots + 1,), per_row.dtype).at[chunks.index].set(per_row)[:n_slots]
    return jnp.sum(slots.reshape(chunks.chunks.rows.shape), axis=1)


def squared_error(chunks, x, gram, rhs, yy):
    """:func:`~bayesmf.engines.chunks.squared_error` of the rows ``x`` of :func:`row_stats`: the
    whole side's ``sum_r |y_r - F_r x_r|^2``, for sharded chunks summed per chunk (clipped at 0)."""
    if not is_sharded(chunks):
        return layout.squared_error(x, gram, rhs, yy)
    quad = -2 * jnp.sum(x * rhs, axis=1) + jnp.einsum("nk,nkl,nl->n", x, gram, x, precision=layout.EXACT)
    return jnp.maximum(chunk_total(chunks, yy + per_chunk(chunks, quad)), 0.0)


def residual_sum(chunks, x, feature_sum, target_sum):
    """:func:`~bayesmf.engines.chunks.residual_sum` over the whole side (per chunk when sharded)."""
    if not is_sharded(chunks):
        return layout.residual_sum(x, feature_sum, target_sum)
    return chunk_total(chunks, target_sum - per_chunk(chunks, jnp.sum(x * feature_sum, axis=1)))


def all_true(chunks, flag):
    """A per-device boolean AND-ed over the devices (itself for plain chunks)."""
    if not is_sharded(chunks):
        return flag
    return jnp.all(jax.lax.all_gather(flag, chunks.axis))
