r"""The Bayesian factorization machine as a :class:`~bayesmf.posterior.protocol.BayesianModel`.

The model and its Gibbs sampler: :mod:`bayesmf.posterior.fm_gibbs`. For prediction, ranking,
similarity and export the draws are turned into per-user and per-item quantities: with
``B_user`` the user-owned blocks of the design (the user's one-hot index, side features, implicit
set) and ``B_item`` the item-owned ones, a user's and an item's effective vectors and biases are

.. math::
    p_u = \sum_{b \in B_\text{user}} (X_b V)[u],\qquad
    \beta_u = \sum_{b \in B_\text{user}} (X_b w)[u]
            + \tfrac12\Big(|p_u|^2 - \sum_{b \in B_\text{user}} (X_b^{\circ 2} |v|^2)[u]\Big)

(the linear terms plus every pairwise term within the user's features), the same for items, so
that each draw's prediction is ``f(u, i) = w_0 + beta_u + beta_i + p_u . p_i`` — the form
``m + b_u + c_i + u . v`` of every factor model of the package (:meth:`BayesFMModel.factors`).
A context-owned block (a time bin of the rating) has no such split: its terms depend on the
rating itself, so predictions then need the design of the pairs (:func:`design_draws`;
:meth:`BayesFMModel.factors` raises).

References
----------
Rendle, S. (2010). Factorization machines. ICDM.
Rendle, S. (2013). Scaling factorization machines to relational data. VLDB.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.design import Design
from bayesmf.engines.driver import Kernel
from bayesmf.errors import ConfigError
from bayesmf.posterior import fm_gibbs
from bayesmf.posterior.bpmf_model import pair_moments

SITES = ("w0", "w", "V", "mu_w", "lambda_w", "mu_v", "lambda_v", "alpha")
ORDINAL_SITES = ("cutpoints",)  # likelihood="ordinal"


def _owner_parts(blocks, owner: str, n_rows: int, w, V):
    """``(p, beta)``: (S, n_rows, K) and (S, n_rows) summed over the blocks of ``owner`` for
    draws ``w`` (S, F), ``V`` (S, F, K). A ``lax.map`` over draws keeps the working memory
    O(block entries K) (one draw's ``V[cols]``), not O(S block entries K)."""
    layout = []
    for b in blocks:  # a loop over the owner's blocks (a few)
        if b.owner != owner:
            continue
        if b.n_rows != n_rows:
            raise ConfigError(f"block {b.name!r} is owned by {owner!r} but has {b.n_rows} rows, not {n_rows}")
        rows = jnp.asarray(np.repeat(np.arange(b.n_rows), np.diff(b.indptr)))
        layout.append((rows, jnp.asarray(b.columns), jnp.asarray(b.values, V.dtype)))

    def one(draw):
        w_s, V_s = draw
        p = jnp.zeros((n_rows, V_s.shape[1]), V_s.dtype)
        lin = sq = jnp.zeros((n_rows,), V_s.dtype)
        for rows, cols, x in layout:
            v = V_s[cols]
            p = p + jax.ops.segment_sum(x[:, None] * v, rows, n_rows)
            lin = lin + jax.ops.segment_sum(x * w_s[cols], rows, n_rows)
            sq = sq + jax.ops.segment_sum(x * x * jnp.sum(v * v, axis=1), rows, n_rows)
        return p, lin + 0.5 * (jnp.sum(p * p, axis=-1) - sq)

    return jax.lax.map(one, (w, V))


class BayesFMModel(NamedTuple):
    """The Bayesian FM for the protocol.

    Attributes
    ----------
    prior : FMPrior or None
        The model's settings (None: prediction from stored draws only).
    design : Design or None
        The training design (its blocks' ``X_b``, for :meth:`factors`).
    """

    prior: fm_gibbs.FMPrior | None = None
    design: Design | None = None

    @property
    def numpyro_model(self):
        """:func:`bayesmf.posterior.fm_numpyro.fm_model` (Gaussian likelihood), the model the
        Gibbs sampler samples."""
        from bayesmf.posterior.fm_numpyro import fm_model

        return fm_model

    def sites(self) -> tuple[str, ...]:
        """``w0``, ``w``, ``V``, the group hyperparameters and ``alpha``."""
        return SITES

    def gibbs_kernel(self, data: fm_gibbs.FMData, rescale: bool = True) -> Kernel:
        """:func:`bayesmf.posterior.fm_gibbs.build_kernel` (``rescale`` has no effect: the FM
        has no invariance move yet)."""
        return fm_gibbs.build_kernel(data, self.prior)

    def map_kernel(self, data: fm_gibbs.FMData, method: str = "als") -> Kernel:
        """The MAP of ``(w, V)`` with the hyperparameters at their prior means, ``w0`` and
        ``alpha`` fixed, by exact block coordinate ascent (``"als"``:
        :func:`~bayesmf.posterior.fm_gibbs.build_map_kernel`, each colour's columns at their
        conditional mean)."""
        if method != "als":
            raise ConfigError(f"BayesFM's MAP fit is exact coordinate ascent: MAPConfig.method must be 'als', "
                              f"got {method!r}")
        return fm_gibbs.build_map_kernel(data, self.prior)

    def factors(self, draws: dict, global_mean: float, n_users: int | None = None,
                n_items: int | None = None) -> tuple:
        """Effective per-user and per-item vectors and biases (module docstring) with chains
        merged: ``U`` (S, n_users, K), ``V`` (S, n_items, K), ``BU`` (S, n_users), ``BV``
        (S, n_items), with ``w0 - global_mean`` folded into ``BV``, so that ``global_mean + BU
        + BV + U . V`` is each draw's prediction. ``draws``: sites -> (chains, draws, ...)."""
        design = self.design
        if any(b.owner == "context" for b in design.blocks):
            names = [b.name for b in design.blocks if b.owner == "context"]
            raise ConfigError(f"context block(s) {names} make predictions depend on the rating's context: "
                              "per-user/item factors do not exist for this design")
        n_users = n_users or max((b.n_rows for b in design.blocks if b.owner == "user"), default=0)
        n_items = n_items or max((b.n_rows for b in design.blocks if b.owner == "item"), default=0)
        w = jnp.asarray(draws["w"]).reshape(-1, draws["w"].shape[-1])
        V = jnp.asarray(draws["V"]).reshape(-1, *draws["V"].shape[-2:])
        U, BU = _owner_parts(design.blocks, "user", n_users, w, V)
        Vi, BV = _owner_parts(design.blocks, "item", n_items, w, V)
        shift = np.asarray(draws["w0"], np.float64).reshape(-1) - global_mean
        BV = BV + jnp.asarray(shift, V.dtype)[:, None]
        return tuple(np.asarray(a) for a in (U, Vi, BU, BV))

    def predictive_moments(self, factors: tuple, users, items, global_mean: float) -> tuple:
        """:func:`~bayesmf.posterior.bpmf_model.pair_moments` of :meth:`factors`' output."""
        mean, var = pair_moments(*(jnp.asarray(a) for a in factors), jnp.asarray(users), jnp.asarray(items),
                                 global_mean)
        return np.asarray(mean, np.float64), np.asarray(var, np.float64)


class NewRows(NamedTuple):
    r"""Pairs whose user or item lies outside the training index space, and each draw's prior of
    a new one-hot column (the ``"user"`` and ``"item"`` groups' hyperparameters).

    A new user's one-hot parameters are not in the draws; under the model they are a fresh draw
    from their group's prior, ``w_u ~ N(mu^w, 1/lambda^w)``, ``v_u ~ N(mu^v, diag(1/lambda^v))``
    (the same for a new item), independent of everything else given the draw.

    Attributes
    ----------
    user, item : (n,) bool
        The pair's user / item is new (its one-hot row is empty).
    mu_w, lambda_w : (S, 2)
        Per draw, the user group's and the item group's ``mu^w``, ``lambda^w`` (column 0 user,
        1 item; any values for a group the design lacks, whose mask is then all False).
    mu_v, lambda_v : (S, 2, K)
        The same for ``mu^v``, ``lambda^v``.
    """

    user: np.ndarray
    item: np.ndarray
    mu_w: np.ndarray
    lambda_w: np.ndarray
    mu_v: np.ndarray
    lambda_v: np.ndarray


def _design_map(design: Design, w0, w, V, new: NewRows | None):
    """``lax.map`` over draws of the prediction at the rows of ``design`` (and, with ``new``, its
    conditional variance): see :func:`design_draws` and :func:`design_conditional`."""
    blocks = []
    for b in design.blocks:
        rows = jnp.asarray(np.repeat(np.arange(b.n_rows), np.diff(b.indptr)))
        blocks.append((rows, jnp.asarray(b.columns), jnp.asarray(b.values, V.dtype), jnp.asarray(b.index), b.n_rows))
    if new is not None:
        a, c = (jnp.asarray(m, V.dtype) for m in (new.user, new.item))
        a1, c1 = a[:, None], c[:, None]

    def one(draw):
        w0_s, w_s, V_s = draw[:3]
        q = lin = sq = 0.0
        for rows, cols, x, index, n in blocks:  # a loop over blocks (a few)
            v = V_s[cols]
            q = q + jax.ops.segment_sum(x[:, None] * v, rows, n)[index]
            lin = lin + jax.ops.segment_sum(x * w_s[cols], rows, n)[index]
            sq = sq + jax.ops.segment_sum(x * x * jnp.sum(v * v, axis=1), rows, n)[index]
        f = w0_s + lin + 0.5 * (jnp.sum(q * q, axis=-1) - sq)
        if new is None:
            return f
        mu_w, lam_w, mu_v, lam_v = draw[3:]
        # per coordinate k, the new terms are A_k B_k - q_k^2 with A = a v_u + q, B = c v_i + q
        mean_a, var_a = a1 * mu_v[0] + q, a1 / lam_v[0]
        mean_b, var_b = c1 * mu_v[1] + q, c1 / lam_v[1]
        mean = f + a * mu_w[0] + c * mu_w[1] + jnp.sum(mean_a * mean_b - q * q, axis=-1)
        var = a / lam_w[0] + c / lam_w[1] + jnp.sum(var_a * var_b + mean_a ** 2 * var_b + mean_b ** 2 * var_a,
                                                     axis=-1)
        return mean, var

    draws = (jnp.asarray(w0, V.dtype), jnp.asarray(w), jnp.asarray(V))
    if new is not None:
        draws += tuple(jnp.asarray(x, V.dtype) for x in (new.mu_w, new.lambda_w, new.mu_v, new.lambda_v))
    return jax.lax.map(one, draws)


def design_draws(design: Design, w0, w, V) -> np.ndarray:
    """The noise-free prediction of every draw at every row of ``design`` (any blocks, context
    included), by relation blocks: ``w0`` (S,), ``w`` (S, F), ``V`` (S, F, K); returns (S, n).
    A ``lax.map`` over draws keeps the working memory O(rows K + block entries K) per draw."""
    return np.asarray(_design_map(design, w0, w, V, None))


def design_conditional(design: Design, w0, w, V, new: NewRows) -> tuple:
    r"""Per draw, the mean and variance of the prediction at the rows of ``design`` when the
    pairs' new users and items (``new``) add their one-hot terms drawn from their groups' prior
    (:class:`NewRows`); both (S, n). With ``a``, ``c`` the pair's new-user and new-item
    indicators and ``q = sum_j x_j v_j`` over the row's present features, the added terms are
    ``a w_u + c w_i + sum_k (A_k B_k - q_k^2)`` with independent ``A_k = a v_uk + q_k``,
    ``B_k = c v_ik + q_k`` (``a <v_u, q> + c <v_i, q> + a c <v_u, v_i>``), so

    .. math::
        E = f + a\mu^w_u + c\mu^w_i + \sum_k (m^A_k m^B_k - q_k^2),\qquad
        \mathrm{Var} = \frac{a}{\lambda^w_u} + \frac{c}{\lambda^w_i}
            + \sum_k \big(s^A_k s^B_k + (m^A_k)^2 s^B_k + (m^B_k)^2 s^A_k\big)

    with ``m^A = a mu^v_u + q``, ``s^A = a / lambda^v_u`` (and the same for ``B``, the item
    group). Exact moments; the added term is Gaussian unless both are new (then a product of
    Gaussians)."""
    mean, var = _design_map(design, w0, w, V, new)
    return np.asarray(mean), np.asarray(var)


def design_moments(design: Design, w0, w, V) -> tuple:
    """Mean and variance over draws of :func:`design_draws` (each (n,))."""
    f = design_draws(design, w0, w, V).astype(np.float64)
    return f.mean(axis=0), f.var(axis=0)
