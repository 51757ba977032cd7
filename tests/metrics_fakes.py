"""Tiny stand-in models for the metrics tests (no engine needed)."""

import numpy as np


class FixedScores:
    """A 'model' whose score for (user, item) is a fixed matrix entry."""

    def __init__(self, scores, rating_scale=None):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.n_users_, self.n_items_ = self.scores.shape
        self.rating_scale_ = rating_scale
        self.calls = []  # batch sizes seen by score_users

    def score_users(self, user_indices, items=None):
        users = np.asarray(user_indices)
        self.calls.append(users.size)
        rows = self.scores[users]
        return rows if items is None else rows[:, np.asarray(items)]

    def predict(self, users, items, clip=True):
        pred = self.scores[np.asarray(users), np.asarray(items)].astype(np.float64)
        return np.clip(pred, *self.rating_scale_) if clip and self.rating_scale_ else pred


class PosteriorScores(FixedScores):
    """Fixed scores plus an upper quantile and per-user Thompson noise, to exercise ``how``."""

    def score_users(self, user_indices, items=None, how="mean", q=0.9, seed=0):
        base = super().score_users(user_indices, items)
        if how == "mean":
            return base
        if how == "quantile":
            return base + q  # a constant shift: the ranking must not change
        users = np.asarray(user_indices)
        # per-user noise keyed on (seed, user): independent of batching
        noise = np.stack([np.random.default_rng([seed, int(u)]).normal(size=base.shape[1]) for u in users])
        return base + noise.astype(np.float32)
