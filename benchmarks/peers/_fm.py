r"""Factorization-machine designs across environments: bayesmf's relation blocks as arrays, and
those arrays as myFM's ``RelationBlock`` inputs.

Like ``_common``, this file runs in the peers' virtual environments, so it needs NumPy (and SciPy
for :func:`relation_blocks`) only, never bayesmf. The harness builds the train and test designs of
a feature set with bayesmf (:mod:`benchmarks.fm_features`) and writes them with
:func:`design_arrays`; a peer reads them back with :func:`read_design` and converts them.

A bayesmf design (``bayesmf.data.design.Design``) is a list of blocks ``b``, each a CSR matrix
``X_b`` (``n_rows_b x n_features``, global column indices) and a row index per rating; the
rating's feature vector is ``x_r = sum_b X_b[index_b[r]]`` (the blocks' column sets are disjoint).
myFM (``myfm.RelationBlock(original_to_block, data)``) wants each block's matrix with its *own*
columns only, and lays the columns out as ``[X | block 1 | block 2 | ...]``, with ``group_shapes``
the sizes of consecutive column runs that share a prior. :func:`myfm_layout` therefore orders the
columns block by block and, within a block, by group then column, and needs every group's columns
to form one run in that order (a group within one block always does); columns no block stores (always zero) go first,
into myFM's per-rating matrix ``X``. With ``order`` that layout's column order, the myFM design
``[X | data_1[index_1] | ...]`` equals ``design_matrix(design)[:, order]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCK_FIELDS = ("index", "indptr", "columns", "values")


def design_path(split, features: str) -> Path:
    """Where the harness writes feature set ``features``' designs for the split file ``split``."""
    split = Path(split)
    return split.with_name(f"{split.stem}.fm-{features}.npz")


def design_arrays(design, prefix: str) -> dict:
    """A bayesmf ``Design`` as flat arrays for ``np.savez`` (keys start with ``prefix``).

    Only attributes are read (``blocks``, ``groups``, ``group_names``, ``feature_names``), so no
    bayesmf import is needed here.
    """
    out = {f"{prefix}n_blocks": len(design.blocks), f"{prefix}n_features": len(design.feature_names),
           f"{prefix}groups": np.asarray(design.groups, np.int32),
           f"{prefix}group_names": np.asarray(design.group_names, dtype=str),
           f"{prefix}block_names": np.asarray([b.name for b in design.blocks], dtype=str),
           f"{prefix}block_owners": np.asarray([b.owner for b in design.blocks], dtype=str),
           f"{prefix}n_rows": np.asarray([b.n_rows for b in design.blocks], np.int64)}
    for k, block in enumerate(design.blocks):
        for field in BLOCK_FIELDS:
            out[f"{prefix}b{k}_{field}"] = np.asarray(getattr(block, field))
    return out


def read_design(arrays, prefix: str) -> dict:
    """The arrays of :func:`design_arrays` back as ``{"blocks": [dict per block], "groups", ...}``."""
    n_blocks = int(arrays[f"{prefix}n_blocks"])
    blocks = [{"name": str(arrays[f"{prefix}block_names"][k]), "owner": str(arrays[f"{prefix}block_owners"][k]),
               "n_rows": int(arrays[f"{prefix}n_rows"][k]),
               **{field: np.asarray(arrays[f"{prefix}b{k}_{field}"]) for field in BLOCK_FIELDS}}
              for k in range(n_blocks)]
    return {"blocks": blocks, "n_features": int(arrays[f"{prefix}n_features"]),
            "groups": np.asarray(arrays[f"{prefix}groups"]),
            "group_names": [str(g) for g in arrays[f"{prefix}group_names"]]}


def myfm_layout(design: dict) -> dict:
    """myFM's column layout of a design read by :func:`read_design` (module docstring).

    Returns ``order`` (myFM column ``j`` is the design's column ``order[j]``), ``n_x`` (columns in
    myFM's ``X``, those no block stores), ``block_of`` and ``local`` (per design column: its block,
    -1 for ``X``, and its position among that block's myFM columns), ``widths`` (columns per block),
    ``group_shapes`` and ``group_names`` (one per run). Raises ValueError when a column is in two
    blocks or a group's columns do not form one run (a group in two blocks with others between).
    """
    n, groups = design["n_features"], design["groups"]
    block_of = np.full(n, -1, np.int64)
    for k, b in enumerate(design["blocks"]):
        cols = np.unique(b["columns"])
        clash = cols[block_of[cols] >= 0]
        if clash.size:
            raise ValueError(f"column {int(clash[0])} is in blocks {int(block_of[clash[0]])} and {k}")
        block_of[cols] = k
    # block (X first), then group, then column
    order = np.lexsort((np.arange(n), groups, block_of))
    local = np.empty(n, np.int64)
    widths = np.bincount(block_of + 1, minlength=len(design["blocks"]) + 1)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    local[order] = np.arange(n) - starts[block_of[order] + 1]
    g = groups[order]
    run_starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    runs = np.bincount(g[run_starts])
    if np.any(runs > 1):
        dup = int(np.flatnonzero(runs > 1)[0])
        raise ValueError(f"feature group {design['group_names'][dup]!r} falls into several runs of columns "
                         "(it spans blocks that are not adjacent); myFM's group_shapes needs one run per group")
    shapes = np.diff(np.concatenate([run_starts, [n]]))
    return {"order": order, "n_x": int(widths[0]), "block_of": block_of, "local": local, "widths": widths[1:],
            "group_shapes": [int(s) for s in shapes],
            "group_names": [design["group_names"][int(x)] for x in g[run_starts]]}


def relation_blocks(design: dict, layout: dict):
    """``(X, [(original_to_block, data), ...])``: myFM's per-rating matrix (zeros, ``n_x``
    columns) and one (index, SciPy CSR) pair per block in ``layout``'s columns; pass each pair to
    ``myfm.RelationBlock``. ``layout`` comes from :func:`myfm_layout` of the *training* design, so
    train and test share columns."""
    import scipy.sparse as sp

    nnz = design["blocks"][0]["index"].shape[0]
    out = []
    for k, b in enumerate(design["blocks"]):
        cols = b["columns"].astype(np.int64)
        wrong = cols[layout["block_of"][cols] != k]
        if wrong.size:
            raise ValueError(f"block {b['name']!r}: column {int(wrong[0])} belongs to block "
                             f"{int(layout['block_of'][wrong[0]])} in the layout")
        data = sp.csr_matrix((b["values"].astype(np.float64), layout["local"][cols], b["indptr"].astype(np.int64)),
                             shape=(b["n_rows"], int(layout["widths"][k])))
        data.sort_indices()
        out.append((b["index"].astype(np.int64), data))
    return sp.csr_matrix((nnz, layout["n_x"])), out


def dense_myfm_design(X, blocks) -> np.ndarray:
    """``[X | data_1[index_1] | ...]`` as a dense array: what myFM multiplies (for tests)."""
    parts = [X.toarray()] + [data.toarray()[index] for index, data in blocks]
    return np.hstack(parts)


def categorical_metrics(probs, data, n_bins: int = 10) -> dict:
    r"""Scores of class probabilities ``probs`` (N, K) over the rating levels ``rating_min,
    rating_min + 1, ..., rating_max`` against the test ratings (bayesmf's definitions,
    ``bayesmf.metrics.categorical``): categorical NLL ``-mean log p_{n k_n}`` (``p`` floored at
    1e-12); ranked probability score ``mean_n sum_{k < K-1} (F_nk - 1[k_n <= k])^2 / (K - 1)``;
    top-label expected calibration error over ``n_bins`` equal-width confidence bins."""
    p = np.asarray(probs, np.float64)
    k = np.rint(data["test_values"] - data["rating_min"]).astype(np.int64)
    K = p.shape[1]
    if p.shape[0] != k.size or k.min() < 0 or k.max() >= K:
        raise ValueError(f"{p.shape} probabilities for {k.size} test ratings with categories in "
                         f"[{k.min()}, {k.max()}]")
    nll = -np.log(np.maximum(p[np.arange(k.size), k], 1e-12))
    observed = (k[:, None] <= np.arange(K - 1)[None, :]).astype(np.float64)
    rps = np.sum((np.cumsum(p, axis=1)[:, :-1] - observed) ** 2, axis=1) / (K - 1)
    conf, hit = p.max(axis=1), (np.argmax(p, axis=1) == k).astype(np.float64)
    b = np.clip(np.searchsorted(np.linspace(0, 1, n_bins + 1), conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, hit, n_bins) - np.bincount(b, conf, n_bins))
    return {"nll": float(nll.mean()), "rps": float(rps.mean()), "ece": float(gap[count > 0].sum() / k.size)}
