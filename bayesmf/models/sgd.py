"""SGD-trained biased MF (``FunkSVD``, Surprise's "SVD") and ``SVDpp`` (Koren 2008)."""

from __future__ import annotations

import numpy as np

from bayesmf.engines import sgd as engine
from bayesmf.engines.sparse import rating_arrays
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_dtype, check_nonnegative, check_positive_int
from bayesmf.models.fitting import ClassicalModel, check_common, run, seed_key, to_numpy


class FunkSVD(ClassicalModel):
    """Biased MF ``r_hat = mu + b_u + c_i + p_u . q_i`` by minibatch SGD over shuffled epochs.

    Every rating moves each parameter group ``g`` by ``lr_g (e * grad - reg_g theta)``; the
    groups are ``user_bias``, ``item_bias``, ``user_factors``, ``item_factors`` (and
    ``implicit_factors`` for SVD++). ``learning_rate``/``regularization`` set all groups;
    ``learning_rates``/``regularizations`` (dicts) override single groups, as Surprise's
    ``lr_bu``... options. Defaults are Surprise's SVD (100 factors, 20 epochs, lr 0.005, reg 0.02,
    init std 0.1). ``batch_size`` ratings are updated together (see :mod:`bayesmf.engines.sgd`).
    A learning rate that makes the loss non-finite stops the fit with a DivergenceError.
    """

    _implicit = False

    def __init__(self, rank: int = 100, n_epochs: int = 20, learning_rate: float = 0.005,
                 regularization: float = 0.02, learning_rates: dict | None = None,
                 regularizations: dict | None = None, init_std: float = 0.1, batch_size: int = 1024,
                 seed: int = 0, progress: bool = False, dtype: str = "float32"):
        self.rank = rank
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.learning_rates = learning_rates
        self.regularizations = regularizations
        self.init_std = init_std
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.dtype = dtype

    def _groups(self, default, overrides, what: str) -> tuple:
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(engine.GROUPS)
        if unknown:
            raise ConfigError(f"unknown {what} group(s) {sorted(unknown)}; groups are {list(engine.GROUPS)}")
        values = tuple(float(overrides.get(g, default)) for g in engine.GROUPS)
        for g, v in zip(engine.GROUPS, values, strict=True):
            check_nonnegative(f"{what}[{g!r}]", v)
        return values

    def _check_params(self) -> None:
        check_common(self, learning_rate=self.learning_rate, regularization=self.regularization,
                     init_std=self.init_std)
        check_positive_int("n_epochs", self.n_epochs)
        check_positive_int("batch_size", self.batch_size)
        self._groups(self.learning_rate, self.learning_rates, "learning_rates")
        self._groups(self.regularization, self.regularizations, "regularizations")
        check_dtype(self.dtype)
        seed_key(self.seed)

    def _config(self) -> engine.SGDConfig:
        return engine.SGDConfig(self._groups(self.learning_rate, self.learning_rates, "learning_rates"),
                                self._groups(self.regularization, self.regularizations, "regularizations"),
                                int(self.batch_size), self._implicit)

    def _fit(self, train) -> None:
        dtype = check_dtype(self.dtype)
        config = self._config()
        n_chunks = config.chunks if config.implicit else 1
        seed_shuffle, seed_init, seed_orders = np.random.SeedSequence(self.seed).spawn(3)
        batches = engine.shuffled_batches(train.users, train.items, train.values, config.batch_size, n_chunks,
                                          seed_shuffle, dtype)
        data = engine.sgd_data(rating_arrays(train, dtype), train.users, train.items, train.user_counts,
                               train.item_counts, batches, dtype)
        state = engine.init(seed_init, train.n_users, train.n_items, self.rank, self.init_std, dtype)
        kernel = engine.build_kernel(data, config, engine.epoch_orders(seed_orders, self.n_epochs,
                                                                       batches.mask.shape[0]))
        rates = dict(zip(engine.GROUPS, config.lr, strict=True))
        hint = (f"SGD diverged: learning rate(s) {rates} too large for these data; lower learning_rate "
                f"(now {self.learning_rate}) or learning_rates.")
        state = run(self, kernel, kernel.init(state), self.n_epochs, hint=hint).params
        self.global_mean_ = float(data.mu)
        self.user_bias_ = to_numpy(state.user_params[:, 0])
        self.item_bias_ = to_numpy(state.item_params[:, 1])
        self.item_factors_ = to_numpy(state.item_params[:, 2:])
        self.user_factors_ = to_numpy(engine.effective_user_factors(state, data, config))
        if self._implicit:
            self.implicit_factors_ = to_numpy(state.implicit)
            self.own_user_factors_ = to_numpy(state.user_params[:, 2:])


    def fold_in_penalty(self, counts: np.ndarray):
        """The SGD objective penalises a user once per rating: ``reg_user_factors * n |p|^2`` and
        ``reg_user_bias * n b^2`` (:func:`bayesmf.engines.sgd.penalty`)."""
        reg = dict(zip(engine.GROUPS, self._groups(self.regularization, self.regularizations, "regularizations"),
                       strict=True))
        counts = np.asarray(counts, np.float64)
        return reg["user_factors"] * counts, reg["user_bias"] * counts


class SVDpp(FunkSVD):
    """SVD++ (Koren 2008): ``r_hat = mu + b_u + c_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``.

    Same options as :class:`FunkSVD` (plus the ``implicit_factors`` group); defaults are
    Surprise's SVDpp (20 factors, 20 epochs, lr 0.007, reg 0.02). ``user_factors_`` holds the
    effective user vectors ``p_u + z_u`` (so prediction is the shared dot product);
    ``own_user_factors_`` holds ``p_u`` and ``implicit_factors_`` the ``y_j``.
    """

    _implicit = True
    _state_arrays = FunkSVD._state_arrays + ("implicit_factors_", "own_user_factors_")

    def __init__(self, rank: int = 20, n_epochs: int = 20, learning_rate: float = 0.007,
                 regularization: float = 0.02, learning_rates: dict | None = None,
                 regularizations: dict | None = None, init_std: float = 0.1, batch_size: int = 1024,
                 seed: int = 0, progress: bool = False, dtype: str = "float32"):
        super().__init__(rank, n_epochs, learning_rate, regularization, learning_rates, regularizations,
                         init_std, batch_size, seed, progress, dtype)

    _per_user_arrays = {**FunkSVD._per_user_arrays, "own_user_factors_": 0}

    def _fold_in_solve(self, new) -> dict:
        """A new user's implicit term ``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j`` comes from the items it
        rated; ``(p_u, b_u)`` then minimise the fit's objective with the item side fixed, i.e. the
        ridge problem of the default fold-in on the targets ``r_ui - q_i . z_u``
        (:meth:`fold_in_penalty` weights). ``user_factors_`` gets ``p_u + z_u``."""
        counts = new.user_counts
        z = np.zeros((new.n_users, self.rank), np.float64)
        np.add.at(z, new.users, self.implicit_factors_[new.items])
        z /= np.sqrt(np.maximum(counts, 1))[:, None]
        shift = np.einsum("nk,nk->n", self.item_factors_[new.items], z[new.users])
        solved = super()._fold_in_solve(new.with_values(new.values - shift))
        own = solved["user_factors_"]
        return {**solved, "user_factors_": own + z.astype(own.dtype), "own_user_factors_": own}
