import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.engines.residuals import rating_layout, sum_of_squares


@pytest.mark.parametrize(("width", "chunk_slots"), [(4, 32), (None, None)])
def test_sum_of_squares_and_its_gradient_equal_the_per_rating_formulas(small, width, chunk_slots):
    r = small.ratings
    n_users, n_items, k = r.n_users + 2, r.n_items + 3, 4  # the extra rows have no ratings
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    y = r.values - 3.5
    sizes = {} if width is None else dict(width=width, chunk_slots=chunk_slots)
    layout = rating_layout(r.users, r.items, y, n_users, n_items, **sizes)
    if width is not None:
        assert layout.by_user.cols.shape[0] > 5  # several chunks
    # numpy, float64, one rating at a time in vectorised form
    e = y - np.einsum("nk,nk->n", U[r.users], V[r.items])
    grad_U = np.zeros_like(U)
    grad_V = np.zeros_like(V)
    np.add.at(grad_U, r.users, -2 * e[:, None] * V[r.items])
    np.add.at(grad_V, r.items, -2 * e[:, None] * U[r.users])

    value, (gU, gV) = jax.jit(jax.value_and_grad(sum_of_squares, (1, 2)))(layout, jnp.asarray(U, jnp.float32),
                                                                          jnp.asarray(V, jnp.float32))
    np.testing.assert_allclose(value, np.sum(e * e), rtol=1e-5)
    np.testing.assert_allclose(gU, grad_U, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gV, grad_V, rtol=1e-4, atol=1e-3)
    assert np.all(np.asarray(gU)[r.n_users:] == 0) and np.all(np.asarray(gV)[r.n_items:] == 0)
    # the cotangent scales the gradient (a log likelihood multiplies S by -alpha/2)
    g_scaled = jax.grad(lambda U_: -0.25 * sum_of_squares(layout, U_, jnp.asarray(V, jnp.float32)))(
        jnp.asarray(U, jnp.float32))
    np.testing.assert_allclose(g_scaled, -0.25 * grad_U, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_float64_targets_with_float32_factors_under_x64():
    """With x64 on (``BPMF(dtype="float64")`` turns it on for the process) the packed targets are
    float64 while NumPyro's starting values may be float32: the gradient keeps each factor's
    dtype. Run in a subprocess: x64 is process-wide."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from bayesmf.engines.residuals import rating_layout, sum_of_squares
        users, items, y = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), np.array([1.0, -0.5, 0.25, 2.0])
        layout = rating_layout(users, items, y, 3, 2, np.float64)
        U = np.arange(6.0).reshape(3, 2) / 10
        V = np.arange(4.0).reshape(2, 2) / 10
        e = y - np.einsum("nk,nk->n", U[users], V[items])
        for dtype in (jnp.float32, jnp.float64):
            value, (gU, gV) = jax.value_and_grad(lambda U, V: 0.5 * sum_of_squares(layout, U, V), (0, 1))(
                jnp.asarray(U, dtype), jnp.asarray(V, dtype))
            assert gU.dtype == dtype and gV.dtype == dtype, (gU.dtype, gV.dtype)
            np.testing.assert_allclose(value, 0.5 * np.sum(e * e), rtol=1e-6)
            np.testing.assert_allclose(gU[0], -(e[0] * V[0] + e[1] * V[1]), rtol=1e-6)
        print("ok")
    """)
    env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
