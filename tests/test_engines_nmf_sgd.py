"""NMF (monotone objective, nonnegative factors), Funk SGD / SVD++ and the baselines."""

import jax.numpy as jnp
import numpy as np
import pytest
from engine_data import NOISE, RANK, nonnegative_split, rmse, signed_split

import bayesmf
from bayesmf.data import Ratings
from bayesmf.engines import nmf
from bayesmf.engines.als import FactorState
from bayesmf.engines.chunks import chunks_for
from bayesmf.engines.driver import DivergenceError
from bayesmf.engines.sparse import rating_arrays


@pytest.fixture(scope="module")
def signed():
    return signed_split()


@pytest.fixture(scope="module")
def nonneg():
    return nonnegative_split()


def _monotone(loss):
    loss = np.asarray(loss)
    return np.all(np.diff(loss) <= 1e-5 * np.abs(loss[:-1]))


@pytest.mark.parametrize("options", [{}, {"loss": "kl", "regularization": 0.01}, {"biases": True}])
def test_nmf_objective_never_increases_and_factors_stay_nonnegative(nonneg, options):
    _, train, test = nonneg
    model = bayesmf.NMF(rank=RANK, n_iter=150, seed=1, **{"regularization": 0.001, **options}).fit(train)
    assert _monotone(model.history_["loss"])
    assert (model.user_factors_ >= 0).all() and (model.item_factors_ >= 0).all()
    assert rmse(model, test) < 1.1 * NOISE


@pytest.mark.parametrize("options", [{}, {"loss": "kl"}, {"biases": True}])
def test_nmf_step_loss_equals_objective_from_ratings(nonneg, options):
    _, train, _ = nonneg
    model = bayesmf.NMF(rank=RANK, n_iter=3, regularization=0.01, **options).fit(train)
    counts = (jnp.asarray(train.user_counts, jnp.float32), jnp.asarray(train.item_counts, jnp.float32))
    layout = (chunks_for(train, side, width=4, chunk_slots=64) for side in ("user", "item"))  # many chunks
    data = nmf.NMFData(*layout, *counts, rating_arrays(train), jnp.asarray(model.global_mean_, jnp.float32))
    assert data.user_chunks.cols.shape[0] > 5
    config = nmf.NMFConfig(0.01, 0.02, options.get("biases", False), options.get("loss", "frobenius"))
    zeros = (np.zeros(train.n_users), np.zeros(train.n_items))
    state = FactorState(*(jnp.asarray(a, jnp.float32) for a in (
        model.user_factors_, model.item_factors_, *((model.user_bias_, model.item_bias_) if model.user_bias_ is not None
                                                     else zeros))))
    loss, train_rmse = nmf.objective(state, data, config)
    np.testing.assert_allclose(model.history_["loss"][-1], float(loss), rtol=1e-4)
    np.testing.assert_allclose(model.history_["rmse"][-1], float(train_rmse), rtol=1e-4)
    # one more sweep on the many-chunk layout: its loss (from the chunks) is the objective's, and lower
    state, info = nmf.build_kernel(data, config).step(None, state)
    new_loss, new_rmse = nmf.objective(state, data, config)
    np.testing.assert_allclose(float(info.loss), float(new_loss), rtol=1e-4)
    np.testing.assert_allclose(float(info.rmse), float(new_rmse), rtol=1e-4)
    assert float(new_loss) <= float(loss) * (1 + 1e-6)


def test_nmf_rejects_negative_ratings_without_biases(signed):
    _, train, _ = signed
    with pytest.raises(bayesmf.DataError, match="NMF"):
        bayesmf.NMF().fit(train.with_values(train.values - 10))
    with pytest.raises(bayesmf.ConfigError, match="kl"):
        bayesmf.NMF(loss="kl", biases=True).fit(train)


def test_funk_sgd_loss_decreases_and_recovers_low_rank_truth(signed):
    truth, train, test = signed
    model = bayesmf.FunkSVD(rank=RANK, n_epochs=40, learning_rate=0.02, regularization=0.01, seed=0).fit(train)
    loss = np.array(model.history_["loss"])
    assert loss[-1] < 0.3 * loss[0] and np.mean(np.diff(loss) < 0) > 0.8
    assert rmse(model, test) < 1.1 * NOISE
    # the fitted mean recovers the noise-free truth far better than the noise level
    fitted = model.predict(test.users, test.items, clip=False)
    assert np.sqrt(np.mean((fitted - truth.true_mean(test.users, test.items)) ** 2)) < 0.5 * NOISE


def test_svdpp_fits_and_uses_implicit_feedback(signed):
    _, train, test = signed
    model = bayesmf.SVDpp(rank=RANK, n_epochs=40, learning_rate=0.03, regularization=0.005).fit(train)
    assert rmse(model, test) < 1.1 * NOISE
    z = model.user_factors_ - model.own_user_factors_
    counts = np.maximum(train.user_counts, 1)[:, None]
    direct = np.zeros_like(z)
    np.add.at(direct, train.users, model.implicit_factors_[train.items])
    np.testing.assert_allclose(z, direct / np.sqrt(counts), atol=1e-5)


def test_diverging_learning_rate_raises_naming_it(signed):
    _, train, _ = signed
    with pytest.raises(DivergenceError, match="learning rate"):
        bayesmf.FunkSVD(rank=RANK, n_epochs=5, learning_rate=5.0).fit(train)
    with pytest.raises(bayesmf.ConfigError, match="user_factorz"):
        bayesmf.FunkSVD(learning_rates={"user_factorz": 0.1}).fit(train)
    with pytest.raises(bayesmf.ConfigError, match="learning_rate"):
        bayesmf.FunkSVD(learning_rate=-0.1).fit(train)


def test_baseline_matches_numpy_alternating_damped_means():
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(40 * 30, 500, replace=False), 30)
    values = 3 + rng.normal(0, 0.5, 40)[users] + rng.normal(0, 0.5, 30)[items] + 0.3 * rng.standard_normal(500)
    r = Ratings.from_arrays(users, items, values, n_users=41, n_items=30)  # user 40 has no ratings
    model = bayesmf.Baseline(n_iter=3, reg_user=5.0, reg_item=2.0).fit(r)
    mu, bu, bi = values.mean(), np.zeros(41), np.zeros(30)
    for _ in range(3):
        bi = np.bincount(items, values - mu - bu[users], 30) / (2.0 + np.bincount(items, minlength=30))
        bu = np.bincount(users, values - mu - bi[items], 41) / (5.0 + np.bincount(users, minlength=41))
    np.testing.assert_allclose(model.user_bias_, bu, atol=1e-5)
    np.testing.assert_allclose(model.item_bias_, bi, atol=1e-5)
    assert model.user_bias_[40] == 0
    assert _monotone(model.history_["loss"])
    held = model.predict(users, items, clip=False)
    assert np.sqrt(np.mean((held - values) ** 2)) < 1.1 * 0.3 + 0.1  # bias-only truth, shrunk a little


def test_popularity_scores_and_save_load_round_trip(signed, tmp_path):
    _, train, _ = signed
    pop = bayesmf.Popularity().fit(train)
    np.testing.assert_allclose(pop.score_users([0, 1])[0], train.item_counts / train.n_users, rtol=1e-6)
    model = bayesmf.SVDpp(rank=2, n_epochs=2).fit(train)
    loaded = bayesmf.load(model.save(tmp_path / "svdpp"))
    np.testing.assert_array_equal(loaded.predict(train.users, train.items), model.predict(train.users, train.items))
    np.testing.assert_array_equal(loaded.implicit_factors_, model.implicit_factors_)
