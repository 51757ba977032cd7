r"""EASE's closed form (Steck 2019): the item-item weights from the Gram matrix, one jitted call.

Used by :class:`bayesmf.models.ease.EASE`; not iterative, so no ``init``/``step``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ease_weights"]


@jax.jit
def ease_weights(gram, regularization):
    r"""The EASE weights ``B`` (m, m) from the Gram matrix ``G = X^T X`` (m, m).

    Parameters
    ----------
    gram : array (m, m)
        :math:`X^\top X`, symmetric positive semi-definite.
    regularization : float
        :math:`\lambda > 0`; :math:`G + \lambda I` is then positive definite.

    Returns
    -------
    array (m, m)
        :math:`B = I - P \operatorname{diag}(1/\operatorname{diag}(P))`,
        :math:`P = (G + \lambda I)^{-1}` (by Cholesky), with an exactly zero diagonal.

    References
    ----------
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019, eq. (8).
    """
    m = gram.shape[0]
    eye = jnp.eye(m, dtype=gram.dtype)
    factor = jax.scipy.linalg.cho_factor(gram + regularization * eye, lower=True)
    precision = jax.scipy.linalg.cho_solve(factor, eye)
    weights = -precision / jnp.diag(precision)[None, :]
    return jnp.where(eye > 0, 0.0, weights)
