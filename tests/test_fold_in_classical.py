"""Fold-in of new users for the classical estimators, against closed forms computed with NumPy/SciPy
and against the training users' own fitted factors."""

import numpy as np
import pandas as pd
import pytest
from engine_data import RANK, nonnegative_split, signed_split
from scipy.optimize import lsq_linear

import bayesmf

ITEMS = np.array([3, 10, 11, 50, 77, 90, 120, 150])
VALUES = np.array([4.0, 1.5, 3.0, 5.0, 2.0, 3.5, 4.5, 2.5], np.float32)


@pytest.fixture(scope="module")
def signed():
    return signed_split()[1]


@pytest.fixture(scope="module")
def nonneg():
    return nonnegative_split()[1]


def _fold_in(model, items=ITEMS, values=VALUES, user=9999):
    model.fold_in(pd.DataFrame({"user": user, "item": items, "rating": values}))
    return int(model.user_map_.lookup([user])[0])


def _bounded_ridge(model, items, values, lam_f, lam_b, nonnegative, offset=0.0):
    """argmin |y - Z x|^2 + lam |x|^2 (x = [p, b]) with p >= 0 if asked, by SciPy's lsq_linear on the
    penalty-augmented system: an implementation independent of bayesmf's solvers."""
    q = model.item_factors_[items].astype(np.float64)
    y = values - model.global_mean_ - offset
    biased = model.user_bias_ is not None
    if biased:
        y = y - model.item_bias_[items]
        q = np.c_[q, np.ones(len(items))]
    lam = np.r_[np.full(RANK, lam_f), [lam_b] if biased else []]
    a = np.r_[q, np.diag(np.sqrt(lam))]
    b = np.r_[y, np.zeros(lam.size)]
    lower = np.r_[np.zeros(RANK) if nonnegative else np.full(RANK, -np.inf), [-np.inf] if biased else []]
    return lsq_linear(a, b, bounds=(lower, np.full(lam.size, np.inf)), tol=1e-12).x


@pytest.mark.parametrize("nonnegative", [False, True])
def test_als_fold_in_is_the_weighted_lambda_user_step(signed, nonnegative):
    model = bayesmf.ALS(rank=RANK, regularization=0.05, bias_regularization=0.02, n_iter=15,
                        nonnegative=nonnegative).fit(signed)
    new = _fold_in(model)
    n = ITEMS.size  # weighted lambda: the penalties scale with the user's number of ratings
    want = _bounded_ridge(model, ITEMS, VALUES, 0.05 * n, 0.02 * n, nonnegative)
    np.testing.assert_allclose(model.user_factors_[new], want[:RANK], atol=2e-4)
    np.testing.assert_allclose(model.user_bias_[new], want[RANK], atol=2e-4)
    # A training user folded in again lands near its own fitted factors: the fit's last user step
    # saw the previous sweep's item factors (and, nonnegative, 20 warm-started passes), not the final.
    frame = signed.to_pandas()
    model.fold_in(frame[frame["user"] == 7].assign(user=777_777))
    idx = model.user_map_.lookup([777_777])[0]
    np.testing.assert_allclose(model.user_factors_[idx], model.user_factors_[7], rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(model.user_bias_[idx], model.user_bias_[7], rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("biases", [False, True])
def test_nmf_fold_in_is_the_nonnegative_minimiser_of_its_objective(nonneg, biases):
    model = bayesmf.NMF(rank=RANK, regularization=0.02, bias_regularization=0.5, biases=biases, n_iter=5).fit(nonneg)
    new = _fold_in(model)
    n = ITEMS.size  # 2F: factor penalty reg * n, bias penalty bias_reg (unweighted)
    want = _bounded_ridge(model, ITEMS, VALUES, 0.02 * n, 0.5, nonnegative=True)
    np.testing.assert_allclose(model.user_factors_[new], want[:RANK], atol=2e-4)
    assert (model.user_factors_[new] >= 0).all()
    if biases:
        np.testing.assert_allclose(model.user_bias_[new], want[RANK], atol=2e-4)
    with pytest.raises(bayesmf.ConfigError, match="frobenius"):
        bayesmf.NMF(rank=RANK, loss="kl", n_iter=2).fit(nonneg).fold_in(
            pd.DataFrame({"user": [1], "item": [0], "rating": [1.0]}).assign(user=-5))


def test_implicit_als_fold_in_is_the_confidence_weighted_solve(signed):
    train = signed.with_values(np.abs(signed.values))
    model = bayesmf.ImplicitALS(rank=RANK, regularization=0.1, alpha=2.0, n_iter=5).fit(train)
    new = _fold_in(model)
    y = model.item_factors_.astype(np.float64)
    conf = 1 + 2.0 * VALUES
    a = y.T @ y + 0.1 * np.eye(RANK) + (y[ITEMS] * (conf - 1)[:, None]).T @ y[ITEMS]
    want = np.linalg.solve(a, (y[ITEMS] * conf[:, None]).sum(0))
    np.testing.assert_allclose(model.user_factors_[new], want, rtol=1e-4, atol=1e-5)


def test_funk_svd_fold_in_uses_the_per_rating_penalty(signed):
    model = bayesmf.FunkSVD(rank=RANK, n_epochs=5, learning_rate=0.01, regularization=0.03,
                            regularizations={"user_bias": 0.01}).fit(signed)
    new = _fold_in(model)
    want = _bounded_ridge(model, ITEMS, VALUES, 0.03 * ITEMS.size, 0.01 * ITEMS.size, nonnegative=False)
    np.testing.assert_allclose(model.user_factors_[new], want[:RANK], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_bias_[new], want[RANK], rtol=1e-4, atol=1e-5)


def test_svdpp_fold_in_includes_the_implicit_term(signed):
    model = bayesmf.SVDpp(rank=RANK, n_epochs=5, learning_rate=0.01, regularization=0.03).fit(signed)
    new = _fold_in(model)
    z = model.implicit_factors_[ITEMS].sum(0) / np.sqrt(ITEMS.size)
    offset = model.item_factors_[ITEMS] @ z
    want = _bounded_ridge(model, ITEMS, VALUES, 0.03 * ITEMS.size, 0.03 * ITEMS.size, False, offset=offset)
    np.testing.assert_allclose(model.own_user_factors_[new], want[:RANK], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_factors_[new], want[:RANK] + z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_bias_[new], want[RANK], rtol=1e-4, atol=1e-5)
    assert model.own_user_factors_.shape == model.user_factors_.shape  # every per-user array extended
