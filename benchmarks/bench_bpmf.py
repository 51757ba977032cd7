"""BPMF on MovieLens: accuracy, seconds per Gibbs sweep, SVI and NUTS timings.

    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py gibbs --data ml-1m --rank 10 --samples 200
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py svi --data ml-1m
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py nuts --data ml-100k
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py leapfrog --data ml-100k
    BAYESMF_DATA=../shared/data python benchmarks/bench_bpmf.py nuts-ess --data ml-100k --samples 200 --warmup 200

Splits: ml-100k = the predefined u1.base/u1.test; ml-1m = random 90/10 with
``numpy.random.default_rng(42).permutation`` over rows (first 90% train). Timings are taken
after ``jax.block_until_ready``; the sweep time is the median over sweeps after compilation
(from a second, warm fit of the same shapes). Whole-process wall time is printed at exit —
compare it with the in-process figures.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import time

import numpy as np

START = time.perf_counter()


def load(name):
    from bayesmf import datasets, splits

    if name == "ml-100k":
        return splits.predefined("movielens-100k", "u1")
    return splits.random(datasets.load("movielens-1m"), 0.1, seed=42)


def rmse(model, test):
    pred = model.predict_ratings(test)
    return float(np.sqrt(np.mean((pred - test.values) ** 2)))


def sweep_seconds(train, rank, sweeps, **kw):
    """Median seconds per Gibbs sweep, timed per sweep on already-compiled code."""
    import functools

    import jax

    from bayesmf.models.bpmf import BPMF
    from bayesmf.posterior import gibbs

    model = BPMF(rank=rank, **kw)
    prior = model.prior
    m = float(np.mean(train.values))
    data = gibbs.prepare(train, m, rank)
    state = gibbs.init(jax.random.PRNGKey(0), prior, train.n_users, train.n_items)
    state = jax.tree_util.tree_map(lambda x: x[None], state)
    kernel = functools.partial(gibbs.chain_step, data=data, prior=prior)
    keys = jax.random.split(jax.random.PRNGKey(1), 1)
    state, _ = jax.block_until_ready(kernel(keys, state, 0.0))  # compile
    times = []
    for t in range(sweeps):
        keys = jax.random.split(jax.random.PRNGKey(t), 1)
        t0 = time.perf_counter()
        state, info = jax.block_until_ready(kernel(keys, state, 0.0))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), data.user_chunks.n_slots


def plain_pmf_model(train, rank, sigma=0.7):
    """Issue 4's reference: plain NumPyro PMF, N(0, 1) factors, fixed noise ``sigma``, the
    likelihood as one vectorised expression; called as ``model(users, items, values)``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    mean = float(np.mean(train.values))

    def model(users, items, values):
        U = numpyro.sample("U", dist.Normal(0, 1).expand([train.n_users, rank]).to_event(2))
        V = numpyro.sample("V", dist.Normal(0, 1).expand([train.n_items, rank]).to_event(2))
        with numpyro.plate("ratings", users.shape[0]):
            numpyro.sample("r", dist.Normal(mean + jnp.sum(U[users] * V[items], -1), sigma), obs=values)

    return model


def nuts_ess_per_second(train, test, rank, warmup, samples, depth, learn_noise, dense_mass="hyper", n_pairs=200,
                        parameterization="bartlett", plain=True, seed=0, nuts_init="gibbs"):
    """Effective samples per second of fit, plain NumPyro PMF NUTS vs BPMF NUTS, same budget
    (one chain, ``warmup`` + ``samples``, ``max_tree_depth=depth``), in one process. The quantity
    is the predicted mean rating ``m + u_i . v_j`` at ``n_pairs`` test pairs (identified, unlike
    the factors or BPMF's hyperparameters); ESS is ArviZ's bulk ESS, median over the pairs."""
    import arviz as az
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    from bayesmf.models.bpmf import BPMF
    from bayesmf.models.inference import NUTSConfig

    pick = np.random.default_rng(0).choice(test.nnz, n_pairs, replace=False)
    pu, pi = test.users[pick], test.items[pick]
    mean = float(np.mean(train.values))

    def ess(U, V):  # U (draws, n_users, D)
        pred = mean + np.einsum("sak,sak->sa", U[:, pu], V[:, pi])
        return float(np.median(az.ess(az.convert_to_dataset(pred[None]))["x"].values))

    out = {}
    if plain:
        t0 = time.perf_counter()
        mcmc = MCMC(NUTS(plain_pmf_model(train, rank), max_tree_depth=depth), num_warmup=warmup,
                    num_samples=samples, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), *(jnp.asarray(a) for a in (train.users, train.items, train.values)),
                 extra_fields=("num_steps",))
        draws = jax.block_until_ready(mcmc.get_samples())
        seconds = time.perf_counter() - t0
        median_ess = ess(np.asarray(draws["U"]), np.asarray(draws["V"]))
        out["plain_pmf"] = {"fit_seconds": seconds, "median_ess": median_ess, "ess_per_second": median_ess / seconds,
                            "mean_leapfrog_steps": float(np.mean(mcmc.get_extra_fields()["num_steps"]))}
    t0 = time.perf_counter()
    config = NUTSConfig(max_tree_depth=depth, dense_mass=dense_mass, parameterization=parameterization,
                        init=nuts_init)
    model = BPMF(rank=rank, inference=config, n_warmup=warmup, n_samples=samples, seed=seed,
                 **(dict(noise_prior=(1.0, 1.0)) if learn_noise else {})).fit(train)
    seconds = time.perf_counter() - t0
    median_ess = ess(model.user_samples_[0], model.item_samples_[0])
    out["bpmf"] = {"fit_seconds": seconds, "median_ess": median_ess, "ess_per_second": median_ess / seconds,
                   "mean_leapfrog_steps": float(model.sample_stats_["num_steps"].mean()),
                   "step_size": float(model.sample_stats_["step_size"][0, -1]),
                   "acceptance_rate": float(model.sample_stats_["acceptance_rate"].mean()),
                   "parameterization": parameterization, "nuts_init": nuts_init,
                   "rmse": float(np.sqrt(np.mean((model.predict(test.users, test.items) - test.values) ** 2)))}
    if plain:
        out["ess_per_second_ratio"] = out["bpmf"]["ess_per_second"] / out["plain_pmf"]["ess_per_second"]
    return out


def leapfrog_milliseconds(train, rank, learn_noise, steps=50, draws=40, parameterization="bartlett"):
    """Milliseconds per leapfrog step of NumPyro HMC (fixed ``steps`` per draw, fixed tiny step
    size, no adaptation) on BPMF's model in ``parameterization`` and, in the same process, on the plain
    NumPyro PMF of issue 4's reference (N(0, 1) factors, fixed noise 0.7): the cost of one
    gradient inside the sampler, free of tree-depth and adaptation differences. Each is timed on
    a second run of an already-compiled sampler. ``bpmf`` is the likelihood NUTS runs (packed sum of
    squares, ``layout``), ``bpmf_gathers`` the per-rating expression of the plain PMF."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import HMC, MCMC, init_to_value

    from bayesmf.posterior.model import Prior, bpmf_model
    from bayesmf.posterior.numpyro_inference import initial_values, likelihood_layout

    users, items, values = (jnp.asarray(a) for a in (train.users, train.items, train.values))
    mean = float(np.mean(train.values))
    plain_pmf = plain_pmf_model(train, rank)

    prior = Prior(rank=rank, noise_prior=(1.0, 1.0) if learn_noise else None)
    rng = np.random.default_rng(0)
    start = initial_values(prior, 0.3 * rng.standard_normal((train.n_users, rank)),
                           0.3 * rng.standard_normal((train.n_items, rank)), parameterization)
    bpmf_args = (users, items, values, train.n_users, train.n_items)
    bpmf_kwargs = dict(prior=prior, global_mean=mean, parameterization=parameterization)
    runs = {"plain_pmf": (plain_pmf, (users, items, values), {}, {}),
            "bpmf": (bpmf_model, bpmf_args, dict(bpmf_kwargs, layout=likelihood_layout(train, mean)), start),
            "bpmf_gathers": (bpmf_model, bpmf_args, bpmf_kwargs, start)}
    out = {}
    for name, (model, args, kwargs, values_) in runs.items():
        kernel = HMC(model, step_size=1e-4, num_steps=steps, adapt_step_size=False,
                     init_strategy=init_to_value(values=values_))
        mcmc = MCMC(kernel, num_warmup=0, num_samples=draws, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), *args, **kwargs)  # compiles
        mcmc.post_warmup_state = mcmc.last_state
        t0 = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, *args, **kwargs)
        jax.block_until_ready(mcmc.get_samples())
        out[f"{name}_ms_per_step"] = (time.perf_counter() - t0) / (steps * draws) * 1e3
    out["ratio"] = out["bpmf_ms_per_step"] / out["plain_pmf_ms_per_step"]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("inference", choices=["gibbs", "svi", "nuts", "map", "sweep", "leapfrog", "nuts-ess"])
    parser.add_argument("--data", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--learn-noise", action="store_true", help="alpha ~ Gamma(1, 1) instead of fixed 2")
    parser.add_argument("--biases", action="store_true", help="user/item biases with Gamma(1, 1) precisions")
    parser.add_argument("--svi-steps", type=int, default=3000)
    parser.add_argument("--guide", default="meanfield")
    parser.add_argument("--svi-batch", type=int, default=100_000)
    parser.add_argument("--svi-lr", type=float, default=0.01)
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--max-depth", type=int, default=None, help="NUTS maximum tree depth (default NumPyro's 10)")
    parser.add_argument("--diagonal-mass", dest="dense_mass", action="store_const", const=False, default="hyper",
                        help="NUTS with an all-diagonal mass matrix (default: dense over the hyperparameter blocks)")
    parser.add_argument("--parameterization", default="bartlett", choices=["noncentered", "bartlett"],
                        help="coordinates of BPMF's NUTS (bayesmf.posterior.model)")
    parser.add_argument("--seed", type=int, default=0, help="nuts-ess: seed of both chains (the ESS of a "
                        "100-draw chain varies from chain to chain)")
    parser.add_argument("--nuts-init", default="gibbs", choices=["gibbs", "map"],
                        help="nuts-ess: BPMF's NUTS start (BPMF(nuts_init=...))")
    parser.add_argument("--no-plain", dest="plain", action="store_false",
                        help="nuts-ess: skip the plain NumPyro PMF reference (BPMF only)")
    args = parser.parse_args()
    atexit.register(lambda: print(f"whole-process wall time {time.perf_counter() - START:.1f} s"))

    from bayesmf.models.bpmf import BPMF
    from bayesmf.models.inference import NUTSConfig, SVIConfig

    train, test = load(args.data)
    noise = dict(noise_prior=(1.0, 1.0)) if args.learn_noise else {}
    if args.biases:
        noise["biases"] = True
    out = {"data": args.data, "inference": args.inference, "rank": args.rank, "learn_noise": args.learn_noise,
           "biases": args.biases, "threads": os.environ.get("XLA_FLAGS", "default")}
    if args.inference == "sweep":
        out["seconds_per_sweep"], out["padded_slots"] = sweep_seconds(train, args.rank, 30, **noise)
        print(json.dumps(out))
        return
    if args.inference == "leapfrog":
        out.update(leapfrog_milliseconds(train, args.rank, args.learn_noise, parameterization=args.parameterization))
        print(json.dumps(out))
        return
    if args.inference == "nuts-ess":
        out.update(nuts_ess_per_second(train, test, args.rank, args.warmup, args.samples, args.max_depth or 10,
                                       args.learn_noise, args.dense_mass, parameterization=args.parameterization,
                                       plain=args.plain, seed=args.seed, nuts_init=args.nuts_init))
        print(json.dumps(out))
        return
    kw = dict(rank=args.rank, inference=args.inference, n_samples=args.samples, n_warmup=args.warmup, **noise)
    if args.inference == "nuts":
        kw["chains"] = args.chains
        depth = {} if args.max_depth is None else {"max_tree_depth": args.max_depth}
        kw["inference"] = NUTSConfig(dense_mass=args.dense_mass, parameterization=args.parameterization, **depth)
    if args.inference == "svi":
        kw["inference"] = SVIConfig(steps=args.svi_steps, guide=args.guide, batch_size=args.svi_batch,
                                    learning_rate=args.svi_lr)
    t0 = time.perf_counter()
    model = BPMF(**kw).fit(train)
    out["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["rmse"] = rmse(model, test)
    out["predict_seconds"] = time.perf_counter() - t0
    if args.inference == "gibbs":
        out["seconds_per_sweep"], out["padded_slots"] = sweep_seconds(train, args.rank, 20, **noise)
    if args.inference == "nuts":
        stats = model.sample_stats_
        out["divergences"] = int(stats["diverging"].sum())
        out["mean_leapfrog_steps"] = float(stats["num_steps"].mean())
        import arviz as az

        idata = model.to_arviz(factors=False)
        ess = az.ess(idata)
        out["min_ess_hyper"] = float(min(float(ess[v].min()) for v in ess.data_vars))
    if model.has_draws:
        import arviz as az

        idata = model.to_arviz(factors=False)
        out["alpha_mean"] = float(model.alpha_samples_.mean())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
