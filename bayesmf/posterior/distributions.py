"""A NumPyro distribution the BPMF model needs and NumPyro does not have in this form.

Imported by :func:`bayesmf.posterior.model.bpmf_model` only when it runs, so that ``import
bayesmf`` does not import NumPyro.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import promote_shapes


def unwhiten(z, loc, precision_cholesky):
    """``x^T = loc^T + z^T L^{-1}`` for rows ``z`` (..., D): with ``z ~ N(0, I)``, ``x ~ N(loc,
    (L L^T)^{-1})`` (covariance ``L^{-T} L^{-1}``). The inverse of the D x D factor once, then one
    (..., D) @ (D, D) matmul: a triangular solve with n right-hand sides (and its gradient) costs
    XLA:CPU a loop of small ops instead."""
    D = precision_cholesky.shape[-1]
    inverse = jsl.solve_triangular(precision_cholesky, jnp.eye(D, dtype=precision_cholesky.dtype), lower=True)
    return loc + z @ inverse


class PrecisionCholeskyNormal(Distribution):
    r"""Multivariate normal ``N(loc, Lambda^{-1})`` given the Cholesky factor ``L`` of its
    *precision*, ``Lambda = L L^T`` (``L`` lower triangular with a positive diagonal).

    .. math::

        \log p(x) = -\tfrac D2 \log 2\pi + \textstyle\sum_d \log L_{dd}
                    - \tfrac12 \lVert (x - \mathrm{loc})^\top L \rVert^2

    because ``(x - loc)^T Lambda (x - loc) = |L^T (x - loc)|^2``. Draws: :func:`unwhiten` of
    standard normals.

    Shapes: ``loc`` (..., D), ``precision_cholesky`` (D, D) shared by every batch element, event
    shape (D,). The log density of ``n`` rows is one (n, D) @ (D, D) matmul, where NumPyro's
    ``MultivariateNormal(precision_matrix=...)`` would invert the precision and run a triangular
    solve with ``n`` right-hand sides at every gradient.
    """

    arg_constraints = {"loc": constraints.real_vector, "precision_cholesky": constraints.lower_cholesky}
    support = constraints.real_vector
    reparametrized_params = ["loc", "precision_cholesky"]

    def __init__(self, loc, precision_cholesky, *, validate_args=None):
        loc = jnp.asarray(loc)
        self.precision_cholesky = jnp.asarray(precision_cholesky)
        (self.loc,) = promote_shapes(loc, shape=loc.shape)
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        return unwhiten(jax.random.normal(key, shape, self.loc.dtype), self.loc, self.precision_cholesky)

    def log_prob(self, value):
        D = self.event_shape[0]
        whitened = (value - self.loc) @ self.precision_cholesky
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.precision_cholesky)))
        return log_det - 0.5 * D * np.log(2 * np.pi) - 0.5 * jnp.sum(whitened * whitened, axis=-1)

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape + self.event_shape)
