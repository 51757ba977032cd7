r"""``BayesFM``: the Bayesian factorization machine (libFM MCMC / myFM) over relation blocks.

The model and its exact Gibbs sampler: :mod:`bayesmf.posterior.fm_gibbs`; the features (which
blocks and groups the design has): :mod:`bayesmf.data.features`. With ``Features()`` (user and
item one-hot only) the model is BPMF with biases, under a different hyperprior: the FM's
per-group Normal-Gamma priors on each factor coordinate (diagonal precision) instead of BPMF's
Normal-Wishart (full precision matrix); both give the same predictions where the ratings, not the
hyperprior, decide the factors.

The estimator keeps the draws of every site (``w_samples_`` (C, S, F), ``V_samples_``
(C, S, F, K), ``w0_samples_``, the group hyperparameters, ``alpha_samples_``) and, for the
prediction, ranking and export code shared with BPMF, each draw's effective per-user and per-item
vectors and biases (:meth:`~bayesmf.posterior.fm_model.BayesFMModel.factors`) as
``user_samples_``, ``item_samples_``, ``b_U_samples_``, ``b_V_samples_``.

Cold start and context: :meth:`BayesFM.predict_design` averages the FM itself over the draws at
the rows of any design the fitted feature set builds — users and items outside the training index
space (their side features, and the one-hot terms their group's prior gives a new user or item:
``predict_design(..., new="prior")``), and context (time) blocks, whose terms depend on each rating's
timestamp and so have no per-user/item form. With context blocks (``Features(time=...)``) the
fit builds the design with the training timestamps, and ``predict`` / ``predict_dist`` need the
pairs' ``timestamps`` (the design of the pairs, :meth:`BayesFM.predict_design`); per-user/item
factors do not exist, so ``recommend``, ``score_users``, ``fold_in`` and ``save`` refuse such a
model (a ranking would have to pick one time bin for every item: use
``predict(users, items, timestamps=...)`` at the time of interest).

Ordinal likelihood (``likelihood="ordinal"``): the ordered probit of
:mod:`bayesmf.posterior.ordinal` on the FM's prediction (sampler:
:mod:`bayesmf.posterior.fm_gibbs`), identified as in :class:`BPMF` (first cutpoint 0, the level
in ``w0``, ``alpha`` fixed at 1); predictions are :class:`BPMF`'s ordinal ones (category
probabilities averaged over the draws, the expected rating).

References
----------
Freudenthaler, C., Schmidt-Thieme, L. and Rendle, S. (2011). Bayesian factorization machines.
Rendle, S. (2013). Scaling factorization machines to relational data. VLDB.
"""

from __future__ import annotations

import jax
import numpy as np

from bayesmf.data.features import Features
from bayesmf.data.ratings import Ratings
from bayesmf.engines.driver import iterate, run
from bayesmf.engines.sharding import device_mesh
from bayesmf.errors import ConfigError
from bayesmf.models.base import check_dtype, check_positive_int
from bayesmf.models.bpmf import BPMF, auto_noise_prior, auto_offset_prior
from bayesmf.models.inference import CHAIN_INFERENCES, INFERENCES, FitProblem, MAPConfig, NUTSConfig, SVIConfig
from bayesmf.posterior import fm_gibbs
from bayesmf.posterior.fm_model import ORDINAL_SITES, SITES, BayesFMModel

__all__ = ["BayesFM"]

_FM_ARRAYS = tuple(f"{site}_samples_" for site in SITES if site != "alpha")


class BayesFM(BPMF):
    """Bayesian second-order factorization machine (module docstring).

    Parameters
    ----------
    rank : latent dimension K.
    features : Features, a mapping of its fields, or None (``Features()``: user and item one-hot).
    inference : "gibbs" (the exact sampler), "nuts", "svi" (NumPyro on the same model,
        :mod:`bayesmf.posterior.fm_numpyro`; Gaussian likelihood only) or "map" (the MAP of
        ``(w, V)`` with the hyperparameters at their prior means and ``w0``, ``alpha`` fixed, kept
        as a single draw), or their configurations (:mod:`bayesmf.models.inference`).
    n_samples, n_warmup, thin, chains : draws kept per chain, burn-in sweeps, thinning, chains
        (chain 0 starts at ``V ~ N(0, init_std^2)``, the others at three times that spread).
    noise_prior : ``alpha ~ Gamma(a0, b0)`` as ``(a0, b0)``, ``"auto"`` (as :class:`BPMF`'s,
        with the biases' parameters counted) or None (``alpha`` fixed at ``alpha``).
    offset_prior : ``w0 ~ N(m0, s0^2)`` as ``(m0, s0)``, ``"auto"`` (the training ratings' mean
        and standard deviation, as :class:`BPMF`) or None (``w0`` fixed at the training mean).
    hyper_prior : ``(alpha_lambda, beta_lambda)`` of every group precision's Gamma prior; the
        default ``(0.5, 0.5)`` (myFM's ``Gamma(alpha_0/2, beta_0/2)``, ``alpha_0 = beta_0 = 1``;
        prior mean 1, as ``(1, 1)``, with twice its variance) is a measured choice
        (benchmarks/RESULTS.md, "BayesFM's group-precision hyperprior").
    gamma0 : the group means' prior ``mu ~ N(0, 1/(gamma0 lambda))``.
    alpha : the fixed noise precision (``noise_prior=None``), else ignored.
    likelihood : ``"gaussian"`` or ``"ordinal"`` (the ordered probit, as :class:`BPMF`'s: the
        cutpoints' draws ``cutpoints_samples_`` (C, S, K - 1), ``alpha`` fixed at 1,
        ``noise_prior`` ignored; ``predict`` gives the expected rating, ``predict_dist`` a
        :class:`~bayesmf.predictive.CategoricalDistribution`).
    gap_prior : ``(m_g, s_g)``: the ordinal cutpoints' log gaps ``~ N(m_g, s_g^2)``.
    init_std, keep_every, seed, progress, dtype : as :class:`BPMF`.
    devices : None, a list of JAX devices or a one-axis :class:`jax.sharding.Mesh`
        Run the Gibbs sweeps over these devices (:func:`bayesmf.posterior.fm_gibbs.shard`: each
        relation block's rating chunks split over the mesh for the block-row statistics, the
        parameters replicated); the draws are the same on any number of devices, bit for bit,
        and agree with ``devices=None`` (one device) to float rounding. Either likelihood;
        ``inference="gibbs"`` only. A setting of the fit only (not saved).
    """

    _state_arrays = BPMF._state_arrays + _FM_ARRAYS + ("group_index_",)

    def __init__(self, rank: int = 10, features: Features | dict | None = None, inference="gibbs",
                 n_samples: int = 200, n_warmup: int = 50,
                 thin: int = 1, chains: int = 1, noise_prior="auto", offset_prior="auto",
                 hyper_prior: tuple = (0.5, 0.5), gamma0: float = 1.0, alpha: float = 2.0, init_std: float = 0.1,
                 likelihood: str = "gaussian", gap_prior: tuple = (0.0, 1.0), keep_every: int = 1, seed: int = 0,
                 progress: bool = False, dtype: str = "float32", devices=None):
        super().__init__(rank=rank, inference=inference, n_samples=n_samples, n_warmup=n_warmup, thin=thin,
                         chains=chains, alpha=alpha, noise_prior=noise_prior, offset_prior=offset_prior, biases=True,
                         likelihood=likelihood, gap_prior=gap_prior, keep_every=keep_every, seed=seed,
                         progress=progress, dtype=dtype, devices=devices)
        self.features = features
        self.hyper_prior = hyper_prior
        self.gamma0 = gamma0
        self.init_std = init_std

    def get_params(self) -> dict:
        """The constructor's arguments; ``features`` as a mapping of its fields (JSON-able)."""
        params = super().get_params()
        if isinstance(params.get("features"), Features):
            try:
                params["features"] = params["features"].to_mapping()
            except ConfigError:  # side tables not from bayesmf.datasets.side: kept as objects (not savable)
                pass
        for name in ("hyper_prior", "gap_prior"):
            if isinstance(params.get(name), tuple):
                params[name] = list(params[name])  # as JSON reads it back
        return params

    def feature_spec(self) -> Features:
        """``features`` as a :class:`~bayesmf.data.features.Features`."""
        spec = self.features
        if spec is None:
            return Features()
        if isinstance(spec, Features):
            return spec
        if isinstance(spec, dict):
            return Features.from_mapping(spec)
        raise ConfigError(f"features must be a Features, a mapping of its fields or None, got {spec!r}")

    def bayesian_model(self, prior=None, design=None) -> BayesFMModel:
        """:class:`~bayesmf.posterior.fm_model.BayesFMModel` (prior and design None: prediction
        from stored draws only)."""
        return BayesFMModel(prior, design)

    def fm_prior(self, train: Ratings) -> fm_gibbs.FMPrior:
        """The sampler's :class:`~bayesmf.posterior.fm_gibbs.FMPrior`, data-scaled priors resolved."""
        noise = self._resolve_prior("noise_prior", "(shape, rate)", train,
                                    lambda r: auto_noise_prior(r, int(self.rank), True))
        offset = self._resolve_prior("offset_prior", "(mean, scale)", train, auto_offset_prior)
        try:
            shape, rate = (float(x) for x in self.hyper_prior)
        except (TypeError, ValueError):
            raise ConfigError(f"hyper_prior must be a positive (shape, rate) pair, got {self.hyper_prior!r}") from None
        alpha = noise[0] / noise[1] if noise is not None else float(self.alpha)
        ordinal = {}
        if self.ordinal:  # the latent scale: alpha = 1, no noise prior (_resolve_prior gives None)
            from bayesmf.posterior.ordinal import check_gap_prior

            alpha = 1.0
            ordinal = {"gap_prior": check_gap_prior(self.gap_prior), "n_categories": int(np.size(self.rating_levels_))}
        return fm_gibbs.FMPrior(check_positive_int("rank", self.rank), alpha, noise, offset, shape, rate,
                                float(self.gamma0), float(self.init_std), **ordinal).validate()

    def _fit(self, train: Ratings) -> None:
        config = self.inference_config().validate()
        if self.likelihood not in ("gaussian", "ordinal"):
            raise ConfigError(f"likelihood must be 'gaussian' or 'ordinal', got {self.likelihood!r}")
        if self.ordinal and config.name != "gibbs":
            raise ConfigError("likelihood='ordinal' is sampled by inference='gibbs' only, "
                              f"got inference={config.name!r}")
        if device_mesh(self.devices) is not None and config.name != "gibbs":
            raise ConfigError(f"devices={self.devices!r} shards the Gibbs sampler only; inference={config.name!r} "
                              "runs on one device: drop devices or use inference='gibbs'")
        if config.name == "nuts" and config.parameterization != "bartlett":
            raise ConfigError("BayesFM's NUTS runs in the model's own (centred) coordinates: "
                              f"NUTSConfig.parameterization must be 'bartlett', got {config.parameterization!r}")
        for setting in ("n_samples", "thin", "chains", "keep_every"):
            check_positive_int(setting, getattr(self, setting))
        if isinstance(self.n_warmup, bool) or int(self.n_warmup) != self.n_warmup or self.n_warmup < 0:
            raise ConfigError(f"n_warmup must be an integer >= 0, got {self.n_warmup!r}")
        dtype = check_dtype(self.dtype)
        category, self.rating_levels_, self.cutpoints_samples_ = None, None, None
        if self.ordinal:
            from bayesmf.posterior.ordinal import encode_levels, rating_levels

            self.rating_levels_ = rating_levels(train.values)
            category = encode_levels(train.values, self.rating_levels_, "training ratings")
            # the latent values' start and data scale (of the "auto" offset prior), as BPMF's
            train = train.with_values(category.astype(np.float64) - 0.5)
        prior = self.fm_prior(train)
        self.noise_prior_, self.offset_prior_ = prior.noise_prior, prior.offset_prior
        self.fitted_features_ = self.feature_spec().fit(train)
        design = self.fitted_features_.design_of(train)
        names = list(design.group_names)
        self.group_index_ = np.asarray([names.index(g) if g in names else -1 for g in ("user", "item")], np.int64)
        self.global_mean_ = float(np.mean(train.values, dtype=np.float64))
        self.sample_stats_, self.diagnostics_ = {}, None
        data = fm_gibbs.prepare(design, train.values, prior.rank, self.global_mean_, dtype, category=category)
        _, k_run = jax.random.split(jax.random.PRNGKey(self.seed))
        draws = INFERENCES[config.name].fit(self, FitProblem(train, data, prior, None, None, k_run, dtype), config)
        sites = SITES + (ORDINAL_SITES if self.ordinal else ())
        for site in sites:
            setattr(self, f"{site}_samples_", np.asarray(draws[site], np.float32))
        for site in ("mu_U", "Lambda_U", "mu_V", "Lambda_V", "bias_precision_U", "bias_precision_V", "tau", "kappa"):
            setattr(self, f"{site}_samples_", None)
        self.offset_samples_ = None  # w0 is folded into b_V_samples_
        if self.needs_timestamps:  # no per-user/item form: predictions go through the pairs' design
            self.user_samples_ = self.item_samples_ = self.b_U_samples_ = self.b_V_samples_ = None
            self.user_factors_ = self.item_factors_ = self.user_bias_ = self.item_bias_ = None
        else:
            self._store_factors(self.bayesian_model(prior, design), draws, train)
        if config.name in CHAIN_INFERENCES and int(self.chains) > 1:
            from bayesmf.posterior.convergence import diagnose, warn_if_unconverged

            self.diagnostics_ = diagnose({"w0": draws["w0"], "alpha": draws["alpha"]})
            warn_if_unconverged(self.diagnostics_, f"BayesFM {config.name}", stacklevel=5)

    # -- the inferences (bayesmf.models.inference calls these) -----------------------------------
    def _fm_gibbs(self, key, data: fm_gibbs.FMData, prior: fm_gibbs.FMPrior, dtype, *, n_warmup: int,
                  n_samples: int, chains: int, thin: int = 1, keep_every: int = 1, desc: str = "BayesFM Gibbs"):
        """The driver (:func:`~bayesmf.engines.driver.run`) over the Gibbs kernel from the
        sampler's start (:func:`~bayesmf.posterior.fm_gibbs.init`, keyed by the seed); kept draws
        of every site."""
        mesh = device_mesh(self.devices)
        kernel = self.bayesian_model(prior).gibbs_kernel(data if mesh is None else fm_gibbs.shard(data, mesh))
        k_init, _ = jax.random.split(jax.random.PRNGKey(self.seed))
        states = kernel.init(k_init, chains=chains, dtype=dtype)
        sites = SITES + (ORDINAL_SITES if prior.ordinal else ())

        def collect(state):
            return {site: getattr(state, site) for site in sites}

        return run(kernel, states, key, n_warmup=n_warmup, n_samples=n_samples, thin=thin, collect=collect,
                   keep_every=keep_every, draw_axis=1, progress=self.progress, desc=desc)

    def _run_gibbs(self, key, data, prior, U0, V0, train: Ratings, dtype) -> dict:
        """Chains of the exact Gibbs sampler (:mod:`bayesmf.posterior.fm_gibbs`)."""
        result = self._fm_gibbs(key, data, prior, dtype, n_warmup=int(self.n_warmup), n_samples=int(self.n_samples),
                                chains=int(self.chains), thin=int(self.thin), keep_every=int(self.keep_every))
        for name, values in result.history.items():
            self.history_[name] = values.mean(axis=1).tolist()
        return {k: np.asarray(v) for k, v in result.samples.items()}

    def _map_point(self, problem: FitProblem, config: MAPConfig) -> dict:
        """The MAP fit (the protocol's ``map_kernel`` run by
        :func:`~bayesmf.engines.driver.iterate`) as ``{site: value}``; its objective and training
        RMSE per sweep go to ``history_["map_objective"]``, ``history_["map_train_rmse"]``."""
        kernel = self.bayesian_model(problem.prior).map_kernel(problem.data, config.method)
        k_init, _ = jax.random.split(jax.random.PRNGKey(self.seed))
        final, hist = iterate(kernel, kernel.init(k_init, dtype=problem.dtype), int(config.n_iter),
                              progress=self.progress, desc="BayesFM MAP")
        self.history_.update({f"map_{k}": v for k, v in hist.items()})
        return {site: getattr(final, site) for site in SITES}

    def _run_map(self, problem: FitProblem, config: MAPConfig) -> dict:
        """The MAP fit as a single draw (chains and draws axes of length 1): predictions are the
        point's, their spread the fixed noise ``1/alpha`` alone."""
        return {site: np.asarray(v)[None, None] for site, v in self._map_point(problem, config).items()}

    def _run_nuts(self, problem: FitProblem, config: NUTSConfig) -> dict:
        """NumPyro NUTS on the FM's NumPyro model (:func:`~bayesmf.posterior.fm_numpyro.run_nuts`),
        started from ``init_sweeps`` Gibbs sweeps (``init="gibbs"``: the chains at its last draws,
        the inverse mass matrix their variance) or from the MAP fit (``init="map"``)."""
        from bayesmf.posterior.fm_numpyro import run_nuts

        start, warm = None, None
        if config.init == "gibbs":
            sweeps = int(config.init_sweeps)
            result = self._fm_gibbs(jax.random.fold_in(problem.key, 1), problem.data, problem.prior, problem.dtype,
                                    n_warmup=sweeps // 3, n_samples=sweeps - sweeps // 3, chains=1,
                                    desc="BayesFM NUTS start (Gibbs)")
            warm = {name: np.asarray(v)[0] for name, v in result.samples.items()}
            self.history_["nuts_init_train_rmse"] = result.history["train_rmse"][:, 0].tolist()
        else:
            start = self._map_point(problem, config.start)
        draws, self.sample_stats_ = run_nuts(
            problem.data, problem.prior, problem.key, n_warmup=int(self.n_warmup), n_samples=int(self.n_samples),
            chains=int(self.chains), start=start, warm_draws=warm, target_accept=config.target_accept,
            max_tree_depth=config.max_tree_depth, dense_mass=config.dense_mass, progress=self.progress)
        return draws

    def _run_svi(self, problem: FitProblem, config: SVIConfig) -> dict:
        """NumPyro SVI on the FM's NumPyro model (:func:`~bayesmf.posterior.fm_numpyro.run_svi`,
        full batch), the guide's means starting at the MAP fit; ``n_samples`` draws from the
        guide."""
        from bayesmf.posterior.fm_numpyro import run_svi

        if config.batch_size is not None:
            raise ConfigError("BayesFM's SVI is full batch: SVIConfig.batch_size must be None, "
                              f"got {config.batch_size!r}")
        draws, losses = run_svi(problem.data, problem.prior, problem.key, steps=int(config.steps),
                                n_samples=int(self.n_samples), start=self._map_point(problem, config.start),
                                guide=config.guide, learning_rate=config.learning_rate, progress=self.progress)
        self.history_["elbo_loss"] = [float(x) for x in losses]
        return draws

    def _store_factors(self, model: BayesFMModel, draws: dict, train: Ratings) -> None:
        """Each draw's effective per-user and per-item vectors and biases
        (:meth:`~bayesmf.posterior.fm_model.BayesFMModel.factors`) and their posterior means."""
        U, V, BU, BV = model.factors(draws, self.global_mean_, train.n_users, train.n_items)
        C = draws["w0"].shape[0]
        self.user_samples_ = U.reshape(C, -1, *U.shape[1:])
        self.item_samples_ = V.reshape(C, -1, *V.shape[1:])
        self.b_U_samples_ = BU.reshape(C, -1, BU.shape[-1])
        self.b_V_samples_ = BV.reshape(C, -1, BV.shape[-1])
        self.user_factors_ = self.user_samples_.mean(axis=(0, 1))
        self.item_factors_ = self.item_samples_.mean(axis=(0, 1))
        self.user_bias_ = self.b_U_samples_.mean(axis=(0, 1))
        self.item_bias_ = self.b_V_samples_.mean(axis=(0, 1))

    def _flat_draws(self):
        """The stored effective factors with chains merged (offset already in the item biases)."""
        def flat(a):
            return a.reshape(-1, *a.shape[2:])

        return (flat(self.user_samples_), flat(self.item_samples_), flat(self.b_U_samples_),
                flat(self.b_V_samples_))

    def _new_row_prior(self, side: str):
        """:class:`~bayesmf.models.bpmf.NewRowPrior` of a user (item) outside the training index
        space per kept draw: a fresh draw of its one-hot parameters from the ``"user"``
        (``"item"``) group's prior, ``v ~ N(mu^v, diag(1/lambda^v))`` and ``w ~ N(mu^w,
        1/lambda^w)`` (:meth:`predict_design`'s ``new="prior"``); its other features are
        unknown and count as empty. Zero when the design has no such group."""
        from bayesmf.models.bpmf import NewRowPrior

        G, K = self.lambda_w_samples_.shape[-1], self.rank
        S = self.lambda_w_samples_.reshape(-1, G).shape[0]
        g = int(self.group_index_[0 if side == "user" else 1])
        if g < 0:
            return NewRowPrior(np.zeros((S, K)), np.zeros((S, K, K)), np.zeros(S), np.zeros(S))
        lam_v = self.lambda_v_samples_.reshape(S, G, K)[:, g].astype(np.float64)
        cov = (1.0 / lam_v)[:, :, None] * np.eye(K)
        return NewRowPrior(self.mu_v_samples_.reshape(S, G, K)[:, g].astype(np.float64), cov,
                           self.mu_w_samples_.reshape(S, G)[:, g].astype(np.float64),
                           1.0 / self.lambda_w_samples_.reshape(S, G)[:, g].astype(np.float64))

    def _item_bias_offset(self) -> np.ndarray:
        """``w0`` less the training mean per kept draw (S,): the stored item biases carry it
        (:meth:`~bayesmf.posterior.fm_model.BayesFMModel.factors`)."""
        return self.w0_samples_.reshape(-1).astype(np.float64) - self.global_mean_

    @property
    def needs_timestamps(self) -> bool:
        """Whether the features have context (time) blocks: predictions need each pair's timestamp
        (read by :func:`bayesmf.metrics.evaluate.pair_arguments`)."""
        return self.feature_spec().time is not None

    def _refuse_context(self, what: str) -> None:
        if self.needs_timestamps:
            raise ConfigError(f"{what} is not defined for BayesFM with context (time) features: every score depends "
                              "on the rating's timestamp, and no per-user/item factors exist; use "
                              "predict(users, items, timestamps=...) at the time of interest")

    def _pairs_design(self, users, items, timestamps):
        """The design of the pairs in the training index spaces (context models only)."""
        if timestamps is None and self.feature_spec().missing_time == "error":
            raise ConfigError("this BayesFM has time features: pass timestamps= (Unix seconds per pair) to predict "
                              "and predict_dist, or fit with Features(missing_time='unknown') to allow none")
        fitted = getattr(self, "fitted_features_", None)
        if fitted is None:
            raise ConfigError("this BayesFM has time features but no fitted feature set (a loaded model): refit it")
        return fitted.design(users, items, timestamps)

    def predict(self, users, items, clip: bool = True, unknown: str = "error", timestamps=None) -> np.ndarray:
        """Predicted ratings (:meth:`BPMF.predict`; the expected rating for
        ``likelihood="ordinal"``). ``timestamps`` (n,) Unix seconds per pair: required by a model
        with time features (the pairs' design, :meth:`predict_design`; indices must be known),
        ignored otherwise."""
        if not self.needs_timestamps:
            return super().predict(users, items, clip=clip, unknown=unknown)
        self._require_fitted()
        pred = np.asarray(self.predict_design(self._pairs_design(users, items, timestamps)).mean, np.float32)
        return self._clip(pred) if clip else pred

    def predict_dist(self, users, items, unknown: str = "error", n_draws: int | None = None, timestamps=None):
        """Posterior predictive distribution at index pairs (:meth:`BPMF.predict_dist`).
        ``timestamps``: as :meth:`predict` (a model with time features gives
        :meth:`predict_design`'s distribution of the pairs' design)."""
        if not self.needs_timestamps:
            return super().predict_dist(users, items, unknown=unknown, n_draws=n_draws)
        self._require_fitted()
        return self.predict_design(self._pairs_design(users, items, timestamps))

    def score_users(self, user_indices, items=None, how: str = "mean", q: float = 0.9, seed: int = 0) -> np.ndarray:
        """:meth:`BPMF.score_users`; refused for a model with time features (module docstring)."""
        self._refuse_context("score_users/recommend")
        return super().score_users(user_indices, items, how=how, q=q, seed=seed)

    def score_std_users(self, user_indices, items=None) -> np.ndarray:
        """:meth:`BPMF.score_std_users`; refused for a model with time features."""
        self._refuse_context("score_std_users")
        return super().score_std_users(user_indices, items)

    def save(self, path):
        """:meth:`BPMF.save`; refused for a model with time features (its fitted time bins are
        not persisted)."""
        self._refuse_context("save")
        return super().save(path)

    def predict_design(self, design, new: str = "prior"):
        """Posterior predictive distribution at the rows of ``design``, a design built by the
        fitted feature set (``features.fit(train).design(users, items, timestamps, user_map=...,
        item_map=...)``, the pairs' timestamps for time features): the cold-start and context
        path — users and items outside the training index space get their side features' terms
        (their one-hot and implicit rows are empty), with the spread of the draws of those terms.
        ``design`` must have the training design's columns.

        ``new``: what a user (item) outside the training index space contributes through the
        one-hot group it would join. ``"prior"`` (default): its one-hot parameters are a fresh
        draw from the ``"user"`` (``"item"``) group's prior under each posterior draw, integrated
        exactly (:func:`~bayesmf.posterior.fm_model.design_conditional`): the group mean
        ``mu^w`` (and ``mu^v`` against the pair's other factors) enters the mean, the group
        spread widens the interval. ``"empty"``: the one-hot row is left empty (``x_u = 0``,
        libFM's and myFM's convention), which drops both.

        Returns a :class:`~bayesmf.predictive.PredictiveDistribution` (mean, std: the draws'
        spread of the conditional means, plus their mean conditional variance, plus the noise
        variance ``E[1/alpha]``), or for ``likelihood="ordinal"`` a
        :class:`~bayesmf.predictive.CategoricalDistribution` (category probabilities averaged
        over the draws, :func:`~bayesmf.posterior.ordinal.class_probabilities`, with each draw's
        conditional variance)."""
        import jax.numpy as jnp

        from bayesmf.data.design import check_design
        from bayesmf.posterior.fm_model import design_conditional, design_draws
        from bayesmf.posterior.ordinal import class_probabilities
        from bayesmf.predictive import CategoricalDistribution, PredictiveDistribution

        self._require_fitted()
        check_design(design)
        if new not in ("prior", "empty"):
            raise ConfigError(f"new must be 'prior' or 'empty', got {new!r}")
        F = self.w_samples_.shape[-1]
        if design.n_features != F:
            raise ConfigError(f"design has {design.n_features} features; the model was fitted on {F} "
                              "(build it with the same fitted feature set)")
        K = self.rank
        draws = (self.w0_samples_.reshape(-1), self.w_samples_.reshape(-1, F), self.V_samples_.reshape(-1, F, K))
        rows = self._new_rows(design) if new == "prior" else None
        if rows is None:
            f, v = design_draws(design, *draws), 0.0
        else:
            f, v = design_conditional(design, *draws, rows)
        if self.ordinal:
            cuts = self.cutpoints_samples_.reshape(f.shape[0], -1)
            probs = np.asarray(class_probabilities(jnp.asarray(f), jnp.asarray(cuts), jnp.asarray(v, f.dtype)),
                               np.float64)
            return CategoricalDistribution.from_probabilities(probs, self.rating_levels_)
        f = f.astype(np.float64)
        noise = float(np.mean(1.0 / self.alpha_samples_.astype(np.float64)))
        extra = np.mean(np.asarray(v, np.float64), axis=0) if rows is not None else 0.0
        return PredictiveDistribution(mean=f.mean(axis=0), std=np.sqrt(f.var(axis=0) + extra + noise))

    def _new_rows(self, design):
        """:class:`~bayesmf.posterior.fm_model.NewRows` of ``design``'s pairs whose user (item)
        index lies beyond the training index space in the one-hot block of the ``"user"``
        (``"item"``) group, with the draws of those groups' hyperparameters; None when no pair
        has one."""
        from bayesmf.posterior.fm_model import NewRows

        masks = []
        n_pairs = design.blocks[0].index.size
        for g, owner, n_train in zip(self.group_index_, ("user", "item"), (self.n_users_, self.n_items_)):
            block = next((b for b in design.blocks if b.name == owner and b.owner == owner), None)
            if g < 0 or block is None:
                masks.append(np.zeros(n_pairs, bool))
            else:
                masks.append(np.asarray(block.index) >= n_train)
        if not (masks[0].any() or masks[1].any()):
            return None
        G, K = self.lambda_w_samples_.shape[-1], self.rank
        pick = np.maximum(np.asarray(self.group_index_), 0)  # a group the design lacks: its mask is all False
        mu_w, lam_w = (getattr(self, f"{s}_samples_").reshape(-1, G)[:, pick] for s in ("mu_w", "lambda_w"))
        mu_v, lam_v = (getattr(self, f"{s}_samples_").reshape(-1, G, K)[:, pick] for s in ("mu_v", "lambda_v"))
        return NewRows(masks[0], masks[1], mu_w, lam_w, mu_v, lam_v)

    def _fold_in_solve(self, new: Ratings) -> dict:
        r"""New users' one-hot rows ``(v_u, w_u)`` drawn per posterior draw from their exact
        conditional given the items' effective vectors and biases (BPMF's fold-in with the
        user group's prior ``N(mu^v, diag(1/lambda^v))``, ``w_u ~ N(mu^w, 1/lambda^w)``: the
        bias is drawn as ``w_u - mu^w`` against targets lowered by ``mu^w``). Only for designs
        whose user-owned features are the user's one-hot index alone (a new user has no side
        features here)."""
        import jax.numpy as jnp

        from bayesmf.engines.chunks import build_gram_chunks
        from bayesmf.models.bpmf import _fold_in_draws

        self._refuse_context("fold_in")
        if self.ordinal:
            raise ConfigError("fold_in is not implemented for likelihood='ordinal' (the new users' latent values would "
                              "need their own sampler)")
        spec = self.feature_spec()
        if not spec.user or spec.user_side is not None or spec.implicit or spec.user_time:
            raise ConfigError("fold_in needs features with the user one-hot index and no other user features "
                              "(user_side, implicit, user_time): a new user has none of them here")
        g = int(self.group_index_[0])
        rated, column = np.unique(new.items, return_inverse=True)
        residual = (new.values - self.global_mean_).astype(np.float32)
        chunks = build_gram_chunks(new.users, column, residual, new.n_users, rated.size, self.rank + 1)
        C, S = self.w0_samples_.shape[:2]
        K = self.rank
        lam_v = self.lambda_v_samples_.reshape(C * S, -1, K)[:, g]
        lam = jnp.asarray(lam_v[:, :, None] * np.eye(K, dtype=np.float32))
        mu = jnp.asarray(self.mu_v_samples_.reshape(C * S, -1, K)[:, g])
        mu_w = self.mu_w_samples_.reshape(C * S, -1)[:, g]
        precision = jnp.asarray(self.lambda_w_samples_.reshape(C * S, -1)[:, g])
        alpha = jnp.asarray(self.alpha_samples_.reshape(C * S))
        _, V, _, BV = self._flat_draws()
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.n_users_)
        x, b = _fold_in_draws(key, jnp.asarray(V[:, rated]), jnp.asarray(BV[:, rated] + mu_w[:, None]), lam, mu,
                              alpha, precision, chunks)
        draws = np.asarray(x).reshape(C, S, new.n_users, K)
        bias = (np.asarray(b) + mu_w[:, None]).reshape(C, S, new.n_users).astype(np.float32)
        return {"user_samples_": draws, "user_factors_": draws.mean(axis=(0, 1)), "b_U_samples_": bias,
                "user_bias_": bias.mean(axis=(0, 1))}

    def to_arviz(self, *args, **kwargs):
        """``arviz.InferenceData`` of the FM's sites (``w0``, ``alpha``, the group
        hyperparameters, and ``w``, ``V`` unless ``factors=False``)."""
        import arviz as az

        factors = kwargs.get("factors", args[0] if args else True)
        posterior = {site: getattr(self, f"{site}_samples_") for site in SITES
                     if factors or site not in ("w", "V")}
        dims = {"w": ["feature"], "V": ["feature", "factor"], "mu_w": ["group"], "lambda_w": ["group"],
                "mu_v": ["group", "factor"], "lambda_v": ["group", "factor"]}
        return az.from_dict(posterior=posterior, dims=dims)
