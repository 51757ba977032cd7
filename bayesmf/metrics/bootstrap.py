r"""Bootstrap ensembles: predictive uncertainty for point-estimate models (ALS, NMF, SGD, ...).

``BootstrapEnsemble(ALS(rank=10), n_models=10).fit(train)`` fits ``B`` copies of the estimator,
copy ``b`` on a bootstrap resample of the training ratings, and exposes the interface of a
Bayesian model (``predict``, ``predict_dist``, ``score_users(..., how=...)``), so point models can
sit in the same uncertainty table as BPMF.

Resampling. Copy ``b`` draws ``nnz`` rating rows with replacement and is fitted on the *distinct*
rows drawn (about 63.2% of them): a :class:`~bayesmf.data.Ratings` cannot repeat a (user, item)
pair and the estimators take no weights, so this is bagging without duplicate weights. Users or
items absent from a resample keep the model's own treatment of unseen rows (the index space is
the full training one).

Predictive distribution. With ``f_b(x)`` copy ``b``'s unclipped prediction, the predictive of an
observed rating is the Gaussian mixture ``(1/B) sum_b N(f_b(x), sigma^2)``, where ``sigma^2`` is
the out-of-bag mean squared error: the average, over copies, of the squared residuals on the
ratings that copy did not see. OOB residuals also contain the copies' estimation error, so
``sigma`` errs on the wide (conservative) side. ``predict`` is the ensemble mean.
"""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.metrics.ranking import HOW
from bayesmf.predictive import PredictiveDistribution, check_probability
from bayesmf.validate import as_indices, check_positive_int

__all__ = ["BootstrapEnsemble"]


def _mix(seed: int, users: np.ndarray) -> np.ndarray:
    """A splitmix64 hash of ``(seed, user)``: per-user pseudo-random integers that do not depend
    on which batch the user is scored in."""
    with np.errstate(over="ignore"):
        z = users.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class BootstrapEnsemble:
    """``n_models`` copies of ``estimator`` (an unfitted estimator, used as a template: its class
    and ``get_params()``) fitted on bootstrap resamples. A ``seed`` hyperparameter of the
    estimator, if it has one, is set differently for each copy.

    Fitted attributes: ``members_`` (list of fitted models), ``noise_std_`` (OOB RMSE, see the
    module docstring), ``n_users_``, ``n_items_``, ``rating_scale_``.
    """

    def __init__(self, estimator, n_models: int = 10, seed: int = 0):
        if not hasattr(estimator, "get_params") or not hasattr(estimator, "fit"):
            raise ConfigError(f"estimator must be a bayesmf estimator (fit/get_params), got {type(estimator).__name__}")
        self.estimator = estimator
        self.n_models = check_positive_int("n_models", n_models)
        self.seed = int(seed)

    def _copy(self, seed: int):
        params = self.estimator.get_params()
        if "seed" in params:
            params["seed"] = seed
        return type(self.estimator)(**params)

    def fit(self, train: Ratings) -> BootstrapEnsemble:
        """Fit the copies; a Python loop over the ``n_models`` copies (each fit is vectorized)."""
        if not isinstance(train, Ratings):
            raise DataError(f"fit expects a bayesmf Ratings, got {type(train).__name__}")
        rng = np.random.default_rng(self.seed)
        member_seeds = rng.integers(0, 2**31 - 1, size=self.n_models)
        self.members_, sq_sum, n_oob = [], 0.0, 0
        for b in range(self.n_models):
            drawn = np.zeros(train.nnz, dtype=bool)
            drawn[rng.integers(0, train.nnz, size=train.nnz)] = True
            member = self._copy(int(member_seeds[b])).fit(train.subset(drawn))
            oob = train.subset(~drawn)
            if oob.nnz:
                resid = member.predict(oob.users, oob.items, clip=False) - oob.values
                sq_sum, n_oob = sq_sum + float(np.sum(resid.astype(np.float64) ** 2)), n_oob + oob.nnz
            self.members_.append(member)
        if n_oob == 0:
            raise DataError("no out-of-bag ratings to estimate the noise from (training set too small)")
        self.noise_std_ = float(np.sqrt(sq_sum / n_oob))
        first = self.members_[0]
        self.n_users_, self.n_items_, self.rating_scale_ = first.n_users_, first.n_items_, first.rating_scale_
        self._seen = _Seen(train)
        return self

    def _require_fitted(self):
        if not hasattr(self, "members_"):
            raise ConfigError("this BootstrapEnsemble is not fitted yet; call fit(train) first")

    def member_predictions(self, users, items, unknown: str = "error") -> np.ndarray:
        """Unclipped predictions of every copy, shape (n_models, n)."""
        self._require_fitted()
        return np.stack([m.predict(users, items, clip=False, unknown=unknown) for m in self.members_])

    def predict(self, users, items, clip: bool = True, unknown: str = "error") -> np.ndarray:
        """Ensemble-mean prediction (n,), clipped to the rating scale by default."""
        pred = self.member_predictions(users, items, unknown).mean(axis=0)
        return np.clip(pred, *self.rating_scale_) if clip and self.rating_scale_ is not None else pred

    def predict_dist(self, users, items, unknown: str = "error") -> PredictiveDistribution:
        """The Gaussian-mixture predictive distribution of the module docstring."""
        return PredictiveDistribution.from_samples(self.member_predictions(users, items, unknown), self.noise_std_)

    def score_users(self, user_indices, items=None, how: str = "mean", q: float = 0.9, seed: int = 0) -> np.ndarray:
        """Scores (len(user_indices), n_items or len(items)) from the copies' unclipped scores:
        ``"mean"`` their mean, ``"quantile"`` their empirical ``q``-quantile per (user, item)
        (memory ``n_models`` times a batch), ``"thompson"`` the scores of one copy per user,
        chosen by a hash of ``(seed, user)`` so the choice does not depend on batching."""
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        if items is not None:
            items = as_indices(items, "items", self.n_items_)
        score = lambda m, u: m.score_users(u) if items is None else m.score_users(u, items)
        if how == "mean":
            total = score(self.members_[0], users).astype(np.float64)
            for m in self.members_[1:]:
                total += score(m, users)
            return total / self.n_models
        if how == "quantile":
            q = float(check_probability("q", q))
            return np.quantile(np.stack([score(m, users) for m in self.members_]), q, axis=0)
        if how == "thompson":
            pick = (_mix(seed, users) % np.uint64(self.n_models)).astype(np.int64)
            out = np.empty((users.size, self.n_items_ if items is None else len(items)))
            for b in np.unique(pick):  # a loop over copies, each scoring its users at once
                out[pick == b] = score(self.members_[b], users[pick == b])
            return out
        raise ConfigError(f"how must be one of {HOW}, got {how!r}")

    def seen_items(self, user_index: int) -> np.ndarray:
        """Items the user rated in the full training set (not just one copy's resample)."""
        self._require_fitted()
        return self._seen(user_index)


class _Seen:
    """Training items per user, kept CSR-style (the copies only saw resamples)."""

    def __init__(self, train: Ratings):
        g = train.by_user
        self.indptr, self.items = g.indptr, train.items[g.order]

    def __call__(self, user_index: int) -> np.ndarray:
        return self.items[self.indptr[user_index]:self.indptr[user_index + 1]]
