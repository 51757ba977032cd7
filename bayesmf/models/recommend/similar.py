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
        """The ``k`` items most similar to each of ``items`` (raw IDs; default: the catalogue).

        DataFrame with columns ``item``, ``similar_item`` (raw IDs), ``score``, ``rank`` (1..k).
        See :meth:`similar_items_indices` for the similarity.
        """
        return self._similar_frame("item", items, k, metric, batch_size)

    def similar_users(self, users=None, k: int = 10, *, metric: str = "cosine", batch_size: int | None = None):
        """The ``k`` users most similar to each of ``users`` (raw IDs; default: all users); columns
        ``user``, ``similar_user``, ``score``, ``rank``."""
        return self._similar_frame("user", users, k, metric, batch_size)

    def similar_items_indices(self, item_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        """``(items, scores)`` (n, k): nearest items by factor similarity, the query itself excluded.

        ``metric="cosine"``: ``q_i . q_j / (|q_i| |q_j|)`` (0 when a factor vector is zero);
        ``"dot"``: ``q_i . q_j``. Models with posterior samples ``item_samples_`` (S, n, r)
        average the similarity over the S samples, computed as one matmul of the samples
        concatenated along the factor axis and scaled by ``1/sqrt(S)`` (leading axes of the
        samples, e.g. (chains, draws, n, r), are flattened into S).
        """
        idx = as_indices(item_indices, "item_indices", self.n_items_)
        return self._similar(self._embeddings("item", metric), idx, k, batch_size)

    def similar_users_indices(self, user_indices, k: int = 10, *, metric: str = "cosine", batch_size=None):
        """:meth:`similar_items_indices` for users (``user_factors_`` / ``user_samples_``)."""
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
