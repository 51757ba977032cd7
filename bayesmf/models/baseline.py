"""Non-personalised baselines: ``Baseline`` (mu + b_u + c_i, Surprise's BaselineOnly) and
``Popularity`` (rank items by how many users rated them)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bayesmf.engines import baseline as engine
from bayesmf.engines.sparse import rating_arrays
from bayesmf.models.base import check_dtype, check_positive_int
from bayesmf.models.fitting import ClassicalModel, check_common, run, to_numpy


class Baseline(ClassicalModel):
    """``r_hat = mu + b_u + c_i`` with biases by regularised alternating least squares.

    Minimises ``sum (r - mu - b_u - c_i)^2 + reg_user sum b_u^2 + reg_item sum c_i^2`` with
    ``n_iter`` sweeps (items, then users); defaults are Surprise's ``bsl_options`` for ALS
    (``reg_i=10, reg_u=15, n_epochs=10``). See :mod:`bayesmf.engines.baseline`.
    """

    def __init__(self, n_iter: int = 10, reg_user: float = 15.0, reg_item: float = 10.0,
                 progress: bool = False, dtype: str = "float32"):
        self.n_iter = n_iter
        self.reg_user = reg_user
        self.reg_item = reg_item
        self.progress = progress
        self.dtype = dtype

    def _check_params(self) -> None:
        check_positive_int("n_iter", self.n_iter)
        check_common(self, reg_user=self.reg_user, reg_item=self.reg_item)
        check_dtype(self.dtype)

    def _fit(self, train) -> None:
        dtype = check_dtype(self.dtype)
        ratings = rating_arrays(train, dtype)
        data = engine.BiasData(ratings, jnp.asarray(train.user_counts, dtype), jnp.asarray(train.item_counts, dtype),
                               jnp.mean(ratings.values))
        kernel = engine.build_kernel(data, float(self.reg_user), float(self.reg_item))
        state = run(self, kernel, kernel.init(train.n_users, train.n_items, dtype), self.n_iter)
        self.global_mean_ = float(data.mu)
        self.user_bias_, self.item_bias_ = to_numpy(state.user_bias), to_numpy(state.item_bias)
        self.user_factors_ = self.item_factors_ = None


class Popularity(ClassicalModel):
    """Scores every item by the fraction of training users who rated it (same for every user).

    For ranking: ``predict`` and ``score_users`` return that fraction in [0, 1], never clipped
    to the rating scale (``rating_scale_`` is None).
    """

    def __init__(self):
        pass

    def _fit(self, train) -> None:
        self.rating_scale_ = None
        self.global_mean_ = 0.0
        self.user_bias_ = None
        self.item_bias_ = (train.item_counts / train.n_users).astype(np.float32)
        self.user_factors_ = self.item_factors_ = None
