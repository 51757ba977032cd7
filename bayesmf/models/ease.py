r"""EASE, the closed-form item-item model of Steck (2019).

With ``X`` the binary user-item interaction matrix of the training set (``x_ui = 1`` for every
training pair, whatever its value), EASE solves

.. math::

    \min_B \|X - X B\|_F^2 + \lambda \|B\|_F^2 \quad \text{subject to } \operatorname{diag}(B) = 0,

whose solution is, with :math:`P = (X^\top X + \lambda I)^{-1}`,

.. math::

    B = I - P \operatorname{diag}(1 / \operatorname{diag}(P)), \qquad
    B_{ij} = -P_{ij} / P_{jj} \ (i \ne j), \quad B_{jj} = 0.

A user's scores are :math:`s_u = x_u B` (shape ``(n_items,)``), so a new user is folded in
exactly from their interactions: nothing is fitted per user.

References
----------
H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy import sparse

from bayesmf.engines.ease import ease_weights
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_dtype, check_positive_int
from bayesmf.models.fitting import ClassicalModel
from bayesmf.models.recommend import SIMILARITY_METRICS, seen_pairs
from bayesmf.validate import as_indices

_PAIRS_PER_BATCH = 4096  # predict(): pairs scored per block of (pairs x n_items) weights


class EASE(ClassicalModel):
    r"""EASE (Steck 2019): item-item weights ``B`` in closed form, scores ``s_u = x_u B``.

    Parameters
    ----------
    regularization : float
        The L2 penalty :math:`\lambda > 0` on ``B``; the paper tunes it per data set (do the same
        on a validation split carved from training).
    max_items : int
        Largest catalogue accepted: ``B`` is a dense ``m x m`` matrix (``4 m^2`` bytes in float32)
        and its inverse costs ``O(m^3)``; a larger catalogue raises :class:`ConfigError` naming
        its size instead of exhausting memory.
    dtype : str
        ``"float32"`` (default) or ``"float64"`` (enables JAX's x64 mode).
    progress : bool
        Unused (one closed-form solve); kept for the runner's common parameters.

    Notes
    -----
    ``X`` is binary: every training pair counts as one interaction and its value is not used (fit
    on :func:`bayesmf.data.to_implicit` output, or on ratings when every rating is an interaction).
    Scores are not ratings, so ``rating_scale_`` is None and ``predict`` never clips. Fitted state:
    ``weights_`` (m, m) = ``B``; the users' rows of ``X`` are the seen-item CSR every model keeps,
    so :meth:`fold_in` of new users is exact (their rated items become their row of ``X``) and
    ``recommend`` / ``score_users`` work after :func:`bayesmf.load`. ``similar_items`` compares
    items by their rows of ``B`` (``"dot"``: ``B_i . B_j``; ``"cosine"``: normalised rows); EASE
    has no user representation, so ``similar_users`` and ``export_factors`` raise.

    References
    ----------
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
    """

    _state_arrays = ("weights_",)
    # no biases or factors: the FactorModel terms are absent (also after load)
    user_bias_ = item_bias_ = user_factors_ = item_factors_ = None

    def __init__(self, regularization: float = 500.0, max_items: int = 20_000, dtype: str = "float32",
                 progress: bool = False):
        self.regularization = regularization
        self.max_items = max_items
        self.dtype = dtype
        self.progress = progress

    def _check_params(self) -> None:
        reg = self.regularization
        if isinstance(reg, bool) or not isinstance(reg, (int, float, np.integer, np.floating)) \
                or not np.isfinite(reg) or reg <= 0:
            raise ConfigError(f"regularization must be a finite number > 0, got {reg!r}")
        check_positive_int("max_items", self.max_items)
        check_dtype(self.dtype)

    def _fit(self, train) -> None:
        dtype = check_dtype(self.dtype)
        m = train.n_items
        if m > self.max_items:
            gib = 4 * m * m / 2**30
            raise ConfigError(
                f"EASE needs a dense {m} x {m} item-item matrix ({gib:.1f} GiB in float32) and an O(m^3) "
                f"inverse; the catalogue of {m} items exceeds max_items={self.max_items}. Filter the "
                "catalogue (e.g. bayesmf.kcore) or raise max_items"
            )
        x = self._interactions(np.arange(self.n_users_))
        gram = (x.T @ x).toarray().astype(dtype)
        self.weights_ = np.asarray(ease_weights(jnp.asarray(gram), dtype(self.regularization)))
        self.global_mean_ = 0.0
        self.user_bias_ = self.item_bias_ = self.user_factors_ = self.item_factors_ = None
        self.rating_scale_ = None

    # -- scoring ------------------------------------------------------------------------------------
    def _interactions(self, users: np.ndarray):
        """Rows ``users`` of the binary ``X`` as a SciPy CSR matrix (len(users), n_items)."""
        rows, items = seen_pairs(self.seen_indptr_, self.seen_items_, np.asarray(users, np.int64))
        data = np.ones(rows.size, np.float32)
        return sparse.csr_matrix((data, (rows, items)), shape=(users.size, self.n_items_))

    def score_users(self, user_indices, items=None) -> np.ndarray:
        """Scores ``x_u B[:, items]`` of known users (training or folded in): shape
        (len(user_indices), n_items or len(items)), float32."""
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        weights = self.weights_ if items is None else self.weights_[:, as_indices(items, "items", self.n_items_)]
        return np.asarray(self._interactions(users) @ weights, np.float32)

    def _predict_indices(self, users, items, bad_u, bad_i) -> np.ndarray:
        """``x_u . B[:, i]`` for each pair, in blocks of pairs; an unknown user or item scores 0
        (an empty history predicts nothing)."""
        out = np.zeros(users.size, np.float32)
        for start in range(0, users.size, _PAIRS_PER_BATCH):  # memory-bounded blocks of pairs
            sl = slice(start, start + _PAIRS_PER_BATCH)
            x = self._interactions(users[sl])
            out[sl] = np.asarray(x.multiply(self.weights_[:, items[sl]].T).sum(axis=1)).ravel()
        return np.where(bad_u | bad_i, 0.0, out).astype(np.float32)

    # -- recommendation hooks -------------------------------------------------------------------------
    def _fold_in_solve(self, new) -> dict:
        """Nothing to solve: a new user's scores ``x_u B`` follow from the items they interacted
        with, which :meth:`fold_in` records as seen (their row of ``X``)."""
        return {}

    def _embeddings(self, side: str, metric: str) -> np.ndarray:
        """Items are represented by their rows of ``B`` (``B_i . B_j``, or cosine of the rows)."""
        self._require_fitted()
        if metric not in SIMILARITY_METRICS:
            raise ConfigError(f"metric must be one of {SIMILARITY_METRICS}, got {metric!r}")
        if side != "item":
            raise ConfigError("EASE has no user representation to compare (only item-item weights)")
        rows = np.asarray(self.weights_, np.float32)
        if metric == "cosine":
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.where(norms > 0, norms, 1.0)
        return rows

    def export_factors(self, path, format: str = "parquet"):  # noqa: A002
        """Not available: EASE has no factors (its state is the ``m x m`` matrix ``weights_``)."""
        raise ConfigError("EASE has no user or item factors to export; save() keeps its item-item weights")
