"""Sampled protocol and the Krichene-Rendle corrected estimators."""

import numpy as np
import pytest
from metrics_fakes import FixedScores
from scipy.stats import hypergeom

from bayesmf.data import Ratings
from bayesmf.errors import DataError
from bayesmf.metrics import SAMPLED_WARNING, evaluate_ranking, full_rank_metric, kr_correction, sampled_metrics


def test_kr_correction_hand_example():
    # n = 3 items, m = 1 negative: P(r = 1 | R) = 1, 1/2, 0 for R = 1, 2, 3
    # A = [[1, 0], [.5, .5], [0, 1]], f = HR@1 = [1, 0, 0]
    # least squares: A^T A = [[1.25, .25], [.25, 1.25]], A^T f = [1, 0] -> f~ = [5/6, -1/6]
    np.testing.assert_allclose(kr_correction([1.0, 0.0, 0.0], 1, gamma=0.0), [5 / 6, -1 / 6])
    # gamma = 1 keeps only the variance term: diag(A^T 1) f~ = A^T f -> f~ = [1/1.5, 0]
    np.testing.assert_allclose(kr_correction([1.0, 0.0, 0.0], 1, gamma=1.0), [2 / 3, 0.0])


def test_kr_correction_is_exact_for_auc():
    # E[r - 1 | R] = m (R - 1)/(n - 1) is linear in R, so AUC(R) = (n - R)/(n - 1) is matched
    # exactly by f~(r) = 1 - (r - 1)/m, the sampled AUC
    n, m = 200, 20
    f = kr_correction(full_rank_metric("auc", n), m, gamma=0.0)
    np.testing.assert_allclose(f, 1 - np.arange(m + 1) / m, atol=1e-9)


def test_kr_correction_recovers_full_metric_in_simulation():
    # full ranks R of 20,000 positives in a catalogue of n = 500; sample m = 49 negatives each
    rng = np.random.default_rng(0)
    n, m, k = 500, 49, 10
    full_rank = np.minimum(rng.geometric(0.02, size=20_000), n)
    sampled_rank = 1 + hypergeom.rvs(n - 1, full_rank - 1, m, random_state=rng)
    truth = full_rank_metric("ndcg", n, k)[full_rank - 1].mean()
    naive = sampled_metrics(sampled_rank, m, (k,))[f"ndcg@{k}"]
    corrected = kr_correction(full_rank_metric("ndcg", n, k), m, gamma=0.01)[sampled_rank - 1].mean()
    # the sampled metric is far off (0.5 vs 0.07); the corrected one is within 0.03 of the truth
    assert abs(naive - truth) > 0.3
    assert abs(corrected - truth) < 0.03
    hr_truth = (full_rank <= k).mean()
    hr_corrected = kr_correction(full_rank_metric("hr", n, k), m, gamma=0.01)[sampled_rank - 1].mean()
    assert abs(hr_corrected - hr_truth) < 0.03


def test_sampled_metrics_hand():
    # ranks 1, 3, 100 among 1 + 99: hr@2 = 1/3, ndcg@5 = (1 + 1/2)/3, mrr = (1 + 1/3 + 1/100)/3
    m = sampled_metrics([1, 3, 100], 99, ks=(2, 5))
    assert m["hr@2"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0.01) / 3)
    with pytest.raises(DataError, match="1..100"):
        sampled_metrics([0, 2], 99)


def test_sampled_protocol_report():
    rng = np.random.default_rng(0)
    n_users, n_items = 20, 60
    keys = rng.choice(n_users * n_items, size=400, replace=False)
    r = Ratings.from_arrays(keys // n_items, keys % n_items, np.ones(400), n_users=n_users, n_items=n_items)
    train, test = r.subset(np.arange(350)), r.subset(np.arange(350, 400))
    # test positives score 1, everything else 0 -> every positive ranks first among its candidates
    scores = np.zeros((n_users, n_items))
    scores[test.users, test.items] = 1.0
    report = evaluate_ranking(FixedScores(scores), train, test, ks=(1, 5), protocol="sampled", n_negatives=10)
    assert report["hr@1"] == report["ndcg@5"] == report["mrr"] == report["auc"] == 1.0
    assert report["warning"] == SAMPLED_WARNING and "reorder models" in report["warning"]
    assert report["n_positives"] == 50 and report["n_negatives"] == 10
    # pool = items minus the user's train and test items, plus the positive
    assert report["kr_n"] == round(np.mean(n_items - train.user_counts[test.users] - test.user_counts[test.users] + 1))
    # constant scores: pessimistic ties put every positive last
    flat = evaluate_ranking(FixedScores(np.zeros((n_users, n_items))), train, test, protocol="sampled", n_negatives=10)
    assert flat["hr@10"] == 0.0 and flat["mrr"] == pytest.approx(1 / 11) and flat["auc"] == 0.5
    # batching over users does not change anything
    batched = evaluate_ranking(FixedScores(scores), train, test, ks=(1, 5), protocol="sampled", n_negatives=10,
                               memory_budget=2 * n_items * 20)
    assert batched == report


def test_sampled_and_full_can_disagree_in_order():
    """The documented pitfall: a model that is better at the very top can lose on sampled HR@10."""
    n, m, k = 1000, 99, 10
    ranks_a = np.array([1] * 30 + [400] * 70)  # 30% perfect, the rest deep down
    ranks_b = np.array([50] * 100)  # never in the full top-10, always near the top of a sample
    full_a, full_b = (ranks_a <= k).mean(), (ranks_b <= k).mean()
    rng = np.random.default_rng(1)

    def sampled(ranks):
        return (1 + hypergeom.rvs(n - 1, ranks - 1, m, random_state=rng) <= k).mean()

    assert full_a > full_b  # A wins on the full catalogue
    assert sampled(np.repeat(ranks_b, 50)) > sampled(np.repeat(ranks_a, 50))  # B wins when sampled
