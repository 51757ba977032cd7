"""The cheaper NCF epoch (issue 25): the same numbers as before, for less work.

* an epoch of :func:`bayesmf.engines.optax_loop.make_epoch` equals a minibatch-by-minibatch
  reference loop written here (the Adam and SGD updates the cheaper epoch must keep);
* :func:`bayesmf.engines.optax_loop.train` asks for each epoch's examples once, in order;
* the negative sampler keeps successive sampling without replacement in draw order (closed-form
  pair probabilities), and ``Ratings.contains`` gives the same answers with and without its table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bayesmf.data.ratings as ratings_module
from bayesmf.data import Ratings
from bayesmf.data.negatives import sample_negatives
from bayesmf.engines import ncf
from bayesmf.engines import optax_loop as loop


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_epoch_equals_a_minibatch_by_minibatch_reference(optimizer):
    n_users, n_items, n, batch = 7, 9, 10, 4  # 3 minibatches, the last padded with 2 rows of weight 0
    rng = np.random.default_rng(0)
    data = (jnp.asarray(rng.integers(0, n_users, n), jnp.int32), jnp.asarray(rng.integers(0, n_items, n), jnp.int32),
            jnp.asarray(rng.integers(0, 2, n).astype(np.float32)))
    params = jax.tree_util.tree_map(jnp.asarray, ncf.init_params(1, "NeuMF", n_users, n_items, 3, (8, 4, 2), 0.3))
    tx = loop.make_optimizer(optimizer, 0.05)
    key = jax.random.PRNGKey(3)
    state, info = loop.make_epoch(ncf.log_loss, tx, batch)(key, loop.init(params, tx), data)

    # reference: the permutation the loop documents (drawn from the first half of split(key)),
    # then one Optax update per minibatch of the weighted mean log loss, gathered per update
    perm = np.asarray(jax.random.permutation(jax.random.split(key)[0], n))
    order = np.concatenate([perm, np.zeros(2, perm.dtype)]).reshape(3, batch)
    weight = np.concatenate([np.ones(n), np.zeros(2)]).reshape(3, batch).astype(np.float32)

    def objective(p, idx, w):
        u, i, y = (leaf[idx] for leaf in data)
        z = ncf.pair_logits(p, u, i)
        return jnp.sum(w * (jax.nn.softplus(z) - y * z)) / jnp.sum(w)

    p, opt_state, total = params, tx.init(params), 0.0
    for idx, w in zip(order, weight, strict=True):
        value, grads = jax.value_and_grad(objective)(p, idx, w)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        total += float(value) * w.sum()
    for name in params:
        np.testing.assert_allclose(np.asarray(state.params[name]), np.asarray(p[name]), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    assert int(state.step) == 3
    np.testing.assert_allclose(float(info.loss), total / n, rtol=1e-5)
    assert not np.allclose(np.asarray(state.params["gmf_user"]), np.asarray(params["gmf_user"]))


def test_train_asks_for_each_epochs_examples_once_in_order():
    calls = []

    def epoch_data(t):
        calls.append(t)
        return (jnp.full(4, float(t)),)

    tx = loop.make_optimizer("sgd", 0.25)
    epoch = loop.make_epoch(lambda p, b, k, s: (p["theta"] - b[0]) ** 2, tx, batch_size=4)
    history: dict = {}
    state = loop.train(epoch, loop.init({"theta": jnp.asarray(0.0)}, tx), epoch_data, jax.random.PRNGKey(0),
                       loop.LoopConfig(n_epochs=3, batch_size=4, learning_rate=0.25), history=history)
    assert calls == [0, 1, 2]
    # theta <- theta - 0.25 * 2 (theta - t): halfway to t each epoch, 0 -> 0 -> 0.5 -> 1.25
    np.testing.assert_allclose(float(state.params["theta"]), 1.25, rtol=1e-6)
    np.testing.assert_allclose(history["loss"], [0.0, 1.0, 2.25], rtol=1e-6)


def test_negatives_without_replacement_are_successive_draws_in_order():
    # user 0 rated item 0; items 1..4 have popularity 1, 2, 3, 4 (users 1..4) and item 0 has 1
    users = [0, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4]
    items = [0, 4, 3, 4, 2, 3, 4, 1, 2, 3, 4]
    r = Ratings.from_arrays(users, items, np.ones(len(users)), n_items=5)
    neg = sample_negatives(r, 2, seed=0, users=np.zeros(60_000, int), distribution="popularity")
    p = np.bincount(items, minlength=5).astype(float)  # counts 1, 1, 2, 3, 4
    p[0] = 0.0  # a positive of user 0: excluded
    p /= p.sum()
    expected = np.array([[p[a] * p[b] / (1 - p[a]) if a != b else 0.0 for b in range(5)] for a in range(5)])
    freq = np.zeros((5, 5))
    np.add.at(freq, (neg[:, 0], neg[:, 1]), 1.0 / neg.shape[0])
    np.testing.assert_allclose(freq, expected, atol=0.008)
    # the order matters: (first, second) is not symmetric
    assert expected[4, 1] > expected[1, 4] + 0.01 and freq[4, 1] > freq[1, 4]


def test_contains_agrees_with_and_without_the_pair_table(monkeypatch):
    rng = np.random.default_rng(1)
    users, items = np.divmod(rng.choice(600, 200, replace=False), 20)
    r = Ratings.from_arrays(users, items, np.ones(200), n_users=30, n_items=20)
    qu, qi = np.divmod(np.arange(600), 20)
    truth = np.isin(np.arange(600), users * 20 + items)
    np.testing.assert_array_equal(r.contains(qu, qi), truth)
    assert r._pair_table is not None
    monkeypatch.setattr(ratings_module, "PAIR_TABLE_BYTES", 10)
    fresh = Ratings.from_arrays(users, items, np.ones(200), n_users=30, n_items=20)
    assert fresh._pair_table is None
    np.testing.assert_array_equal(fresh.contains(qu, qi), truth)
    # a key past the table (a user index beyond the last) is absent, as with the binary search
    np.testing.assert_array_equal(r.contains([30, users[0]], [0, items[0]]), [False, True])
