import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.data import synthetic
from bayesmf.engines import linalg
from bayesmf.engines.chunks import (
    build_chunks,
    chunks_for,
    gram_chunks_for,
    gram_rhs,
    in_row_order,
    squared_error,
    to_rows,
)


# k = 3: G and b from the square product of [f, y] (k + 1 a multiple of 4); k = 4: from [f, y]^T f
@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize(("width", "chunk_slots"), [(4, 32), (None, None)])
def test_gram_rhs_equals_per_row_numpy(small, width, chunk_slots, k):
    r = small.ratings
    rng = np.random.default_rng(0)
    V = rng.normal(size=(r.n_items, k)).astype(np.float32)
    c = rng.normal(size=r.n_items).astype(np.float32)
    if width is None:
        chunks = gram_chunks_for(r, "user", k)
    else:
        chunks = chunks_for(r, "user", width=width, chunk_slots=chunk_slots)
        assert chunks.cols.shape[0] > 5  # several chunks, so rows are spread across them
    assert chunks.n_slots >= r.nnz
    G, b, yy = gram_rhs(chunks, jnp.asarray(V), jnp.asarray(c), 3.5)
    y = r.values - 3.5 - c[r.items]
    for u in (0, 7, int(np.argmax(r.user_counts))):
        m = r.users == u
        F = V[r.items[m]]
        np.testing.assert_allclose(G[u], F.T @ F, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b[u], F.T @ y[m], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(yy, np.sum(y**2), rtol=1e-5)
    # the sum of squared errors of any rows x from the systems equals the direct sum over ratings
    X = rng.normal(size=(r.n_users, k)).astype(np.float32)
    direct = np.sum((y - np.sum(X[r.users] * V[r.items], axis=1)) ** 2)
    np.testing.assert_allclose(squared_error(jnp.asarray(X), G, b, yy), direct, rtol=1e-4)


@pytest.mark.parametrize(("width", "chunk_slots"), [(3, 24), (16, 4096)])
def test_chunks_hold_every_rating_once_and_sum_rows_exactly(small, width, chunk_slots):
    r = small.ratings
    chunks = chunks_for(r, "user", width=width, chunk_slots=chunk_slots)
    cols, vals, owner, rows = (np.asarray(a) for a in chunks[:4])
    n_chunks, capacity, _ = cols.shape
    assert capacity * width >= chunk_slots or capacity >= -(-r.user_counts.max() // width)
    if chunk_slots == 24:
        assert n_chunks > 10  # the small layout really splits the side into many chunks
    # every rating exactly once: the (row, col, value) multiset is preserved
    global_row = np.take_along_axis(rows, owner, axis=1)[..., None].repeat(width, axis=2)
    real = cols < r.n_items
    got = sorted(zip(global_row[real], cols[real], vals[real].round(5), strict=True))
    want = sorted(zip(r.users, r.items, r.values.astype(np.float32).round(5), strict=True))
    assert got == want
    assert np.all(np.diff(owner, axis=1) >= 0)  # sorted, as to_rows assumes
    # per-row sums through the chunk reduction equal a bincount
    sums = jax.vmap(lambda o, v: to_rows(o, v.sum(axis=1), capacity))(jnp.asarray(owner), jnp.asarray(vals))
    np.testing.assert_allclose(in_row_order(chunks, sums), np.bincount(r.users, r.values, r.n_users), rtol=1e-5)


def test_chunks_of_rows_without_ratings_and_of_an_empty_side():
    chunks = build_chunks(np.array([0, 0, 2]), np.array([1, 0, 1]), np.ones(3), 4, 2, width=2, chunk_slots=2)
    values = in_row_order(chunks, jnp.ones(chunks.rows.shape))
    np.testing.assert_array_equal(values, [1, 0, 1, 0])  # rows 1 and 3 have no ratings


def test_rows_without_ratings_get_zero_gram():
    d = synthetic(n_users=30, n_items=20, n_ratings=60, rank=2, seed=0)
    G, _, _ = gram_rhs(gram_chunks_for(d.ratings, "item", 2), jnp.ones((30, 2)))
    empty = d.ratings.item_counts == 0
    assert np.all(np.asarray(G)[empty] == 0)


@pytest.mark.slow
def test_solve_sample_cg_nnls_against_closed_forms():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(50, 6, 6))
    P = A @ np.transpose(A, (0, 2, 1)) + 6 * np.eye(6)
    h = rng.normal(size=(50, 6))
    exact = np.linalg.solve(P, h[..., None])[..., 0]
    np.testing.assert_allclose(linalg.solve_spd(jnp.asarray(P), jnp.asarray(h)), exact, rtol=1e-4, atol=1e-5)
    cg = linalg.conjugate_gradient(lambda x: jnp.einsum("nkl,nl->nk", P, x), jnp.asarray(h), jnp.zeros((50, 6)), 6)
    np.testing.assert_allclose(cg, exact, rtol=1e-3, atol=1e-4)
    # Gaussian draws: mean and covariance of x ~ N(P^-1 h, P^-1) for one row
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    P0, h0 = jnp.asarray(np.repeat(P[:1], 4000, 0)), jnp.asarray(np.repeat(h[:1], 4000, 0))
    x, mean = linalg.sample_gaussian(keys[0], P0, h0)
    x = np.asarray(x)
    np.testing.assert_allclose(mean[0], exact[0], rtol=1e-4, atol=1e-5)
    cov = np.linalg.inv(P[0])
    np.testing.assert_allclose(x.mean(0), exact[0], atol=4 * np.sqrt(cov.diagonal().max() / 4000))
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.15 * np.abs(cov).max())
    # NNLS: KKT conditions x >= 0, grad >= 0, x * grad = 0
    x = np.asarray(linalg.nnls(jnp.asarray(P), jnp.asarray(h), jnp.zeros((50, 6)), steps=200))
    grad = np.einsum("nkl,nl->nk", P, x) - h
    assert np.all(x >= 0) and np.all(grad > -1e-4) and np.all(np.abs(x * grad) < 1e-4)


@pytest.mark.parametrize("k", [1, 4, 11])
@pytest.mark.slow
def test_unrolled_and_lapack_kernels_agree_with_numpy(k):
    rng = np.random.default_rng(k)
    A = rng.normal(size=(30, k, 2 * k))
    P = A @ np.transpose(A, (0, 2, 1)) + 0.5 * np.eye(k)
    h = rng.normal(size=(30, k))
    exact = np.linalg.solve(P, h[..., None])[..., 0]
    key = jax.random.PRNGKey(3)
    draws = {}
    for unrolled in (True, False):
        x = linalg.solve_spd(jnp.asarray(P, jnp.float32), jnp.asarray(h, jnp.float32), unrolled=unrolled)
        np.testing.assert_allclose(x, exact, rtol=2e-4, atol=2e-4)
        draws[unrolled] = linalg.sample_gaussian(key, jnp.asarray(P, jnp.float32), jnp.asarray(h, jnp.float32),
                                                 jitter=0.1, unrolled=unrolled)
    with_jitter = np.linalg.solve(P + 0.1 * np.eye(k), h[..., None])[..., 0]
    # same z, same factorisation up to rounding: the same draws and conditional means
    np.testing.assert_allclose(draws[True][1], with_jitter, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(draws[True][0], draws[False][0], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(draws[True][1], draws[False][1], rtol=2e-4, atol=2e-4)


def test_unrolled_kernel_marks_a_non_positive_definite_row_with_nan_and_is_chosen_by_size():
    P = np.repeat(np.eye(3)[None], 4, 0)
    P[2] = np.diag([1.0, -1.0, 1.0])  # row 2 is not positive definite
    x = np.asarray(linalg.solve_spd(jnp.asarray(P), jnp.ones((4, 3)), unrolled=True))
    assert np.all(np.isnan(x[2])) and np.allclose(x[[0, 1, 3]], 1.0)
    big = jnp.zeros((linalg.UNROLLED_MIN_ROWS, 3, 3))
    assert linalg._use_unrolled(big, None) and not linalg._use_unrolled(big[:-1], None)
    assert not linalg._use_unrolled(jnp.zeros((linalg.UNROLLED_MIN_ROWS, 17, 17)), None)


def test_standard_gamma_matches_the_gamma_distribution():
    """Kolmogorov-Smirnov against scipy's Gamma CDF at a fixed seed, below and above the boost
    threshold a = 1 and at the large shapes of a Gibbs sweep; the means within 4 standard errors."""
    from scipy import stats

    shapes = np.array([0.3, 1.0, 2.5, 470.0], np.float32)
    draws = np.asarray(linalg.standard_gamma(jax.random.PRNGKey(7), np.repeat(shapes[:, None], 20_000, 1)))
    assert draws.shape == (4, 20_000) and np.all(draws > 0)
    for a, x in zip(shapes, draws, strict=True):
        assert stats.kstest(x, stats.gamma(a).cdf).pvalue > 1e-3, a
        assert abs(x.mean() - a) < 4 * np.sqrt(a / x.size), a


def test_standard_gamma_at_the_noise_precisions_shape_never_returns_garbage():
    """Regression: at a = a0 + nnz / 2 the float32 acceptance test used to cancel catastrophically
    and XLA's fused copies of it disagreed, leaving ~1 in 10^5 variates at 0 (found as an alpha
    draw of 0 in a 2-chain Gibbs run on MovieLens-100K's 80-core). Vmapped as in a multi-chain
    sweep: every variate within 6.5 standard deviations, and KS against scipy."""
    from scipy import stats

    shapes = jnp.asarray([18_180.0, 450_094.0], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 100_000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: linalg.standard_gamma(k, shapes)))(keys), np.float64)
    for a, x in zip(np.asarray(shapes, np.float64), draws.T, strict=True):
        z = (x - a) / np.sqrt(a)
        assert np.abs(z).max() < 6.5, (a, x[np.argmax(np.abs(z))])
        assert stats.kstest(x, stats.gamma(a).cdf).pvalue > 1e-3, a


def test_standard_gamma_returns_nan_for_invalid_shapes_instead_of_looping():
    x = np.asarray(linalg.standard_gamma(jax.random.PRNGKey(0), np.array([2.0, np.nan, -1.0, 0.0, np.inf])))
    assert np.isfinite(x[0]) and np.all(np.isnan(x[1:]))


@pytest.mark.parametrize("unrolled", [True, False])
def test_last_pivot_is_the_schur_complement_and_changing_it_refactors_the_last_entry(unrolled):
    rng = np.random.default_rng(7)
    k = 5
    A = rng.normal(size=(8, k, 2 * k))
    P = A @ np.transpose(A, (0, 2, 1)) + 0.5 * np.eye(k)
    h = rng.normal(size=(8, k))
    factor = linalg.factor_gaussian(jnp.asarray(P, jnp.float32), jnp.asarray(h, jnp.float32), unrolled=unrolled)
    s, r = linalg.last_pivot(factor)
    B, p = P[:, :-1, :-1], P[:, :-1, -1]
    schur = P[:, -1, -1] - np.einsum("nk,nk->n", p, np.linalg.solve(B, p[..., None])[..., 0])
    info = h[:, -1] - np.einsum("nk,nk->n", p, np.linalg.solve(B, h[:, :-1, None])[..., 0])
    np.testing.assert_allclose(s, schur, rtol=1e-4)
    np.testing.assert_allclose(r, info, rtol=1e-4, atol=1e-5)
    # raising the last diagonal entry by delta: the same draws as factorising P + delta e e^T anew
    delta = rng.uniform(0.5, 3.0, 8)
    P2 = P.copy()
    P2[:, -1, -1] += delta
    z = jnp.asarray(rng.normal(size=(8, k)), jnp.float32)
    moved = linalg.draw_from_factor(linalg.with_last_pivot(factor, s + jnp.asarray(delta, jnp.float32)), z)
    fresh = linalg.draw_from_factor(linalg.factor_gaussian(jnp.asarray(P2, jnp.float32), jnp.asarray(h, jnp.float32),
                                                           unrolled=unrolled), z)
    np.testing.assert_allclose(moved[1], np.linalg.solve(P2, h[..., None])[..., 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(moved[0], fresh[0], rtol=1e-4, atol=1e-4)
