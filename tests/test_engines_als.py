"""Explicit, nonnegative and implicit ALS: row solves against NumPy, CG against Cholesky, fits."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_data import NOISE, RANK, nonnegative_split, rmse, signed_split

import bayesmf
from bayesmf.data import Ratings
from bayesmf.engines import als, implicit_als
from bayesmf.engines.chunks import chunks_for, gram_chunks_for
from bayesmf.engines.sparse import rating_arrays
from bayesmf.errors import CholeskyRetryWarning


@pytest.fixture(scope="module")
def signed():
    return signed_split()


def _tiny():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 5)
    items = np.concatenate([rng.choice(8, 5, replace=False) for _ in range(6)])
    return Ratings.from_arrays(users, items, rng.normal(3, 1, users.size), n_users=7, n_items=8)  # user 6 empty


@pytest.mark.parametrize("budget", [als.SYSTEMS_BUDGET, 0], ids=["batched", "per-chunk"])
@pytest.mark.parametrize("biases", [False, True])
def test_user_half_step_equals_numpy_closed_form(biases, budget):
    r = _tiny()
    rng = np.random.default_rng(1)
    Q, c = rng.normal(size=(8, 2)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    reg, mu = 0.3, 3.0
    config = als.ALSConfig(reg, reg, biases, systems_budget=budget)
    update_side = jax.jit(als.update_side, static_argnames="config")
    chunks = chunks_for(r, "user", width=2, chunk_slots=8)  # several chunks
    p, b, _, sse = update_side(chunks, jnp.asarray(r.user_counts, jnp.float32), jnp.zeros((7, 2)),
                               jnp.asarray(Q), jnp.asarray(c), mu, config)
    fitted = mu + np.sum(np.asarray(p)[r.users] * Q[r.items], axis=1)
    if biases:
        fitted += np.asarray(b)[r.users] + c[r.items]
    np.testing.assert_allclose(float(sse), np.sum((r.values - fitted) ** 2), rtol=1e-4)
    for u in range(6):
        m = r.users == u
        Z = np.hstack([Q[r.items[m]], np.ones((m.sum(), 1))]) if biases else Q[r.items[m]]
        y = r.values[m] - mu - (c[r.items[m]] if biases else 0)
        # ridge with penalty reg * n_u on every coordinate, as stacked least squares
        A = np.vstack([Z, np.sqrt(reg * m.sum()) * np.eye(Z.shape[1])])
        x = np.linalg.lstsq(A, np.concatenate([y, np.zeros(Z.shape[1])]), rcond=None)[0]
        np.testing.assert_allclose(p[u], x[:2], rtol=1e-4, atol=1e-5)
        if biases:
            np.testing.assert_allclose(b[u], x[2], rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(p[6]) == 0) and float(b[6]) == 0  # no ratings: the regularised solution


@pytest.mark.parametrize("budget", [als.SYSTEMS_BUDGET, 0], ids=["batched", "per-chunk"])
def test_nonnegative_half_step_satisfies_kkt_with_free_bias(budget):
    r = _tiny()
    rng = np.random.default_rng(2)
    Q = np.abs(rng.normal(size=(8, 3))).astype(np.float32)
    config = als.ALSConfig(0.1, 0.1, True, nonnegative=True, nnls_steps=300, systems_budget=budget)
    update_side = jax.jit(als.update_side, static_argnames="config")
    p, b, _, _ = update_side(chunks_for(r, "user", width=2, chunk_slots=8), jnp.asarray(r.user_counts, jnp.float32),
                              jnp.full((7, 3), 0.5), jnp.asarray(Q), jnp.zeros(8), 3.0, config)
    p, b = np.asarray(p), np.asarray(b)
    assert np.all(p >= 0)
    for u in range(6):
        m = r.users == u
        Z, y, n = Q[r.items[m]], r.values[m] - 3.0, m.sum()
        resid = y - Z @ p[u] - b[u]
        grad_p = -Z.T @ resid + 0.1 * n * p[u]
        grad_b = -resid.sum() + 0.1 * n * b[u]
        assert abs(grad_b) < 1e-3
        assert np.all(grad_p > -1e-3) and np.all(np.abs(grad_p * p[u]) < 1e-3)


def test_explicit_als_fits_rank_k_truth_and_loss_never_increases(signed):
    _, train, test = signed
    model = bayesmf.ALS(rank=RANK, regularization=0.02, n_iter=10).fit(train)
    assert rmse(model, test) < 1.1 * NOISE
    loss = np.array(model.history_["loss"])
    assert np.all(np.diff(loss) <= 1e-4 * loss[:-1])
    assert len(model.history_["rmse"]) == 10


@pytest.mark.parametrize("options", [{"biases": True}, {"biases": True, "nonnegative": True}])
def test_als_step_loss_from_row_systems_equals_objective_from_ratings(signed, options):
    _, train, _ = signed
    counts = (jnp.asarray(train.user_counts, jnp.float32), jnp.asarray(train.item_counts, jnp.float32))
    layout = (gram_chunks_for(train, "user", RANK + 1), gram_chunks_for(train, "item", RANK + 1))
    data = als.ALSData(*layout, *counts, rating_arrays(train), jnp.mean(train.values))
    config = als.ALSConfig(0.05, 0.02, **options)
    state = als.init_factors(1, train.n_users, train.n_items, RANK, 0.3, nonnegative=options.get("nonnegative", False))
    kernel = als.build_kernel(data, config)
    for _ in range(2):
        state, info = kernel.step(None, state)
    loss, train_rmse = als.objective(state, data, config)
    np.testing.assert_allclose(float(info.loss), float(loss), rtol=1e-4)
    np.testing.assert_allclose(float(info.rmse), float(train_rmse), rtol=1e-4)


def test_nonnegative_als_fits_nonnegative_truth():
    _, train, test = nonnegative_split()
    model = bayesmf.ALS(rank=RANK, nonnegative=True, biases=False, regularization=0.001, n_iter=10).fit(train)
    assert model.global_mean_ == 0 and model.user_bias_ is None
    assert (model.user_factors_ >= 0).all() and (model.item_factors_ >= 0).all()
    assert rmse(model, test) < 1.1 * NOISE


def test_failed_cholesky_retries_with_jitter_and_warns():
    # regularization 0 and users with fewer ratings than the rank: singular normal equations
    r = _tiny()
    with pytest.warns(CholeskyRetryWarning, match="jitter"):
        model = bayesmf.ALS(rank=6, regularization=0.0, biases=False, n_iter=2).fit(r)
    assert np.isfinite(model.user_factors_).all()


def _implicit_data(r, rank):
    # tiny chunks (2 virtual rows of width 2) so that every side spans many chunks
    data = implicit_als.ImplicitData(chunks_for(r, "user", width=2, chunk_slots=4),
                                     chunks_for(r, "item", width=2, chunk_slots=4), rating_arrays(r))
    state = als.init_factors(0, r.n_users, r.n_items, rank, 0.3)
    return data, state


def test_implicit_cg_matches_exact_solve():
    r = _tiny()
    r = r.with_values(np.abs(r.values))
    data, state = _implicit_data(r, 4)
    update_side = jax.jit(implicit_als.update_side, static_argnames="config")
    exact = update_side(data.user_chunks, state.user_factors, state.item_factors,
                                     implicit_als.ImplicitConfig(0.1, 2.0, exact=True))[0]
    cg = update_side(data.user_chunks, state.user_factors, state.item_factors,
                                  implicit_als.ImplicitConfig(0.1, 2.0, cg_steps=4))[0]  # k steps: exact in theory
    np.testing.assert_allclose(cg, exact, rtol=2e-3, atol=2e-3)
    # the exact half step is Hu et al.'s closed form, row by row (user 6 has no ratings: 0)
    Y = np.asarray(state.item_factors, np.float64)
    for u in range(r.n_users):
        m = r.users == u
        F, c = Y[r.items[m]], 2.0 * r.values[m]
        x = np.linalg.solve(Y.T @ Y + 0.1 * np.eye(4) + (F * c[:, None]).T @ F, F.T @ (1 + c))
        np.testing.assert_allclose(exact[u], x, rtol=1e-3, atol=1e-4)
    few = update_side(data.user_chunks, state.user_factors, state.item_factors,
                                   implicit_als.ImplicitConfig(0.1, 2.0, cg_steps=2))[0]
    assert np.abs(few - exact).max() > np.abs(cg - exact).max()  # fewer steps, visibly less exact


def test_implicit_objective_equals_dense_computation():
    r = _tiny()
    r = r.with_values(np.abs(r.values))
    data, state = _implicit_data(r, 3)
    config = implicit_als.ImplicitConfig(0.2, 1.5)
    X, Y = np.asarray(state.user_factors, np.float64), np.asarray(state.item_factors, np.float64)
    P, C = np.zeros((7, 8)), np.ones((7, 8))
    P[r.users, r.items] = 1
    C[r.users, r.items] = 1 + 1.5 * r.values
    dense = np.sum(C * (P - X @ Y.T) ** 2) + 0.2 * (np.sum(X**2) + np.sum(Y**2))
    np.testing.assert_allclose(float(implicit_als.objective(state, data, config)), dense, rtol=1e-4)
    # the loss a step reports (observed pairs from the item half step) is the objective after it
    after, info = implicit_als.build_kernel(data, config).step(None, state)
    np.testing.assert_allclose(float(info.loss), float(implicit_als.objective(after, data, config)), rtol=1e-4)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_implicit_als_decreases_loss_and_ranks_observed_higher(signed, solver):
    _, train, _ = signed
    r = train.with_values(np.abs(train.values))
    model = bayesmf.ImplicitALS(rank=8, n_iter=6, solver=solver, alpha=2.0).fit(r)
    loss = np.array(model.history_["loss"])
    assert loss[-1] < 0.8 * loss[0] and np.all(np.diff(loss[1:]) <= 1e-3 * loss[1:-1])
    assert model.rating_scale_ is None
    seen = model.predict(r.users, r.items)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, r.n_users, 4000), rng.integers(0, r.n_items, 4000)
    new = ~r.contains(users, items)
    unseen = model.predict(users[new], items[new], clip=False)
    assert seen.mean() > unseen.mean() + 0.1


def test_bad_inputs_raise_clear_errors(signed):
    _, train, _ = signed
    with pytest.raises(bayesmf.ConfigError, match="rank"):
        bayesmf.ALS(rank=0).fit(train)
    with pytest.raises(bayesmf.ConfigError, match="regularization"):
        bayesmf.ALS(regularization=-1).fit(train)
    with pytest.raises(bayesmf.ConfigError, match="solver"):
        bayesmf.ImplicitALS(solver="qr").fit(train)
    with pytest.raises(bayesmf.DataError, match="ImplicitALS"):
        bayesmf.ImplicitALS().fit(train)  # signed values
    bad = Ratings(users=np.array([0, 5]), items=np.array([0, 1]), values=np.ones(2, np.float32), timestamps=None,
                  n_users=3, n_items=2, user_map=bayesmf.IdMap.range(3), item_map=bayesmf.IdMap.range(2))
    with pytest.raises(bayesmf.DataError, match="user index 5"):
        bayesmf.ALS().fit(bad)
    empty = train.subset(np.array([], dtype=np.int64))
    with pytest.raises(bayesmf.DataError, match="empty"):
        bayesmf.ALS().fit(empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bayesmf.ALS(rank=2, n_iter=1).fit(train)  # no retry warning on a well-posed problem
