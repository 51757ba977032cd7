"""NUTS and SVI for BPMF, both on :func:`bayesmf.posterior.model.bpmf_model` (NumPyro).

Both return draws in the sampler's layout ``{site: (chains, draws, ...)}`` with sites ``U``,
``V``, ``mu_U``, ``Lambda_U``, ``mu_V``, ``Lambda_V`` and ``alpha``, so the estimator treats
every inference the same way downstream (prediction, ArviZ, save/load).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.posterior.model import Prior, bpmf_model

# NumPyro's per-draw fields -> the names of the sample stats (ArviZ's where it has one)
_STAT_NAMES = {"diverging": "diverging", "num_steps": "num_steps", "accept_prob": "acceptance_rate",
         "adapt_state.step_size": "step_size", "potential_energy": "potential_energy"}
SITES = ("U", "V", "mu_U", "Lambda_U", "mu_V", "Lambda_V", "b_U", "b_V", "bias_precision_U", "bias_precision_V",
         "offset", "tau", "kappa")


def _model_args(ratings, global_mean):
    return (jnp.asarray(ratings.users), jnp.asarray(ratings.items), jnp.asarray(ratings.values),
            ratings.n_users, ratings.n_items)


def likelihood_layout(ratings, global_mean: float):
    """The ratings packed for the model's scatter-free likelihood gradient (``bpmf_model(layout=...)``),
    targets ``r - global_mean`` in JAX's default float type (float64 when x64 is enabled)."""
    from bayesmf.engines.residuals import rating_layout

    dtype = np.dtype(jnp.result_type(float))
    return rating_layout(ratings.users, ratings.items, np.asarray(ratings.values, np.float64) - global_mean,
                         ratings.n_users, ratings.n_items, dtype)


def _with_alpha(draws: dict, prior: Prior, shape) -> dict:
    if "alpha" not in draws:
        draws["alpha"] = np.full(shape, prior.alpha, np.float32)
    return draws


def site_values(prior: Prior, parameterization: str, quantities: dict) -> dict:
    """The model's latent sites in ``parameterization`` from its quantities ``quantities``:
    ``U``, ``V``, ``mu_U``, ``Lambda_U``, ``mu_V``, ``Lambda_V`` and, where the prior has them,
    ``alpha``, ``offset``, ``b_U``, ``b_V``, ``bias_precision_U`` and ``bias_precision_V`` (e.g. a Gibbs
    draw), any leading batch dimensions. The inverse of the model's deterministic maps: Bartlett's
    ``A = chol(Lambda) / sqrt(w0)`` (``chi2 = diag(A)^2``, ``normal`` = ``A`` below the diagonal)
    and, non-centred, ``z_mu = sqrt(beta0) (mu - mu0) L`` and ``z_i = (u_i - mu) L`` (row form)."""
    below = np.tril_indices(prior.rank, -1)
    values = {}
    for side in ("U", "V"):
        rows, mu, lam = (jnp.asarray(quantities[name]) for name in (side, f"mu_{side}", f"Lambda_{side}"))
        if parameterization == "centered":
            values.update({f"Lambda_{side}": lam, f"mu_{side}": mu, side: rows})
            continue
        chol = jnp.linalg.cholesky(lam)
        bartlett = chol / np.sqrt(prior.w0)
        values[f"bartlett_chi2_{side}"] = jnp.diagonal(bartlett, axis1=-2, axis2=-1) ** 2
        values[f"bartlett_normal_{side}"] = bartlett[..., below[0], below[1]]
        if parameterization == "bartlett":
            values.update({f"mu_{side}": mu, side: rows})
        else:
            values[f"z_mu_{side}"] = np.sqrt(prior.beta0) * jnp.einsum("...d,...de->...e", mu - prior.mu0, chol)
            values[f"z_{side}"] = jnp.einsum("...nd,...de->...ne", rows - mu[..., None, :], chol)
    names = (("alpha",) if prior.noise_prior is not None else ()) + (("offset",) if prior.learns_offset else ()) + (
        ("b_U", "b_V", "bias_precision_U", "bias_precision_V") if prior.has_biases else ()) + (
        ("tau", "kappa") if prior.noise == "heteroscedastic" else ())
    values.update({name: jnp.asarray(quantities[name]) for name in names})
    return values


def initial_values(prior: Prior, U, V, parameterization: str, ratings=None, global_mean: float = 0.0) -> dict:
    """Starting point for NumPyro: the given factors (e.g. PMF MAP), biases at 0, and the
    hyperparameters at their prior means — or, with ``ratings`` (a :class:`~bayesmf.data.Ratings`),
    at their conditional posterior means given the factors: ``Lambda = nu_N W_N`` and
    ``mu = mu_N`` of the Normal-Wishart posterior (:func:`bayesmf.posterior.gibbs.normal_wishart_posterior`)
    and ``alpha = (a0 + nnz/2) / (b0 + SSE/2)``, so that warm-up does not first have to carry the
    hyperparameters from the prior to where the factors put them. Either way not NumPyro's default
    of uniform draws in (-2, 2) on the unconstrained scale, which can start the biases and
    precisions far out in the tails."""
    U, V = np.asarray(U, np.float64), np.asarray(V, np.float64)
    quantities = {"U": U, "V": V}
    for side, rows in (("U", U), ("V", V)):
        quantities[f"mu_{side}"], quantities[f"Lambda_{side}"] = _hyper_start(prior, rows, ratings is not None)
    if prior.noise_prior is not None:
        a0, b0 = prior.noise_prior
        quantities["alpha"] = a0 / b0
        if ratings is not None:
            pred = global_mean + np.einsum("nk,nk->n", U[ratings.users], V[ratings.items])
            sse = float(np.sum((np.asarray(ratings.values, np.float64) - pred) ** 2))
            quantities["alpha"] = (a0 + ratings.nnz / 2) / (b0 + sse / 2)
    if prior.learns_offset:
        quantities["offset"] = global_mean  # the factors were fitted with the offset there
    if prior.noise == "heteroscedastic":  # at their prior means
        quantities.update(tau=np.ones(U.shape[0]), kappa=np.ones(V.shape[0]))
    if prior.has_biases:
        a, b = prior.bias_prior
        quantities.update(b_U=np.zeros(U.shape[0]), b_V=np.zeros(V.shape[0]),
                          bias_precision_U=a / b, bias_precision_V=a / b)
    return site_values(prior, parameterization, {k: np.asarray(v, np.float32) for k, v in quantities.items()})


def _hyper_start(prior: Prior, rows, conditional: bool):
    """``(mu, Lambda)``: prior means (``mu0``, ``nu0 W0``) or the Normal-Wishart posterior means
    given ``rows`` (N, D): ``mu_N`` and ``nu_N W_N`` (float64, on the host)."""
    from bayesmf.posterior.gibbs import normal_wishart_posterior

    D = prior.rank
    if not conditional:
        return np.full(D, prior.mu0), prior.nu * prior.w0 * np.eye(D)
    mu_n, w_inv_chol, _ = normal_wishart_posterior(jnp.asarray(rows, jnp.float32), prior)
    w_inv_chol = np.asarray(w_inv_chol, np.float64)
    return np.asarray(mu_n, np.float64), (prior.nu + rows.shape[0]) * np.linalg.inv(w_inv_chol @ w_inv_chol.T)


def run_nuts(ratings, prior: Prior, global_mean: float, key, *, n_warmup: int, n_samples: int, chains: int,
             init_U=None, init_V=None, target_accept: float = 0.8, max_tree_depth: int = 8,
             dense_mass: bool | str = "hyper", parameterization: str = "bartlett", warm_draws: dict | None = None,
             adapt_mass_matrix: bool | None = None, progress: bool = False):
    """NumPyro NUTS on the model in ``parameterization`` (``"noncentered"`` or ``"bartlett"``,
    see :mod:`bayesmf.posterior.model`), given to NUTS as its jitted potential (the negative
    log joint on the unconstrained scale, full likelihood through :func:`likelihood_layout`);
    draws are mapped back to the model's sites, deterministic ones included, afterwards.
    Returns (draws, stats).
    ``dense_mass``: False (diagonal), True (dense over everything: small models only) or
    ``"hyper"`` (dense blocks over each side's hyperparameter coordinates — the Bartlett variables
    and ``z_mu`` or ``mu`` of ``(mu, Lambda)`` — diagonal elsewhere).

    Initialised at the given factors (e.g. PMF MAP) with the hyperparameters at their conditional
    posterior means given them (:func:`initial_values`), NumPyro's warm-up adapting the step
    size and the mass matrix from the identity — or, with ``warm_draws`` (``n`` draws of the
    model's quantities, ``{name: (n, ...)}`` as :func:`site_values` reads them, e.g. a short Gibbs
    run), at those draws (the chains at ``chains`` draws evenly spaced back from the last) with
    the inverse mass matrix their variance in each unconstrained coordinate
    (:func:`inverse_mass_from_draws`; diagonal: ``dense_mass`` is then ignored), kept through the
    warm-up, which adapts the step size only. ``adapt_mass_matrix`` overrides that choice
    (default: adapt only without ``warm_draws``). Why keep it: with a short warm-up (100
    iterations) NumPyro estimates the mass matrix from one window of 75 iterations (15-90) of a
    chain that has barely moved, which left much smaller step sizes and lower ESS
    (benchmarks/RESULTS.md, "NUTS from a Gibbs start"). Either way NumPyro restarts the step
    size's dual averaging at the window's end (iteration 90).

    Sample stats (``stats``, per chain and draw): ``diverging``, ``num_steps`` (leapfrog steps,
    2^depth - 1 at most), ``acceptance_rate``, ``step_size`` and ``potential_energy``.
    """
    from numpyro.infer.util import potential_energy

    from bayesmf.posterior.guides import unconstrained_start

    if dense_mass == "hyper":
        # a dense block only over each side's hyperparameters (D + D(D+1)/2 coordinates),
        # where correlations are strong and the block is small; the factors stay diagonal —
        # a dense matrix over all (n_users + n_items) D factors would cost O(P^2) memory for
        # little gain, as they are nearly independent given the hyperparameters
        mu_site = "mu" if parameterization == "bartlett" else "z_mu"
        dense_mass = [(f"bartlett_chi2_{s}", f"bartlett_normal_{s}", f"{mu_site}_{s}") for s in ("U", "V")]

    args = _model_args(ratings, global_mean)
    kwargs, one, sites = _latent_sites(args, prior, global_mean, parameterization)
    # the packed Gaussian likelihood; other noise models use the per-rating one
    layout = likelihood_layout(ratings, global_mean) if prior.gaussian else None
    # NUTS on the potential (minus the log joint on the unconstrained scale) rather than on the
    # model: NumPyro would trace the model and evaluate it and its gradient eagerly to set up
    # (one XLA compilation per operation, slow on a real data set); jitted, the start's
    # potential and gradient compile once
    potential = jax.jit(lambda z: potential_energy(bpmf_model, args, dict(kwargs, layout=layout), z))
    k_start, k_run = jax.random.split(key)
    inverse_mass = None
    if warm_draws is not None:
        adapt_mass_matrix = False if adapt_mass_matrix is None else adapt_mass_matrix
        starts, dense_mass, inverse_mass = warm_start(sites, site_values(prior, parameterization, warm_draws), chains,
                                                      dense_mass, adapt_mass_matrix)
    else:
        adapt_mass_matrix = True if adapt_mass_matrix is None else adapt_mass_matrix
        values = {} if init_U is None else initial_values(prior, init_U, init_V, parameterization, ratings,
                                                           global_mean)
        # the given values for every chain; sites without one drawn per chain
        starts = [unconstrained_start(sites, k, values) for k in jax.random.split(k_start, chains)]
    latent, stats = sample_nuts(potential, sites, starts, k_run, n_warmup=n_warmup, n_samples=n_samples,
                                target_accept=target_accept, max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                                inverse_mass=inverse_mass, adapt_mass_matrix=adapt_mass_matrix, progress=progress)
    raw = _model_sites(latent, one, kwargs)
    draws = {name: np.asarray(raw[name]).reshape(chains, n_samples, *raw[name].shape[1:])
             for name in (*SITES, "alpha") if name in raw}
    return _with_alpha(draws, prior, (chains, n_samples)), stats


def sample_nuts(potential, sites, starts: list, key, *, n_warmup: int, n_samples: int, target_accept: float,
                max_tree_depth: int, dense_mass, inverse_mass, adapt_mass_matrix: bool, progress: bool):
    """NumPyro NUTS on ``potential`` (minus a model's log joint on the unconstrained scale, a
    function of ``{site: value}`` over the latent ``sites``), one chain per start of ``starts``
    (unconstrained values), run one after the other. Returns the constrained draws of the latent
    sites ``{site: (chains * n_samples, ...)}`` (chain-major) and the sample stats ``{name:
    (chains, n_samples)}`` (:func:`run_nuts`). Raises
    :class:`~bayesmf.errors.DivergenceError` when a chain never moved (a start where the log
    density or its gradient is not finite)."""
    from numpyro.infer import MCMC, NUTS

    from bayesmf.posterior.guides import constrain

    chains = len(starts)
    start = starts[0] if chains == 1 else jax.tree.map(lambda *v: jnp.stack(v), *starts)
    kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                  dense_mass=dense_mass, inverse_mass_matrix=inverse_mass, adapt_mass_matrix=adapt_mass_matrix)
    mcmc = MCMC(kernel, num_warmup=n_warmup, num_samples=n_samples, num_chains=chains,
                chain_method="sequential", progress_bar=progress)
    mcmc.run(key, init_params=start, extra_fields=tuple(_STAT_NAMES))
    unconstrained = mcmc.get_samples(group_by_chain=True)
    first = np.asarray(unconstrained[sites[0].name]).reshape(chains, n_samples, -1)
    same = (first == first[:, :1]) | (np.isnan(first) & np.isnan(first[:, :1]))  # NaN counts as not moving
    stuck = [int(c) for c in np.flatnonzero(same.all(axis=(1, 2)))] if n_samples > 1 else []
    if stuck:  # a start where the log density or its gradient is not finite: no move is ever accepted
        from bayesmf.errors import DivergenceError

        raise DivergenceError(f"NUTS chain(s) {stuck} never moved from their start in {n_warmup} + {n_samples} "
                              "iterations: the log density or its gradient is not finite there (check the "
                              "starting factors and hyperparameters)")
    flat = {name: v.reshape(chains * n_samples, *v.shape[2:]) for name, v in unconstrained.items()}
    stats = {_STAT_NAMES[name]: np.asarray(v) for name, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return constrain(sites, flat), stats


def warm_start(sites, draws: dict, chains: int, dense_mass, adapt_mass_matrix: bool):
    """NUTS's start from ``n`` draws ``{site: (n, ...)}`` of the latent ``sites`` (constrained,
    e.g. a short Gibbs run): the chains start at ``chains`` draws evenly spaced back from the
    last, and the inverse mass matrix is the draws' variance on the unconstrained scale
    (:func:`inverse_mass_from_draws`), dense over the blocks of ``dense_mass`` only when the
    warm-up adapts it. Returns ``(starts, dense_mass, inverse_mass)``."""
    from bayesmf.posterior.guides import unconstrain

    unconstrained_draws = unconstrain(sites, draws)
    n = next(iter(unconstrained_draws.values())).shape[0]
    picks = np.linspace(n - 1, 0, chains, endpoint=False).astype(int)
    starts = [{name: v[i] for name, v in unconstrained_draws.items()} for i in picks]
    # dense blocks only where the warm-up will estimate their off-diagonal terms; kept
    # fixed, a dense block would hold a diagonal multiplied as a full matrix at every step
    dense_mass = _dense_blocks(dense_mass, sites) if adapt_mass_matrix else []
    return starts, dense_mass, inverse_mass_from_draws(unconstrained_draws, dense_mass)


def _dense_blocks(dense_mass, sites) -> list[tuple[str, ...]]:
    """NumPyro's ``dense_mass`` as a list of site-name tuples (``False`` -> none, ``True`` -> one
    block over every site)."""
    if dense_mass is True:
        return [tuple(sorted(site.name for site in sites))]
    return [] if dense_mass is False else [tuple(block) for block in dense_mass]


def inverse_mass_from_draws(draws: dict, blocks: list[tuple[str, ...]], shrinkage: float = 5.0) -> dict:
    """An inverse mass matrix for NumPyro's NUTS from ``n`` draws ``{site: (n, ...)}`` on the
    unconstrained scale: the variance ``s^2`` of each coordinate over the draws (``n - 1`` in
    the denominator), shrunk as NumPyro's own warm-up shrinks its estimates,
    ``(n s^2 + 10^-3 shrinkage) / (n + shrinkage)``; a diagonal matrix for each block of
    ``blocks`` (NumPyro's ``dense_mass`` list) and one vector over the remaining sites, keyed as
    NumPyro's structured mass matrix is: by tuples of site names, each block's coordinates in
    its tuple's order, each site flattened row-major."""
    n = next(iter(draws.values())).shape[0]
    variance = {name: (n * np.var(np.asarray(v, np.float64).reshape(n, -1), axis=0, ddof=1) + 1e-3 * shrinkage)
                / (n + shrinkage) for name, v in draws.items()}
    dtype = jnp.result_type(float)
    inverse_mass = {block: jnp.diag(jnp.asarray(np.concatenate([variance[name] for name in block]), dtype))
                    for block in blocks}
    rest = tuple(sorted(set(draws) - {name for block in blocks for name in block}))
    if rest:
        inverse_mass[rest] = jnp.asarray(np.concatenate([variance[name] for name in rest]), dtype)
    return inverse_mass


def _latent_sites(args, prior: Prior, global_mean: float, parameterization: str):
    """From the model's positional arguments (:func:`_model_args`): its keyword arguments, the
    positional arguments of a one-rating model (for finding the sites and computing the
    deterministic ones: no site but the likelihood reads the ratings), and its latent sites."""
    from bayesmf.posterior.guides import latent_sites

    users, items, values, n_users, n_items = args
    kwargs = dict(prior=prior, global_mean=global_mean, parameterization=parameterization)
    one = (users[:1], items[:1], values[:1], n_users, n_items)
    return kwargs, one, latent_sites(bpmf_model, *one, **kwargs)


def run_svi(ratings, prior: Prior, global_mean: float, key, *, steps: int, n_samples: int, guide: str = "meanfield",
            guide_rank: int = 10, batch_size: int | None = None, learning_rate: float = 0.01,
            init_U=None, init_V=None, progress: bool = False, chunk: int = 100):
    """NumPyro SVI (Adam, ``Trace_ELBO``) with a mean-field or low-rank-plus-diagonal Gaussian guide
    (:class:`~bayesmf.posterior.guides.GaussianGuide`, the families of NumPyro's ``AutoNormal`` and
    ``AutoLowRankMultivariateNormal``) on the model in Bartlett's coordinates (each ``Lambda`` from
    the Bartlett variables, ``mu`` and the rows centred; guide families are Gaussian in the
    unconstrained coordinates, and those of ``Lambda`` — log of the squared diagonal and the
    entries below it of ``A = L / sqrt(w0)`` — are an affine map of the centred Wishart's
    ``(log L_dd, L_de)``, so the mean-field family is the same as on the centred model; a step
    is cheaper than the centred model's, whose rows' density runs a triangular solve with ``n``
    right-hand sides). Minibatched over ratings, each step draws
    ``batch_size`` rating indices with replacement and scales the likelihood by ``nnz /
    batch_size``; full batch (the default) the likelihood runs through :func:`likelihood_layout`.
    Steps run ``chunk`` at a time inside one jitted ``lax.scan``; set-up and the posterior draws
    are jitted functions too (no eager tracing of the model).
    Returns (draws from the guide, ELBO loss trace)."""
    import numpyro.optim as optim
    from numpyro.infer import SVI, Trace_ELBO

    from bayesmf.errors import ConfigError
    from bayesmf.posterior.guides import GaussianGuide

    if guide not in ("meanfield", "lowrank"):
        raise ConfigError(f"svi guide must be 'meanfield' or 'lowrank', got {guide!r}")
    if guide == "lowrank" and guide_rank < 1:
        raise ConfigError(f"a low-rank guide needs guide_rank >= 1, got {guide_rank!r} (or use guide='meanfield')")
    args = _model_args(ratings, global_mean)
    users, items, values_, n_users, n_items = args
    nnz = ratings.nnz
    batch = nnz if batch_size is None or batch_size >= nnz else int(batch_size)
    model_kwargs, one, sites = _latent_sites(args, prior, global_mean, "bartlett")
    q = GaussianGuide(sites, rank=guide_rank if guide == "lowrank" else 0)
    kwargs = dict(model_kwargs)
    if batch == nnz and prior.gaussian:  # full batch: the packed sum of squares (no scatter-adds)
        kwargs["layout"] = likelihood_layout(ratings, global_mean)
    else:
        kwargs["likelihood_scale"] = nnz / batch
    k_init, k_fit, k_draw = jax.random.split(key, 3)
    start = {} if init_U is None else initial_values(prior, init_U, init_V, "bartlett", global_mean=global_mean)
    svi = SVI(bpmf_model, q, optim.Adam(learning_rate), Trace_ELBO())
    # traced, not run: the state is the starting parameters, so XLA keeps nothing of the model
    state = jax.jit(lambda k, params: svi.init(k, users[:batch], items[:batch], values_[:batch], n_users, n_items,
                                               init_params=params, **kwargs))(k_init, q.init_params(k_init, start))

    @jax.jit
    def run_chunk(state, keys):
        def body(st, k):
            if batch == nnz:
                return svi.update(st, users, items, values_, n_users, n_items, **kwargs)
            idx = jax.random.randint(k, (batch,), 0, nnz)
            return svi.update(st, users[idx], items[idx], values_[idx], n_users, n_items, **kwargs)

        return jax.lax.scan(body, state, keys)

    state, losses = svi_steps(run_chunk, state, k_fit, steps, chunk, learning_rate, "BPMF SVI", progress)
    params = svi.get_params(state)
    raw = _model_sites(jax.jit(q.sample, static_argnums=2)(k_draw, params, n_samples), one, model_kwargs)
    draws = {name: np.asarray(raw[name])[None] for name in (*SITES, "alpha") if name in raw}
    return _with_alpha(draws, prior, (1, n_samples)), losses


def svi_steps(run_chunk, state, key, steps: int, chunk: int, learning_rate: float, desc: str, progress: bool):
    """``steps`` SVI steps, ``chunk`` at a time: ``run_chunk(state, keys)`` (jitted, a
    ``lax.scan`` of NumPyro's ``svi.update`` over ``keys``) returns the state and the ELBO loss of
    each step; the chunk starting at step ``t`` gets keys split from ``fold_in(key, t)``. Returns
    the state and the loss trace (steps,). Raises :class:`~bayesmf.errors.DivergenceError` at the
    first non-finite loss."""
    from bayesmf.engines.driver import progress_bar

    losses = []
    bar = progress_bar(steps, desc, progress)
    try:
        for start_step in range(0, steps, chunk):
            keys = jax.random.split(jax.random.fold_in(key, start_step), min(chunk, steps - start_step))
            state, loss = run_chunk(state, keys)
            losses.append(np.asarray(loss))
            if not np.all(np.isfinite(losses[-1])):
                from bayesmf.errors import DivergenceError

                step = start_step + int(np.flatnonzero(~np.isfinite(losses[-1]))[0])
                raise DivergenceError(f"SVI diverged: the ELBO became non-finite at step {step}; "
                                      f"lower SVIConfig.learning_rate (now {learning_rate})")
            bar.update(len(keys))
    finally:
        bar.close()
    return state, np.concatenate(losses)


def _model_sites(latent: dict, args, kwargs, model=bpmf_model) -> dict:
    """Every site of ``model`` (latent and deterministic, e.g. ``Lambda``) for each of the draws
    ``latent`` ``{site: (n, ...)}`` of its latent sites: one jitted, vmapped run of the model per
    draw on ``args`` (for BPMF a single rating will do: no site but the likelihood reads the
    ratings)."""
    from numpyro import handlers

    def model_sites(one_draw):
        tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=one_draw)).get_trace(*args, **kwargs)
        return {name: site["value"] for name, site in tr.items()
                if site["type"] in ("sample", "deterministic") and not site.get("is_observed", False)}

    return jax.jit(jax.vmap(model_sites))(latent)
