"""``BPMF``: Bayesian probabilistic matrix factorization with four inferences, and ``PMF`` (MAP).

One model (:mod:`bayesmf.posterior.model`), four ways to fit it:

* ``inference="gibbs"`` — the blocked conjugate sampler (:mod:`bayesmf.posterior.gibbs`),
  several chains vmapped, burn-in, thinning, checkpoints and bit-identical resumption;
* ``inference="nuts"`` — NumPyro NUTS on the same model (small data sets);
* ``inference="svi"`` — NumPyro SVI with a mean-field or low-rank guide, minibatched;
* ``inference="map"`` — PMF: the same model with hyperparameters fixed at their prior means,
  maximised over the factors (also the default initialisation of the samplers, as in the
  authors' code). :class:`PMF` is this shortcut.

Every Bayesian fit keeps posterior draws of the factors (``user_samples_`` (C, S, n_users, D),
``item_samples_``) and of the hyperparameters; predictions average over them without ever
materialising (draws x pairs x rank) at once.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.engines.als import init_factors
from bayesmf.engines.driver import content_digest, iterate, run
from bayesmf.engines.sharding import device_mesh
from bayesmf.errors import ConfigError, DataError
from bayesmf.models.base import FactorModel, check_dtype, check_positive_int
from bayesmf.models.inference import (
    CHAIN_INFERENCES,
    INFERENCES,
    FitProblem,
    InferenceConfig,
    MAPConfig,
    NUTSConfig,
    SVIConfig,
    apply_legacy,
    inference_params,
    legacy_names,
    legacy_parameters,
    resolve,
)
from bayesmf.posterior import gibbs
from bayesmf.posterior.bpmf_model import (
    ALL_SITES,
    BIAS_SITES,
    HYPER_SITES,
    NOISE_SITES,
    ORDINAL_SITES,
    BPMFModel,
    pair_class_probabilities,
)
from bayesmf.posterior.model import Prior
from bayesmf.validate import as_indices


@jax.jit
def _user_score_moments(U, V, BU, BV, users, global_mean):
    """Mean and variance over draws of the scores of ``users`` against every item: (B, n_items)."""

    def body(carry, draw):
        u, v, bu, bv = draw
        f = global_mean + bu[users][:, None] + bv[None, :] + u[users] @ v.T
        return (carry[0] + f, carry[1] + f * f), None

    zeros = jnp.zeros((users.shape[0], V.shape[1]), U.dtype)
    (s1, s2), _ = jax.lax.scan(body, (zeros, zeros), (U, V, BU, BV))
    n = U.shape[0]
    mean = s1 / n
    return mean, jnp.maximum(s2 / n - mean * mean, 0.0)


@jax.jit
def _fold_in_draws(key, V, BV, lam, mu, alpha, bias_precision, chunks):
    """One conditional draw per posterior draw for each new user: factors (S, n_users, D) and
    biases (S, n_users) — drawn jointly when the model has biases (``bias_precision`` (S,)).
    ``BV`` (S, n_items): each draw's item biases plus its offset's distance from the global
    mean the new ratings are centred at."""
    keys = jax.random.split(key, V.shape[0])
    if bias_precision is None:
        def one(k, v, bv, lam_s, mu_s, alpha_s):
            return gibbs.conditional_rows(k, v, chunks, mu_s, lam_s, alpha_s, other_bias=bv)[0]

        x = jax.vmap(one)(keys, V, BV, lam, mu, alpha)
        return x, jnp.zeros(x.shape[:2], x.dtype)

    def joint(k, v, bv, lam_s, mu_s, prec_s, alpha_s):
        return gibbs.rows_with_biases(k, v, bv, chunks, mu_s, lam_s, prec_s, alpha_s, 0.0)[:2]

    return jax.vmap(joint)(keys, V, BV, lam, mu, bias_precision, alpha)


def _fold_in_modes(V, chunks, alpha, lam):
    from bayesmf.posterior.map import ridge_rows_map

    return ridge_rows_map(V, chunks, alpha, lam)[0]


def _noise_scale2(alpha, users, items, tau=None, kappa=None):
    """``E[1/(alpha tau_i kappa_j)]`` over draws at each pair (n,) (``alpha`` (S,), ``tau``
    (S, n_users), ``kappa`` (S, n_items)); ``E[1/alpha]`` (a scalar) without ``tau``. A loop over
    draws keeps memory O(pairs)."""
    alpha = np.asarray(alpha, np.float64)
    if tau is None:
        return float(np.mean(1.0 / alpha))
    total = np.zeros(np.shape(users), np.float64)
    for s in range(alpha.size):
        total += 1.0 / (alpha[s] * tau[s][users].astype(np.float64) * kappa[s][items])
    return total / alpha.size


def auto_offset_prior(train: Ratings) -> tuple[float, float]:
    """``offset_prior="auto"``: ``(m0, s0)``, the training ratings' mean and standard deviation
    (floored for constant ratings) (:class:`BPMF`)."""
    mean, variance = train.value_moments
    return mean, float(max(np.sqrt(variance), 1e-3 * max(abs(mean), 1.0)))


def auto_w0(train: Ratings) -> float:
    """``w0="auto"``: ``1 / sd(r)``, the training ratings' standard deviation (floored as in
    :func:`auto_offset_prior`) (:class:`BPMF`)."""
    return 1.0 / auto_offset_prior(train)[1]


def auto_bias_prior(train: Ratings) -> tuple[float, float]:
    """``bias_prior="auto"``: ``(1, var(r))`` (shape, rate), the bias precision's prior mean
    ``1 / var(r)`` (:class:`BPMF`)."""
    return 1.0, auto_offset_prior(train)[1] ** 2


def auto_noise_prior(train: Ratings, rank: int, biases: bool) -> tuple[float, float]:
    """``noise_prior="auto"``: ``(a0, b0)`` with ``a0 = P / 2`` and ``b0 = a0 var(r) / 2``, ``P``
    the factor (and bias) parameters of the users and items that have ratings (:class:`BPMF`)."""
    mean, variance = train.value_moments
    rows = int(np.count_nonzero(train.user_counts)) + int(np.count_nonzero(train.item_counts))
    a0 = 0.5 * rows * (rank + int(biases))
    variance = float(max(variance, 1e-6 * max(mean**2, 1.0)))
    return float(a0), float(a0 * variance / 2.0)


def overdispersed_starts(U0, V0, chains: int, seed: int):
    """Starting factors for ``chains`` chains, (chains, n, D) per side: chain 0 at ``(U0, V0)``,
    chain ``c`` at them plus ``N(0, (2 s)^2)`` noise with ``s`` the standard deviation of the
    side's entries — farther apart than the posterior is wide, so that R-hat can see chains that
    have not forgotten their starts (Gelman & Rubin 1992)."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for X in (U0, V0):
        X = np.asarray(X, np.float64)
        spread = 2.0 * max(float(X.std()), 1e-3)
        jitter = spread * rng.standard_normal((chains, *X.shape))
        jitter[0] = 0.0
        out.append(X[None] + jitter)
    return out


class NewRowPrior(NamedTuple):
    r"""Per-draw prior of a row (user or item) unseen in training: its latent vector
    ``z ~ N(mean, cov)`` and its bias ``b ~ N(bias_mean, bias_var)``, independent, given draw
    ``s``'s hyperparameters. Shapes: ``mean`` (S, D), ``cov`` (S, D, D), ``bias_mean`` and
    ``bias_var`` (S,)."""

    mean: np.ndarray
    cov: np.ndarray
    bias_mean: np.ndarray
    bias_var: np.ndarray


def _new_row_moments(x, bias, prior: NewRowPrior):
    r"""Per-draw mean and variance of ``bias + x' z + b`` for a row unseen in training against
    known vectors ``x`` (S, m, D) with known biases ``bias`` (S, m), ``z`` and ``b`` from
    ``prior``: mean ``bias + bias_mean + x' mean``, variance ``x' cov x + bias_var``, each (S, m)."""
    x = np.asarray(x, np.float64)
    mean = np.asarray(bias, np.float64) + prior.bias_mean[:, None] + np.einsum("smd,sd->sm", x, prior.mean)
    var = np.einsum("smd,sde,sme->sm", x, prior.cov, x) + prior.bias_var[:, None]
    return mean, var


def _two_new_rows_moments(user: NewRowPrior, item: NewRowPrior):
    r"""Per-draw mean and variance of ``b_u + b_v + z_u' z_v`` for a pair whose user and item are
    both unseen, the two rows independent draws from their priors: mean
    ``m_bu + m_bv + mu_u' mu_v``, variance ``tr(S_u S_v) + mu_u' S_v mu_u + mu_v' S_u mu_v +
    s_bu + s_bv`` (the moments of a product of independent Gaussian vectors), each (S,)."""
    mean = user.bias_mean + item.bias_mean + np.einsum("sd,sd->s", user.mean, item.mean)
    var = (np.einsum("sde,sed->s", user.cov, item.cov) + np.einsum("sd,sde,se->s", user.mean, item.cov, user.mean)
           + np.einsum("sd,sde,se->s", item.mean, user.cov, item.mean) + user.bias_var + item.bias_var)
    return mean, var


class BPMF(FactorModel):
    """Bayesian PMF (Salakhutdinov & Mnih 2008). See the module docstring and
    :mod:`bayesmf.posterior.model` for the model and its defaults (the authors' settings).

    Parameters
    ----------
    rank : latent dimension D.
    inference : "gibbs" | "nuts" | "svi" | "map", a configuration or a mapping
        The inference and its settings (:mod:`bayesmf.models.inference`): a name (its default
        configuration), a configuration object — :class:`~bayesmf.models.inference.GibbsConfig`
        (``rescale``, the MAP ``start``), :class:`~bayesmf.models.inference.NUTSConfig`
        (``target_accept``, ``max_tree_depth``, ``dense_mass``, ``parameterization``, ``init``,
        ``init_sweeps``), :class:`~bayesmf.models.inference.SVIConfig` (``steps``, ``guide``,
        ``batch_size``, ``learning_rate``), :class:`~bayesmf.models.inference.MAPConfig`
        (``n_iter``, ``method``) — or a mapping ``{"name": "nuts", "max_tree_depth": 7}``. The
        keyword arguments ``nuts_*``, ``svi_*``, ``map_iter``, ``map_method`` and
        ``gibbs_rescale`` of earlier versions still work for one release, with a
        :class:`DeprecationWarning`, mapped onto the configuration.
    n_samples, n_warmup, thin, chains : draws kept per chain, burn-in sweeps, thinning, chains.
        Several Gibbs chains start over-dispersed (chain 0 at the initial factors, chain ``c`` at
        them plus independent ``N(0, (2 s)^2)`` noise, ``s`` the spread of that side's entries),
        and after a fit with two or more Gibbs or NUTS chains ``diagnostics_`` holds R-hat and bulk
        ESS of identified summaries (:mod:`bayesmf.posterior.convergence`); a
        :class:`~bayesmf.errors.ConvergenceWarning` names those that miss R-hat <= 1.05 or
        ESS >= 100.
    alpha : noise precision when it is fixed (``noise_prior=None``); with a ``(a0, b0)`` noise
        prior, the chains' starting value (and the PMF MAP start's precision).
    noise_prior : the noise precision's prior ``alpha ~ Gamma(a0, b0)`` (shape, rate) as
        ``(a0, b0)``; ``None``: ``alpha`` fixed. ``"auto"`` (default): scaled to the training
        ratings, ``a0 = P / 2`` and ``b0 = a0 var(r) / 2`` — prior mean ``2 / var(r)`` (a noise
        variance of half the ratings' variance) worth ``P`` pseudo-ratings, where
        ``P = (users with ratings + items with ratings) (D + 1 if biases else D)`` is the number
        of factor and bias parameters; the chains then start at ``alpha = 2 / var(r)``. Why: with
        a weak prior (``(1, 1)``) the posterior's noise precision on sparse data is far above any
        held-out residual's (NUTS and long Gibbs chains agree), because the factors can absorb
        the training ratings (on sparse data such as Flixster, where ``P`` exceeds the number of
        ratings, alpha climbs for thousands of sweeps while test RMSE worsens). Where the
        ratings outnumber the parameters the data decide (on MovieLens the learned alpha is
        already near ``2 / var(r)``). Figures: benchmarks/RESULTS.md, "Noise-precision drift".
    noise : the noise model (:mod:`bayesmf.posterior.model`). ``"gaussian"`` (default):
        ``r ~ N(mean, 1/alpha)``. ``"student_t"``: ``r ~ mean + t_nu / sqrt(alpha)`` with
        ``nu = noise_df`` (a Gamma scale mixture: robust to heavy-tailed errors); predictive
        intervals are then mixtures of t's. ``"heteroscedastic"``: ``r ~ N(mean, 1/(alpha tau_i
        kappa_j))`` with per-user and per-item precision factors ``tau_i ~ Gamma(a_u, a_u)``,
        ``kappa_j ~ Gamma(a_v, a_v)`` (``precision_shape = (a_u, a_v)``, both mean 1), kept as
        ``tau_samples_`` (C, S, n_users) and ``kappa_samples_``. Both cost one more pass over the
        ratings per Gibbs sweep; the Gaussian sampler is unchanged. Not with ``inference="map"``,
        nor ``fold_in`` (new users' noise weights would need their own sampler).
    noise_df : Student-t degrees of freedom ``nu`` (fixed; default 4: the robust-regression
        choice of Lange, Little & Taylor 1989 — tails heavy enough to discount outliers, with a
        finite predictive variance, which needs ``nu > 2``; at ``nu <= 2`` ``predict_dist``'s std
        is infinite).
    precision_shape : ``(a_u, a_v)``, the Gamma shapes (= rates) of ``tau`` and ``kappa``; the
        default 2 lets a user's noise sd range over about a factor of 3 a priori.
    likelihood : ``"gaussian"`` (default; with ``noise``) or ``"ordinal"``: the ordered probit of
        Albert & Chib (1993) (:mod:`bayesmf.posterior.ordinal`), ``y = l_k`` iff
        ``c_{k-1} < z <= c_k``, ``z ~ N(m + b_i + c_j + u_i . v_j, 1)``, over the rating levels of the
        training scale (``rating_levels_``: the integer or half-star grid from the smallest to the
        largest training rating; a level without training ratings is a category too, with a
        small predicted probability; non-grid values raise :class:`DataError` naming the row).
        Cutpoints ``c_0 = 0 < c_1 < ...`` (kept as ``cutpoints_samples_`` (C, S, K - 1)) with
        log gaps ``~ N(gap_prior)``; the offset ``m`` carries the level, ``alpha`` is fixed at 1
        (the latent scale) and ``noise_prior``/``alpha`` are ignored. ``predict_dist`` returns a
        :class:`~bayesmf.predictive.CategoricalDistribution` (category probabilities, the expected
        rating as ``mean``, intervals as sets of categories) and ``predict`` the expected rating;
        ranking scores and ``fit(..., track=)``'s moments are those of the latent ``f``. Gibbs
        only; not with ``fold_in`` or ``to_arviz``'s log-likelihood.
    gap_prior : ``(m_g, s_g)``: the ordinal cutpoints' log gaps ``~ N(m_g, s_g^2)``.
    beta0, nu0 (None -> rank), w0 (W0 = w0 I), mu0 : Normal-Wishart hyperprior. ``w0="auto"``
        (default): ``1 / sd(r)``, the training ratings' standard deviation. With it and the other
        ``"auto"`` priors (offset, noise, ``bias_prior``) every prior scales with the ratings'
        unit: ratings ``s r + c`` give the model of ``r`` with factors times ``sqrt(s)``, biases
        and predictions times ``s`` (plus ``c``). A fixed ``W0 = I`` instead puts the factors'
        prior at the scale of 1-5 stars: on a 1-100 scale the chain spends hundreds of sweeps
        growing the factors, and the default 50 + 200 sweeps under-cover (figures:
        benchmarks/RESULTS.md, "Priors in the ratings' unit"). On 1-5 star data ``sd(r)`` is
        about 1 and ``"auto"`` is close to ``W0 = I``. ``PMF`` keeps ``w0 = 1``.
    offset_prior : the global offset ``m ~ N(m0, s0^2)`` as ``(m0, s0)``; ``"auto"`` (default):
        the training ratings' mean and standard deviation, a prior wide against the offset's
        posterior (spread about ``sd / sqrt(nnz)``); ``None``: ``m`` fixed at the training mean
        (a plug-in constant outside the model, which narrows predictive intervals when the data
        say little about ``m``). ``inference="map"`` holds ``m`` at the training mean.
    biases : add user and item biases ``b_i``, ``c_j`` with ``N(0, 1/lambda)`` priors and
        ``lambda ~ Gamma(*bias_prior)`` (the BPMF-with-biases variant; myFM's linear terms).
        ``"auto"`` (default): with biases for ``"gibbs"``, ``"nuts"`` and ``"svi"``, without for
        ``"map"`` (:attr:`has_biases`). Why: with biases the test RMSE is as good or better on
        every real data set measured, within seed noise, at 250 and 1,200 sweeps (benchmarks/RESULTS.md, "Long
        chains at today's defaults").
    bias_prior : ``(shape, rate)`` of the bias precisions ``lambda``; ``"auto"`` (default):
        ``(1, var(r))``, prior mean ``1 / var(r)`` (biases about as spread as the ratings, in
        their unit; see ``w0``).
    init : "map" (PMF MAP, the authors' choice) or "random". The MAP start's coordinate-ascent
        sweeps come from the inference's ``start`` (``GibbsConfig(start=MAPConfig(n_iter=k))``):
        :data:`~bayesmf.models.inference.GIBBS_START_ITER` (2) for the Gibbs sampler, 10 for
        NUTS and SVI.
    keep_every : keep every k-th draw's factors in memory (predictions still use all draws
        through the online moments of ``fit(..., track=...)``).
    checkpoint, checkpoint_every : Gibbs checkpoint file and period (sweeps); an interrupted
        fit called again with the same data, ``track`` pairs and chain settings resumes
        bit-identically (with a :class:`~bayesmf.errors.ResumeWarning`); a checkpoint of another
        run raises :class:`ConfigError`, an unreadable one :class:`DataError`. Gibbs only: other
        inferences refuse it.
    seed, progress, dtype ("float32" | "float64").
    devices : None, a list of JAX devices or a one-axis :class:`jax.sharding.Mesh`
        Run the Gibbs sweeps over these devices (:mod:`bayesmf.engines.sharding`: rows and their
        ratings split by chunk, factors all-gathered each half step); the draws are the same for
        any number of devices and agree with ``devices=None`` (one device) to float rounding.
        The PMF MAP start runs on one device. A setting of the fit only: not saved, and the
        fitted model predicts without a mesh.
    """

    is_bayesian = True
    _per_user_arrays = {"user_factors_": 0, "user_bias_": 0, "user_samples_": -2, "b_U_samples_": -1}
    _state_arrays = FactorModel._state_arrays + (
        "user_samples_", "item_samples_",
        *(f"{s}_samples_" for s in HYPER_SITES + BIAS_SITES + NOISE_SITES + ORDINAL_SITES), "rating_levels_",
        "w0_", "bias_prior_",
    )

    def __init__(
        self,
        rank: int = 10,
        inference: str | dict | InferenceConfig = "gibbs",
        n_samples: int = 200,
        n_warmup: int = 50,
        thin: int = 1,
        chains: int = 1,
        alpha: float = 2.0,
        noise_prior: tuple | str | None = "auto",
        noise: str = "gaussian",
        noise_df: float = 4.0,
        precision_shape: tuple = (2.0, 2.0),
        likelihood: str = "gaussian",
        gap_prior: tuple = (0.0, 1.0),
        beta0: float = 2.0,
        nu0: float | None = None,
        w0: float | str = "auto",
        mu0: float = 0.0,
        offset_prior: tuple | str | None = "auto",
        biases: bool | str = "auto",
        bias_prior: tuple | str = "auto",
        init: str = "map",
        keep_every: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 50,
        seed: int = 0,
        progress: bool = False,
        dtype: str = "float32",
        devices=None,
        **deprecated,
    ):
        self.rank = rank
        self.inference = apply_legacy(inference, deprecated, type(self).__name__)
        self.n_samples = n_samples
        self.n_warmup = n_warmup
        self.thin = thin
        self.chains = chains
        self.alpha = alpha
        self.noise_prior = noise_prior
        self.noise = noise
        self.noise_df = noise_df
        self.precision_shape = precision_shape
        self.likelihood = likelihood
        self.gap_prior = gap_prior
        self.beta0 = beta0
        self.nu0 = nu0
        self.w0 = w0
        self.mu0 = mu0
        self.offset_prior = offset_prior
        self.biases = biases
        self.bias_prior = bias_prior
        self.init = init
        self.keep_every = keep_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.progress = progress
        self.dtype = dtype
        self.devices = devices

    # -- configuration ------------------------------------------------------------------------
    def bayesian_model(self, prior: Prior | None = None) -> BPMFModel:
        """The model behind the estimator (:class:`~bayesmf.posterior.bpmf_model.BPMFModel`, a
        :class:`~bayesmf.posterior.protocol.BayesianModel`): inference, prediction and fold-in go
        through it. ``prior`` None: for prediction from stored draws only."""
        return BPMFModel(prior)

    def inference_config(self) -> InferenceConfig:
        """The inference's configuration (:func:`bayesmf.models.inference.resolve` of ``inference``)."""
        return resolve(self.inference)

    @property
    def inference_name(self) -> str:
        """The registry name of the inference (``"gibbs"``, ``"nuts"``, ``"svi"``, ``"map"``)."""
        return self.inference_config().name

    def get_params(self) -> dict:
        """The constructor's arguments; ``inference`` in the JSON-able form of
        :func:`~bayesmf.models.inference.inference_params` (a name or a mapping), which the
        constructor reads back."""
        params = super().get_params()
        if "inference" in params:
            params["inference"] = inference_params(params["inference"])
        return params

    @classmethod
    def deprecated_parameters(cls) -> dict:
        """The deprecated keyword arguments (``nuts_*``, ``svi_*``, ``map_*``, ``gibbs_rescale``)
        as :class:`inspect.Parameter` objects, for the experiments schema."""
        return {} if cls is not BPMF else legacy_parameters()

    @classmethod
    def _upgrade_saved_params(cls, params: dict) -> dict:
        """Saved parameters of earlier versions (``nuts_*``, ``svi_*``, ``map_*``,
        ``gibbs_rescale``) folded into ``inference``, without a deprecation warning."""
        own = set(cls._param_names())
        legacy = {k: v for k, v in params.items() if k not in own and k in legacy_names()}
        if not legacy:
            return params
        out = {k: v for k, v in params.items() if k not in legacy}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out["inference"] = inference_params(apply_legacy(params.get("inference", "gibbs"), legacy))
        return out

    @property
    def prior(self) -> Prior:
        noise = self._noise_prior()
        bias = self._bias_prior() if self.has_biases else None
        shape = self.precision_shape
        try:
            shape = tuple(float(x) for x in shape)
        except (TypeError, ValueError):
            raise ConfigError(f"precision_shape must be a positive (user, item) pair of Gamma shapes, "
                              f"got {shape!r}") from None
        if not np.isfinite(float(self.alpha)) or float(self.alpha) <= 0:  # checked even where "auto" replaces it
            raise ConfigError(f"alpha must be a positive precision/scale, got {self.alpha!r}")
        auto = noise is not None and isinstance(self.noise_prior, str) and noise[1] > 0
        alpha = noise[0] / noise[1] if auto else float(self.alpha)  # "auto": start at its prior mean
        ordinal = {}
        if self.ordinal:  # the latent scale: alpha = 1, no noise prior; K from the fit (2 before one)
            from bayesmf.posterior.ordinal import check_gap_prior

            levels = getattr(self, "rating_levels_", None)
            noise, alpha = None, 1.0
            ordinal = {"likelihood": "ordinal", "n_categories": 2 if levels is None else int(np.size(levels)),
                       "gap_prior": check_gap_prior(self.gap_prior)}
        return Prior(self.rank, alpha, float(self.mu0), float(self.beta0),
                     None if self.nu0 is None else float(self.nu0), self._w0(), noise, bias,
                     self._offset_prior(), self.noise, self.noise_df, shape, **ordinal).validate()

    @property
    def ordinal(self) -> bool:
        """``likelihood="ordinal"``."""
        return getattr(self, "likelihood", "gaussian") == "ordinal"

    @property
    def has_biases(self) -> bool:
        """``biases`` resolved: ``"auto"`` is True for a posterior (``"gibbs"``, ``"nuts"``,
        ``"svi"``) and False for ``inference="map"``, whose objective has no bias terms."""
        if self.biases == "auto":
            return self.inference_config().name != "map"
        if not isinstance(self.biases, (bool, np.bool_)):
            raise ConfigError(f"biases must be True, False or 'auto', got {self.biases!r}")
        return bool(self.biases)

    def _noise_prior(self, train: Ratings | None = None) -> tuple[float, float] | None:
        """``noise_prior`` as a ``(a0, b0)`` pair or None (:meth:`_resolve_prior`)."""
        return self._resolve_prior("noise_prior", "(shape, rate)", train,
                                   lambda r: auto_noise_prior(r, int(self.rank), self.has_biases))

    def _w0(self, train: Ratings | None = None) -> float:
        """``w0`` as a float: ``"auto"`` is :func:`auto_w0` of ``train`` (:meth:`_resolve_prior`;
        1 before a fit, which has no data scale yet)."""
        return self._resolve_prior("w0", "positive scale", train, auto_w0, optional=False, scalar=True,
                                   unfitted=1.0)

    def _bias_prior(self, train: Ratings | None = None) -> tuple[float, float]:
        """``bias_prior`` as a ``(shape, rate)`` pair: ``"auto"`` is :func:`auto_bias_prior` of
        ``train`` (:meth:`_resolve_prior`; ``(1, 1)`` before a fit)."""
        return self._resolve_prior("bias_prior", "positive (shape, rate)", train, auto_bias_prior,
                                   optional=False, unfitted=(1.0, 1.0))

    def _offset_prior(self, train: Ratings | None = None) -> tuple[float, float] | None:
        """``offset_prior`` as a ``(m0, s0)`` pair or None (:meth:`_resolve_prior`)."""
        return self._resolve_prior("offset_prior", "(mean, scale)", train, auto_offset_prior)

    def _resolve_prior(self, name: str, what: str, train: Ratings | None, auto, *, optional: bool = True,
                       scalar: bool = False, unfitted=None):
        """The data-scaled setting ``name`` (``w0``, ``bias_prior``, ``noise_prior``,
        ``offset_prior``) as a float (``scalar``) or a pair of floats.

        ``"auto"`` is ``auto(train)``; without ``train`` it is the value the fit resolved
        (``name + "_"``), or ``unfitted`` before a fit (no data scale yet). An ``optional``
        setting is None when it is None, when the inference is MAP (which holds the quantity
        fixed) or, for ``noise_prior``, under the ordinal likelihood (its latent scale has no
        noise prior). Anything else (another string, a non-number, a pair of the wrong length)
        raises :class:`ConfigError` naming the value and the accepted forms (``what``: the
        pair's or the scale's description).
        """
        value = getattr(self, name)
        if optional and (self.inference_name == "map" or value is None or (name == "noise_prior" and self.ordinal)):
            return None
        form = f"a {what}" if scalar else f"a {what} pair"
        accepted = "'auto', None or" if optional else "'auto' or"
        error = ConfigError(f"{name} must be {accepted} {form}, got {value!r}")
        if isinstance(value, str):
            if value != "auto":
                raise error
            if train is not None:
                return auto(train)
            value = getattr(self, f"{name}_", None)
            if value is None:
                return unfitted
        try:
            if scalar:
                return float(value)
            first, second = (float(x) for x in value)
        except (TypeError, ValueError):
            raise error from None
        return first, second

    def _validate(self):
        config = self.inference_config().validate()
        name = config.name
        if self.init not in ("map", "random"):
            raise ConfigError(f"init must be 'map' or 'random', got {self.init!r}")
        if self.likelihood not in ("gaussian", "ordinal"):
            raise ConfigError(f"likelihood must be 'gaussian' or 'ordinal', got {self.likelihood!r}")
        if self.ordinal and name != "gibbs":
            raise ConfigError(f"likelihood='ordinal' is sampled by inference='gibbs' only, got inference={name!r}")
        if self.ordinal and self.noise != "gaussian":
            raise ConfigError(f"likelihood='ordinal' has its own latent noise; noise={self.noise!r} does not apply")
        if self.noise != "gaussian" and name == "map":
            raise ConfigError(f"noise={self.noise!r} needs a posterior (inference='gibbs', 'nuts' or 'svi'); "
                              "the MAP fit is the Gaussian model's")
        if self.has_biases and name == "map":  # "auto" resolves to False here; True and np.True_ do not
            raise ConfigError("biases=True needs a posterior (inference='gibbs', 'nuts' or 'svi'); "
                              "for a biased point estimate use bayesmf.ALS or FunkSVD")
        if self.checkpoint is not None and name != "gibbs":
            raise ConfigError(f"checkpoint={self.checkpoint!r} is used by inference='gibbs' only; "
                              f"inference={name!r} would ignore it: drop it or use inference='gibbs'")
        if device_mesh(self.devices) is not None and name != "gibbs":
            raise ConfigError(f"devices={self.devices!r} shards the Gibbs sampler only; inference={name!r} "
                              "runs on one device: drop devices or use inference='gibbs'")
        for setting in ("n_samples", "thin", "chains", "keep_every", "checkpoint_every"):
            check_positive_int(setting, getattr(self, setting))
        if isinstance(self.n_warmup, bool) or int(self.n_warmup) != self.n_warmup or self.n_warmup < 0:
            raise ConfigError(f"n_warmup must be an integer >= 0, got {self.n_warmup!r}")
        return config, self.prior, check_dtype(self.dtype)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, train: Ratings, track: Ratings | None = None) -> BPMF:
        """Fit on ``train``. With ``track`` (ratings in the training index space) the Gibbs
        sampler accumulates the posterior-predictive mean/variance at those pairs online over
        every draw (``tracked_mean_``, ``tracked_var_``), whatever ``keep_every`` is.

        Raises
        ------
        DivergenceError
            When a Gibbs sweep turns the state non-finite, also after the driver's retry with
            jitter (:func:`~bayesmf.engines.driver.run`): the message names the sweep and the
            fields (``U``, ``Lambda_V``, ...), the figures of the state before it
            (:func:`~bayesmf.posterior.gibbs.divergence_hint`), and ``.partial`` holds the draws
            kept before it. It happens when the rows' precision matrices ``Lambda + alpha sum v
            v^T`` become too ill-conditioned to factorise, which a chain reaches far from the
            posterior: with factors on a scale far from the prior's ``W0 = w0 I`` (a fixed
            ``w0`` against ratings in the thousands, or data whose factors are far larger than
            the ratings' spread suggests: with ``nu0 = D`` the rows' prior has Cauchy tails) and
            a start far from them (``init="random"``'s small factors, or a MAP start of too few
            sweeps), the rows' scatter dwarfs ``W0^{-1}``, the model is then nearly invariant
            under ``u -> A u``, ``v -> A^{-1} v``, and the factors' scales drift along it until
            they leave the working precision. A longer MAP start
            (``inference=GibbsConfig(start=MAPConfig(n_iter=10))``), ``w0="auto"`` (the
            default, in the ratings' unit), or ``dtype="float64"`` keep chains away from it.
        """
        self._track = track
        return super().fit(train)

    def _fit(self, train: Ratings) -> None:
        category = None
        self.rating_levels_ = None
        if self.ordinal:
            from bayesmf.posterior.ordinal import encode_levels, rating_levels

            self.rating_levels_ = rating_levels(train.values)
            category = encode_levels(train.values, self.rating_levels_, "training ratings")
            # the latent values' starting guess: the middle of each category under the starting
            # cutpoints c_k = k (category k is (k - 1, k]); the data scale of the "auto" offset prior
            train = train.with_values(category.astype(np.float64) - 0.5)
        self.offset_prior_ = self._offset_prior(train)
        self.noise_prior_ = self._noise_prior(train)
        # saved with the model (0-d / (2,) arrays), so that a loaded model keeps its prior
        self.w0_ = np.asarray(self._w0(train), np.float64)
        self.bias_prior_ = np.asarray(self._bias_prior(train), np.float64)
        config, prior, dtype = self._validate()
        # the data's centre; after a fit with a learned offset, its posterior mean (_store_draws)
        self.global_mean_ = float(np.mean(train.values, dtype=np.float64))
        self.user_bias_ = self.item_bias_ = None
        self.sample_stats_ = {}
        self.diagnostics_ = None
        data = gibbs.prepare(train, self.global_mean_, self.rank, dtype,
                             rating_index=not prior.gaussian or prior.ordinal, category=category)
        key = jax.random.PRNGKey(self.seed)
        k_init, k_run = jax.random.split(key)
        U0, V0 = self._initial_factors(k_init, data, prior, train, dtype, config)
        for name in ("user_samples_", "item_samples_", *(f"{s}_samples_" for s in ALL_SITES[2:])):
            setattr(self, name, None)
        problem = FitProblem(train, data, prior, U0, V0, k_run, dtype)
        draws = INFERENCES[config.name].fit(self, problem, config)
        if draws is None:  # a point estimate
            self.user_factors_, self.item_factors_ = np.asarray(U0), np.asarray(V0)
            return
        self._store_draws(draws)
        if config.name in CHAIN_INFERENCES and int(self.chains) > 1:
            from bayesmf.posterior.convergence import diagnose, identified_summaries, warn_if_unconverged

            self.diagnostics_ = diagnose(identified_summaries(draws))
            warn_if_unconverged(self.diagnostics_, f"BPMF {config.name}", stacklevel=5)

    def _initial_factors(self, key, data, prior: Prior, train: Ratings, dtype, config: InferenceConfig):
        # N(0, 0.1^2) starting factors drawn on the host (as gibbs.init would draw them with JAX):
        # XLA would compile the threefry sampler anew for each data shape
        start = init_factors(self.seed, train.n_users, train.n_items, prior.rank, 0.1, dtype)
        state = gibbs.init(key, prior, train.n_users, train.n_items, U=start.user_factors, V=start.item_factors,
                           dtype=dtype)
        if self.init == "random" and config.name != "map":
            return state.U, state.V
        start = config if isinstance(config, MAPConfig) else getattr(config, "start", MAPConfig())
        # PMF MAP with the hyperparameters at their prior means: Lambda = nu0 W0, mu = 0.
        kernel = self.bayesian_model(prior).map_kernel(data, start.method)
        desc = "PMF MAP" if start.method == "als" else "PMF MAP (adam)"
        final, hist = iterate(kernel, kernel.init(state.U, state.V), start.n_iter, key, progress=self.progress,
                              desc=desc)
        self.history_.update({f"map_{k}": v for k, v in hist.items()})
        U, V = final.params if start.method == "adam" else final
        return U, V

    def _gibbs_result(self, key, data, prior: Prior, U0, V0, train: Ratings, dtype, *, n_warmup: int, n_samples: int,
                      chains: int, thin: int = 1, keep_every: int = 1, track: Ratings | None = None, checkpoint=None,
                      desc: str = "BPMF Gibbs", rescale: bool | None = None):
        """The driver (:func:`~bayesmf.engines.driver.run`) over the Gibbs kernel's sweeps from
        the factors ``(U0, V0)``, every chain from the same start; kept draws of every site of the
        model; the posterior-predictive moments at the pairs of ``track`` (a :class:`Ratings`)
        when given."""
        # the short run that starts NUTS goes without the invariance moves: its draws' variance is
        # NUTS's mass matrix, and along the moves' ridges it is a spread that NUTS, moving the
        # factors and hyperparameters coordinate-wise, cannot use (its chains then never move)
        rescale = bool(self.inference_config().rescale) if rescale is None else rescale
        model = self.bayesian_model(prior)
        mesh = device_mesh(self.devices)
        kernel = model.gibbs_kernel(data if mesh is None else gibbs.shard(data, mesh), rescale)
        base = kernel.init(jax.random.PRNGKey(self.seed), train.n_users, train.n_items, U=U0, V=V0, dtype=dtype,
                           offset=self.global_mean_)
        init_state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (chains, *x.shape)), base)
        if chains > 1:
            U, V = overdispersed_starts(np.asarray(U0), np.asarray(V0), chains, self.seed)
            init_state = init_state._replace(U=jnp.asarray(U, dtype), V=jnp.asarray(V, dtype))
        sites = model.sites()

        def collect(state):
            return {site: getattr(state, site) for site in sites}

        track_fn = None
        if track is not None:
            track_fn = functools.partial(gibbs.pair_predictions, users=jnp.asarray(track.users),
                                         items=jnp.asarray(track.items))
        return run(kernel, init_state, key, n_warmup=n_warmup, n_samples=n_samples, thin=thin, collect=collect,
                   keep_every=keep_every, track=track_fn, draw_axis=1, progress=self.progress, desc=desc,
                   diverged_hint=gibbs.divergence_hint, checkpoint=checkpoint,
                   checkpoint_every=int(self.checkpoint_every),
                   fingerprint=None if checkpoint is None else self._chain_fingerprint(train, track))

    def _chain_fingerprint(self, train: Ratings, track: Ratings | None) -> dict:
        """What identifies a Gibbs chain, for its checkpoint: the training triples and the tracked
        pairs by content, and every setting that changes the chain. Settings that do not change it
        (progress, the checkpoint's own path and period, NUTS/SVI options) stay out, so that a
        checkpoint resumes whatever they are (and across versions that add such settings). The
        inference's settings come from its configuration, under the keyword names of earlier
        versions (:meth:`~bayesmf.models.inference.InferenceConfig.settings`), so that their
        checkpoints resume."""
        ignored = ("progress", "checkpoint", "checkpoint_every", "inference", "devices")
        if self.noise == "gaussian":  # the noise settings change nothing then (and checkpoints predate them)
            ignored += ("noise", "noise_df", "precision_shape")
        if not self.ordinal:  # likewise the ordinal likelihood's settings
            ignored += ("likelihood", "gap_prior")
        config = self.inference_config()
        settings = {k: v for k, v in self.get_params().items() if k not in ignored}
        settings.update(inference=config.name, biases=self.has_biases, **config.settings())  # "auto" resolved
        if self.devices is not None:  # a sharded chain is the same on any mesh, not the unsharded one
            settings["devices"] = "sharded"
        return {"data": content_digest(train.users, train.items, train.values, np.asarray(train.shape)),
                "track": None if track is None else content_digest(track.users, track.items),
                "settings": settings}

    def _run_gibbs(self, key, data, prior: Prior, U0, V0, train: Ratings, dtype):
        if self._track is not None and not self._track.same_index_space(train):
            raise DataError("track must share the training ID maps (use a bayesmf split)")
        result = self._gibbs_result(key, data, prior, U0, V0, train, dtype, n_warmup=int(self.n_warmup),
                                    n_samples=int(self.n_samples), chains=int(self.chains), thin=int(self.thin),
                                    keep_every=int(self.keep_every), track=self._track, checkpoint=self.checkpoint)
        for name, values in result.history.items():
            self.history_[name] = values.mean(axis=1).tolist()  # averaged over chains
        if result.tracked is not None:
            # E[noise variance] at each tracked pair over the kept draws (module docstring's noise models)
            samples = result.samples
            noise_var = _noise_scale2(samples["alpha"].reshape(-1), self._track.users, self._track.items,
                                      *(samples[s].reshape(-1, samples[s].shape[-1]) if s in samples else None
                                        for s in NOISE_SITES)) * self._noise_factor()
            self.tracked_mean_ = result.tracked.mean.astype(np.float32)
            self.tracked_var_ = (result.tracked.variance + noise_var).astype(np.float32)
        return result.samples

    def _run_map(self, problem: FitProblem, config: MAPConfig):
        """The MAP fit is the starting point itself (:meth:`_initial_factors`): no draws."""
        return None

    def _run_nuts(self, problem: FitProblem, config: NUTSConfig):
        """NumPyro NUTS (:func:`~bayesmf.posterior.numpyro_inference.run_nuts`), started from a
        short Gibbs run (``init="gibbs"``) or the MAP factors."""
        from bayesmf.posterior.numpyro_inference import run_nuts

        warm = None
        if config.init == "gibbs":
            # a short Gibbs run of the same model from the MAP factors: NUTS starts where the
            # hyperparameters and the noise have settled, and its warm-up from the draws' variance
            # per coordinate instead of the identity (run_nuts)
            sweeps = int(config.init_sweeps)
            result = self._gibbs_result(jax.random.fold_in(problem.key, 1), problem.data, problem.prior, problem.U0,
                                        problem.V0, problem.train, problem.dtype, n_warmup=sweeps // 3,
                                        n_samples=sweeps - sweeps // 3, chains=1, desc="BPMF NUTS start (Gibbs)",
                                        rescale=False)
            warm = {name: v[0] for name, v in result.samples.items()}
            self.history_["nuts_init_train_rmse"] = result.history["train_rmse"][:, 0].tolist()
        draws, self.sample_stats_ = run_nuts(
            problem.train, problem.prior, self.global_mean_, problem.key, n_warmup=self.n_warmup,
            n_samples=self.n_samples, chains=self.chains, init_U=problem.U0, init_V=problem.V0,
            target_accept=config.target_accept, max_tree_depth=config.max_tree_depth, dense_mass=config.dense_mass,
            parameterization=config.parameterization, warm_draws=warm, progress=self.progress)
        return draws

    def _run_svi(self, problem: FitProblem, config: SVIConfig):
        """NumPyro SVI (:func:`~bayesmf.posterior.numpyro_inference.run_svi`) from the MAP factors."""
        from bayesmf.posterior.numpyro_inference import run_svi

        draws, losses = run_svi(
            problem.train, problem.prior, self.global_mean_, problem.key, steps=config.steps,
            n_samples=self.n_samples, guide=config.guide, batch_size=config.batch_size,
            learning_rate=config.learning_rate, init_U=problem.U0, init_V=problem.V0, progress=self.progress)
        self.history_["elbo_loss"] = [float(x) for x in losses]
        return draws

    def _store_draws(self, draws: dict) -> None:
        self.user_samples_ = np.asarray(draws["U"], np.float32)
        self.item_samples_ = np.asarray(draws["V"], np.float32)
        for site in HYPER_SITES + BIAS_SITES + NOISE_SITES + ORDINAL_SITES:
            setattr(self, f"{site}_samples_", np.asarray(draws[site], np.float32) if site in draws else None)
        # posterior means: for similarity, export and cold-start scores (predictions use the draws)
        self.user_factors_ = self.user_samples_.mean(axis=(0, 1))
        self.item_factors_ = self.item_samples_.mean(axis=(0, 1))
        if self.b_U_samples_ is not None:
            self.user_bias_ = self.b_U_samples_.mean(axis=(0, 1))
            self.item_bias_ = self.b_V_samples_.mean(axis=(0, 1))
        if self.offset_samples_ is not None:
            self.global_mean_ = float(self.offset_samples_.mean(dtype=np.float64))

    # -- prediction ---------------------------------------------------------------------------
    @property
    def has_draws(self) -> bool:
        return getattr(self, "user_samples_", None) is not None

    def _flat_draws(self):
        """The draws' latent factors with chains merged (``BPMFModel.factors``): U (S, n_users, D),
        V (S, n_items, D), biases (S, n), such that ``global_mean_ + b_i + c_j + u_i.v_j`` is each
        draw's prediction."""
        draws = {"U": self.user_samples_, "V": self.item_samples_, "b_U": self.b_U_samples_,
                 "b_V": self.b_V_samples_, "offset": getattr(self, "offset_samples_", None)}
        return self.bayesian_model().factors(draws, self.global_mean_)

    def _noise_factor(self) -> float:
        """Variance of the standardised noise: ``nu / (nu - 2)`` for Student-t (``inf`` for
        ``nu <= 2``), else 1."""
        from bayesmf.predictive import t_variance_factor

        return t_variance_factor(self.noise_df) if getattr(self, "noise", "gaussian") == "student_t" else 1.0

    def _noise_scale2(self, users=None, items=None):
        """Posterior mean of the squared noise scale: ``E[1/alpha]`` — per pair
        ``E[1/(alpha tau_i kappa_j)]`` (n,) for heteroscedastic noise at ``users``, ``items``
        (without pairs: averaged over the training users and items, for unknown ones)."""
        if not self.has_draws:
            return 1.0 / float(self.alpha)
        alpha = self.alpha_samples_.reshape(-1)
        if getattr(self, "tau_samples_", None) is None:
            return float(np.mean(1.0 / alpha))
        tau = self.tau_samples_.reshape(alpha.size, -1)
        kappa = self.kappa_samples_.reshape(alpha.size, -1)
        if users is None:
            return float(np.mean(1.0 / alpha * (1.0 / tau).mean(1) * (1.0 / kappa).mean(1)))
        return _noise_scale2(alpha, users, items, tau, kappa)

    def _noise_variance(self) -> float:
        """The noise variance averaged over the training users and items."""
        return float(self._noise_scale2() * self._noise_factor())

    def _prior_epistemic_variance(self) -> float:
        """Variance of ``u.v`` (plus both biases) for a user and an item unseen in training under
        the posterior-mean hyperparameters, ``tr(S_U S_V) + mu_U' S_V mu_U + mu_V' S_U mu_V`` with
        ``S = Lambda^-1``; the prior's when the fit kept no draws. The fallback of
        :meth:`_unknown_draws` when it has no hyperparameter draws."""
        if not self.has_draws:
            prior = self.prior
            lam = prior.nu * prior.w0
            return float(self.rank / lam**2)
        S_U = np.linalg.inv(self.Lambda_U_samples_.reshape(-1, self.rank, self.rank)).mean(0)
        S_V = np.linalg.inv(self.Lambda_V_samples_.reshape(-1, self.rank, self.rank)).mean(0)
        mu_u = self.mu_U_samples_.reshape(-1, self.rank).mean(0)
        mu_v = self.mu_V_samples_.reshape(-1, self.rank).mean(0)
        bias_var = 0.0
        if self.b_U_samples_ is not None:  # an unseen user's bias is a fresh draw from its prior
            bias_var = float(np.mean(1 / self.bias_precision_U_samples_) + np.mean(1 / self.bias_precision_V_samples_))
        return float(np.trace(S_U @ S_V) + mu_u @ S_V @ mu_u + mu_v @ S_U @ mu_v + bias_var)

    def _new_row_prior(self, side: str) -> NewRowPrior | None:
        """:class:`NewRowPrior` of a new user (``side="user"``) or item per kept draw: BPMF's
        ``N(mu, Lambda^{-1})`` and ``N(0, 1/lambda_b)`` (no bias: 0); None without
        hyperparameter draws."""
        if getattr(self, "mu_U_samples_", None) is None or not self.has_draws:
            return None
        S, D = self._flat_draws()[0].shape[0], self.rank
        tag = "U" if side == "user" else "V"

        def hyper(name, *shape):
            return getattr(self, f"{name}_samples_").reshape(S, *shape).astype(np.float64)

        if self.b_U_samples_ is not None:
            bias_var = 1.0 / hyper(f"bias_precision_{tag}")
        else:
            bias_var = np.zeros(S)
        return NewRowPrior(hyper(f"mu_{tag}", D), np.linalg.inv(hyper(f"Lambda_{tag}", D, D)), np.zeros(S), bias_var)

    def _item_bias_offset(self) -> np.ndarray:
        """Per kept draw (S,), the part of the stored item biases (:meth:`_flat_draws`) that is
        not an item's own: the learned offset less the training mean (0 without one). A pair
        with a new item gets it back."""
        S = self._flat_draws()[0].shape[0]
        if getattr(self, "offset_samples_", None) is None:
            return np.zeros(S)
        return self.offset_samples_.reshape(S).astype(np.float64) - self.global_mean_

    def _unknown_draws(self, users, items, bad_u, bad_i):
        r"""Per-draw mean and variance of the noise-free prediction at pairs with a side unseen in
        training, each unseen side's latent vector and bias drawn from its prior given the draw's
        hyperparameters (:meth:`_new_row_prior`).

        A new user ``i`` with a known item ``j``: ``u_i ~ N(mu_U, Lambda_U^{-1})`` and
        ``b_i ~ N(0, 1/lambda_b)``, so given draw ``s`` the prediction has mean
        ``m_s + c_j + mu_U' v_j`` and variance ``v_j' Lambda_U^{-1} v_j + 1/lambda_b`` (the same
        with the roles swapped for a new item; ``m_s`` the learned offset when there is one); both
        new: :func:`_two_new_rows_moments` plus ``m_s``. Returns ``(f (S, n), var (S, n), rows)``
        for the rows selected, or None when the model keeps no hyperparameter draws (then the
        global mean and :meth:`_prior_epistemic_variance` apply)."""
        bad = bad_u | bad_i
        user_prior, item_prior = self._new_row_prior("user"), self._new_row_prior("item")
        if not bad.any() or user_prior is None or item_prior is None:
            return None
        rows = np.flatnonzero(bad)
        U, V, BU, BV = self._flat_draws()
        offset = self._item_bias_offset()[:, None]
        f = np.empty((U.shape[0], rows.size))
        var = np.empty((U.shape[0], rows.size))
        new_user, new_item = bad_u[rows], bad_i[rows]
        only_user, only_item, both = new_user & ~new_item, new_item & ~new_user, new_user & new_item
        if only_user.any():  # the known items' terms against a user drawn from the users' prior
            j = items[rows[only_user]]
            f[:, only_user], var[:, only_user] = _new_row_moments(V[:, j], BV[:, j], user_prior)
        if only_item.any():  # the item biases carry the learned offset: a new item gets it back
            i = users[rows[only_item]]
            f[:, only_item], var[:, only_item] = _new_row_moments(U[:, i], BU[:, i] + offset, item_prior)
        if both.any():
            m, v = _two_new_rows_moments(user_prior, item_prior)
            f[:, both], var[:, both] = (m + offset[:, 0])[:, None], v[:, None]
        return self.global_mean_ + f, var, rows

    def _fallback_moments(self, users, items, bad_u, bad_i, mean, var):
        """``mean``/``var`` (noise-free, at known pairs) with the unknown rows filled in from
        :meth:`_unknown_draws` (the mixture over draws: mean of the means, spread of the means
        plus mean variance), or without draws the global mean and
        :meth:`_prior_epistemic_variance`."""
        bad = bad_u | bad_i
        if not bad.any():
            return mean, var
        drawn = self._unknown_draws(users, items, bad_u, bad_i)
        if drawn is None:
            return np.where(bad, self.global_mean_, mean), np.where(bad, self._prior_epistemic_variance(), var)
        f, v, rows = drawn
        mean, var = mean.copy(), var.copy()
        mean[rows] = f.mean(0)
        var[rows] = f.var(0) + v.mean(0)
        return mean, var

    def _moments(self, users, items, bad):
        """Posterior mean and variance of the noise-free prediction at known pairs."""
        if not self.has_draws:
            mean = FactorModel._predict_indices(self, users, items, bad, bad)
            return mean.astype(np.float64), np.zeros(users.shape)
        return self.bayesian_model().predictive_moments(self._flat_draws(), users, items, self.global_mean_)

    def _class_probabilities(self, users, items, bad_u, bad_i, n_draws: int | None = None) -> np.ndarray:
        """Ordinal: posterior predictive category probabilities (n, K) over every kept draw (or
        ``n_draws`` evenly spaced ones). A pair with a side unseen (``bad_u | bad_i``) takes per
        draw ``f ~ N(m_s, v_s)`` from :meth:`_unknown_draws`:
        ``P(k) = Phi((c_k - m_s)/sqrt(1 + v_s)) - ...`` per draw."""
        from bayesmf.posterior.ordinal import class_probabilities

        U, V, BU, BV = self._flat_draws()
        cuts = self.cutpoints_samples_.reshape(U.shape[0], -1)
        pick = np.arange(U.shape[0])
        if n_draws is not None:
            pick = np.linspace(0, U.shape[0] - 1, min(n_draws, U.shape[0])).round().astype(int)
            U, V, BU, BV, cuts = U[pick], V[pick], BU[pick], BV[pick], cuts[pick]
        probs = np.asarray(pair_class_probabilities(*(jnp.asarray(a) for a in (U, V, BU, BV, cuts)),
                                                    jnp.asarray(users), jnp.asarray(items), self.global_mean_),
                           np.float64)
        drawn = self._unknown_draws(users, items, bad_u, bad_i)
        if drawn is None and (bad_u | bad_i).any():
            raise ConfigError("this ordinal model keeps no hyperparameter draws: pairs with a user or item "
                              "unseen in training have no predictive distribution")
        if drawn is not None:
            f, v, rows = drawn
            probs[rows] = np.asarray(class_probabilities(jnp.asarray(f[pick], U.dtype), jnp.asarray(cuts),
                                                         jnp.asarray(v[pick], U.dtype)))
        return probs

    def _predict_indices(self, users, items, bad_u, bad_i) -> np.ndarray:
        if self.ordinal and self.has_draws:  # the expected rating
            return (self._class_probabilities(users, items, bad_u, bad_i) @ self.rating_levels_).astype(np.float32)
        mean, var = self._moments(users, items, bad_u | bad_i)
        return self._fallback_moments(users, items, bad_u, bad_i, mean, var)[0].astype(np.float32)

    def predict_dist(self, users, items, unknown: str = "error", n_draws: int | None = None):
        """Posterior predictive distribution of the ratings at index pairs.

        Returns a :class:`bayesmf.predictive.PredictiveDistribution` with ``mean`` (n,), ``std``
        (n,) — epistemic variance of ``u.v`` over draws plus the noise variance ``E[1/alpha]`` —
        and, when ``n_draws`` is given, ``samples`` (S, n): noise-free posterior draws of
        ``m + u.v`` with ``noise_std`` (S, 1) = ``1/sqrt(alpha_s)`` (a Gaussian mixture). With
        ``unknown="fallback"``, a pair whose user (item) was unseen in training draws that side's
        vector and bias from their prior given each draw's hyperparameters
        (:meth:`_unknown_draws`): the known item's (user's) bias and factors still count, and
        the spread widens by the prior's; a pair with both sides unseen draws both (mean
        ``m + mu_U' mu_V``, the prior predictive). Not clipped.

        Ordinal likelihood: a :class:`~bayesmf.predictive.CategoricalDistribution` of the category
        probabilities averaged over the draws (``n_draws`` evenly spaced ones when given), its
        ``mean`` the expected rating.

        Noise models: ``"student_t"`` gives a mixture of t's (``noise_df`` = ``nu``, ``noise_std``
        their scales; noise variance ``E[1/alpha] nu/(nu - 2)``); ``"heteroscedastic"`` a
        Gaussian mixture with ``noise_std`` (S, n) = ``1/sqrt(alpha_s tau_si kappa_sj)`` and noise
        variance ``E[1/(alpha tau_i kappa_j)]`` per pair. Unknown rows take the training users'
        and items' average noise scale. Student-t noise always returns the t mixture (200 draws
        when ``n_draws`` is None): its intervals are not those of a Gaussian.
        """
        from bayesmf.predictive import PredictiveDistribution

        self._require_fitted()
        users, items, bad_u, bad_i = self._check_indices(users, items, unknown)
        if n_draws is not None:
            n_draws = check_positive_int("n_draws", n_draws)
        bad = bad_u | bad_i
        if self.ordinal:
            from bayesmf.predictive import CategoricalDistribution

            probs = self._class_probabilities(np.where(bad_u, 0, users), np.where(bad_i, 0, items), bad_u, bad_i,
                                              n_draws)
            return CategoricalDistribution.from_probabilities(probs, self.rating_levels_)
        safe_u, safe_i = np.where(bad_u, 0, users), np.where(bad_i, 0, items)
        mean, var = self._moments(safe_u, safe_i, bad)
        factor = self._noise_factor()
        if bad.any():
            mean, var = self._fallback_moments(safe_u, safe_i, bad_u, bad_i, mean, var)
        epistemic = var
        noise = self._noise_scale2(safe_u, safe_i) * factor
        var = epistemic + np.where(bad, self._noise_variance(), noise)
        if n_draws is None:
            if factor != 1.0:  # Student-t: the predictive is not Gaussian; a t mixture needs draws
                n_draws = 200
            else:
                return PredictiveDistribution(mean=mean, std=np.sqrt(var))
        # noise-free draws f_s plus the per-draw noise std 1/sqrt(alpha_s): a Gaussian mixture,
        # so metrics can report the RMSE of each posterior draw as well as the mixture's intervals
        draws, noise_std = self._predictive_draws(safe_u, safe_i, n_draws)
        if bad.any():
            draws[:, bad] = mean[bad]  # unknown rows: all spread in noise_std below (a t scale for t noise)
            noise_std = np.broadcast_to(noise_std, draws.shape).copy()
            # t noise: a t of scale^2 the prior spread plus the noise scale^2 (an approximation)
            noise_std[:, bad] = np.sqrt(var[bad]) if factor == 1.0 else np.sqrt(
                epistemic[bad] + self._noise_scale2())
        df = float(self.noise_df) if self.noise == "student_t" else None
        return PredictiveDistribution(mean=mean, std=np.sqrt(var), samples=draws, noise_std=noise_std, noise_df=df)

    def _predictive_draws(self, users, items, n_draws: int):
        """``n_draws`` evenly spaced posterior draws of ``m + u_s.v_s`` (S, n) and the noise std
        (the t scale for Student-t noise) ``1/sqrt(alpha_s)`` of each, (S, 1) — heteroscedastic:
        ``1/sqrt(alpha_s tau_si kappa_sj)`` (S, n)."""
        if not self.has_draws:
            raise ConfigError("a MAP fit has no posterior draws; use inference='gibbs', 'nuts' or 'svi'")
        U, V, BU, BV = self._flat_draws()
        alpha = self.alpha_samples_.reshape(-1)
        pick = np.linspace(0, U.shape[0] - 1, min(n_draws, U.shape[0])).round().astype(int)
        f = self.global_mean_ + BU[pick][:, users] + BV[pick][:, items]
        f = f + np.einsum("snk,snk->sn", U[pick][:, users], V[pick][:, items])
        if getattr(self, "tau_samples_", None) is not None:
            tau = self.tau_samples_.reshape(alpha.size, -1)[pick][:, users]
            kappa = self.kappa_samples_.reshape(alpha.size, -1)[pick][:, items]
            return f, 1.0 / np.sqrt(alpha[pick][:, None] * tau * kappa)
        return f, (1.0 / np.sqrt(alpha[pick]))[:, None]

    def score_users(self, user_indices, items=None, how: str = "mean", q: float = 0.9, seed: int = 0) -> np.ndarray:
        """Scores of every item (or ``items``) for a batch of users, shape (B, n_items):
        ``how="mean"`` posterior mean; ``"quantile"`` the Gaussian ``q``-quantile of the
        noise-free prediction (optimism under uncertainty); ``"thompson"`` one posterior draw
        (chosen by ``seed``) per call."""
        self._require_fitted()
        if how not in ("mean", "quantile", "thompson"):
            raise ConfigError(f"how must be 'mean', 'quantile' or 'thompson', got {how!r}")
        if not self.has_draws:
            if how != "mean":
                raise ConfigError(f"how={how!r} needs posterior draws; this is a MAP fit")
            return super().score_users(user_indices, items)
        users = as_indices(user_indices, "user_indices", self.n_users_)
        U, V, BU, BV = self._flat_draws()
        if items is not None:
            cols = as_indices(items, "items", self.n_items_)
            V, BV = V[:, cols], BV[:, cols]
        if how == "thompson":
            # an independent posterior draw for each user (keyed by seed and user index, so
            # batching does not change it); the loop runs over distinct draws, not users
            draw = np.random.default_rng([seed, 0]).integers(U.shape[0], size=self.n_users_)[users]
            out = np.empty((users.size, V.shape[1]), np.float32)
            for s_ in np.unique(draw):
                rows = np.flatnonzero(draw == s_)
                u = users[rows]
                out[rows] = self.global_mean_ + BU[s_, u][:, None] + BV[s_][None] + U[s_, u] @ V[s_].T
            return out
        mean, var = _user_score_moments(*(jnp.asarray(a) for a in (U, V, BU, BV)), jnp.asarray(users),
                                        self.global_mean_)
        if how == "mean":
            return np.asarray(mean)
        from scipy.stats import norm

        return np.asarray(mean + norm.ppf(q) * jnp.sqrt(var))

    def score_std_users(self, user_indices, items=None) -> np.ndarray:
        """Posterior std of the noise-free score for a batch of users, (B, n_items)."""
        self._require_fitted()
        if not self.has_draws:
            raise ConfigError("a MAP fit has no posterior draws")
        users = as_indices(user_indices, "user_indices", self.n_users_)
        U, V, BU, BV = self._flat_draws()
        if items is not None:
            cols = as_indices(items, "items", self.n_items_)
            V, BV = V[:, cols], BV[:, cols]
        _, var = _user_score_moments(*(jnp.asarray(a) for a in (U, V, BU, BV)),
                                     jnp.asarray(users), self.global_mean_)
        return np.sqrt(np.asarray(var))

    # -- fold-in ------------------------------------------------------------------------------
    def _fold_in_solve(self, new: Ratings) -> dict:
        """Factors of new users given the item side, under the same model.

        With posterior draws: for each draw ``s`` the exact conditional posterior of the new
        user's vector, ``N(P^-1 h, P^-1)`` with ``P = Lambda_U^s + alpha^s sum_j v_j^s v_j^s'``
        and ``h = Lambda_U^s mu_U^s + alpha^s sum_j (r_j - m) v_j^s`` — the Gibbs conditional —
        one draw per posterior draw, so a new user's predictions carry the (wider) uncertainty
        of a few ratings. For a MAP fit: the conditional mode with the fixed hyperparameters.
        """
        from bayesmf.engines.chunks import build_gram_chunks

        if self.ordinal:
            raise ConfigError("fold_in is not implemented for likelihood='ordinal' (the new users' latent values would "
                              "need their own sampler); refit with the new users")
        if getattr(self, "noise", "gaussian") != "gaussian":
            raise ConfigError(f"fold_in is not implemented for noise={self.noise!r} (the new users' noise weights "
                              "would need their own sampler); refit with the new users, or use noise='gaussian'")
        rated, column = np.unique(new.items, return_inverse=True)
        residual = (new.values - self.global_mean_).astype(np.float32)
        chunks = build_gram_chunks(new.users, column, residual, new.n_users, rated.size, self.rank + 1)
        if not self.has_draws:
            prior = self.prior
            lam = prior.nu * prior.w0
            U = _fold_in_modes(jnp.asarray(self.item_factors_[rated]), chunks, prior.alpha, lam)
            return {"user_factors_": np.asarray(U)}
        C, S = self.user_samples_.shape[:2]
        _, V, _, BV = self._flat_draws()
        lam = jnp.asarray(self.Lambda_U_samples_.reshape(C * S, self.rank, self.rank))
        mu = jnp.asarray(self.mu_U_samples_.reshape(C * S, self.rank))
        alpha = jnp.asarray(self.alpha_samples_.reshape(C * S))
        precision = (jnp.asarray(self.bias_precision_U_samples_.reshape(C * S)) if self.b_U_samples_ is not None
                     else None)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.n_users_)
        x, b = _fold_in_draws(key, jnp.asarray(V[:, rated]), jnp.asarray(BV[:, rated]), lam, mu, alpha, precision,
                              chunks)
        draws = np.asarray(x).reshape(C, S, new.n_users, self.rank)
        out = {"user_samples_": draws, "user_factors_": draws.mean(axis=(0, 1))}
        if precision is not None:
            out["b_U_samples_"] = np.asarray(b).reshape(C, S, new.n_users)
            out["user_bias_"] = out["b_U_samples_"].mean(axis=(0, 1))
        return out

    # -- diagnostics --------------------------------------------------------------------------
    def to_arviz(self, factors: bool = True, data: Ratings | None = None, *, log_likelihood: bool | None = None,
                 posterior_predictive: bool = False, thin: int = 1, seed: int = 0):
        """``arviz.InferenceData`` for diagnostics and model checking, dims (chain, draw, ...).

        Always: ``posterior`` (hyperparameters, biases, and the factors ``U``, ``V`` unless
        ``factors=False``) and ``sample_stats`` (NUTS divergences and tree sizes; the Gibbs
        sweeps' training RMSE averaged over chains stays in ``history_``).

        With ``data`` (a :class:`~bayesmf.data.Ratings` in the training index space — the
        training ratings for ``az.loo`` / ``az.waic`` / ``az.compare``, or a subset of them:
        ``train.subset(rows)``), over the ``N`` ratings of ``data`` (dim ``rating``):

        * ``observed_data`` ``y`` and ``constant_data`` ``user``, ``item`` (indices);
        * ``log_likelihood`` ``y`` (unless ``log_likelihood=False``), pointwise
          ``log N(r_n | f_s(n), 1/alpha_s)`` with ``f_s(n) = m_s + b_s + c_s + u_s . v_s``
          the draw's noise-free prediction (the learned offset included);
        * ``posterior_predictive`` ``y`` when ``posterior_predictive=True``: replicated ratings
          ``f_s(n) + N(0, 1/alpha_s)`` (seeded by ``seed``), for ``az.plot_ppc``;
        * ``sample_stats`` ``rmse``: each draw's RMSE of ``f_s`` on ``data``.

        ``thin`` keeps every ``thin``-th draw of each chain in every group. Memory: each of the
        two (chains, draws, N) groups takes ``4 C S N / thin`` bytes (float32): MovieLens-1M's
        900,000 training ratings with 200 draws, 720 MB each; thin, or pass a subset, to shrink
        it (PSIS-LOO needs a few hundred draws in all for stable Pareto-k estimates). Computed in
        JAX one draw at a time (memory O(N) beyond the output).
        """
        import arviz as az

        if not self.has_draws:
            raise ConfigError("a MAP fit has no posterior draws to convert")
        thin = check_positive_int("thin", thin)
        if log_likelihood is None:
            log_likelihood = data is not None
        if (log_likelihood or posterior_predictive) and self.ordinal:
            raise ConfigError("to_arviz's log_likelihood and posterior_predictive are the Gaussian model's; "
                              "likelihood='ordinal' has neither yet: pass log_likelihood=False")
        if (log_likelihood or posterior_predictive) and data is None:
            raise ConfigError("log_likelihood and posterior_predictive need the ratings: pass data=train "
                              "(a Ratings in the training index space)")
        keep = slice(None, None, thin)
        posterior = {site: getattr(self, f"{site}_samples_")[:, keep] for site in HYPER_SITES + BIAS_SITES
                     if getattr(self, f"{site}_samples_") is not None}
        dims = {"mu_U": ["factor"], "mu_V": ["factor"], "Lambda_U": ["factor", "factor_bis"],
                "Lambda_V": ["factor", "factor_bis"]}
        if factors:
            posterior["U"], posterior["V"] = self.user_samples_[:, keep], self.item_samples_[:, keep]
            dims.update({"U": ["user", "factor"], "V": ["item", "factor"]})
        if "b_U" in posterior:
            dims.update({"b_U": ["user"], "b_V": ["item"]})
        stats = {k: np.asarray(v)[:, keep] for k, v in self.sample_stats_.items()} if self.sample_stats_ else {}
        groups = {}
        if data is not None:
            self._check_same_space(data)
            ll, rmse, y_rep = self._pointwise(data, thin, log_likelihood, posterior_predictive, seed)
            stats["rmse"] = rmse
            groups["observed_data"] = {"y": np.asarray(data.values, np.float32)}
            groups["constant_data"] = {"user": np.asarray(data.users), "item": np.asarray(data.items)}
            if ll is not None:
                groups["log_likelihood"] = {"y": ll}
            if y_rep is not None:
                groups["posterior_predictive"] = {"y": y_rep}
            dims.update({"y": ["rating"], "user": ["rating"], "item": ["rating"]})
        return az.from_dict(posterior=posterior, sample_stats=stats or None, dims=dims, **groups)

    def _check_same_space(self, data) -> None:
        if not isinstance(data, Ratings):
            raise DataError(f"data must be a bayesmf Ratings, got {type(data).__name__}")
        if data.nnz == 0:
            raise DataError("data is empty")
        if data.shape != (self.n_users_, self.n_items_) or data.user_map != self.user_map_ \
                or data.item_map != self.item_map_:
            raise DataError(f"data ({data.n_users} users x {data.n_items} items) is not in the model's training "
                            f"index space ({self.n_users_} x {self.n_items_}, same ID maps): use a bayesmf split "
                            "of the data the model was fitted on")

    def _pointwise(self, data: Ratings, thin: int, want_ll: bool, want_rep: bool, seed: int):
        """``(log_lik (C, S', N) or None, rmse (C, S'), y_rep (C, S', N) or None)`` over the
        kept draws ``[:, ::thin]``; see :meth:`to_arviz`."""
        C = self.user_samples_.shape[0]
        U, V, BU, BV = self._flat_draws()
        S = U.shape[0] // C
        pick = np.arange(U.shape[0]).reshape(C, S)[:, ::thin].reshape(-1)
        alpha = self.alpha_samples_.reshape(-1)[pick].astype(U.dtype)
        draws = tuple(jnp.asarray(a[pick]) for a in (U, V, BU, BV)) + (jnp.asarray(alpha),)
        key = jax.random.PRNGKey(seed) if want_rep else None
        ll, sse, rep = _pointwise_draws(draws, jnp.asarray(data.users), jnp.asarray(data.items),
                                        jnp.asarray(data.values, U.dtype), self.global_mean_, key,
                                        want_ll=want_ll, want_rep=want_rep)
        shape = (C, pick.size // C)
        rmse = np.sqrt(np.asarray(sse, np.float64) / data.nnz).reshape(shape)
        ll = None if ll is None else np.asarray(ll).reshape(*shape, -1)
        rep = None if rep is None else np.asarray(rep).reshape(*shape, -1)
        return ll, rmse, rep


@functools.partial(jax.jit, static_argnames=("want_ll", "want_rep"))
def _pointwise_draws(draws, users, items, values, global_mean, key, *, want_ll: bool, want_rep: bool):
    """Per draw ``s`` (a ``lax.map`` over draws, memory O(N) per step): the pointwise Gaussian
    log-likelihood of ``values`` (S, N), the sum of squared errors of ``f_s`` (S,) and replicated
    ratings ``f_s + N(0, 1/alpha_s)`` (S, N); the arrays not wanted are None."""
    S = draws[0].shape[0]
    keys = jax.random.split(key, S) if want_rep else jnp.zeros((S, 2), jnp.uint32)
    half_log_2pi = 0.5 * np.log(2 * np.pi)

    def one(args):
        (u, v, bu, bv, a), k = args
        f = global_mean + bu[users] + bv[items] + jnp.sum(u[users] * v[items], axis=-1)
        r = values - f
        out = {"sse": jnp.sum(r * r)}
        if want_ll:
            out["ll"] = 0.5 * jnp.log(a) - half_log_2pi - 0.5 * a * r * r
        if want_rep:
            out["rep"] = f + jax.random.normal(k, f.shape, f.dtype) / jnp.sqrt(a)
        return out

    out = jax.lax.map(one, (draws, keys))
    return out.get("ll"), out["sse"], out.get("rep")


class PMF(BPMF):
    """Probabilistic matrix factorization, the MAP shortcut: ``BPMF(inference="map", w0=1.0)`` with
    the hyperparameters fixed at their prior means (``Lambda = nu0 w0 I``, ``mu = 0``, ``alpha``);
    ``w0`` is a fixed scale here (Salakhutdinov & Mnih's fixed penalties), not ``"auto"``."""

    def __init__(self, rank: int = 10, alpha: float = 2.0, nu0: float | None = None, w0: float = 1.0,
                 map_iter: int = 20, map_method: str = "als", seed: int = 0, progress: bool = False,
                 dtype: str = "float32"):
        super().__init__(rank=rank, inference="map", alpha=alpha, nu0=nu0, w0=w0, seed=seed, progress=progress,
                         dtype=dtype)
        self.map_iter = map_iter
        self.map_method = map_method

    def inference_config(self) -> MAPConfig:
        """:class:`~bayesmf.models.inference.MAPConfig` of ``map_iter`` and ``map_method``."""
        return MAPConfig(self.map_iter, self.map_method)
