"""The driver's kept draws: values, order and layout, and the per-draw lists released while stacking."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

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


def test_stacking_with_consume_empties_each_list_and_keeps_the_values():
    lists = {"a": [np.full((2,), i, np.float32) for i in range(4)], "b": [np.arange(3) + i for i in range(4)],
             "empty": []}
    copies = {k: [v.copy() for v in vs] for k, vs in lists.items()}
    out = driver._stacked(lists, axis=0, consume=True)
    assert all(len(v) == 0 for v in lists.values())
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"], np.stack(copies["a"]))
    np.testing.assert_array_equal(out["b"], np.stack(copies["b"]))
    kept = {"a": [np.ones(2)]}
    driver._stacked(kept)  # without consume the lists stay (a DivergenceError's partial result)
    assert len(kept["a"]) == 1
