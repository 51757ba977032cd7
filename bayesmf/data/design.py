r"""The design of a factorization machine as relation blocks (Rendle 2013).

A second-order factorization machine (Rendle 2010) predicts rating ``r`` from a sparse feature
vector ``x_r`` (length ``n_features``):

.. math::

    f(x_r) = w_0 + \sum_j w_j x_{rj} + \sum_{j < j'} \langle v_j, v_{j'} \rangle x_{rj} x_{rj'}
           = w_0 + \sum_j w_j x_{rj} + \tfrac12 \big(\lVert q_r \rVert^2 - \sum_j x_{rj}^2 \lVert v_j \rVert^2\big),
    \qquad q_r = \sum_j x_{rj} v_j .

Most of ``x_r`` belongs to the user or to the item of the rating (their one-hot index, side
features, the set of items the user rated), so a design is stored as **relation blocks**: block
``b`` holds a sparse matrix ``X_b`` (``n_rows_b x n_features``, CSR) and an index from ratings to
its rows, and ``x_r`` is the concatenation of ``X_b[index_b[r]]`` over blocks. A feature vector
that belongs to a user is stored and multiplied once per user, not once per rating: ``q_r =
sum_b (X_b V)[index_b[r]]``, O(nnz + block non-zeros) instead of the naive design matrix.

Rules (checked by :func:`check_design`): each column (feature) belongs to exactly one block (so a
sampler can update a block's parameters from per-block-row statistics), every column belongs to
exactly one **group** (the unit of the hyperpriors: each group has its own prior mean and
precision), indices and columns are in range, values finite. A block's ``owner`` says what its
rows are: ``"user"`` (row = user index), ``"item"`` (row = item index) or ``"context"`` (anything
else, e.g. a day bin of the rating's timestamp). A model with only user- and item-owned blocks
scores any (user, item) pair as ``m + b_u + c_i + p_u . q_i`` (ranking, fold-in, export); a
context block needs its row for every prediction.

References
----------
Rendle, S. (2010). Factorization machines. ICDM.
Rendle, S. (2013). Scaling factorization machines to relational data. VLDB.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayesmf.errors import DataError

__all__ = ["OWNERS", "Block", "Design", "check_design", "design_matrix", "fm_predict_numpy"]

OWNERS = ("user", "item", "context")


class Block(NamedTuple):
    """One relation block: ``X_b`` in CSR form and the block row of each rating.

    Attributes
    ----------
    name : str
        Unique within the design (``"user"``, ``"item_genres"``, ``"user_implicit"``, ...).
    owner : str
        What a row is: ``"user"``, ``"item"`` or ``"context"`` (see the module docstring).
    index : ndarray of int32, shape (nnz,)
        Block row of each rating, in ``[0, n_rows)``.
    indptr : ndarray of int64, shape (n_rows + 1,)
        CSR row pointer of ``X_b``; a row may be empty (a user without side data).
    columns : ndarray of int32, shape (block_nnz,)
        Global feature index of each stored entry, in ``[0, n_features)``; within a row, distinct.
    values : ndarray of float32, shape (block_nnz,)
        ``X_b`` entries (1.0 for one-hot, ``1/sqrt(|N(u)|)`` for SVD++-style implicit sets, ...).
    n_rows : int
        Number of rows of ``X_b``.
    """

    name: str
    owner: str
    index: np.ndarray
    indptr: np.ndarray
    columns: np.ndarray
    values: np.ndarray
    n_rows: int


class Design(NamedTuple):
    """A factorization machine's design: relation blocks and the feature groups.

    Attributes
    ----------
    blocks : tuple of Block
        The relation blocks; their column sets are disjoint and cover ``range(n_features)``.
    feature_names : tuple of str, length n_features
        A readable name per column (``"user=17"``, ``"genre=Comedy"``, ``"rated=242"``).
    groups : ndarray of int32, shape (n_features,)
        Group of each column, in ``[0, len(group_names))``; every group has a column.
    group_names : tuple of str
        Name of each group (``"user"``, ``"item"``, ``"age"``, ``"genre"``, ``"implicit"``, ...).
    """

    blocks: tuple
    feature_names: tuple
    groups: np.ndarray
    group_names: tuple

    @property
    def n_features(self) -> int:
        """Number of columns (features)."""
        return len(self.feature_names)

    @property
    def nnz(self) -> int:
        """Number of ratings the design describes."""
        return int(self.blocks[0].index.shape[0]) if self.blocks else 0


def check_design(design: Design) -> Design:
    """Check the rules of the module docstring; raise :class:`~bayesmf.errors.DataError` naming
    the block, the row or column and the value at fault. Returns ``design`` unchanged."""
    n_features = len(design.feature_names)
    groups = np.asarray(design.groups)
    if groups.shape != (n_features,):
        raise DataError(f"design.groups has shape {groups.shape}; expected ({n_features},), one group per feature")
    if n_features and (groups.min() < 0 or groups.max() >= len(design.group_names)):
        bad = int(np.flatnonzero((groups < 0) | (groups >= len(design.group_names)))[0])
        raise DataError(f"feature {design.feature_names[bad]!r} has group {int(groups[bad])}, outside "
                        f"[0, {len(design.group_names)})")
    empty = np.setdiff1d(np.arange(len(design.group_names)), groups)
    if empty.size:
        raise DataError(f"feature group {design.group_names[int(empty[0])]!r} has no columns")
    if not design.blocks:
        raise DataError("a design needs at least one block")
    names = [b.name for b in design.blocks]
    if len(set(names)) != len(names):
        raise DataError(f"block names must be unique; got {names}")
    nnz = int(design.blocks[0].index.shape[0])
    owner_of = np.full(n_features, -1, np.int64)
    for k, b in enumerate(design.blocks):
        if b.owner not in OWNERS:
            raise DataError(f"block {b.name!r}: owner {b.owner!r} is not one of {OWNERS}")
        if b.index.shape != (nnz,):
            raise DataError(f"block {b.name!r}: index has shape {b.index.shape}; expected ({nnz},)")
        if nnz and (b.index.min() < 0 or b.index.max() >= b.n_rows):
            bad = int(np.flatnonzero((b.index < 0) | (b.index >= b.n_rows))[0])
            raise DataError(f"block {b.name!r}: rating {bad} points to row {int(b.index[bad])}, outside "
                            f"[0, {b.n_rows})")
        if b.indptr.shape != (b.n_rows + 1,) or b.indptr[0] != 0 or np.any(np.diff(b.indptr) < 0) \
                or b.indptr[-1] != b.columns.shape[0] or b.values.shape != b.columns.shape:
            raise DataError(f"block {b.name!r}: indptr/columns/values are not a CSR matrix with {b.n_rows} rows")
        if b.columns.size and (b.columns.min() < 0 or b.columns.max() >= n_features):
            bad = int(np.flatnonzero((b.columns < 0) | (b.columns >= n_features))[0])
            raise DataError(f"block {b.name!r}: column {int(b.columns[bad])} outside [0, {n_features})")
        if not np.all(np.isfinite(b.values)):
            bad = int(np.flatnonzero(~np.isfinite(b.values))[0])
            row = int(np.searchsorted(b.indptr, bad, side="right") - 1)
            raise DataError(f"block {b.name!r}: row {row}, feature {design.feature_names[int(b.columns[bad])]!r} "
                            f"has the non-finite value {b.values[bad]!r}")
        cols = np.unique(b.columns)
        clash = cols[owner_of[cols] >= 0]
        if clash.size:
            other = design.blocks[int(owner_of[clash[0]])].name
            raise DataError(f"feature {design.feature_names[int(clash[0])]!r} is in blocks {other!r} and "
                            f"{b.name!r}; a feature belongs to one block")
        owner_of[cols] = k
        row_of = np.repeat(np.arange(b.n_rows), np.diff(b.indptr))
        keys = np.sort(row_of.astype(np.int64) * n_features + b.columns)  # sorting: np.unique hashes slowly
        if np.any(keys[1:] == keys[:-1]):
            raise DataError(f"block {b.name!r}: a row stores the same feature twice")
    return design


def design_matrix(design: Design) -> np.ndarray:
    """The naive dense design matrix ``X`` (nnz, n_features), float64: for tests and small data."""
    X = np.zeros((design.nnz, len(design.feature_names)))
    for b in design.blocks:
        dense = np.zeros((b.n_rows, len(design.feature_names)))
        rows = np.repeat(np.arange(b.n_rows), np.diff(b.indptr))
        dense[rows, b.columns] = b.values
        X += dense[b.index]
    return X


def fm_predict_numpy(design: Design, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    r"""The factorization machine's prediction per rating, by the naive formula on
    :func:`design_matrix` (float64): the reference every engine is tested against.

    ``w`` (n_features,), ``V`` (n_features, rank); returns (nnz,)."""
    X = design_matrix(design)
    V = np.asarray(V, np.float64)
    q = X @ V
    return w0 + X @ np.asarray(w, np.float64) + 0.5 * (np.sum(q * q, axis=1) - (X * X) @ np.sum(V * V, axis=1))
