r"""PMF MAP: the BPMF model with its hyperparameters fixed, maximised over the factors.

With ``mu_U = mu_V = 0``, ``Lambda_U = Lambda_V = lambda I`` and noise precision ``alpha`` fixed,
the log joint is, up to a constant,

.. math::
    -\frac{\alpha}{2} \sum_{(i,j)} (r_{ij} - m - u_i^\top v_j)^2
    - \frac{\lambda}{2} (\lVert U \rVert_F^2 + \lVert V \rVert_F^2).

Two maximisers share this objective:

* ``method="als"`` — exact block coordinate ascent: each user row's maximiser given ``V`` is the
  conditional mean of the Gibbs step, ``u_i = (lambda I + alpha G_i)^{-1} alpha b_i``; then the
  items. The objective never decreases. Fast and deterministic (the default).
* ``method="adam"`` — an optax optimizer on the objective, full-batch or minibatch over
  ratings (``batch_size``), for the cases where the exact solve does not apply.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bayesmf.engines.chunks import gram_rhs, squared_error
from bayesmf.engines.driver import Kernel
from bayesmf.engines.linalg import solve_spd
from bayesmf.engines.residuals import RatingLayout, sum_of_squares
from bayesmf.posterior.gibbs import GibbsData, residual_sse


class MapState(NamedTuple):
    """The factors being optimised."""

    U: jnp.ndarray
    """(n_users, D) user factors."""
    V: jnp.ndarray
    """(n_items, D) item factors."""


class MapInfo(NamedTuple):
    """Diagnostics of one coordinate-ascent sweep."""

    objective: jnp.ndarray
    """The negative log joint (:func:`objective`) after the sweep."""
    train_rmse: jnp.ndarray
    """Training RMSE after the sweep."""


class AdamState(NamedTuple):
    """The Adam kernel's state."""

    params: tuple
    """``(U, V)``."""
    opt_state: tuple
    """Optax's Adam state."""


class AdamInfo(NamedTuple):
    """Diagnostics of one Adam step."""

    objective: jnp.ndarray
    """The objective (its minibatch estimate with ``batch_size``) before the step."""


def objective(U, V, data: GibbsData, alpha: float, lam: float):
    """Negative log joint (the quantity both methods minimise)."""
    return 0.5 * alpha * residual_sse(U, V, data) + 0.5 * lam * (jnp.sum(U**2) + jnp.sum(V**2))


def ridge_rows_map(other, chunks, alpha, lam):
    """Conditional modes ``(lam I + alpha G_i)^-1 alpha b_i`` of every row given the other side,
    and the sum of squared residuals of every rating at those modes."""
    gram, rhs, yy = gram_rhs(chunks, other)
    eye = jnp.eye(other.shape[-1], dtype=other.dtype)
    x = solve_spd(lam * eye[None] + alpha * gram, alpha * rhs)
    return x, squared_error(x, gram, rhs, yy)


@jax.jit
def sweep(state: MapState, data: GibbsData, alpha: float, lam: float) -> tuple[MapState, MapInfo]:
    """One exact coordinate-ascent sweep (users, then items)."""
    U, _ = ridge_rows_map(state.V, data.user_chunks, alpha, lam)
    V, sse = ridge_rows_map(U, data.item_chunks, alpha, lam)
    loss = 0.5 * alpha * sse + 0.5 * lam * (jnp.sum(U**2) + jnp.sum(V**2))
    return MapState(U, V), MapInfo(loss, jnp.sqrt(sse / data.residual.shape[0]))


def build_kernel(data: GibbsData, alpha: float, lam: float) -> Kernel:
    """Exact block coordinate ascent (``method="als"``) as a :class:`~bayesmf.engines.driver.Kernel`:
    ``init(U, V)`` the starting :class:`MapState`, ``step(key, state)`` one :func:`sweep`
    (deterministic)."""
    return Kernel(init=MapState, step=lambda _key, state: sweep(state, data, alpha, lam))


def build_adam_kernel(data: GibbsData, alpha: float, lam: float, learning_rate: float,
                      batch_size: int | None) -> Kernel:
    """Adam on the objective (``method="adam"``) as a :class:`~bayesmf.engines.driver.Kernel`:
    ``init(U, V)`` an :class:`AdamState`, ``step(key, state)`` one step (``key`` draws the
    minibatch); see :func:`make_adam_step`."""
    opt, adam_step = make_adam_step(data, alpha, lam, learning_rate, batch_size)

    @jax.jit
    def step(key, state: AdamState):
        (params, opt_state), info = adam_step(key, (state.params, state.opt_state))
        return AdamState(params, opt_state), AdamInfo(info["objective"])

    def init(U, V):
        return AdamState((U, V), opt.init((U, V)))

    return Kernel(init=init, step=step)


def make_adam_step(data: GibbsData, alpha: float, lam: float, learning_rate: float, batch_size: int | None):
    """An optax Adam step on the objective (minibatch over ratings when ``batch_size`` is set;
    the minibatch SSE is rescaled by nnz / batch_size so the gradient is unbiased)."""
    nnz = data.residual.shape[0]
    opt = optax.adam(learning_rate)

    full_batch = batch_size is None or batch_size >= nnz
    # the sampler's Gram layout (targets: the centred ratings), reused rather than packed again
    # (its 64-wide rows are a little slower per gradient than residuals.WIDTH's 32)
    layout = RatingLayout(data.user_chunks, data.item_chunks)

    def loss(params, idx):
        U, V = params
        if full_batch:  # no scatter-adds in the gradient (bayesmf.engines.residuals)
            sse = sum_of_squares(layout, U, V)
        else:
            pred = jnp.sum(U[data.users[idx]] * V[data.items[idx]], axis=-1)
            sse = jnp.sum((data.residual[idx] - pred) ** 2) * (nnz / idx.shape[0])
        return 0.5 * alpha * sse + 0.5 * lam * (jnp.sum(U**2) + jnp.sum(V**2))

    def step(key, carry):
        params, opt_state = carry
        idx = None if full_batch else jax.random.randint(key, (batch_size,), 0, nnz)
        value, grads = jax.value_and_grad(loss)(params, idx)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"objective": value}

    return opt, step
