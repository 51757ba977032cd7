r"""Similar items and users by factor similarity, for every fitted factor model.

``metric="cosine"`` compares ``q_i . q_j / (|q_i| |q_j|)`` (0 when a vector is zero), ``"dot"``
compares ``q_i . q_j``. For a Bayesian model with posterior samples the similarity is averaged
over the ``S`` samples: the samples are concatenated along the factor axis and scaled by
``1/sqrt(S)``, so that one matmul gives ``(1/S) sum_s x_i^(s) . x_j^(s)``. The query itself is
never among its neighbours; the top-k runs in batches as in :mod:`bayesmf.models.recommend._batch`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bayesmf.errors import ConfigError
from bayesmf.models.recommend._batch import (
    batch_height,
    check_k,
    exact_matmul,
    lookup_ids,
    pad_to,
    store_rows,
    top_rows,
)
from bayesmf.validate import as_indices

__all__ = ["SIMILARITY_METRICS", "SimilarMixin"]

SIMILARITY_METRICS = ("cosine", "dot")


class SimilarMixin:
    """:meth:`similar_items`, :meth:`similar_users` and their index-space versions."""

    def similar_items(self, items=None, k: int = 10, *, metric: str = "cosine", batch_size: int | None = None):
        """The ``k`` items most similar to each of ``items``, as a DataFrame in raw IDs.

        Parameters
        ----------
        items : array-like of raw item IDs, optional
            Query items (default: the whole catalogue).
        k : int
            Neighbours per query, ``1 <= k <= n_items - 1``; the query itself is never one.
        metric : {"cosine", "dot"}
            Similarity of the factor vectors (posterior-averaged for Bayesian models; see the
            module docstring).
        batch_size : int, optional
            Most queries compared at once.

        Returns
        -------
        pandas.DataFrame
            Columns ``item``, ``similar_item`` (raw IDs), ``score`` (float32), ``rank`` (1..k).
        """
        return self._similar_frame("item", items, k, metric, batch_size)

    def similar_users(self, users=None, k: int = 10, *, metric: str = "cosine", batch_size: int | None = None):
        """:meth:`similar_items` for users: columns ``user``, ``similar_user``, ``score``, ``rank``.

        Parameters
        ----------
        users : array-like of raw user IDs, optional
            Query users (default: all of them).
        k, metric, batch_size
            As in :meth:`similar_items`.

        Returns
        -------
        pandas.DataFrame
        """
        return self._similar_frame("user", users, k, metric, batch_size)

    def similar_items_indices(self, item_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        r"""Nearest items by factor similarity, in index space.

        ``metric="cosine"``: :math:`q_i \cdot q_j / (\lVert q_i\rVert \lVert q_j\rVert)` (0 when a
        vector is zero); ``"dot"``: :math:`q_i \cdot q_j`. With posterior samples
        ``item_samples_`` (S, n, r), or more leading axes flattened into S, the similarity is the
        average over the samples.

        Parameters
        ----------
        item_indices : array-like of int
            Query items.
        k, metric, batch_size
            As in :meth:`similar_items`.

        Returns
        -------
        items : ndarray of int64, shape (n_queries, k)
            Neighbour indices, most similar first.
        scores : ndarray of float32, shape (n_queries, k)
            Their similarities.
        """
        idx = as_indices(item_indices, "item_indices", self.n_items_)
        return self._similar(self._embeddings("item", metric), idx, k, batch_size)

    def similar_users_indices(self, user_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        """:meth:`similar_items_indices` for users (``user_factors_`` / ``user_samples_``).

        Parameters
        ----------
        user_indices : array-like of int
            Query users.
        k, metric, batch_size
            As in :meth:`similar_items`.

        Returns
        -------
        users, scores : ndarray, shape (n_queries, k)
            As in :meth:`similar_items_indices`.
        """
        idx = as_indices(user_indices, "user_indices", self.n_users_)
        return self._similar(self._embeddings("user", metric), idx, k, batch_size)

    def _similar_frame(self, side, raw, k, metric, batch_size):
        import pandas as pd

        self._require_fitted()
        idmap = self.user_map_ if side == "user" else self.item_map_
        idx = np.arange(len(idmap)) if raw is None else lookup_ids(idmap, raw, side)
        found, scores = self._similar(self._embeddings(side, metric), idx, k, batch_size)
        rows, ranks = np.nonzero(found >= 0)
        return pd.DataFrame({
            side: idmap.ids(idx[rows]),
            f"similar_{side}": idmap.ids(found[rows, ranks]),
            "score": scores[rows, ranks],
            "rank": (ranks + 1).astype(np.int32),
        })

    def _embeddings(self, side: str, metric: str) -> np.ndarray:
        """Vectors ``x`` with ``x_i . x_j`` = the (posterior-averaged) similarity; (n, S*r)."""
        self._require_fitted()
        if metric not in SIMILARITY_METRICS:
            raise ConfigError(f"metric must be one of {SIMILARITY_METRICS}, got {metric!r}")
        samples = getattr(self, f"{side}_samples_", None)
        if samples is None:
            factors = getattr(self, f"{side}_factors_")
            if factors is None:
                raise ConfigError(f"{type(self).__name__} has no {side} factors to compare")
            samples = np.asarray(factors)[None]
        samples = np.asarray(samples, np.float32)
        samples = samples.reshape(-1, *samples.shape[-2:])  # (chains, draws, n, r) -> (S, n, r)
        if metric == "cosine":
            norms = np.linalg.norm(samples, axis=-1, keepdims=True)
            samples = samples / np.where(norms > 0, norms, 1.0)
        n_samples, n, r = samples.shape
        return samples.transpose(1, 0, 2).reshape(n, n_samples * r) / np.float32(np.sqrt(n_samples))

    def _similar(self, emb: np.ndarray, queries: np.ndarray, k: int, batch_size):
        n = emb.shape[0]
        k = check_k(k, n - 1, "number of other rows to compare with")
        out_idx = np.full((queries.size, k), -1, np.int64)
        out_val = np.full((queries.size, k), np.nan, np.float32)
        emb_dev = jnp.asarray(emb)
        ones = np.ones(n, np.float32)
        height = batch_height(queries.size, n, batch_size)
        for start in range(0, queries.size, height):
            rows = np.arange(start, min(start + height, queries.size))
            q = pad_to(queries[rows], height)
            allowed = np.ones((height, n), bool)
            allowed[np.arange(height), q] = False  # never "similar to itself"
            sims = exact_matmul(jnp.asarray(emb[q]), emb_dev.T)
            store_rows(rows, top_rows(sims, allowed, ones, k, q), None, out_idx, out_val)
        return out_idx, out_val
