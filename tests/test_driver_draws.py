"""The driver's kept draws: values, order and layout, and the per-draw lists released while stacking."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.engines import driver


class _Info(NamedTuple):
    finite: jnp.ndarray
    level: jnp.ndarray


def _counter_step(key, state):
    """Deterministic: state -> state + 1; the info records the level before the step."""
    return state + 1.0, _Info(jnp.all(jnp.isfinite(state)), state[:, 0, 0])


def test_kept_draws_are_every_kept_state_in_order_on_the_draw_axis():
    start = jnp.stack([jnp.zeros((3, 2)), 10.0 * jnp.ones((3, 2))])  # (chains, 3, 2)
    result = driver.run(_counter_step, start, None, n_warmup=2, n_samples=6, thin=1, keep_every=2,
                        collect=lambda s: {"x": s, "first": s[:, 0, 0]}, draw_axis=1)
    # after sweep t (0-based) the state is start + t + 1; draws are sweeps 2..7, every 2nd kept: 2, 4, 6
    levels = np.array([3.0, 5.0, 7.0])
    expected = np.stack([np.broadcast_to(levels[:, None, None], (3, 3, 2)),
                         np.broadcast_to(10.0 + levels[:, None, None], (3, 3, 2))])
    np.testing.assert_array_equal(result.samples["x"], expected)
    np.testing.assert_array_equal(result.samples["first"], [[3.0, 5.0, 7.0], [13.0, 15.0, 17.0]])
    np.testing.assert_array_equal(result.history["level"][:, 1], 10.0 + np.arange(8))


def test_kept_draws_fill_one_buffer_per_site_without_copies_and_round_trip_through_lists():
    kept = driver._KeptDraws(capacity=3, axis=1)
    draws = [{"x": np.full((2, 4), i, np.float32) + np.arange(2, dtype=np.float32)[:, None]} for i in range(3)]
    kept.append(draws[0])
    partial = kept.arrays()["x"]  # a DivergenceError's partial result: the draws so far
    np.testing.assert_array_equal(partial, np.stack([draws[0]["x"]], axis=1))
    assert kept.lists()["x"][0].shape == (2, 4)
    kept.extend({"x": [d["x"] for d in draws[1:]]})  # as a checkpoint's lists are restored
    full = kept.arrays()["x"]
    assert full is kept.buffers["x"]  # once full the buffer is the result, not a copy of it
    np.testing.assert_array_equal(full, np.stack([d["x"] for d in draws], axis=1))
    with pytest.raises(ValueError, match="3 draws"):
        kept.append(draws[0])
