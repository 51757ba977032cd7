r"""BPMF (Salakhutdinov & Mnih 2008) as a :class:`~bayesmf.posterior.protocol.BayesianModel`.

The model :func:`bayesmf.posterior.model.bpmf_model`: ``r_ij ~ N(m + b_i + c_j + u_i^\top v_j,
1/alpha)`` (or its Student-t / heteroscedastic noise), rows ``u_i ~ N(mu_U, Lambda_U^{-1})``
under a Normal-Wishart hyperprior. Conjugate, so it has a Gibbs kernel
(:mod:`bayesmf.posterior.gibbs`); with ``mu = 0``, ``Lambda = nu0 w0 I`` and ``alpha`` fixed
its MAP estimate is PMF (:mod:`bayesmf.posterior.map`).

References
----------
Salakhutdinov, R. and Mnih, A. (2008). Bayesian probabilistic matrix factorization using
Markov chain Monte Carlo. ICML.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines.driver import Kernel
from bayesmf.posterior import gibbs
from bayesmf.posterior import map as map_kernels
from bayesmf.posterior.model import Prior, bpmf_model
from bayesmf.posterior.ordinal import category_probabilities

HYPER_SITES = ("mu_U", "Lambda_U", "mu_V", "Lambda_V", "alpha", "offset")
BIAS_SITES = ("b_U", "b_V", "bias_precision_U", "bias_precision_V")
NOISE_SITES = ("tau", "kappa")  # noise="heteroscedastic": per-user and per-item precision factors
ORDINAL_SITES = ("cutpoints",)  # likelihood="ordinal"
ALL_SITES = ("U", "V") + HYPER_SITES + BIAS_SITES + NOISE_SITES + ORDINAL_SITES


@jax.jit
def pair_moments(U, V, BU, BV, users, items, global_mean):
    """Mean and variance over draws of ``m + b_s + c_s + u_s . v_s`` at pairs; U (S, n_users, D),
    BU (S, n_users). A scan over draws keeps memory O(pairs), whatever the number of draws."""

    def body(carry, draw):
        u, v, bu, bv = draw
        f = global_mean + bu[users] + bv[items] + jnp.sum(u[users] * v[items], axis=-1)
        return (carry[0] + f, carry[1] + f * f), None

    zeros = jnp.zeros(users.shape, U.dtype)
    (s1, s2), _ = jax.lax.scan(body, (zeros, zeros), (U, V, BU, BV))
    n = U.shape[0]
    mean = s1 / n
    return mean, jnp.maximum(s2 / n - mean * mean, 0.0)


@jax.jit
def pair_class_probabilities(U, V, BU, BV, cutpoints, users, items, global_mean):
    """Ordered-probit category probabilities at pairs averaged over draws, (n, K): per draw
    ``f = m + b_s + c_s + u_s . v_s`` and :func:`~bayesmf.posterior.ordinal.category_probabilities`
    with its cutpoints (S, K - 1); a scan over draws keeps memory O(n K)."""

    def body(total, draw):
        u, v, bu, bv, c = draw
        f = global_mean + bu[users] + bv[items] + jnp.sum(u[users] * v[items], axis=-1)
        return total + category_probabilities(f, c), None

    zeros = jnp.zeros((users.shape[0], cutpoints.shape[1] + 1), U.dtype)
    total, _ = jax.lax.scan(body, zeros, (U, V, BU, BV, cutpoints))
    return total / U.shape[0]


class BPMFModel(NamedTuple):
    """BPMF for the :class:`~bayesmf.posterior.protocol.BayesianModel` protocol.

    Attributes
    ----------
    prior : Prior or None
        The model's settings; None serves the prediction methods only (:meth:`factors`,
        :meth:`predictive_moments`), which read the draws alone.
    """

    prior: Prior | None = None

    @property
    def numpyro_model(self):
        """:func:`bayesmf.posterior.model.bpmf_model`."""
        return bpmf_model

    def sites(self) -> tuple[str, ...]:
        """``U``, ``V``, the hyperparameters (the offset when it is learned), the biases and
        their precisions with biases, ``tau`` and ``kappa`` with heteroscedastic noise, the
        ``cutpoints`` with the ordinal likelihood."""
        prior = self.prior
        return ("U", "V") + tuple(s for s in HYPER_SITES if s != "offset" or prior.learns_offset) + (
            BIAS_SITES if prior.has_biases else ()) + (NOISE_SITES if prior.noise == "heteroscedastic" else ()) + (
            ORDINAL_SITES if prior.ordinal else ())

    def gibbs_kernel(self, data: gibbs.GibbsData, rescale: bool = True) -> Kernel:
        """:func:`bayesmf.posterior.gibbs.build_kernel`."""
        return gibbs.build_kernel(data, self.prior, rescale)

    def map_kernel(self, data: gibbs.GibbsData, method: str = "als") -> Kernel:
        """PMF: the factors' MAP with ``Lambda = nu0 w0 I``, ``mu = 0`` and ``alpha`` fixed, by
        exact coordinate ascent (``"als"``) or Adam (``"adam"``, step size 0.01)."""
        lam = self.prior.nu * self.prior.w0
        if method == "als":
            return map_kernels.build_kernel(data, self.prior.alpha, lam)
        return map_kernels.build_adam_kernel(data, self.prior.alpha, lam, 0.01, None)

    def factors(self, draws: dict, global_mean: float) -> tuple:
        """Draws with chains merged: U (S, n_users, D), V (S, n_items, D), biases (S, n) (zeros
        for a model without biases). A learned offset's distance from ``global_mean`` (its
        posterior mean) is folded into the item biases, so that ``global_mean + b_i + c_j +
        u_i.v_j`` is each draw's prediction. ``draws`` maps sites to (chains, draws, ...) arrays
        (None for absent sites)."""
        U, V = draws["U"], draws["V"]
        U, V = U.reshape(-1, *U.shape[2:]), V.reshape(-1, *V.shape[2:])
        if draws.get("b_U") is None:
            BU, BV = np.zeros(U.shape[:2], U.dtype), np.zeros(V.shape[:2], V.dtype)
        else:
            BU, BV = draws["b_U"].reshape(U.shape[:2]), draws["b_V"].reshape(V.shape[:2])
        if draws.get("offset") is not None:
            shift = draws["offset"].reshape(-1).astype(np.float64) - global_mean
            BV = (BV + shift[:, None]).astype(V.dtype)
        return U, V, BU, BV

    def predictive_moments(self, factors: tuple, users, items, global_mean: float) -> tuple:
        """:func:`pair_moments` of :meth:`factors`' output at the pairs, as float64 NumPy arrays."""
        mean, var = pair_moments(*(jnp.asarray(a) for a in factors), jnp.asarray(users), jnp.asarray(items),
                                 global_mean)
        return np.asarray(mean, np.float64), np.asarray(var, np.float64)
