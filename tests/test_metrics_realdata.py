"""Ranking protocols on real MovieLens-100K: the sampled protocol inflates, the correction recovers."""

import numpy as np
import pytest

import bayesmf
from bayesmf.metrics import evaluate_ranking


class NoisyPopularity:
    """Scores = training popularity + a small fixed jitter (no ties): a deterministic baseline."""

    def __init__(self, train):
        jitter = np.random.default_rng(0).random(train.n_items)
        self.scores = (train.item_counts + 0.1 * jitter).astype(np.float32)
        self.n_items_ = train.n_items

    def score_users(self, users, items=None):
        return np.broadcast_to(self.scores, (len(users), self.n_items_)).copy()


@pytest.mark.realdata
def test_sampled_protocol_inflates_and_correction_recovers(data_dir):
    split = bayesmf.splits.leave_one_out(bayesmf.datasets.load("movielens-100k", data_dir), seed=0)
    model = NoisyPopularity(split.train)
    full = evaluate_ranking(model, split.train, split.test, ks=(10,))
    sampled = evaluate_ranking(model, split.train, split.test, ks=(10,), protocol="sampled", n_negatives=99)
    assert full["n_users"] == sampled["n_positives"] == 943  # leave-one-out: one positive per user
    # measured: full HR@10 0.075, sampled 0.410, corrected 0.071 (NDCG@10: 0.039, 0.221, 0.035)
    assert sampled["hr@10"] > 4 * full["hr@10"]
    for metric in ("hr@10", "ndcg@10", "mrr"):
        assert abs(sampled[f"{metric}_corrected"] - full[metric]) < 0.01, metric
