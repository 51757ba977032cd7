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
    draws ``w`` (S, F), ``V`` (S, F, K)."""
    S, K = V.shape[0], V.shape[2]
    p = jnp.zeros((S, n_rows, K), V.dtype)
    lin = jnp.zeros((S, n_rows), V.dtype)
    sq = jnp.zeros((S, n_rows), V.dtype)
    for b in blocks:  # a loop over the owner's blocks (a few)
        if b.owner != owner:
            continue
        if b.n_rows != n_rows:
            raise ConfigError(f"block {b.name!r} is owned by {owner!r} but has {b.n_rows} rows, not {n_rows}")
        rows = jnp.asarray(np.repeat(np.arange(b.n_rows), np.diff(b.indptr)))
        cols, x = jnp.asarray(b.columns), jnp.asarray(b.values, V.dtype)

        def one(w_s, V_s, rows=rows, cols=cols, x=x):
            v = V_s[cols]
            return (jax.ops.segment_sum(x[:, None] * v, rows, n_rows),
                    jax.ops.segment_sum(x * w_s[cols], rows, n_rows),
                    jax.ops.segment_sum(x * x * jnp.sum(v * v, axis=1), rows, n_rows))

        q, l_, s = jax.vmap(one)(w, V)
        p, lin, sq = p + q, lin + l_, sq + s
    return p, lin + 0.5 * (jnp.sum(p * p, axis=-1) - sq)


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


def design_draws(design: Design, w0, w, V) -> np.ndarray:
    """The noise-free prediction of every draw at every row of ``design`` (any blocks, context
    included), by relation blocks: ``w0`` (S,), ``w`` (S, F), ``V`` (S, F, K); returns (S, n).
    A ``lax.map`` over draws keeps the working memory O(rows K + block entries K) per draw."""
    blocks = []
    for b in design.blocks:
        rows = jnp.asarray(np.repeat(np.arange(b.n_rows), np.diff(b.indptr)))
        blocks.append((rows, jnp.asarray(b.columns), jnp.asarray(b.values, V.dtype), jnp.asarray(b.index), b.n_rows))

    def one(draw):
        w0_s, w_s, V_s = draw
        q = lin = sq = 0.0
        for rows, cols, x, index, n in blocks:  # a loop over blocks (a few)
            v = V_s[cols]
            q = q + jax.ops.segment_sum(x[:, None] * v, rows, n)[index]
            lin = lin + jax.ops.segment_sum(x * w_s[cols], rows, n)[index]
            sq = sq + jax.ops.segment_sum(x * x * jnp.sum(v * v, axis=1), rows, n)[index]
        return w0_s + lin + 0.5 * (jnp.sum(q * q, axis=-1) - sq)

    return np.asarray(jax.lax.map(one, (jnp.asarray(w0, V.dtype), jnp.asarray(w), jnp.asarray(V))))


def design_moments(design: Design, w0, w, V) -> tuple:
    """Mean and variance over draws of :func:`design_draws` (each (n,))."""
    f = design_draws(design, w0, w, V).astype(np.float64)
    return f.mean(axis=0), f.var(axis=0)
