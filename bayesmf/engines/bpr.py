r"""Bayesian personalized ranking for matrix factorization (Rendle, Freudenthaler, Gantner &
Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009).

Scores :math:`x_{ui} = c_i + p_u^\top q_i` (the item bias ``c`` optional). Parameters: a dict
with ``user`` (n_users, k), ``item`` (n_items, k) and ``bias`` (n_items,) (absent without biases).
For a triple ``(u, i, j)`` of a user, one of their positives and a sampled negative, the loss is
the negative log-posterior term of BPR-Opt,

.. math:: \ell_{uij} = -\log \sigma(x_{ui} - x_{uj})
          + \lambda (\|p_u\|^2 + \|q_i\|^2 + \|q_j\|^2 + c_i^2 + c_j^2),

i.e. the L2 (Gaussian prior) penalty on the parameters each triple touches, as in the paper's
LearnBPR updates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def init_params(seed, n_users: int, n_items: int, rank: int, init_std: float, biases: bool) -> dict:
    """``N(0, init_std^2)`` factors and zero item biases, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    params = {"user": (init_std * rng.standard_normal((n_users, rank))).astype(np.float32),
              "item": (init_std * rng.standard_normal((n_items, rank))).astype(np.float32)}
    if biases:
        params["bias"] = np.zeros(n_items, np.float32)
    return params


def bpr_loss(params, batch, key=None, step=None, regularization: float = 0.0):
    r"""Per-triple loss :math:`\ell_{uij}` of ``batch = (users, positives, negatives)``, each (B,)."""
    users, pos, neg = batch
    p, qi, qj = params["user"][users], params["item"][pos], params["item"][neg]
    diff = jnp.sum(p * (qi - qj), axis=-1)
    penalty = jnp.sum(p * p, -1) + jnp.sum(qi * qi, -1) + jnp.sum(qj * qj, -1)
    if "bias" in params:
        ci, cj = params["bias"][pos], params["bias"][neg]
        diff = diff + ci - cj
        penalty = penalty + ci * ci + cj * cj
    return -jax.nn.log_sigmoid(diff) + regularization * penalty
