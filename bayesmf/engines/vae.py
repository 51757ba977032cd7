r"""Variational and denoising autoencoders with a multinomial likelihood for implicit feedback
(Liang, Krishnan, Hoffman & Jebara, "Variational Autoencoders for Collaborative Filtering",
WWW 2018): Mult-VAE and Mult-DAE, as pure functions.

A user is the binary row :math:`x_u \in \{0, 1\}^I` of their interactions. With ``hidden =
[d_1, ..., d_L]`` (default [600, 200], ``d_L`` the latent size) the encoder is

.. math:: h_0 = \mathrm{dropout}(x_u / \|x_u\|_2), \quad h_{l} = \tanh(W^e_{l-1}{}^\top h_{l-1} + b^e_{l-1}),

with the last layer linear: Mult-DAE's output is the code :math:`z_u` (size ``d_L``), Mult-VAE's
is :math:`[\mu_u; \log\sigma_u^2]` (size ``2 d_L``) and :math:`z_u = \mu_u + \sigma_u \odot
\epsilon`, :math:`\epsilon \sim N(0, I)` in training, :math:`z_u = \mu_u` when scoring. The
decoder mirrors it (``tanh`` hidden layers, linear output) and gives logits :math:`f(z_u) \in
\mathbb{R}^I`, :math:`\pi(z_u) = \mathrm{softmax}(f(z_u))`. Per user the loss is

.. math:: \ell_u = -\sum_i x_{ui} \log \pi_i(z_u)
          + \beta \, \tfrac12 \sum_k (\mu_{uk}^2 + \sigma_{uk}^2 - \log \sigma_{uk}^2 - 1),

the negative multinomial log-likelihood plus (Mult-VAE only) the KL divergence from
:math:`N(\mu_u, \mathrm{diag}\,\sigma_u^2)` to :math:`N(0, I)` weighted by the annealed
:math:`\beta = \min(\beta_{cap}, t / T)` after ``t`` updates (the paper: :math:`\beta_{cap} = 0.2`,
:math:`T = 200\,000`). Dropout (rate 0.5) acts on the normalised input, with inverted scaling.

Parameters are a flat dict: ``enc_w{l}`` (d_l, d_{l+1}), ``enc_b{l}``, ``dec_w{l}``, ``dec_b{l}``
with ``d_0 = I``; Xavier-uniform weights and ``N(0, 0.001^2)`` biases as the paper's code.

References
----------
Liang et al. 2018, sections 2.1-2.3 (model, annealing) and 4.3 (architecture and settings).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def dims(n_items: int, hidden, variational: bool) -> tuple[list[int], list[int]]:
    """Encoder and decoder widths: ``([I, d_1, ..., c d_L], [d_L, ..., d_1, I])``, ``c = 2`` for the VAE."""
    hidden = list(hidden)
    encoder = [n_items, *hidden[:-1], hidden[-1] * (2 if variational else 1)]
    decoder = [*hidden[::-1], n_items]
    return encoder, decoder


def param_keys(n_hidden: int) -> tuple[str, ...]:
    """Names of the parameter arrays for ``n_hidden`` entries in ``hidden``."""
    return tuple(f"{side}_{p}{j}" for side in ("enc", "dec") for j in range(n_hidden) for p in ("w", "b"))


def init_params(seed, n_items: int, hidden, variational: bool) -> dict:
    """Initial parameters (NumPy arrays); ``seed``: anything ``numpy.random.default_rng`` accepts."""
    rng = np.random.default_rng(seed)
    params = {}
    for side, widths in zip(("enc", "dec"), dims(n_items, hidden, variational), strict=True):
        for j, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            limit = np.sqrt(6.0 / (d_in + d_out))
            params[f"{side}_w{j}"] = rng.uniform(-limit, limit, (d_in, d_out)).astype(np.float32)
            params[f"{side}_b{j}"] = (0.001 * rng.standard_normal(d_out)).astype(np.float32)
    return params


def _tower(params, side: str, h):
    n = sum(1 for name in params if name.startswith(f"{side}_w"))
    for j in range(n):
        h = h @ params[f"{side}_w{j}"] + params[f"{side}_b{j}"]
        if j < n - 1:
            h = jnp.tanh(h)
    return h


def encode(params, x, key=None, dropout: float = 0.0):
    """Encoder output for rows ``x`` (B, I): the code (DAE) or ``[mu; log sigma^2]`` (VAE),
    (B, d_L or 2 d_L). With ``key`` and ``dropout > 0`` the input units are dropped."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    h = x / jnp.maximum(norm, 1e-12)
    if key is not None and dropout > 0:
        keep = jax.random.bernoulli(key, 1.0 - dropout, h.shape)
        h = jnp.where(keep, h / (1.0 - dropout), 0.0)
    return _tower(params, "enc", h)


def decode(params, z):
    """Logits :math:`f(z)` (B, I) of codes ``z`` (B, d_L)."""
    return _tower(params, "dec", z)


def kl_normal(mu, logvar):
    r""":math:`\tfrac12 \sum_k (\mu_k^2 + e^{v_k} - v_k - 1)` per row: KL of N(mu, diag e^v) from N(0, I)."""
    return 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def multinomial_nll(logits, x):
    r""":math:`-\sum_i x_i \log \mathrm{softmax}(f)_i` per row."""
    return -jnp.sum(x * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def beta(step, anneal_cap: float, anneal_steps: int):
    r"""The KL weight :math:`\min(\beta_{cap}, t / T)` after ``step`` updates (``T = 0``: the cap)."""
    if anneal_steps <= 0:
        return jnp.asarray(anneal_cap, jnp.float32)
    return jnp.minimum(anneal_cap, step.astype(jnp.float32) / anneal_steps)


def code(params, x, variational: bool):
    r"""The deterministic code used for scoring: :math:`\mu_u` (VAE) or :math:`z_u` (DAE)."""
    out = encode(params, x)
    return out[:, : out.shape[1] // 2] if variational else out


def loss(params, batch, key, step, *, variational: bool, dropout: float, anneal_cap: float, anneal_steps: int):
    r"""Per-user training loss :math:`\ell_u` of ``batch = (x,)``, ``x`` (B, I) (any numeric dtype)."""
    (x,) = batch
    x = x.astype(jnp.float32)
    drop_key, eps_key = jax.random.split(key)
    out = encode(params, x, drop_key, dropout)
    if not variational:
        return multinomial_nll(decode(params, out), x)
    mu, logvar = jnp.split(out, 2, axis=-1)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(eps_key, mu.shape)
    return multinomial_nll(decode(params, z), x) + beta(step, anneal_cap, anneal_steps) * kl_normal(mu, logvar)


def heldout_nll(params, x_in, x_out, variational: bool):
    r"""Per-user :math:`-\sum_i x^{out}_i \log \pi_i(z)` with the code of ``x_in`` (no noise):
    the validation loss (held-out items of users encoded from their other items)."""
    return multinomial_nll(decode(params, code(params, x_in, variational)), x_out)


def heldout_ndcg(params, x_in, x_out, k: int, variational: bool):
    r"""Per-user NDCG@k of the held-out items ``x_out`` (B, I) ranked by the logits of the code of
    ``x_in`` (B, I, no noise), the items of ``x_in`` never ranked (Liang et al. 2018, section 4.2):

    .. math:: \mathrm{NDCG@}k(u) = \frac{\sum_{r=1}^{k} x^{out}_{u, i_r} / \log_2(r + 1)}
              {\sum_{r=1}^{\min(k, |x^{out}_u|)} 1 / \log_2(r + 1)},

    :math:`i_r` the item at rank :math:`r`; 0 for a row without held-out items. ``k`` is clipped to
    the catalogue size. This is the per-epoch model selection of the paper (validation users'
    NDCG@100); shape (B,)."""
    k = min(int(k), x_in.shape[1])
    logits = decode(params, code(params, x_in, variational))
    logits = jnp.where(x_in > 0, -jnp.inf, logits)
    _, top = jax.lax.top_k(logits, k)
    discount = 1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=jnp.float32))
    dcg = jnp.sum((jnp.take_along_axis(x_out, top, axis=1) > 0) * discount, axis=1)
    n_rel = jnp.minimum(jnp.sum(x_out > 0, axis=1), k)
    idcg = jnp.cumsum(discount)[jnp.maximum(n_rel - 1, 0)]
    return jnp.where(n_rel > 0, dcg / idcg, 0.0)
