"""The global offset as a parameter of BPMF: its Gibbs conditional against a NumPy closed form,
predictive calibration of the whole sampler under the prior (the offset drawn from its prior,
not plugged in), the estimator's handling of the offset, and its bad values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bpmf_gibbs import _simulate_prior

from bayesmf import ConfigError, Ratings
from bayesmf.data import synthetic
from bayesmf.engines.chunks import gram_chunks_for, gram_rhs, residual_sum
from bayesmf.models.bpmf import BPMF
from bayesmf.posterior import gibbs
from bayesmf.posterior.model import Prior


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    n_users, n_items, D = 25, 15, 2
    pairs = rng.choice(n_users * n_items, 180, replace=False)
    users, items = pairs // n_items, pairs % n_items
    values = rng.normal(3.0, 1.0, pairs.size).astype(np.float32)
    r = Ratings.from_arrays(users, items, values, n_users=n_users, n_items=n_items)
    U = rng.normal(size=(n_users, D)).astype(np.float32)
    V = rng.normal(size=(n_items, D)).astype(np.float32)
    bu = rng.normal(size=n_users).astype(np.float32)
    return r, U, V, bu


def test_gram_rhs_sums_give_the_residual_sum_of_numpy(problem):
    """``sum_j f_j`` per row and the targets' sum (``sums=True``), and the residual sum built
    from them, against the per-rating NumPy sums, for a shift and the other side's biases."""
    r, U, V, bu = problem
    centre, shift = 3.0, 0.25
    chunks = gram_chunks_for(r, "item", 2, (r.values - centre).astype(np.float32))
    G, b, yy, fsum, ysum = gram_rhs(chunks, jnp.asarray(U), jnp.asarray(bu), shift, sums=True)
    y = r.values - centre - shift - bu[r.users]
    expected_fsum = np.zeros((r.n_items, 2))
    np.add.at(expected_fsum, r.items, U[r.users])
    np.testing.assert_allclose(np.asarray(fsum), expected_fsum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(ysum), y.sum(), rtol=1e-5, atol=1e-4)
    residual = y - np.sum(U[r.users] * V[r.items], axis=1)
    np.testing.assert_allclose(float(residual_sum(jnp.asarray(V), fsum, ysum)), residual.sum(), rtol=1e-5, atol=1e-4)


def test_offset_conditional_equals_numpy_closed_form(problem):
    """``m | rest ~ N((m0/s0^2 + alpha sum z) / P, 1/P)``, ``P = 1/s0^2 + alpha nnz``, with ``z``
    the ratings minus everything but the offset; and the SSE returned is the one at the drawn
    offset. 20,000 draws of the conditional against the NumPy mean and variance."""
    r, U, V, bu = problem
    centre, old_offset, alpha, prior = 3.0, 2.9, 1.7, Prior(rank=2, offset_prior=(2.0, 0.5))
    z = r.values.astype(np.float64) - bu[r.users] - np.sum(U[r.users] * V[r.items], axis=1)
    precision = 1 / 0.5**2 + alpha * r.nnz
    mean, var = (2.0 / 0.5**2 + alpha * z.sum()) / precision, 1 / precision
    shift = np.float32(old_offset - centre)
    total = np.float32(np.sum(z - old_offset))
    sse = np.float32(np.sum((z - old_offset) ** 2))
    draw = jax.jit(jax.vmap(lambda k: gibbs._draw_offset(k, jnp.float32(old_offset), jnp.float32(centre), shift,
                                                         total, sse, r.nnz, jnp.float32(alpha), prior)))
    offsets, sses = (np.asarray(a, np.float64) for a in draw(jax.random.split(jax.random.PRNGKey(0), 20_000)))
    assert abs(offsets.mean() - mean) < 4 * np.sqrt(var / offsets.size)
    assert abs(offsets.var() / var - 1) < 0.05
    np.testing.assert_allclose(sses[:5], [np.sum((z - m) ** 2) for m in offsets[:5]], rtol=1e-4)


def _central_ranks(n_draws: int, level: float):
    """``(k, exact)``: the truth is inside the central interval when its rank among ``n_draws``
    independent posterior draws (the number of draws below it) lies in ``[k, n_draws - k]``; for
    exact independent draws the rank is uniform on ``0..n_draws``, so this happens with probability
    ``exact = (n_draws - 2k + 1) / (n_draws + 1)``, ``k`` chosen to bring it nearest ``level``
    (empirical quantiles of 200 draws would cover 0.891, not 0.9, at the 90% level)."""
    k = int(round((n_draws + 1) * (1 - level) / 2))
    return k, (n_draws - 2 * k + 1) / (n_draws + 1)


def _coverage_under_the_prior(prior: Prior, reps: int, seeds):
    """Held-out coverage of the exact posterior-predictive intervals (about 50% and 90%; ranks of
    the truth among draws ``m + u.v + noise``, :func:`_central_ranks`) over ``reps`` data sets per
    seed simulated from ``prior``: rank 2, 30 x 20, 260 training and 10 held-out ratings (one random
    pattern per seed for all its replications, so that they run as vmapped chains), alpha fixed.
    The offset is drawn from its prior when it has one, else 0 (and the sampler centres at the
    training mean as the plug-in did).

    With ``nu0 = D`` the rows' prior is a multivariate t with one degree of freedom, so some
    replications have ratings in the thousands, far from the chains' start (``gibbs.init``'s
    0.1-scale factors). Such a chain spends hundreds of sweeps in a transient far from the
    posterior, where the rows' scatter dwarfs ``W0^{-1}`` and the model is nearly invariant under
    ``u -> A u, v -> A^-1 v``: the factors' scales drift along that ridge until the rows'
    Cholesky factorisation fails (the estimator's driver stops there with a ``DivergenceError``
    naming the sweep; a 10-sweep MAP start avoided it for the chain traced, the estimator's
    default 2 sweeps did not; this bare loop has no check). It is not the posterior: from the
    replication's true parameters, an exact posterior draw, the same chain stays finite
    (benchmarks/RESULTS.md, "Chains that turn non-finite under the prior"). The sweeps run in
    float64, where few chains get there (float32: a few in a
    hundred), and coverage is over the chains that stayed finite. Returns ``(coverage per
    level, expected coverage per level, share of chains that turned non-finite)``."""
    inside, finite, n_draws = {0.5: [], 0.9: []}, [], 200
    with jax.enable_x64(True):
        for seed in seeds:
            hits, ok = _held_out_ranks(prior, reps, seed, n_draws)
            finite.append(ok)
            for level in inside:
                k = _central_ranks(n_draws, level)[0]
                inside[level].append(((hits >= k) & (hits <= n_draws - k))[ok])
    coverage = {level: float(np.mean(np.concatenate(v))) for level, v in inside.items()}
    return coverage, {level: _central_ranks(n_draws, level)[1] for level in inside}, 1 - np.mean(finite)


def _held_out_ranks(prior: Prior, reps: int, seed: int, n_draws: int):
    """One seed of :func:`_coverage_under_the_prior`: the rank of each held-out rating among its
    ``n_draws`` predictive draws (reps, 10), and whether each chain stayed finite (reps,)."""
    n_users, n_items, n_train, n_test = 30, 20, 260, 10
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n_train + n_test, replace=False)
    users, items = pairs // n_items, pairs % n_items
    key = jax.random.PRNGKey(seed)
    truth = jax.vmap(lambda k: _simulate_prior(k, prior, n_users, n_items))(jax.random.split(key, reps))
    offset = np.zeros(reps)
    if prior.learns_offset:
        offset = prior.offset_prior[0] + prior.offset_prior[1] * rng.standard_normal(reps)
    f = np.einsum("rnk,rnk->rn", np.asarray(truth["U"])[:, users], np.asarray(truth["V"])[:, items])
    y = offset[:, None] + f + rng.standard_normal(f.shape) / np.sqrt(prior.alpha)
    train, held = slice(0, n_train), slice(n_train, None)
    pattern = Ratings.from_arrays(users[train], items[train], np.zeros(n_train), n_users=n_users, n_items=n_items)
    centres = y[:, train].mean(axis=1)
    dtype = jnp.float64

    def data_for(i):
        values = (y[i, train] - centres[i]).astype(np.float32)
        ub, ib = (gram_chunks_for(pattern, side, prior.rank, values) for side in ("user", "item"))
        return gibbs.GibbsData(ub, ib, jnp.asarray(users[train]), jnp.asarray(items[train]), jnp.asarray(values),
                               jnp.float32(centres[i]))

    def working(a):  # the float32 targets in the sweep's dtype
        return a.astype(dtype) if a.dtype == jnp.float32 else a

    data = jax.tree_util.tree_map(lambda *a: working(jnp.stack(a)), *(data_for(i) for i in range(reps)))
    state = jax.vmap(lambda k, c: gibbs.init(k, prior, n_users, n_items, offset=c, dtype=dtype))(
        jax.random.split(jax.random.PRNGKey(seed + 1), reps), jnp.asarray(centres, dtype))
    step = jax.vmap(functools.partial(gibbs.step, prior=prior))
    burn, thin = 300, 5
    hu, hi = jnp.asarray(users[held]), jnp.asarray(items[held])

    def sweep(st, t):
        st, _ = step(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed + 2), t), reps), st, data)
        return st, st.offset[:, None] + jnp.sum(st.U[:, hu] * st.V[:, hi], axis=-1)

    _, trace = jax.jit(lambda s: jax.lax.scan(sweep, s, jnp.arange(burn + thin * n_draws)))(state)
    draws = np.asarray(trace)[burn + thin - 1::thin]  # (n_draws, reps, n_test)
    draws = draws + rng.standard_normal(draws.shape) / np.sqrt(prior.alpha)
    return np.sum(draws < y[None, :, held], axis=0), np.isfinite(draws).all(axis=(0, 2))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_predictive_intervals_are_calibrated_under_the_prior():
    """With the offset in the model, data simulated from the model's own prior (offset included)
    are covered at the nominal rate: 4,000 held-out ratings (two seeds' patterns pooled: the
    coverage of one seed's 2,000 varies by about 0.015 between seeds), 50% and 90% within 0.03
    of the exact rate of 200 independent draws. The test has the power to see the plug-in
    offset's miscalibration: the training mean fixed as the offset (``offset_prior=None``)
    covers about 0.42 / 0.83 of the same kind of data. At most 1% of the chains may turn
    non-finite (:func:`_coverage_under_the_prior`)."""
    prior = Prior(rank=2, alpha=2.0, offset_prior=(0.0, 1.0))
    coverage, exact, non_finite = _coverage_under_the_prior(prior, reps=200, seeds=(11, 12))
    assert non_finite <= 0.01, non_finite
    assert abs(coverage[0.5] - exact[0.5]) < 0.03 and abs(coverage[0.9] - exact[0.9]) < 0.03, coverage
    plug_in = _coverage_under_the_prior(prior._replace(offset_prior=None), reps=100, seeds=(13,))[0]
    assert plug_in[0.5] < exact[0.5] - 0.03 and plug_in[0.9] < exact[0.9] - 0.03, plug_in


@pytest.mark.slow
def test_estimator_learns_the_offset_and_predicts_with_its_draws():
    """``offset_prior="auto"`` (default) draws the offset: its posterior is near the data's
    offset, ``global_mean_`` is its posterior mean, ``to_arviz`` reports it, and predictions
    average over its draws (they equal ``m_s + u_s.v_s`` averaged by hand). ``None`` keeps the
    old plug-in (no offset draws)."""
    data = synthetic(n_users=100, n_items=80, n_ratings=2500, rank=2, noise=0.3, seed=2, global_mean=3.2)
    model = BPMF(rank=2, n_samples=60, n_warmup=30, biases=False, seed=0).fit(data.ratings)
    draws = model.offset_samples_
    assert draws.shape == (1, 60) and np.std(draws) > 0
    assert model.global_mean_ == pytest.approx(float(np.mean(draws, dtype=np.float64)), abs=1e-6)
    users, items = data.ratings.users[:7], data.ratings.items[:7]
    by_hand = np.mean(draws[0][:, None] + np.einsum("snk,snk->sn", model.user_samples_[0][:, users],
                                                    model.item_samples_[0][:, items]), axis=0)
    np.testing.assert_allclose(model.predict(users, items, clip=False), by_hand, rtol=1e-5, atol=1e-4)
    assert "offset" in model.to_arviz(factors=False).posterior
    plug_in = BPMF(rank=2, n_samples=20, n_warmup=10, offset_prior=None, seed=0).fit(data.ratings)
    assert plug_in.offset_samples_ is None
    assert plug_in.global_mean_ == pytest.approx(float(np.mean(data.ratings.values, dtype=np.float64)))


@pytest.mark.parametrize("value", [(0.0, 0.0), (0.0, -1.0), (np.nan, 1.0), (0.0, np.inf), (1.0,), "wide"])
def test_bad_offset_prior_is_a_config_error_naming_the_value(value):
    data = synthetic(n_users=20, n_items=15, n_ratings=150, rank=2, seed=0)
    with pytest.raises(ConfigError, match="offset_prior"):
        BPMF(rank=2, n_samples=5, n_warmup=2, offset_prior=value).fit(data.ratings)
