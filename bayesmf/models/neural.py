"""What the gradient-trained implicit-feedback models (GMF/MLP/NeuMF, Mult-VAE/DAE, BPR) share
around :mod:`bayesmf.engines.optax_loop`: hyperparameter checks, the validation split carved from
training, the per-epoch negatives, parameters kept as saved arrays, and running the loop.

Training data are implicit: every rating of ``train`` is a positive, whatever its value.
"""

from __future__ import annotations

import jax
import numpy as np

from bayesmf.data.negatives import DISTRIBUTIONS, sample_negatives
from bayesmf.data.splits import per_user
from bayesmf.engines import optax_loop as loop
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_nonnegative
from bayesmf.models.fitting import ClassicalModel, seed_key
from bayesmf.validate import check_fraction, check_positive_int


def layer_widths(name: str, value, minimum: int) -> tuple[int, ...]:
    """``value`` (a sequence of at least ``minimum`` positive integers; integral floats, as
    experiment files' arrays of numbers arrive, are accepted) as a tuple of ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) < minimum:
        raise ConfigError(f"{name} must list at least {minimum} layer width{'s' if minimum > 1 else ''}, "
                          f"got {value!r}")
    widths = []
    for w in value:
        if isinstance(w, (float, np.floating)) and float(w).is_integer():
            w = int(w)
        widths.append(check_positive_int(f"{name} entry", w))
    return tuple(widths)


def carve_validation(train, fraction: float, seed):
    """``(fit_part, valid_part)``: each user sends ``round(fraction * n_u)`` of their positives to
    validation and keeps at least one for training (:func:`bayesmf.data.splits.per_user` with
    ``min_train=1``), so no user loses their training history. ``fraction == 0``: ``(train, None)``."""
    if fraction == 0:
        return train, None
    split = per_user(train, test_fraction=check_fraction("validation", fraction), seed=seed, min_train=1)
    return split.train, (split.test if split.test.nnz else None)


def epoch_negatives(positives, users, n: int, seed, distribution: str, alpha: float, replace: bool):
    """``n`` negatives for each entry of ``users`` (rows, shape (len(users), n)), drawn by
    :func:`bayesmf.data.sample_negatives` (uniform or popularity^alpha, excluding ``positives``).
    Without ``replace`` a user whose catalogue minus positives is smaller than ``n`` is an error
    naming the user (raised by the sampler)."""
    return sample_negatives(positives, n, seed=seed, users=users, distribution=distribution, alpha=alpha,
                            replace=replace)


class NeuralModel(ClassicalModel):
    """Base of the Optax-trained models: parameters ``params_`` (a dict of arrays) are stored as
    the attributes ``<name>_`` listed by :meth:`_param_keys`, so :meth:`save`/``load`` keep them.

    Subclasses set ``learning_rate``, ``optimizer``, ``batch_size``, ``n_epochs``, ``validation``,
    ``patience``, ``seed`` and ``progress`` in ``__init__`` and implement ``_param_keys``."""

    def _param_keys(self) -> tuple[str, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _all_state_arrays(self):
        return super()._all_state_arrays() + tuple(f"{name}_" for name in self._param_keys())

    @property
    def params_(self) -> dict:
        """The fitted parameters as a dict of NumPy arrays."""
        return {name: getattr(self, f"{name}_") for name in self._param_keys()}

    def _store_params(self, params: dict) -> None:
        for name in self._param_keys():
            setattr(self, f"{name}_", np.asarray(jax.device_get(params[name])))

    def _check_loop_params(self, watched: bool = False) -> None:
        """``watched``: a validation criterion other than the ``validation`` split is given (so
        ``patience`` has something to watch)."""
        check_positive_int("n_epochs", self.n_epochs)
        check_positive_int("batch_size", self.batch_size)
        lr = check_nonnegative("learning_rate", self.learning_rate)
        if lr == 0:
            raise ConfigError("learning_rate must be > 0, got 0")
        loop.make_optimizer(self.optimizer, lr)
        if self.validation != 0:
            check_fraction("validation", self.validation)
        if self.patience is not None:
            check_positive_int("patience", self.patience)
            if self.validation == 0 and not watched:
                raise ConfigError(f"patience={self.patience!r} needs a validation split to watch; set validation, "
                                  "e.g. 0.1")
        seed_key(self.seed)

    @staticmethod
    def _check_negatives(n_negatives, distribution, alpha) -> None:
        check_positive_int("n_negatives", n_negatives)
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(f"negatives must be one of {DISTRIBUTIONS}, got {distribution!r}")
        check_nonnegative("alpha", alpha)

    def _run(self, loss_fn, params, epoch_data, valid_loss=None, optimizer=None, n_epochs=None, desc=None,
             history=None, key_offset: int = 0) -> dict:
        """Train ``params`` with :func:`bayesmf.engines.optax_loop.train`; returns the trained dict."""
        optimizer = self.optimizer if optimizer is None else optimizer
        tx = loop.make_optimizer(optimizer, float(self.learning_rate))
        config = loop.LoopConfig(int(self.n_epochs if n_epochs is None else n_epochs), int(self.batch_size),
                                 float(self.learning_rate), self.patience)
        key = jax.random.fold_in(seed_key(self.seed), key_offset)
        state = loop.train(loop.make_epoch(loss_fn, tx, config.batch_size), loop.init(params, tx), epoch_data, key,
                           config, valid_loss=valid_loss, progress=self.progress,
                           desc=desc or type(self).__name__, history=self.history_ if history is None else history)
        return jax.device_get(state.params)

    def _implicit_fit(self, train) -> None:
        """Scores are not ratings: nothing is clipped and there are no global terms."""
        self.rating_scale_ = None
        self.global_mean_ = 0.0
        self.user_bias_ = self.item_bias_ = None
