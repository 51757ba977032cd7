"""The comparisons: each bayesmf estimator next to the peers that implement the same method.

Hyperparameters are matched where the methods share them (rank, iterations, learning rate,
regularisation with the same meaning); where a peer's algorithm differs, the difference is
written in the pair's ``note`` and lands in RESULTS.md. bayesmf jobs use canonical parameter
names (see ``benchmarks/peers/bayesmf_side.py``); peer jobs use the peer's own names.
"""

from __future__ import annotations

import dataclasses

EXPLICIT = ("ml100k-u1", "ml1m-90-10")


@dataclasses.dataclass(frozen=True)
class Job:
    """One side of a comparison: ``side`` is "bayesmf" or a peer env name (benchmarks/envs.py);
    the job script is ``benchmarks/peers/<script>.py``."""

    side: str
    algo: str
    params: dict
    label: str = ""

    @property
    def script(self) -> str:
        return "bayesmf_side" if self.side == "bayesmf" else self.side

    @property
    def name(self) -> str:
        return self.label or f"{self.side} {self.algo}"


@dataclasses.dataclass(frozen=True)
class Pair:
    name: str
    bayesmf: Job
    peers: tuple[Job, ...]
    protocols: tuple[str, ...] = EXPLICIT
    quick_params: dict = dataclasses.field(default_factory=dict)  # overrides for --quick
    note: str = ""


def bpmf_gibbs_pair(name: str, rank: int, protocols: tuple[str, ...], note: str) -> Pair:
    """Gibbs BPMF at ``rank`` next to myFM and SMURFF: 50 burn-in sweeps, 150 kept, everywhere."""
    return Pair(
        name,
        Job("bayesmf", "BPMF", {"rank": rank, "inference": "gibbs", "burn_in": 50, "n_samples": 150, "biases": True,
                                "noise_prior": [1.0, 1.0]}),
        (
            Job("myfm", "BPMF", {"rank": rank, "n_iter": 200, "n_kept_samples": 150}, label="myfm grouped FM"),
            Job("smurff", "BPMF", {"rank": rank, "burnin": 50, "nsamples": 150}),
        ),
        protocols=protocols,
        quick_params={"rank": 3, "burn_in": 3, "n_samples": 5, "map_iter": 2},
        note=note,
    )


def fm_pair(name: str, algo: str, likelihood: str, rank: int, features: str, protocol: str, burn_in: int,
            n_samples: int, note: str) -> Pair:
    """bayesmf's ``BayesFM`` next to myFM's ``algo`` (``FM``: ``MyFMRegressor``, ``FMOrdinal``:
    ``MyFMOrderedProbit``) on the same feature set (``benchmarks/fm_features.py``): the same design
    (myFM reads bayesmf's relation blocks), the same split, the same sweeps."""
    return Pair(
        name,
        Job("bayesmf", "BayesFM", {"rank": rank, "features": features, "likelihood": likelihood, "burn_in": burn_in,
                                   "n_samples": n_samples}),
        (Job("myfm", algo, {"rank": rank, "features": features, "n_iter": burn_in + n_samples,
                            "n_kept_samples": n_samples}),),
        protocols=(protocol,),
        quick_params={"rank": 3, "burn_in": 2, "n_samples": 5, "features": "implicit"},
        note=note + " Seconds per sample = fit seconds / sweeps (burn-in included, as myFM times it); "
        "myFM's sampler is single-threaded.",
    )


FM_ML100K_NOTE = (
    "Feature set ml100k-extended (myFM's ml-100k-extended notebook): user/item one-hot, user age (10 "
    "percentile bins), occupation, zip prefix, item release year (bins + missing) and genres (1/sqrt(n)), "
    "implicit feedback both ways (1/sqrt(n)), the rating's day; one prior group per column kind. myFM gets "
    "each bayesmf block as a RelationBlock (the day block too, where the notebook puts the day in X: the "
    "same model). 512 sweeps, all kept (the notebook's n_iter = n_kept_samples = 512); published there: "
    "RMSE 0.8833 (regression), 0.8808 (ordered probit) on all 20000 u1.test pairs."
)

PAIRS: tuple[Pair, ...] = (
    Pair(
        "funk-sgd",
        Job("bayesmf", "FunkSVD",
            {"rank": 100, "n_iter": 20, "lr": 0.005, "reg": 0.02, "init_std": 0.1, "warm": True}),
        (
            Job("surprise", "SVD", {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02}),
            Job("cornac", "MF",
                {"k": 100, "max_iter": 20, "learning_rate": 0.005, "lambda_reg": 0.02, "use_bias": True}),
        ),
        quick_params={"rank": 4, "n_iter": 3},
        note="Surprise's SVD defaults. Surprise and Cornac update per rating; bayesmf's FunkSVD uses "
        "minibatches (batch_size 1024, its default).",
    ),
    Pair(
        "funk-sgd-tuned",
        Job("bayesmf", "FunkSVD",
            {"rank": 50, "n_iter": 20, "lr": 0.01, "reg": 0.02, "init_std": 0.01, "warm": True}),
        (
            Job("surprise", "SVD", {"n_factors": 50, "n_epochs": 20, "lr_all": 0.01, "reg_all": 0.02,
                                    "init_std_dev": 0.01}),
            Job("cornac", "MF",
                {"k": 50, "max_iter": 20, "learning_rate": 0.01, "lambda_reg": 0.02, "use_bias": True}),
        ),
        protocols=("ml1m-90-10",),
        quick_params={"rank": 4, "n_iter": 3},
        note="The best of 18 FunkSVD configurations (rank 10/20/50, reg 0.02/0.04/0.06, 20/40 epochs; lr "
        "0.01, init std 0.01 as Cornac's) on a validation split carved from the training set "
        "(splits.random(train, 0.1, seed=1)), then the same configuration for every library (Cornac "
        "initialises with std 0.01 too).",
    ),
    Pair(
        "als-explicit",
        Job("bayesmf", "ALS", {"rank": 10, "n_iter": 10, "reg": 0.1, "warm": True}),
        (
            Job("spark", "ALS", {"rank": 10, "maxIter": 10, "regParam": 0.1, "numUserBlocks": 2, "numItemBlocks": 2}),
            Job("lenskit", "BiasedMF", {"embedding_size": 10, "epochs": 10, "regularization": 0.1}),
        ),
        quick_params={"rank": 4, "n_iter": 3},
        note="All three penalise reg * n_r |p_r|^2 (weighted lambda). Spark has no biases; LensKit "
        "removes damped biases (damping 5) once, then runs ALS on residuals; bayesmf fits biases in "
        "every sweep. Spark: local[threads], 2 user/item blocks.",
    ),
    Pair(
        "implicit-als",
        Job("bayesmf", "ImplicitALS", {"rank": 64, "n_iter": 15, "reg": 0.01, "alpha": 10.0, "warm": True}),
        (Job("implicit", "ALS", {"factors": 64, "iterations": 15, "regularization": 0.01, "alpha": 10.0}),),
        protocols=("ml1m-implicit", "ml1m-loo"),
        quick_params={"rank": 4, "n_iter": 3},
        note="Confidence 1 + alpha for every positive (rating >= 4), conjugate gradient with 3 steps "
        "per half sweep on both sides. Recall/NDCG@10 exclude training positives; on the leave-one-out "
        "protocol the held-out item is also ranked among 99 sampled negatives (sampled HR/NDCG@10).",
    ),
    Pair(
        "nmf",
        Job("bayesmf", "NMF", {"rank": 15, "n_iter": 50, "reg": 0.06, "warm": True}),
        (
            Job("surprise", "NMF", {"n_factors": 15, "n_epochs": 50, "reg_pu": 0.06, "reg_qi": 0.06}),
            Job("cornac", "NMF", {"k": 15, "max_iter": 50, "lambda_u": 0.06, "lambda_v": 0.06, "use_bias": False}),
        ),
        quick_params={"rank": 3, "n_iter": 3},
        note="Surprise's NMF defaults (Luo et al. 2014 multiplicative updates, no biases); Cornac's "
        "NMF is a port of Surprise's.",
    ),
    bpmf_gibbs_pair(
        "bpmf-gibbs", 10, EXPLICIT,
        "200 sweeps, the last 150 averaged, everywhere. myFM: one-hot user+item features with "
        "separate priors (group_shapes), plus a global bias and per-user/item linear terms. SMURFF: "
        "adaptive noise, training mean subtracted. bayesmf: user/item biases and the noise precision "
        "learned (Gamma(1, 1) priors), matching myFM's linear terms and SMURFF's adaptive noise; its "
        "default MAP initialisation.",
    ),
    bpmf_gibbs_pair(
        "bpmf-gibbs-rank32", 32, ("ml1m-90-10",),
        "As bpmf-gibbs at rank 32 (MovieLens-1M only): the seconds per sweep at a rank where the "
        "k x k solves weigh more.",
    ),
    Pair(
        "pmf-svi",
        Job("bayesmf", "BPMF", {"rank": 10, "inference": "svi", "svi_steps": 1000, "svi_learning_rate": 0.01,
                                "svi_batch_size": None}),
        (Job("numpyro", "SVI", {"rank": 10, "prior_scale": 0.3, "lr": 0.01, "num_steps": 1000},
             label="numpyro PMF SVI"),),
        quick_params={"rank": 3, "svi_steps": 5, "n_samples": 5, "map_iter": 2},
        note="Full-batch Adam, 1000 steps, lr 0.01, mean-field Gaussian guide on both sides. The "
        "NumPyro model is plain PMF (fixed prior scale 0.3, learned noise); bayesmf's is the "
        "hierarchical BPMF model.",
    ),
    Pair(
        "pmf-map",
        Job("bayesmf", "PMF", {"rank": 10, "warm": True}),
        (
            Job("cornac", "PMF", {"k": 10, "max_iter": 100, "learning_rate": 0.001, "lambda_reg": 0.001}),
            Job("numpyro", "MAP", {"rank": 10, "prior_scale": 0.3, "lr": 0.01, "num_steps": 1000},
                label="numpyro PMF MAP"),
        ),
        quick_params={"rank": 3, "n_iter": 2},
        note="bayesmf PMF: MAP by coordinate ascent (ALS) with its default 20 sweeps. Cornac PMF: its "
        "README settings (non-linear variant: sigmoid of U.V on ratings rescaled to [0, 1], gradient "
        "descent with momentum). NumPyro: AutoDelta, full-batch Adam.",
    ),
)


PAIRS += (
    fm_pair("fm-ml100k-extended", "FM", "gaussian", 10, "ml100k-extended", "ml100k-u1", 0, 512,
            FM_ML100K_NOTE + " Gaussian likelihood (MyFMRegressor)."),
    fm_pair("fm-ordinal-ml100k", "FMOrdinal", "ordinal", 10, "ml100k-extended", "ml100k-u1", 0, 512,
            FM_ML100K_NOTE + " Ordered probit (MyFMOrderedProbit on classes rating - 1): RMSE of the "
            "expected rating; categorical NLL, RPS and ECE of the class probabilities."),
    fm_pair("fm-ml1m-side", "FM", "gaussian", 32, "ml1m-side", "ml1m-90-10", 50, 150,
            "Feature set ml1m-side: user/item one-hot, user age bucket, gender, occupation, zip prefix, item "
            "release year (bins) and genres, implicit feedback both ways; no time (our MovieLens-1M copy "
            "lacks 199,435 timestamps). 200 sweeps, the last 150 kept (as bpmf-gibbs-rank32)."),
    fm_pair("fm-ordinal-ml1m", "FMOrdinal", "ordinal", 32, "ml1m-side", "ml1m-90-10", 50, 150,
            "As fm-ml1m-side with the ordered probit likelihood."),
)


def select(names=None) -> tuple[Pair, ...]:
    if not names:
        return PAIRS
    known = {p.name: p for p in PAIRS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown pair(s) {unknown}; known: {sorted(known)}")
    return tuple(known[n] for n in names)
