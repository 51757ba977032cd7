r"""The one minibatch training loop of the gradient-trained models (NCF, Mult-VAE/DAE, BPR), on Optax.

Pure functions over a :class:`TrainState` (parameters as a plain pytree of ``jnp`` arrays, the
optimiser state, the update counter):

* :func:`init` ``(params, optimizer) -> TrainState``;
* :func:`make_epoch` ``(loss_fn, optimizer, batch_size) -> epoch``, where
  ``epoch(key, state, data) -> (TrainState, EpochInfo)`` is one jitted pass over the examples of
  ``data``: a permutation drawn from ``key``, padding to a multiple of ``batch_size`` (padded rows
  carry weight 0), then one ``lax.scan`` over the minibatches, each an Optax update of the
  weighted mean loss;
* :func:`train` drives epochs on the host: new examples each epoch (resampled negatives), the
  progress bar, the history, early stopping on a validation loss with ``patience`` and the
  divergence check.

``data`` is a pytree of arrays whose leading axis indexes examples. ``loss_fn(params, batch, key,
step)`` returns the per-example losses ``(B,)`` of a minibatch ``batch`` (the same pytree, leading
axis ``B``); ``key`` is a fresh PRNG key per minibatch (dropout, reparameterisation) and ``step``
the number of updates done so far (annealing schedules). The minibatch objective is

.. math:: L(\theta) = \frac{\sum_b w_b \ell_b(\theta)}{\max(1, \sum_b w_b)},

``w_b`` = 1 for real examples and 0 for padding, so every example counts once per epoch.

No model code is imported here: the models build the losses and the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesmf.engines.driver import progress_bar
from bayesmf.errors import ConfigError, TrainingDivergedError  # noqa: F401 - re-exported

OPTIMIZERS = ("adam", "sgd", "adagrad")


class TrainState(NamedTuple):
    """``params``: pytree of arrays; ``opt_state``: the Optax state; ``step``: updates done (int32)."""

    params: Any
    opt_state: Any
    step: jax.Array


class EpochInfo(NamedTuple):
    """``loss``: the weighted mean of the per-example losses over the epoch (each example at the
    parameters of its minibatch's update)."""

    loss: jax.Array


@dataclass(frozen=True)
class LoopConfig:
    """Host-side settings of :func:`train`.

    ``n_epochs``: maximum epochs; ``batch_size``: examples per update; ``patience``: epochs
    without a better validation loss before stopping (None: no early stopping); ``learning_rate``
    is only reported when training diverges."""

    n_epochs: int
    batch_size: int
    learning_rate: float
    patience: int | None = None


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``"adam"`` (Kingma & Ba 2015), ``"sgd"`` (vanilla) or ``"adagrad"`` at ``learning_rate``."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return {"adam": optax.adam, "sgd": optax.sgd, "adagrad": optax.adagrad}[name](learning_rate)


def init(params, optimizer: optax.GradientTransformation) -> TrainState:
    """The state before the first update."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def n_examples(data) -> int:
    """Length of the leading axis shared by every leaf of ``data``."""
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree_util.tree_leaves(data)}
    if len(sizes) != 1:
        raise ConfigError(f"the leaves of the training data have different lengths {sorted(sizes)}")
    return sizes.pop()


def make_epoch(loss_fn: Callable, optimizer: optax.GradientTransformation, batch_size: int) -> Callable:
    """A jitted ``epoch(key, state, data) -> (TrainState, EpochInfo)`` (see the module docstring)."""

    def batch_loss(params, batch, weight, key, step):
        losses = loss_fn(params, batch, key, step)
        return jnp.sum(weight * losses) / jnp.maximum(jnp.sum(weight), 1.0)

    grad_fn = jax.value_and_grad(batch_loss)

    @jax.jit
    def epoch(key, state: TrainState, data):
        n = n_examples(data)
        n_batches = -(-n // batch_size)
        perm_key, batch_key = jax.random.split(key)
        perm = jax.random.permutation(perm_key, n)
        pad = n_batches * batch_size - n
        order = jnp.concatenate([perm, jnp.zeros(pad, perm.dtype)]).reshape(n_batches, batch_size)
        weight = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
        weight = weight.reshape(n_batches, batch_size)
        keys = jax.random.split(batch_key, n_batches)

        def update(carry, xs):
            params, opt_state, step = carry
            idx, w, k = xs
            batch = jax.tree_util.tree_map(lambda leaf: leaf[idx], data)
            loss, grads = grad_fn(params, batch, w, k, step)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, step + 1), loss * jnp.sum(w)

        (params, opt_state, step), weighted = jax.lax.scan(update, tuple(state), (order, weight, keys))
        return TrainState(params, opt_state, step), EpochInfo(jnp.sum(weighted) / n)

    return epoch


def train(
    epoch: Callable,
    state: TrainState,
    epoch_data: Callable[[int], Any],
    key,
    config: LoopConfig,
    *,
    valid_loss: Callable | None = None,
    progress: bool = False,
    desc: str = "train",
    history: dict | None = None,
) -> TrainState:
    """Run up to ``config.n_epochs`` epochs; returns the final state, or with ``valid_loss`` the
    state of the epoch with the lowest validation loss.

    ``epoch_data(t)`` gives the examples of epoch ``t`` (0-based; e.g. positives with negatives
    drawn for that epoch); ``key`` seeds epoch ``t`` with ``fold_in(key, t)``. ``valid_loss(params)``
    (a scalar, lower is better) is evaluated after each epoch; ``config.patience`` epochs without
    improvement stop the run. ``history`` (a dict of lists) receives ``loss`` and ``valid_loss``
    per epoch. ``epoch_data(t + 1)`` is called right after epoch ``t`` is dispatched, so that the
    host's work on the next epoch's examples overlaps the device's work on this one. A non-finite
    loss raises :class:`TrainingDivergedError` naming the epoch and the learning rate, with the last
    good parameters in its ``partial``.
    """
    history = {} if history is None else history
    best, best_state, waited = np.inf, state, 0
    bar = progress_bar(config.n_epochs, desc, progress)
    try:
        data = epoch_data(0)
        for t in range(config.n_epochs):
            new_state, info = epoch(jax.random.fold_in(key, t), state, data)
            if t + 1 < config.n_epochs:
                # drawn on the host while the dispatched epoch runs (JAX dispatch is asynchronous)
                data = epoch_data(t + 1)
            record = {"loss": float(info.loss)}
            if valid_loss is not None:
                record["valid_loss"] = float(valid_loss(new_state.params))
            bad = [name for name, value in record.items() if not np.isfinite(value)]
            if bad:
                raise TrainingDivergedError(
                    f"{desc}: the {bad[0].replace('_', ' ')} became {record[bad[0]]} in epoch {t} with learning "
                    f"rate {config.learning_rate}; lower the learning rate. The parameters after epoch {t - 1} "
                    "are kept in this error's .partial",
                    epoch=t, learning_rate=config.learning_rate,
                    partial=jax.tree_util.tree_map(np.asarray, jax.device_get(state.params)),
                )
            for name, value in record.items():
                history.setdefault(name, []).append(value)
            state = new_state
            bar.update(1)
            bar.set_postfix({name: f"{value:.4g}" for name, value in record.items()})
            if valid_loss is None:
                continue
            if record["valid_loss"] < best:
                best, best_state, waited = record["valid_loss"], state, 0
            else:
                waited += 1
                if config.patience is not None and waited >= config.patience:
                    break
    finally:
        bar.close()
    if valid_loss is not None:
        history["best_epoch"] = [float(np.argmin(history["valid_loss"]))]
        return best_state
    return state
