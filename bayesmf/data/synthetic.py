"""Synthetic ratings drawn from the BPMF generative model, with the truth kept.

Generative model (Salakhutdinov & Mnih 2008), for rank ``D``:

    Lambda_U ~ Wishart(nu0, W0),   mu_U ~ N(0, (beta0 Lambda_U)^-1),   u_i ~ N(mu_U, Lambda_U^-1)
    (the same for items)
    r_ij = global_mean + u_i . v_j + eps,   eps ~ N(0, noise^2)

with ``nu0 = D + 10``, ``beta0 = 2`` and ``W0 = I sqrt(D) / (nu0 - D - 1)``, so that the factor
covariance has mean ``E[Lambda^-1] = I / sqrt(D)`` and the signal ``u_i . v_j`` has variance
about 1 whatever the rank (with the authors' ``W0 = I, nu0 = D`` the covariance is heavy-tailed
and its scale changes with D, so the signal-to-noise ratio would depend on the rank).

Which pairs are observed follows power laws, as in real catalogues: user ``i`` is drawn with
probability proportional to ``(rank_i)^-user_exponent`` and item ``j`` to
``(rank_j)^-item_exponent`` over random rank orders; duplicate pairs are redrawn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError


class SyntheticData(NamedTuple):
    """Ratings plus the true parameters that generated them."""

    ratings: Ratings
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)
    global_mean: float
    noise: float

    def true_mean(self, users, items) -> np.ndarray:
        """Noise-free ``global_mean + u_i . v_j`` for index arrays ``users``, ``items``."""
        u = self.user_factors[np.asarray(users)]
        v = self.item_factors[np.asarray(items)]
        return self.global_mean + np.einsum("nd,nd->n", u, v)


def _draw_factors(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    from scipy.stats import wishart

    nu0, beta0 = rank + 10, 2.0
    scale = np.eye(rank) * np.sqrt(rank) / (nu0 - rank - 1)
    precision = np.atleast_2d(wishart(df=nu0, scale=scale).rvs(random_state=rng))
    cov = np.linalg.inv(precision)
    mean = rng.multivariate_normal(np.zeros(rank), cov / beta0)
    return rng.multivariate_normal(mean, cov, size=n)


def _power_law_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    rng.shuffle(w)  # popularity is not tied to the index
    return w / w.sum()


def synthetic(
    n_users: int = 500,
    n_items: int = 300,
    n_ratings: int = 20_000,
    rank: int = 5,
    noise: float = 0.5,
    seed: int = 0,
    *,
    global_mean: float = 3.5,
    user_exponent: float = 0.5,
    item_exponent: float = 0.8,
) -> SyntheticData:
    """Draw a synthetic data set from the BPMF generative model (see the module docstring).

    Values are continuous (no rounding, no scale); ``n_ratings`` distinct pairs are observed.
    Deterministic given ``seed``.
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings), ("rank", rank)):
        if int(value) <= 0:
            raise DataError(f"{name} must be positive, got {value}")
    if n_ratings > 0.5 * n_users * n_items:
        raise DataError(
            f"n_ratings={n_ratings} exceeds half of the {n_users}x{n_items} matrix; "
            "power-law sampling of distinct pairs needs a sparse matrix"
        )
    if noise < 0:
        raise DataError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    user_factors = _draw_factors(rng, n_users, rank)
    item_factors = _draw_factors(rng, n_items, rank)
    pu = _power_law_weights(rng, n_users, user_exponent)
    pi = _power_law_weights(rng, n_items, item_exponent)

    keys = np.empty(0, dtype=np.int64)
    for _ in range(100):  # rounds of redrawing duplicates, not a loop over ratings
        need = n_ratings - keys.size
        if need == 0:
            break
        draw = max(2 * need, 1024)
        new = rng.choice(n_users, draw, p=pu).astype(np.int64) * n_items + rng.choice(n_items, draw, p=pi)
        merged = np.concatenate([keys, new])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)][:n_ratings]
    else:
        raise DataError("could not draw enough distinct pairs; lower n_ratings or the exponents")
    users = (keys // n_items).astype(np.int32)
    items = (keys % n_items).astype(np.int32)
    truth = global_mean + np.einsum("nd,nd->n", user_factors[users], item_factors[items])
    values = truth + noise * rng.standard_normal(n_ratings)
    ratings = Ratings.from_arrays(users, items, values, n_users=n_users, n_items=n_items)
    return SyntheticData(ratings, user_factors, item_factors, float(global_mean), float(noise))
