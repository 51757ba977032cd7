"""GMF / MLP / NeuMF, BPR and Mult-VAE / Mult-DAE on the shared Optax loop (issue 25)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data import Ratings
from bayesmf.data.splits import leave_one_out
from bayesmf.engines import bpr as bpr_engine
from bayesmf.engines import ncf as ncf_engine
from bayesmf.engines import optax_loop as loop
from bayesmf.engines import vae as vae_engine
from bayesmf.errors import ConfigError, DataError
from bayesmf.experiments.catalogue import model_class
from bayesmf.experiments.schema import parse_experiment, template_text, tomllib
from bayesmf.metrics.ranking import full_ranking
from bayesmf.models.base import load


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- closed forms ------------------------------------------------------------------------------
def random_params(kind, n_users=5, n_items=7, factors=3, layers=(8, 4, 2), seed=0):
    params = ncf_engine.init_params(seed, kind, n_users, n_items, factors, layers, init_std=0.5)
    rng = np.random.default_rng(seed + 1)
    params = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    return params


def numpy_mlp(params, u, i, n_hidden):
    a = np.concatenate([params["mlp_user"][u], params["mlp_item"][i]], axis=-1)
    for j in range(n_hidden):
        a = np.maximum(a @ params[f"mlp_w{j}"] + params[f"mlp_b{j}"], 0.0)
    return a


def test_gmf_mlp_neumf_logits_match_numpy():
    u, i = np.array([0, 4, 2, 2]), np.array([6, 0, 3, 5])
    gmf = random_params("GMF")
    expected = (gmf["gmf_user"][u] * gmf["gmf_item"][i]) @ gmf["out_w"] + gmf["out_b"]  # h^T (p_u * q_i) + b
    np.testing.assert_allclose(ncf_engine.pair_logits(gmf, u, i), expected, rtol=1e-5, atol=1e-6)
    mlp = random_params("MLP")
    expected = numpy_mlp(mlp, u, i, 2) @ mlp["out_w"] + mlp["out_b"]
    np.testing.assert_allclose(ncf_engine.pair_logits(mlp, u, i), expected, rtol=1e-5, atol=1e-6)
    neu = random_params("NeuMF")
    phi = np.concatenate([neu["gmf_user"][u] * neu["gmf_item"][i], numpy_mlp(neu, u, i, 2)], axis=1)
    np.testing.assert_allclose(ncf_engine.pair_logits(neu, u, i), phi @ neu["out_w"] + neu["out_b"], rtol=1e-5,
                               atol=1e-6)
    # the all-pairs block (first MLP layer split into user and item parts) equals the pairwise path
    users, items = np.array([1, 3]), np.arange(7)
    block = np.asarray(ncf_engine.block_logits(neu, users, items))
    pairs = ncf_engine.pair_logits(neu, np.repeat(users, 7), np.tile(items, 2))
    np.testing.assert_allclose(block.reshape(-1), pairs, rtol=1e-5, atol=1e-6)


def test_log_loss_and_its_gradient_match_numpy():
    gmf = random_params("GMF")
    u, i, y = np.array([0, 1, 3]), np.array([2, 2, 6]), np.array([1.0, 0.0, 1.0], np.float32)
    phi = gmf["gmf_user"][u] * gmf["gmf_item"][i]
    p = sigmoid(phi @ gmf["out_w"] + gmf["out_b"])
    expected = -y * np.log(p) - (1 - y) * np.log(1 - p)
    np.testing.assert_allclose(ncf_engine.log_loss(gmf, (u, i, y)), expected, rtol=1e-5)
    grad = jax.grad(lambda prm: jnp.sum(ncf_engine.log_loss(prm, (u, i, y))))(gmf)
    np.testing.assert_allclose(grad["out_w"], ((p - y)[:, None] * phi).sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad["out_b"], (p - y).sum(), rtol=1e-4, atol=1e-6)


def test_neumf_pretrained_output_layer_is_alpha_weighted():
    gmf, mlp = random_params("GMF"), random_params("MLP")
    neu = ncf_engine.neumf_from_pretrained(gmf, mlp, 0.3)
    np.testing.assert_allclose(neu["out_w"], np.concatenate([0.3 * gmf["out_w"], 0.7 * mlp["out_w"]]), rtol=1e-6)
    np.testing.assert_allclose(neu["out_b"], 0.3 * gmf["out_b"] + 0.7 * mlp["out_b"], rtol=1e-6)
    np.testing.assert_array_equal(neu["mlp_w1"], mlp["mlp_w1"])
    np.testing.assert_array_equal(neu["gmf_item"], gmf["gmf_item"])
    # with alpha = 1 NeuMF's logit is the GMF logit plus nothing from the MLP tower
    u, i = np.array([0, 3]), np.array([1, 6])
    neu1 = ncf_engine.neumf_from_pretrained(gmf, mlp, 1.0)
    np.testing.assert_allclose(ncf_engine.pair_logits(neu1, u, i), ncf_engine.pair_logits(gmf, u, i), rtol=1e-5)


def test_bpr_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(3)
    params = {"user": rng.standard_normal((4, 3)).astype(np.float32),
              "item": rng.standard_normal((6, 3)).astype(np.float32),
              "bias": rng.standard_normal(6).astype(np.float32)}
    u, i, j, lam = np.array([0, 2]), np.array([1, 5]), np.array([3, 0]), 0.1
    P, Q, c = params["user"], params["item"], params["bias"]
    d = np.sum(P[u] * (Q[i] - Q[j]), 1) + c[i] - c[j]
    penalty = (P[u] ** 2).sum(1) + (Q[i] ** 2).sum(1) + (Q[j] ** 2).sum(1) + c[i] ** 2 + c[j] ** 2
    expected = -np.log(sigmoid(d)) + lam * penalty
    np.testing.assert_allclose(bpr_engine.bpr_loss(params, (u, i, j), regularization=lam), expected, rtol=1e-5)
    grad = jax.grad(lambda prm: jnp.sum(bpr_engine.bpr_loss(prm, (u, i, j), regularization=lam)))(params)
    expected_pu = -(1 - sigmoid(d))[:, None] * (Q[i] - Q[j]) + 2 * lam * P[u]
    np.testing.assert_allclose(np.asarray(grad["user"])[u], expected_pu, rtol=1e-4, atol=1e-6)


def test_multinomial_likelihood_kl_and_annealing_match_numpy():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 5))
    x = (rng.random((3, 5)) < 0.5).astype(np.float32)
    log_pi = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(vae_engine.multinomial_nll(logits, x), -(x * log_pi).sum(1), rtol=1e-5)
    mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, summed over dimensions
    s2 = np.exp(logvar)
    np.testing.assert_allclose(vae_engine.kl_normal(mu, logvar), (-0.5 * logvar + (s2 + mu**2) / 2 - 0.5).sum(1),
                               rtol=1e-5)
    assert float(vae_engine.beta(jnp.asarray(50), 0.2, 1000)) == pytest.approx(0.05)
    assert float(vae_engine.beta(jnp.asarray(5000), 0.2, 1000)) == pytest.approx(0.2)


def test_vae_code_heldout_nll_and_dae_loss_match_numpy():
    params = vae_engine.init_params(0, 6, (4, 2), variational=True)
    x = np.array([[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 0]], np.float32)
    h = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.tanh(h @ params["enc_w0"] + params["enc_b0"]) @ params["enc_w1"] + params["enc_b1"]
    mu = out[:, :2]  # the first half of the encoder output; the second is log sigma^2
    np.testing.assert_allclose(vae_engine.code(params, x, True), mu, rtol=1e-5, atol=1e-6)
    logits = np.tanh(mu @ params["dec_w0"] + params["dec_b0"]) @ params["dec_w1"] + params["dec_b1"]
    log_pi = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    # heldout_nll scores the held-out items x_out given the code of x_in
    x_out = np.array([[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], np.float32)
    np.testing.assert_allclose(vae_engine.heldout_nll(params, x, x_out, True), -(x_out * log_pi).sum(1), rtol=1e-5)
    # Mult-DAE without dropout: the training loss is the multinomial NLL of the reconstruction
    dae = vae_engine.init_params(1, 6, (3,), variational=False)
    logits = (h @ dae["enc_w0"] + dae["enc_b0"]) @ dae["dec_w0"] + dae["dec_b0"]  # one linear layer each
    log_pi = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    got = vae_engine.loss(dae, (x,), jax.random.PRNGKey(0), jnp.asarray(0), variational=False, dropout=0.0,
                          anneal_cap=0.2, anneal_steps=10)
    np.testing.assert_allclose(got, -(x * log_pi).sum(1), rtol=1e-5)


# -- the loop ------------------------------------------------------------------------------------
def numpy_ndcg(logits, x_in, x_out, k):
    """Liang et al.'s NDCG@k per row in NumPy: folded-in items last, ideal DCG over min(k, |x_out|)."""
    out = []
    for row, seen, held in zip(logits, x_in, x_out, strict=True):
        order = np.argsort(-np.where(seen > 0, -np.inf, row), kind="stable")[:k]
        dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(order) if held[item] > 0)
        n_rel = min(k, int((held > 0).sum()))
        out.append(dcg / sum(1.0 / np.log2(r + 2) for r in range(n_rel)) if n_rel else 0.0)
    return np.array(out)


@pytest.mark.parametrize("variational", [True, False])
def test_heldout_ndcg_matches_numpy(variational):
    rng = np.random.default_rng(3)
    params = vae_engine.init_params(2, 30, (8, 3), variational=variational)
    params = {k: (v + 0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    x_in = (rng.random((6, 30)) < 0.3).astype(np.float32)
    x_out = ((rng.random((6, 30)) < 0.2) & (x_in == 0)).astype(np.uint8)
    x_out[5] = 0  # a row without held-out items scores 0
    logits = np.asarray(vae_engine.decode(params, vae_engine.code(params, x_in, variational)))
    for k in (1, 5, 100):  # 100 > 30 items: clipped to the catalogue
        got = np.asarray(vae_engine.heldout_ndcg(params, x_in, x_out, k, variational))
        np.testing.assert_allclose(got, numpy_ndcg(logits, x_in, x_out, k), rtol=1e-5, atol=1e-7)
    assert got[5] == 0.0 and 0 < got[:5].min() and got.max() <= 1


def test_epoch_visits_every_example_once_and_averages_the_loss():
    # loss = (theta - y)^2 with plain SGD at lr 0: the epoch's loss is the mean over all examples
    # (a batch size that does not divide n: padding must carry no weight)
    y = jnp.arange(10.0)
    tx = loop.make_optimizer("sgd", 0.0)
    epoch = loop.make_epoch(lambda p, b, k, s: (p["theta"] - b[0]) ** 2, tx, batch_size=4)
    state, info = epoch(jax.random.PRNGKey(0), loop.init({"theta": jnp.asarray(2.0)}, tx), (y,))
    assert float(info.loss) == pytest.approx(np.mean((2.0 - np.arange(10.0)) ** 2), rel=1e-6)
    assert int(state.step) == 3


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch():
    tx = loop.make_optimizer("sgd", 0.1)
    epoch = loop.make_epoch(lambda p, b, k, s: (p["theta"] - b[0]) ** 2, tx, batch_size=2)
    scores = iter([3.0, 2.0, 1.0, 1.5, 1.2, 0.5, 0.1])
    seen = []

    def valid_loss(params):
        seen.append(float(params["theta"]))
        return next(scores)

    history = {}
    config = loop.LoopConfig(n_epochs=7, batch_size=2, learning_rate=0.1, patience=2)
    state = loop.train(epoch, loop.init({"theta": jnp.asarray(5.0)}, tx), lambda t: (jnp.zeros(4),),
                       jax.random.PRNGKey(0), config, valid_loss=valid_loss, history=history)
    assert history["valid_loss"] == [3.0, 2.0, 1.0, 1.5, 1.2]  # two epochs without improvement: stop
    assert history["best_epoch"] == [2.0]
    assert float(state.params["theta"]) == seen[2]


# -- a small implicit problem with structure Popularity cannot see ------------------------------
@pytest.fixture(scope="module")
def clusters():
    """4 groups of 40 users; each user interacts with 9 of their group's 15 items and one random
    other item. Items are equally popular, so Popularity ranks the held-out item at random."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(160):
        group = u % 4
        own = rng.choice(15, 9, replace=False) + 15 * group
        other = rng.choice(np.setdiff1d(np.arange(60), np.arange(15 * group, 15 * group + 15)), 1)
        users += [u] * 10
        items += list(own) + list(other)
    ratings = Ratings.from_arrays(np.array(users), np.array(items), np.ones(len(users)), n_users=160, n_items=60)
    return leave_one_out(ratings, seed=0, by="random")


FAST = {
    "GMF": {"n_epochs": 15, "learning_rate": 0.01, "batch_size": 128},
    "MLP": {"n_epochs": 15, "learning_rate": 0.01, "batch_size": 128, "layers": (16, 8, 4)},
    "NeuMF": {"n_epochs": 8, "learning_rate": 0.01, "batch_size": 128, "layers": (16, 8, 4), "finetune_optimizer":
              "adam"},
    "BPR": {"n_epochs": 15, "rank": 8, "learning_rate": 0.02, "batch_size": 128},
    "MultVAE": {"n_epochs": 40, "batch_size": 32, "hidden": (32, 8), "anneal_steps": 100},
    "MultDAE": {"n_epochs": 40, "batch_size": 32, "hidden": (32, 8)},
}


@pytest.fixture(scope="module")
def fitted(clusters):
    return {name: model_class(name)(**kwargs).fit(clusters.train) for name, kwargs in FAST.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST))
def test_training_lowers_the_loss_and_beats_popularity(fitted, clusters, name):
    model = fitted[name]
    loss = model.history_["loss"]
    assert loss[-1] < 0.9 * loss[0]
    popularity = full_ranking(bayesmf.Popularity().fit(clusters.train), clusters.train, clusters.test)["hr@10"]
    hr = full_ranking(model, clusters.train, clusters.test)["hr@10"]
    assert popularity < 0.4
    assert hr > popularity + 0.3, (name, hr, popularity)


@pytest.mark.slow
def test_neumf_records_the_pretraining(fitted):
    history = fitted["NeuMF"].history_
    assert len(history["gmf_loss"]) == len(history["mlp_loss"]) == len(history["loss"]) == 8


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST))
def test_save_load_round_trip_gives_identical_scores(fitted, name, tmp_path):
    model = fitted[name]
    loaded = load(model.save(tmp_path / name))
    assert type(loaded) is type(model)
    users = np.arange(0, 160, 7)
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))
    pd.testing.assert_frame_equal(loaded.recommend(users, k=5), model.recommend(users, k=5))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["GMF", "MultDAE"])
def test_same_seed_same_model_other_seed_another(clusters, name):
    kwargs = {**FAST[name], "n_epochs": 2}
    cls = model_class(name)
    a, b = cls(**kwargs).fit(clusters.train), cls(**kwargs).fit(clusters.train)
    c = cls(**kwargs, seed=1).fit(clusters.train)
    np.testing.assert_array_equal(a.score_users(np.arange(20)), b.score_users(np.arange(20)))
    assert not np.allclose(a.score_users(np.arange(20)), c.score_users(np.arange(20)))


@pytest.mark.slow
def test_validation_split_records_the_best_epoch_and_patience_stops(clusters):
    model = bayesmf.GMF(n_epochs=60, learning_rate=0.05, factors=16, batch_size=64, validation=0.3,
                        patience=2).fit(clusters.train)
    valid = model.history_["valid_loss"]
    assert len(valid) < 60
    best = int(model.history_["best_epoch"][0])
    assert valid[best] == min(valid) and len(valid) == best + 3


@pytest.fixture(scope="module")
def strong_split(clusters):
    from bayesmf.data.splits import strong_generalization

    return strong_generalization(clusters.train, 30, seed=0, n_validation_users=30)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MultVAE", "MultDAE"])
def test_heldout_users_select_the_epoch_by_their_ndcg(strong_split, name):
    """The per-epoch NDCG@k of the held-out validation users (computed on the device) agrees with
    the metrics module's strong-generalization protocol for the parameters kept, and those are the
    best epoch's."""
    from bayesmf.metrics import strong_generalization_ranking

    split = strong_split
    kwargs = {**FAST[name], "n_epochs": 12}
    model = model_class(name)(**kwargs).fit(split.train, heldout=(split.validation_fold_in, split.validation_target),
                                            heldout_k=10)
    valid = model.history_["valid_loss"]
    best = int(model.history_["best_epoch"][0])
    assert len(valid) == 12 and valid[best] == min(valid) and min(valid) < valid[0]
    report = strong_generalization_ranking(model, split.validation_fold_in, split.validation_target, ks=(10,))
    assert report["ndcg@10"] == pytest.approx(-valid[best], rel=1e-5)
    # patience without a validation fraction is allowed when held-out users are watched
    short = model_class(name)(**{**kwargs, "n_epochs": 40, "patience": 1}).fit(
        split.train, heldout=(split.validation_fold_in, split.validation_target), heldout_k=10)
    assert len(short.history_["valid_loss"]) < 40
    assert not hasattr(short, "_heldout")


def test_heldout_users_bad_input(strong_split):
    split = strong_split
    heldout = (split.validation_fold_in, split.validation_target)
    with pytest.raises(ConfigError, match="validation=0.2 and heldout users both select the epoch"):
        bayesmf.MultDAE(n_epochs=1, validation=0.2).fit(split.train, heldout=heldout)
    with pytest.raises(DataError, match="heldout must be"):
        bayesmf.MultDAE(n_epochs=1).fit(split.train, heldout=(split.validation_fold_in, None))
    with pytest.raises(ConfigError, match="patience=2 needs a validation split"):
        bayesmf.MultDAE(n_epochs=1, patience=2).fit(split.train)


# -- bad input -------------------------------------------------------------------------------------
def test_diverging_learning_rate_names_the_epoch_and_keeps_the_last_good_parameters(clusters):
    with pytest.raises(loop.TrainingDivergedError, match=r"epoch 0 with learning rate 1e\+30") as info:
        bayesmf.GMF(n_epochs=3, learning_rate=1e30, batch_size=256).fit(clusters.train)
    err = info.value
    assert err.epoch == 0 and err.learning_rate == 1e30
    assert isinstance(err, bayesmf.BayesmfError)
    good = err.partial  # the initial parameters: nothing trained before epoch 0
    assert set(good) == {"gmf_user", "gmf_item", "out_w", "out_b"}
    assert all(np.isfinite(v).all() for v in good.values())


def test_too_few_negatives_names_the_user_unless_replacement_is_asked():
    # user 1 interacted with 4 of 6 items: 2 negatives exist, 4 are requested per positive
    ratings = Ratings.from_arrays(np.array([0, 0, 1, 1, 1, 1, 2]), np.array([0, 1, 0, 1, 2, 3, 5]), np.ones(7),
                                  n_users=3, n_items=6)
    with pytest.raises(DataError, match="user index 1 has only 2 items available as negatives"):
        bayesmf.GMF(n_epochs=1).fit(ratings)
    with pytest.raises(DataError, match="user index 1 has only 2 items"):
        bayesmf.BPR(n_epochs=1, n_negatives=3).fit(ratings)
    model = bayesmf.GMF(n_epochs=1, replace_negatives=True).fit(ratings)
    assert np.isfinite(model.score_users([0, 1, 2])).all()


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("MLP", {"layers": (15, 8)}, "layers\\[0\\] = 15 must be even"),
    ("NeuMF", {"layers": (64,)}, "at least 2 layer widths"),
    ("MLP", {"layers": (16, 8.5)}, "layers entry must be a positive integer, got 8.5"),
    ("GMF", {"optimizer": "rmsprop"}, "optimizer must be one of"),
    ("NeuMF", {"alpha": 1.5}, "alpha must lie in"),
    ("BPR", {"negatives": "zipf"}, "negatives must be one of"),
    ("MultVAE", {"dropout": 1.0}, "dropout must lie in"),
    ("MultDAE", {"validation": 1.2}, "validation must be a number strictly between 0 and 1"),
    ("GMF", {"patience": 3}, "patience=3 needs a validation split"),
])
def test_bad_hyperparameters_are_config_errors(clusters, name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        model_class(name)(**kwargs).fit(clusters.train)


@pytest.mark.slow
def test_bpr_refuses_fold_in(fitted):
    with pytest.raises(ConfigError, match="fold_in is not available for BPR"):
        fitted["BPR"].fold_in(pd.DataFrame({"user": [999], "item": [0], "rating": [1.0]}))


def test_experiment_files_accept_the_new_models():
    doc = tomllib.loads(template_text("quickstart"))
    doc["models"] = [{"model": "NeuMF", "layers": [[16, 8], [32, 16, 8]], "patience": "none"},
                     {"model": "MultVAE", "hidden": [40, 10]}, {"model": "BPR", "negatives": "popularity"}]
    doc["evaluation"] = {"metrics": ["hr@10"]}
    models = parse_experiment(doc).models
    assert [m.model for m in models] == ["NeuMF", "MultVAE", "BPR"]
    doc["models"] = [{"model": "GMF", "negatives": "zipf"}]
    with pytest.raises(ConfigError, match="negatives must be one of"):
        parse_experiment(doc)


# -- fold-in: strong generalization ------------------------------------------------------------------
@pytest.mark.slow
def test_vae_fold_in_scores_a_new_user_from_their_history(fitted):
    model = fitted["MultVAE"]
    history = model.seen_items(3)
    before = model.score_users([3])
    new = pd.DataFrame({"user": 1000, "item": history, "rating": 1.0})
    model.fold_in(new)
    index = model.n_users_ - 1
    np.testing.assert_allclose(model.score_users([index]), before, rtol=1e-6)
    recs = model.recommend([1000], k=10)
    assert not set(recs["item"]) & set(history.tolist())
    assert len(recs) == 10
