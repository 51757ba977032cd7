"""The thin estimator layer every model shares: ``Model(rank=...).fit(train).predict(users, items)``.

Engines (``bayesmf.engines``) are pure functions over arrays; an estimator keeps the
hyperparameters, calls its engine on a :class:`~bayesmf.data.Ratings`, and stores the fitted
state as NumPy arrays (attributes ending in ``_``, as in scikit-learn) together with what is
needed to use it later without the training data: the ID maps, the rating scale and the
(user, item) pairs seen in training (so recommendations can exclude them).

:class:`FactorModel` covers every model whose prediction is

    r_hat(u, i) = mu + b_u + c_i + p_u . q_i

(any term may be absent). Bayesian models override :meth:`FactorModel.predict` to average over
posterior samples. Recommendation, similar items, fold-in and factor export come from
:class:`~bayesmf.models.recommend.RecommendMixin`; the on-disk format from
:mod:`bayesmf.models.persist`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from bayesmf import registry
from bayesmf.data.idmap import IdMap
from bayesmf.data.ratings import Ratings
from bayesmf.errors import ConfigError, DataError
from bayesmf.models import persist
from bayesmf.models.persist import FORMAT_VERSION  # noqa: F401 - re-exported
from bayesmf.models.recommend import RecommendMixin
from bayesmf.validate import as_indices, check_nonnegative, check_positive_int  # noqa: F401 - re-exported


class Estimator:
    """scikit-learn style parameter handling: ``__init__`` arguments are the hyperparameters."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registry.register(cls)

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Estimator:
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ConfigError(f"unknown parameter(s) {sorted(unknown)} for {type(self).__name__}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_dtype(dtype: str):
    """``"float32"`` (default everywhere) or ``"float64"`` (enables JAX's x64 mode, process-wide)."""
    if dtype == "float32":
        return np.float32
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
        return np.float64
    raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


class FactorModel(RecommendMixin, Estimator):
    """Base class of fitted factor models. Subclasses implement ``_fit(train)``, which sets
    ``global_mean_``, ``user_bias_``/``item_bias_`` (or None), ``user_factors_``/``item_factors_``
    (or None) and appends to ``history_``."""

    # arrays saved by save(); subclasses may extend
    _state_arrays = ("user_bias_", "item_bias_", "user_factors_", "item_factors_")

    def fit(self, train: Ratings) -> FactorModel:
        """Fit on ``train`` (a :class:`~bayesmf.data.Ratings`); returns ``self``."""
        return self._fit_with(train)

    def _fit_with(self, train: Ratings, **options) -> FactorModel:
        """What :meth:`fit` does: check ``train``, reset ``history_``, remember the training
        index space, then ``self._fit(train, **options)``; returns ``self``.

        A subclass whose ``fit`` takes more arguments than ``train`` (held-out users to select
        the epoch by, say) calls this with them as ``options``: they reach ``_fit`` (and, in
        :class:`~bayesmf.models.fitting.ClassicalModel`, ``_check_params``) as keyword
        arguments, so nothing of one call is left on the estimator. Without ``options`` the
        subclass's ``_fit(train)`` needs no other parameters.
        """
        if not isinstance(train, Ratings):
            raise DataError(f"fit expects a bayesmf Ratings, got {type(train).__name__}")
        if train.nnz == 0:
            raise DataError("the training set is empty")
        self.history_ = {}
        self._remember_training(train)
        self._fit(train, **options)
        return self

    def _fit(self, train: Ratings) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _remember_training(self, train: Ratings) -> None:
        self.n_users_, self.n_items_ = train.shape
        self.user_map_, self.item_map_ = train.user_map, train.item_map
        self.rating_scale_ = train.rating_scale
        g = train.by_user
        self.seen_indptr_ = g.indptr.copy()
        self.seen_items_ = train.items_by_user  # read-only, shared with the fit's user-side layout
        self.user_counts_ = train.user_counts.copy()
        self.item_counts_ = train.item_counts.copy()

    # -- prediction -------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_users_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit(train) first")

    def _check_indices(self, users, items, unknown: str):
        """``users``/``items`` as int64 index arrays (integer dtypes only, see
        :func:`bayesmf.validate.as_indices`) plus their out-of-range masks; with
        ``unknown="error"`` an index outside training raises."""
        users = as_indices(users, "users")
        items = as_indices(items, "items")
        if users.shape != items.shape:
            raise DataError(f"users and items have different lengths: {users.size} vs {items.size}")
        if unknown not in ("error", "fallback"):
            raise ConfigError(f"unknown must be 'error' or 'fallback', got {unknown!r}")
        bad_u = (users < 0) | (users >= self.n_users_)
        bad_i = (items < 0) | (items >= self.n_items_)
        if unknown == "error" and (bad_u.any() or bad_i.any()):
            if bad_u.any():
                which, idx, n = "user", users[bad_u], self.n_users_
            else:
                which, idx, n = "item", items[bad_i], self.n_items_
            raise DataError(f"{which} index {int(idx[0])} was not in training (0..{n - 1}); pass unknown='fallback'")
        return users, items, bad_u, bad_i

    def predict(self, users, items, clip: bool = True, unknown: str = "error") -> np.ndarray:
        """Predicted ratings for index pairs ``(users[n], items[n])``, shape (n,).

        ``clip=True`` clips to the training rating scale. Indices outside the training ranges
        raise, or with ``unknown="fallback"`` drop the unknown side's terms (a new user gets
        ``mu + c_i``, the bias-only prediction) — never a silent zero.
        """
        self._require_fitted()
        users, items, bad_u, bad_i = self._check_indices(users, items, unknown)
        pred = self._predict_indices(np.where(bad_u, 0, users), np.where(bad_i, 0, items), bad_u, bad_i)
        return self._clip(pred) if clip else pred

    def predict_ratings(self, test: Ratings, clip: bool = True, unknown: str = "error") -> np.ndarray:
        """:meth:`predict` for every pair of a :class:`~bayesmf.data.Ratings` in training index space."""
        return self.predict(test.users, test.items, clip=clip, unknown=unknown)

    def _clip(self, pred):
        if self.rating_scale_ is None:
            return pred
        return np.clip(pred, *self.rating_scale_)

    def _predict_indices(self, users, items, bad_u, bad_i) -> np.ndarray:
        pred = np.full(users.shape, self.global_mean_, dtype=np.float64)
        if self.user_bias_ is not None:
            pred += np.where(bad_u, 0.0, self.user_bias_[users])
        if self.item_bias_ is not None:
            pred += np.where(bad_i, 0.0, self.item_bias_[items])
        if self.user_factors_ is not None:
            dot = np.einsum("nk,nk->n", self.user_factors_[users], self.item_factors_[items])
            pred += np.where(bad_u | bad_i, 0.0, dot)
        return pred.astype(np.float32)

    def score_users(self, user_indices, items=None) -> np.ndarray:
        """Unclipped scores of ``items`` (default: the whole catalogue) for a batch of known
        users: shape (len(user_indices), n_items). Callers batch users to bound memory."""
        self._require_fitted()
        users = as_indices(user_indices, "user_indices", self.n_users_)
        cols = slice(None) if items is None else as_indices(items, "items", self.n_items_)
        scores = np.full((users.size, self.n_items_ if items is None else len(cols)), self.global_mean_, np.float32)
        if self.item_bias_ is not None:
            scores += self.item_bias_[cols][None, :]
        if self.user_bias_ is not None:
            scores += self.user_bias_[users][:, None]
        if self.user_factors_ is not None:
            scores += self.user_factors_[users] @ self.item_factors_[cols].T
        return scores

    def _scores_are_linear(self) -> bool:
        """Whether this model scores by ``mu + b_u + c_i + p_u . q_i`` alone (it keeps
        :meth:`score_users` of this class and is not Bayesian): the recommendation layer then
        scores on the device and fold-in may use the ridge solution."""
        return not self.is_bayesian and type(self).score_users is FactorModel.score_users

    def seen_items(self, user_index: int) -> np.ndarray:
        """Items the user rated in training (indices)."""
        if np.ndim(user_index) != 0:
            raise DataError(f"user_index must be a single index, got shape {np.shape(user_index)}")
        u = int(as_indices(user_index, "user_index", self.n_users_)[0])
        return self.seen_items_[self.seen_indptr_[u]:self.seen_indptr_[u + 1]]

    # -- persistence ------------------------------------------------------------------------
    _required_arrays = ("seen_indptr_", "seen_items_", "user_counts_", "item_counts_")

    def save(self, path) -> Path:
        """Write the fitted model to directory ``path`` (``meta.json`` + an arrays file), atomically.

        Saved: every array of :attr:`_state_arrays` that is not None, the seen-item CSR (so that
        ``recommend(exclude_seen=True)`` works after :func:`load`), the counts, the
        hyperparameters (``devices`` as None: where a fit ran is not saved), ID maps, rating
        scale, global mean, history and package version. See :mod:`bayesmf.models.persist` for
        the format and its guarantees.
        """
        from bayesmf import __version__

        self._require_fitted()
        arrays = {name: np.asarray(getattr(self, name)) for name in self._all_state_arrays()
                  if getattr(self, name, None) is not None}
        params = self.get_params()
        if params.get("devices") is not None:  # where this process ran the fit, not a hyperparameter
            params["devices"] = None
        meta = {
            "class": type(self).__name__,
            "bayesmf_version": __version__,
            "params": params,
            "global_mean": float(self.global_mean_),
            "rating_scale": self.rating_scale_,
            "user_map": self.user_map_.to_dict(),
            "item_map": self.item_map_.to_dict(),
            "history": {k: [float(x) for x in v] for k, v in self.history_.items()},
        }
        return persist.save_dir(path, meta, arrays)

    def _all_state_arrays(self):
        return self._state_arrays + self._required_arrays


def _model_class(name: str, path) -> type:
    """The estimator class ``name`` from :mod:`bayesmf.registry` (a built-in one is imported on
    demand; a user's class must have been imported before loading)."""
    cls = registry.estimator_class(name)
    if cls is None:
        raise DataError(f"{path}: unknown model class {name!r}; import the module that defines it before loading")
    return cls


_META_KEYS = ("class", "params", "global_mean", "rating_scale", "user_map", "item_map", "history")


def _accepted_params(cls: type, meta: dict, path) -> dict:
    """The saved hyperparameters, checked against what ``cls`` accepts: a parameter this version
    does not know (a file from a newer bayesmf, or an edited one) is named, not a TypeError."""
    params = meta["params"]
    if not isinstance(params, dict):
        raise DataError(f"{path}: the saved parameters are not a mapping ({type(params).__name__})")
    if hasattr(cls, "_upgrade_saved_params"):  # parameters an earlier version saved under other names
        params = cls._upgrade_saved_params(params)
    unknown = sorted(set(params) - set(cls._param_names()))
    if unknown:
        raise DataError(f"{path}: the saved {cls.__name__} has parameter(s) {unknown} that {cls.__name__} of this "
                        f"bayesmf does not accept (saved by bayesmf {meta.get('bayesmf_version')}); load it with "
                        "that version")
    return params


def load(path) -> FactorModel:
    """Load a model written by :meth:`FactorModel.save`; no training data needed.

    Raises :class:`~bayesmf.errors.DataError` for a missing, corrupted, truncated or
    other-version file, naming the file and the problem.
    """
    meta, arrays = persist.load_dir(path)
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise DataError(f"{path}: the saved model's metadata lacks {missing}")
    cls = _model_class(meta["class"], path)
    model = cls(**_accepted_params(cls, meta, path))
    missing = [name for name in model._required_arrays if name not in arrays]
    if missing:
        raise DataError(f"{path}: the saved model lacks the array(s) {missing}")
    for name in model._all_state_arrays():
        setattr(model, name, arrays.get(name))
    model.global_mean_ = meta["global_mean"]
    model.rating_scale_ = tuple(meta["rating_scale"]) if meta["rating_scale"] is not None else None
    model.user_map_ = IdMap.from_dict(meta["user_map"])
    model.item_map_ = IdMap.from_dict(meta["item_map"])
    model.n_users_, model.n_items_ = len(model.user_map_), len(model.item_map_)
    if model.seen_indptr_.shape != (model.n_users_ + 1,):
        raise DataError(f"{path}: seen_indptr_ has shape {model.seen_indptr_.shape}, expected ({model.n_users_ + 1},)")
    model.history_ = meta["history"]
    return model
