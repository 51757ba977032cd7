r"""Fold-in: add users unseen in training from their ratings, without retraining.

The one place every model's fold-in goes through (:meth:`FoldInMixin.fold_in`): input checks,
extending the ID map, appending each per-user array, the seen-item CSR and the counts. A model
supplies only the per-user solve, :meth:`FoldInMixin._fold_in_solve`; the default is the exact
ridge solution for ``r_hat = mu + b_u + c_i + p_u . q_i`` given the item side,

.. math:: x_u = (Z_u^\top Z_u + \Lambda_u)^{-1} Z_u^\top y_u,

the same system ALS solves for a user (:func:`ridge_rows`); ALS (weighted-lambda, non-negative),
NMF (both through :func:`nonnegative_fold_in`), SVD++ and BPMF (conditional posterior per
item-factor sample) override it.

References
----------
Y. Koren, R. Bell and C. Volinsky, "Matrix factorization techniques for recommender systems",
IEEE Computer 42(8), 2009 (ridge fold-in of a new user given the item factors).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.idmap import IdMap
from bayesmf.data.ratings import Ratings
from bayesmf.engines.als import solve_nonnegative
from bayesmf.engines.chunks import build_gram_chunks, gram_rhs
from bayesmf.engines.linalg import solve_spd
from bayesmf.errors import ConfigError, DataError
from bayesmf.models.recommend._batch import lookup_ids

__all__ = ["FoldInMixin", "nonnegative_fold_in", "nonnegative_rows", "ridge_rows"]


@partial(jax.jit, static_argnames="minimum_norm")
def ridge_rows(chunks, features, penalty, minimum_norm: bool = False):
    r"""Per-row ridge solutions :math:`x_r = (Z_r^\top Z_r + \mathrm{diag}(\lambda_r))^{-1} Z_r^\top y_r`.

    Batched Cholesky, one compiled call (op-by-op dispatch would cost more than the maths for
    the few-ratings systems of a fold-in).

    Parameters
    ----------
    chunks : bayesmf.engines.chunks.Chunks
        The rows' ratings: targets ``y`` as values, columns indexing ``features``.
    features : jax.Array, shape (n_cols, d)
        The rows of ``Z``.
    penalty : jax.Array, shape (n_rows, d)
        Ridge penalties :math:`\lambda_r >= 0`.
    minimum_norm : bool
        Some penalty is 0 and a system may be singular: use the pseudo-inverse (the minimum-norm
        least-squares solution) instead of Cholesky.

    Returns
    -------
    jax.Array, shape (n_rows, d)
    """
    gram, rhs, _ = gram_rhs(chunks, features)
    precision = gram + penalty[:, :, None] * jnp.eye(features.shape[1], dtype=features.dtype)
    if minimum_norm:
        return jnp.einsum("nkl,nl->nk", jnp.linalg.pinv(precision), rhs)
    return solve_spd(precision, rhs)


@partial(jax.jit, static_argnames=("steps", "free_bias"))
def nonnegative_rows(chunks, features, penalty, steps: int, free_bias: bool):
    r"""Per-row non-negative ridge solutions by projected coordinate descent.

    Minimises :math:`\tfrac12 x^\top (Z_r^\top Z_r + \mathrm{diag}(\lambda_r)) x - x^\top Z_r^\top y_r`
    subject to the factor entries of ``x`` being >= 0 (the last entry free when ``free_bias``),
    by ``steps`` passes from zero (:func:`bayesmf.engines.als.solve_nonnegative`).

    Parameters
    ----------
    chunks, features, penalty
        As in :func:`ridge_rows`.
    steps : int
        Coordinate-descent passes.
    free_bias : bool
        The last column of ``features`` is the constant of a free-sign bias.

    Returns
    -------
    jax.Array, shape (n_rows, d)
    """
    gram, rhs, _ = gram_rhs(chunks, features)
    precision = gram + penalty[:, :, None] * jnp.eye(features.shape[1], dtype=features.dtype)
    x0 = jnp.zeros((penalty.shape[0], features.shape[1] - free_bias), features.dtype)
    return solve_nonnegative(precision, rhs, x0, steps, free_bias)


def nonnegative_fold_in(model, new, lam_factors, lam_bias, steps: int) -> dict:
    r"""Fold-in for :math:`\hat r_{ui} = \mu + b_u + c_i + p_u \cdot q_i` with :math:`p_u \ge 0`.

    Per new user, :math:`\arg\min \sum_{i \in N(u)} (r_{ui} - \mu - c_i - p \cdot q_i - b)^2 +
    \lambda_f \lVert p\rVert^2 + \lambda_b b^2` subject to :math:`p \ge 0` (:math:`b` free, present
    when the model has biases), by :func:`nonnegative_rows`. ALS (``nonnegative=True``) and NMF
    solve their fold-ins with it.

    Parameters
    ----------
    model : FactorModel
        The fitted model (its item factors, item biases and global mean).
    new : bayesmf.data.Ratings
        The new users' ratings, users ``0..new.n_users-1``, items in the model's index space.
    lam_factors, lam_bias : ndarray, shape (new.n_users,)
        The penalties :math:`\lambda_f`, :math:`\lambda_b` per user.
    steps : int
        Coordinate-descent passes.

    Returns
    -------
    dict
        ``{"user_factors_": (n, rank), "user_bias_": (n,) or None}``.

    References
    ----------
    D. D. Lee and H. S. Seung, "Algorithms for non-negative matrix factorization", NeurIPS 2001.
    """
    dtype = np.asarray(model.item_factors_).dtype
    biased = model.user_bias_ is not None
    targets = new.values.astype(dtype) - dtype.type(model.global_mean_)
    if biased:
        targets -= np.asarray(model.item_bias_, dtype)[new.items]
    features = np.asarray(model.item_factors_, dtype)
    if biased:
        features = np.concatenate([features, np.ones((features.shape[0], 1), dtype)], axis=1)
    rank = model.item_factors_.shape[1]
    penalty = np.repeat(np.asarray(lam_factors, dtype)[:, None], rank, 1)
    if biased:
        penalty = np.concatenate([penalty, np.asarray(lam_bias, dtype)[:, None]], axis=1)
    chunks = build_gram_chunks(new.users, new.items, targets, new.n_users, *features.shape, dtype=dtype)
    x = np.asarray(nonnegative_rows(chunks, features, penalty, steps, biased))
    return {"user_factors_": x[:, :rank], "user_bias_": x[:, rank] if biased else None}


class FoldInMixin:
    """:meth:`fold_in` and the ridge solve it uses by default."""

    _per_user_arrays = {"user_factors_": 0, "user_bias_": 0}
    """Fitted arrays with one entry per user, and the axis that indexes users; fold-in appends to
    each one that is not None. Bayesian models add e.g. ``"user_samples_": -2`` for samples laid
    out (chains, draws, n_users, rank)."""

    def fold_in(self, new_ratings, *, user: str = "user", item: str = "item", rating: str = "rating"):
        """Add users unseen in training from their ratings, without retraining.

        The new users' parameters come from :meth:`_fold_in_solve` given the item side (default:
        the exact ridge solution of the module docstring); their IDs extend ``user_map_``
        (existing indices never change) and their rated items count as seen, so
        :meth:`recommend` excludes them. ``item_counts_`` (training popularity) is unchanged.

        Parameters
        ----------
        new_ratings : pandas.DataFrame or bayesmf.data.Ratings
            Ratings in raw IDs; every user must be new and every item known.
        user, item, rating : str
            Column names of a DataFrame.

        Returns
        -------
        self
        """
        self._require_fitted()
        raw_users, raw_items, values = self._fold_in_input(new_ratings, user, item, rating)
        known = self.user_map_.lookup(raw_users, missing=-1) >= 0
        if known.any():
            raise DataError(
                f"user ID {raw_users[known][0].item()!r} is already in the model; fold_in adds new users only"
            )
        item_idx = lookup_ids(self.item_map_, raw_items, "item")
        n_old = self.n_users_
        user_map = self.user_map_.extend(raw_users)
        new = Ratings.from_arrays(
            user_map.lookup(raw_users) - n_old, item_idx, values,
            n_users=len(user_map) - n_old, n_items=self.n_items_, rating_scale=self.rating_scale_,
            user_map=IdMap.from_ordered(user_map.ids()[n_old:]), item_map=self.item_map_,
        )
        solved = self._fold_in_solve(new)
        for name, axis in self._per_user_arrays.items():
            current = getattr(self, name, None)
            if current is None:
                continue
            if name not in solved:
                raise ConfigError(f"{type(self).__name__}._fold_in_solve did not return {name}")
            extra = np.asarray(solved[name], dtype=np.asarray(current).dtype)
            if extra.shape[axis] != new.n_users:
                raise ConfigError(f"_fold_in_solve returned {extra.shape[axis]} rows of {name} for {new.n_users} users")
            setattr(self, name, np.concatenate([np.asarray(current), extra], axis=axis))
        by_user = new.by_user
        self.seen_items_ = np.concatenate([self.seen_items_, new.items[by_user.order].astype(np.int32)])
        self.seen_indptr_ = np.concatenate([self.seen_indptr_, self.seen_indptr_[-1] + by_user.indptr[1:]])
        self.user_counts_ = np.concatenate([self.user_counts_, by_user.counts])
        self.user_map_ = user_map
        self.n_users_ = len(user_map)
        return self

    @staticmethod
    def _fold_in_input(data, user, item, rating):
        if isinstance(data, Ratings):
            return data.user_map.ids(data.users), data.item_map.ids(data.items), data.values
        if not hasattr(data, "columns"):
            raise DataError(f"fold_in expects a pandas DataFrame or a bayesmf Ratings, got {type(data).__name__}")
        missing = [c for c in (user, item, rating) if c not in data.columns]
        if missing:
            raise DataError(f"column(s) {missing} not in the DataFrame; it has {list(data.columns)}")
        if len(data) == 0:
            raise DataError("fold_in got no ratings")
        values = data[rating].to_numpy()
        if values.dtype.kind not in "iuf":
            raise DataError(f"rating column {rating!r} must be numeric, got dtype {values.dtype}")
        return data[user].to_numpy(), data[item].to_numpy(), values

    def fold_in_penalty(self, counts: np.ndarray):
        r"""Ridge penalties of new users' factors and biases for the default fold-in solve.

        Default: ``self.regularization`` (0 when absent) on the factors and
        ``self.bias_regularization`` (when present and not None; else the same value) on the
        bias. Models with another regulariser (e.g. weighted-lambda :math:`\lambda n_u`) override it.

        Parameters
        ----------
        counts : ndarray, shape (n,)
            Each new user's number of ratings.

        Returns
        -------
        lam_factors, lam_bias : ndarray of float64, shape (n,)
        """
        reg = self._penalty_value("regularization", 0.0)
        bias_reg = self._penalty_value("bias_regularization", reg)
        return np.full(counts.shape, reg, np.float64), np.full(counts.shape, bias_reg, np.float64)

    def _penalty_value(self, name: str, default: float) -> float:
        value = getattr(self, name, None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or value < 0:
            raise ConfigError(
                f"{type(self).__name__}.{name} is {value!r}; override fold_in_penalty to map it to ridge penalties"
            )
        return float(value)

    def _fold_in_solve(self, new: Ratings) -> dict:
        """Per-user parameters of the users in ``new`` (indices ``0..new.n_users-1``; items in
        the model's item index space), as ``{attribute name: array}`` laid out like
        :attr:`_per_user_arrays`.

        Default, for ``r_hat = mu + b_u + c_i + p_u . q_i``: with ``x_u = [p_u; b_u]`` (the terms
        the model has) and ``z_i = [q_i; 1]``, minimise

            sum_{i in N(u)} (r_ui - mu - c_i - z_i . x_u)^2 + lambda_f |p_u|^2 + lambda_b b_u^2,

        i.e. ``x_u = (Z^T Z + Lambda_u)^-1 Z^T y_u``, the same ridge system ALS solves for a user
        given the item side. Gram matrices come from the chunked layout of
        :mod:`bayesmf.engines.chunks` (batched matmuls per chunk) and the systems are solved by
        batched Cholesky; with a zero penalty the minimum-norm least-squares solution
        (pseudo-inverse) is used instead. Bayesian models
        override this with the conditional posterior given each item-factor sample.
        """
        has_f, has_b = self.user_factors_ is not None, self.user_bias_ is not None
        if not (has_f or has_b):
            return {}
        if not self._scores_are_linear():
            # The ridge solution is the right answer only for the plain linear model.
            raise ConfigError(
                f"fold_in is not available for {type(self).__name__}: it does not score with "
                "mu + b_u + c_i + p_u . q_i alone, so it must implement _fold_in_solve"
            )
        dtype = np.asarray(self.item_factors_ if has_f else self.user_bias_).dtype
        targets = new.values.astype(dtype) - dtype.type(self.global_mean_)
        if self.item_bias_ is not None:
            targets -= np.asarray(self.item_bias_, dtype)[new.items]
        # Only the rated items' features travel to the device, padded to a power of two so that
        # a few compiled shapes serve every fold-in (padding rows are never referenced).
        rated, column = np.unique(new.items, return_inverse=True)
        rated = np.concatenate([rated, np.zeros((1 << int(np.ceil(np.log2(max(rated.size, 8))))) - rated.size, int)])
        parts = ([np.asarray(self.item_factors_, dtype)[rated]] if has_f else []) + (
            [np.ones((rated.size, 1), dtype)] if has_b else [])
        features = np.concatenate(parts, axis=1)
        chunks = build_gram_chunks(new.users, column, targets, new.n_users, *features.shape, dtype=dtype)
        lam_f, lam_b = self.fold_in_penalty(new.user_counts)
        rank = features.shape[1] - has_b
        penalty = np.concatenate([np.repeat(lam_f[:, None], rank, 1)] + ([lam_b[:, None]] if has_b else []), axis=1)
        x = np.asarray(ridge_rows(chunks, features, penalty.astype(dtype), minimum_norm=not (penalty > 0).all()))
        out = {}
        if has_f:
            out["user_factors_"] = x[:, :rank]
        if has_b:
            out["user_bias_"] = x[:, rank]
        return out
