"""Sharded fits on several CPU devices, run in a fresh process by tests/test_sharding.py and
tests/test_multiprocess.py (JAX fixes its device count when it starts, so these cannot run inside
the pytest process). ``python tests/sharding_worker.py CASE OUT.npz``: every fit of ``CASE`` on
``devices=None`` and on meshes of 1..``jax.device_count()`` devices, the final states written to
``OUT.npz`` under ``"<fit>/<devices>/<field>"`` (the parent compares them). Several processes
(tests/multiprocess_worker.py) call the same fits after ``jax.distributed.initialize``.

The layouts use small chunks (a few hundred slots), so that every side has several chunks — a
number that 2, 3 and 4 do not all divide — and the data has rows without ratings on both sides.
"""

from __future__ import annotations

import sys

import jax
import numpy as np


def ratings():
    """A small synthetic data set with two users and two items without ratings (the last ones)."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.synthetic import synthetic

    train = synthetic(n_users=157, n_items=83, n_ratings=2400, rank=3, seed=4).ratings
    return Ratings.from_arrays(train.users, train.items, train.values, n_users=train.n_users + 2,
                               n_items=train.n_items + 2)


def small_chunks(train, side, values=None, rank=3, rating_index=False):
    from bayesmf.engines.chunks import GRAM_WIDTH, chunks_for

    return chunks_for(train, side, values, GRAM_WIDTH, 8 * GRAM_WIDTH, np.float32, rating_index)


LABELS = None  # the device counts to fit with ("0": devices=None), all of them when None
NAMES = None  # the fits of a case to run, all of them when None


def meshes():
    """``None`` (the unsharded path, label "0"), then meshes of the first 1, 2, ... devices."""
    from bayesmf.engines.sharding import device_mesh

    return [(str(n), device_mesh(jax.devices()[:n]) if n else None) for n in range(jax.device_count() + 1)
            if LABELS is None or str(n) in LABELS]


def selected(fits: dict) -> dict:
    return {name: fit for name, fit in fits.items() if NAMES is None or name in NAMES}


def als_fits(out: dict) -> None:
    from bayesmf.engines import als, implicit_als
    from bayesmf.engines.driver import iterate
    from bayesmf.engines.sparse import rating_arrays

    train = ratings()
    dtype = np.float32
    n_rows = {"user_chunks": train.n_items, "item_chunks": train.n_users}
    data = als.ALSData(small_chunks(train, "user"), small_chunks(train, "item"),
                       jax.numpy.asarray(train.user_counts, dtype), jax.numpy.asarray(train.item_counts, dtype),
                       rating_arrays(train, dtype), jax.numpy.asarray(np.mean(train.values), dtype))
    positive = train.with_values(np.abs(train.values))
    implicit = implicit_als.ImplicitData(small_chunks(positive, "user"), small_chunks(positive, "item"),
                                         rating_arrays(positive, dtype))
    out["chunks"] = np.array([data.user_chunks.cols.shape[0], data.item_chunks.cols.shape[0]])
    fits = {
        "als": (als, data, als.ALSConfig(0.05, 0.05, True)),
        "nnals": (als, data, als.ALSConfig(0.05, 0.05, True, nonnegative=True, nnls_steps=5)),
        # every side's rows solved chunk by chunk (the path of data too large for one batch)
        "als_chunked": (als, data, als.ALSConfig(0.05, 0.05, True, systems_budget=0)),
        "nnals_chunked": (als, data, als.ALSConfig(0.05, 0.05, True, nonnegative=True, nnls_steps=5,
                                                   systems_budget=0)),
        "implicit": (implicit_als, implicit, implicit_als.ImplicitConfig(0.05, 2.0, cg_steps=3)),
        "implicit_exact": (implicit_als, implicit, implicit_als.ImplicitConfig(0.05, 2.0, exact=True)),
    }
    for name, (engine, base, config) in selected(fits).items():
        for label, mesh in meshes():
            d = base if mesh is None else engine.sharding.shard_data(base, mesh, n_rows)
            state = als.init_factors(3, train.n_users, train.n_items, 4, 0.1, dtype,
                                     nonnegative=config.__class__ is als.ALSConfig and config.nonnegative)
            state, history = iterate(engine.build_kernel(d, config), state, 3)
            for field, value in state._asdict().items():
                out[f"{name}/{label}/{field}"] = np.asarray(value)
            out[f"{name}/{label}/loss"] = np.asarray(history["loss"])


def gibbs_fits(out: dict) -> None:
    from bayesmf.engines.driver import run
    from bayesmf.posterior import gibbs
    from bayesmf.posterior.model import Prior

    train = ratings()
    centre = float(np.mean(train.values))
    residual = (train.values - centre).astype(np.float32)
    base = gibbs.GibbsData(small_chunks(train, "user", residual, rating_index=True),
                           small_chunks(train, "item", residual, rating_index=True),
                           jax.numpy.asarray(train.users), jax.numpy.asarray(train.items),
                           jax.numpy.asarray(residual), jax.numpy.asarray(centre, np.float32))
    priors = {
        "gibbs": Prior(rank=3, nu0=3.0, alpha=2.0, noise_prior=(1.0, 0.5), offset_prior=(centre, 1.0),
                       bias_prior=(1.0, 1.0)),
        "gibbs_plain": Prior(rank=3, nu0=3.0, alpha=2.0),
        "gibbs_student": Prior(rank=3, nu0=3.0, alpha=2.0, noise_prior=(1.0, 0.5), noise="student_t"),
    }
    chains = 2
    rng = np.random.default_rng(0)
    U0 = (0.1 * rng.standard_normal((train.n_users, 3))).astype(np.float32)
    V0 = (0.1 * rng.standard_normal((train.n_items, 3))).astype(np.float32)
    for name, prior in selected(priors).items():
        for label, mesh in meshes():
            data = base if mesh is None else gibbs.shard(base, mesh)
            kernel = gibbs.build_kernel(data, prior)
            one = kernel.init(jax.random.PRNGKey(1), train.n_users, train.n_items, U=U0, V=V0, offset=centre)
            states = jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (chains, *x.shape)), one)
            result = run(kernel, states, jax.random.PRNGKey(2), n_warmup=2, n_samples=3, draw_axis=1,
                         collect=lambda s: {"U": s.U, "V": s.V, "alpha": s.alpha, "offset": s.offset})
            for site, draws in result.samples.items():
                out[f"{name}/{label}/{site}"] = np.asarray(draws)
            for field, value in result.state._asdict().items():
                if value is not None:
                    out[f"{name}/{label}/state_{field}"] = np.asarray(value)


def estimator_fits(out: dict) -> None:
    """The estimators' ``devices=`` plumbing: a fit on every mesh and a save/load round trip."""
    import tempfile

    import bayesmf

    train = ratings()
    positive = train.with_values(np.abs(train.values))
    fits = {
        "ALS": (bayesmf.ALS, dict(rank=3, n_iter=3), train),
        "ImplicitALS": (bayesmf.ImplicitALS, dict(rank=3, n_iter=2), positive),
        "BPMF": (bayesmf.BPMF, dict(rank=3, n_samples=3, n_warmup=2, biases=True), train),
    }
    for name, (cls, params, data) in selected(fits).items():
        for label, _ in meshes():
            devices = None if label == "0" else jax.devices()[:int(label)]
            model = cls(devices=devices, **params).fit(data)
            out[f"{name}/{label}/user_factors"] = np.asarray(model.user_factors_)
            out[f"{name}/{label}/predict"] = np.asarray(model.predict(train.users[:50], train.items[:50]))
        with tempfile.TemporaryDirectory() as tmp:
            model.save(f"{tmp}/m")
            loaded = bayesmf.load(f"{tmp}/m")
            out[f"{name}/loaded/predict"] = np.asarray(loaded.predict(train.users[:50], train.items[:50]))
            out[f"{name}/loaded/devices"] = np.asarray(loaded.devices is None)


CASES = {"als": als_fits, "gibbs": gibbs_fits, "estimators": estimator_fits}


def main(argv) -> None:
    """``CASE OUT.npz [LABELS [NAMES]]``, LABELS and NAMES comma-separated."""
    global LABELS, NAMES
    case, path = argv[1], argv[2]
    if len(argv) > 3:
        LABELS = argv[3].split(",")
    if len(argv) > 4:
        NAMES = argv[4].split(",")
    out: dict = {"device_count": np.asarray(jax.device_count())}
    CASES[case](out)
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv)
