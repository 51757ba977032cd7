r"""Neural collaborative filtering (He, Liao, Zhang, Nie, Hu & Chua, "Neural Collaborative
Filtering", WWW 2017): GMF, MLP and NeuMF scores and the pointwise log loss, as pure functions.

Parameters are a flat dict of ``jnp`` arrays (no layer library):

* GMF: ``gmf_user`` (n_users, k), ``gmf_item`` (n_items, k); its feature vector is
  :math:`\phi^{GMF}_{ui} = p_u \odot q_i` (k,).
* MLP with ``layers = [d_0, d_1, ..., d_L]``: ``mlp_user`` (n_users, d_0/2), ``mlp_item``
  (n_items, d_0/2) and dense layers ``mlp_w{l}`` (d_l, d_{l+1}), ``mlp_b{l}`` (d_{l+1},);
  :math:`\phi^{MLP}_{ui} = a_L`, with :math:`a_0 = [p^M_u; q^M_i]` and
  :math:`a_{l+1} = \mathrm{ReLU}(W_l^\top a_l + b_l)`.
* The output layer ``out_w`` (d,), ``out_b`` () on the concatenated features of the model's
  parts (GMF: ``phi_GMF``; MLP: ``phi_MLP``; NeuMF: ``[phi_GMF; phi_MLP]``), giving the logit
  :math:`z_{ui} = h^\top \phi_{ui} + b` and the prediction :math:`\hat y_{ui} = \sigma(z_{ui})`.

The loss of a labelled pair ``(u, i, y)`` (``y = 1`` for an observed interaction, 0 for a sampled
negative) is the log loss :math:`-y \log \hat y_{ui} - (1 - y) \log(1 - \hat y_{ui})`, computed
from the logit as :math:`\mathrm{softplus}(z) - y z`.

References
----------
He et al. 2017, sections 3.1-3.4 (the general framework, GMF, MLP, NeuMF and its pre-training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("GMF", "MLP", "NeuMF")


def parts(kind: str) -> tuple[bool, bool]:
    """``(has_gmf, has_mlp)`` of a model kind."""
    return kind in ("GMF", "NeuMF"), kind in ("MLP", "NeuMF")


def param_keys(kind: str, n_layers: int) -> tuple[str, ...]:
    """Names of the parameter arrays of ``kind`` with ``n_layers`` entries in ``layers``."""
    gmf, mlp = parts(kind)
    keys = ("gmf_user", "gmf_item") if gmf else ()
    if mlp:
        keys += ("mlp_user", "mlp_item") + tuple(f"mlp_{p}{j}" for j in range(n_layers - 1) for p in ("w", "b"))
    return keys + ("out_w", "out_b")


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int, shape) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def init_params(seed, kind: str, n_users: int, n_items: int, factors: int, layers, init_std: float = 0.01) -> dict:
    """Initial parameters as the paper's code: embeddings ``N(0, init_std^2)``, dense layers Glorot
    uniform with zero biases, output layer LeCun uniform (``U(+-sqrt(3/d))``) with a zero bias.
    ``seed``: anything ``numpy.random.default_rng`` accepts. Returns a dict of NumPy arrays."""
    rng = np.random.default_rng(seed)
    gmf, mlp = parts(kind)
    params, width = {}, 0
    if gmf:
        params["gmf_user"] = (init_std * rng.standard_normal((n_users, factors))).astype(np.float32)
        params["gmf_item"] = (init_std * rng.standard_normal((n_items, factors))).astype(np.float32)
        width += factors
    if mlp:
        half = layers[0] // 2
        params["mlp_user"] = (init_std * rng.standard_normal((n_users, half))).astype(np.float32)
        params["mlp_item"] = (init_std * rng.standard_normal((n_items, half))).astype(np.float32)
        for j, (d_in, d_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
            params[f"mlp_w{j}"] = _glorot(rng, d_in, d_out, (d_in, d_out))
            params[f"mlp_b{j}"] = np.zeros(d_out, np.float32)
        width += layers[-1]
    limit = np.sqrt(3.0 / width)
    params["out_w"] = rng.uniform(-limit, limit, width).astype(np.float32)
    params["out_b"] = np.zeros((), np.float32)
    return params


def _mlp_tower(params, first, n_layers: int):
    """``a_L`` from the first layer's pre-activation ``first`` (..., d_1)."""
    a = jax.nn.relu(first)
    for j in range(1, n_layers - 1):
        a = jax.nn.relu(a @ params[f"mlp_w{j}"] + params[f"mlp_b{j}"])
    return a


def _n_layers(params) -> int:
    return sum(1 for name in params if name.startswith("mlp_w")) + 1


def pair_logits(params, users, items):
    """Logits :math:`z_{ui}` of index pairs ``users`` (B,), ``items`` (B,): shape (B,)."""
    features = []
    if "gmf_user" in params:
        features.append(params["gmf_user"][users] * params["gmf_item"][items])
    if "mlp_user" in params:
        a0 = jnp.concatenate([params["mlp_user"][users], params["mlp_item"][items]], axis=-1)
        features.append(_mlp_tower(params, a0 @ params["mlp_w0"] + params["mlp_b0"], _n_layers(params)))
    return jnp.concatenate(features, axis=-1) @ params["out_w"] + params["out_b"]


@jax.jit
def block_logits(params, users, items):
    """Logits of every pair of ``users`` (b,) x ``items`` (m,): shape (b, m).

    The MLP's first layer on ``[p_u; q_i]`` splits as ``W_0^T [p; q] = W_u^T p + W_i^T q``, so it
    is computed once per user and once per item and broadcast."""
    logits = jnp.full((users.shape[0], items.shape[0]), params["out_b"])
    offset = 0
    if "gmf_user" in params:
        k = params["gmf_user"].shape[1]
        weighted = params["gmf_user"][users] * params["out_w"][:k]
        logits = logits + jnp.matmul(weighted, params["gmf_item"][items].T, precision=jax.lax.Precision.HIGHEST)
        offset = k
    if "mlp_user" in params:
        half = params["mlp_user"].shape[1]
        w0 = params["mlp_w0"]
        user_part = params["mlp_user"][users] @ w0[:half] + params["mlp_b0"]
        item_part = params["mlp_item"][items] @ w0[half:]
        a = _mlp_tower(params, user_part[:, None, :] + item_part[None, :, :], _n_layers(params))
        logits = logits + a @ params["out_w"][offset:]
    return logits


def log_loss(params, batch, key=None, step=None):
    """Per-example log loss of ``batch = (users, items, labels)``, each (B,): ``softplus(z) - y z``."""
    users, items, labels = batch
    z = pair_logits(params, users, items)
    return jax.nn.softplus(z) - labels * z


def neumf_from_pretrained(gmf: dict, mlp: dict, alpha: float) -> dict:
    """NeuMF's initial parameters from trained GMF and MLP (He et al. 2017, section 3.4.1): their
    embeddings and hidden layers as they are, and the output layer
    :math:`h = [\alpha h^{GMF}; (1 - \alpha) h^{MLP}]`, :math:`b = \alpha b^{GMF} + (1 - \alpha) b^{MLP}`."""
    params = {name: value for name, value in {**gmf, **mlp}.items() if not name.startswith("out_")}
    params["out_w"] = np.concatenate([alpha * np.asarray(gmf["out_w"]), (1 - alpha) * np.asarray(mlp["out_w"])])
    params["out_b"] = np.asarray(alpha * np.asarray(gmf["out_b"]) + (1 - alpha) * np.asarray(mlp["out_b"]),
                                 np.float32)
    return {name: np.asarray(value, np.float32) for name, value in params.items()}
