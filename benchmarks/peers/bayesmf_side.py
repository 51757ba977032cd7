"""bayesmf job: any estimator of the package, run exactly like a peer job.

``--algo`` names a top-level estimator (``FunkSVD``, ``ALS``, ``ImplicitALS``, ``NMF``, ``BPMF``,
``PMF``, ``Baseline``); ``--params`` holds *canonical* hyperparameter names (``rank``,
``n_iter``, ``lr``, ``reg``, ``alpha``, ``burn_in``, ``n_samples``, ``inference``, ...), mapped
onto whatever the estimator's constructor calls them (``ALIASES``), so that the harness keeps
working while the estimators' signatures settle. A canonical name the estimator has no parameter
for is reported in ``params_ignored`` rather than silently dropped; an estimator that does not
exist yet makes the job print ``BENCH_RESULT {"unavailable": ...}``.

With ``"warm": true`` in the params the estimator is fitted twice on the same data and the second
fit is timed as well (``fit_seconds_warm``): the first includes JAX's compilation, the second is
the steady-state cost that the peers' compiled code is compared against.

Factorization machines (``BayesFM``): ``"features"`` names a feature set of
``benchmarks/fm_features.py``, turned into its ``Features`` here; the ratings then carry the
split's raw ID maps and timestamps (side and time features look them up), and the test pairs'
timestamps go to ``predict``. ``"likelihood"`` other than ``"gaussian"`` needs the estimator to
take it (else the job is unavailable, never silently Gaussian); an ordinal model's class
probabilities (``predict_dist(...).probabilities``) are scored by ``_fm.categorical_metrics``.
"""

import inspect
import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import _fm  # noqa: E402
import numpy as np  # noqa: E402

ALIASES = {
    "rank": ("rank", "n_factors", "factors"),
    "n_iter": ("n_iter", "n_epochs", "epochs", "max_iter", "iterations", "n_sweeps", "num_steps", "n_steps",
               "map_iter"),
    "lr": ("lr", "learning_rate", "step_size", "svi_learning_rate"),
    "reg": ("reg", "regularization", "reg_all", "l2", "lam", "lambda_"),
    "reg_bias": ("reg_bias", "bias_reg", "reg_b"),
    "alpha": ("alpha", "confidence_alpha"),
    "burn_in": ("burn_in", "burnin", "n_burn_in", "n_burnin", "warmup", "n_warmup"),
    "n_samples": ("n_samples", "num_samples", "nsamples", "n_kept_samples"),
    "inference": ("inference", "method"),
    "biased": ("biased", "bias", "use_bias", "fit_bias"),
    "init_std": ("init_std", "init_scale", "init_stdev"),
    "prior_scale": ("prior_scale", "prior_std"),
    "seed": ("seed", "random_state"),
}


def constructor_params(cls) -> list[str]:
    """The constructor's parameters, plus the deprecated keywords it still maps (BPMF's
    ``map_iter``, ``svi_*``, ... onto its inference configuration: :func:`fold_deprecated`)."""
    names = getattr(cls, "_param_names", None)
    deprecated = list(getattr(cls, "deprecated_parameters", dict)())
    if names is not None:
        return list(names()) + deprecated
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"] + deprecated


def fold_deprecated(cls, kwargs: dict) -> dict:
    """``kwargs`` with the deprecated keywords folded into ``inference`` (its mapping form), so
    that the model is built without a DeprecationWarning."""
    deprecated = getattr(cls, "deprecated_parameters", dict)()
    legacy = {k: v for k, v in kwargs.items() if k in deprecated}
    if not legacy:
        return kwargs
    import warnings

    from bayesmf.models.inference import apply_legacy, inference_params

    out = {k: v for k, v in kwargs.items() if k not in legacy}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out["inference"] = inference_params(apply_legacy(kwargs.get("inference", "gibbs"), legacy))
    return out


def map_params(cls, canonical: dict) -> tuple[dict, list[str]]:
    """(constructor kwargs, canonical names with no matching parameter)."""
    accepted = set(constructor_params(cls))
    kwargs, ignored = {}, []
    for name, value in canonical.items():
        target = next((alias for alias in ALIASES.get(name, (name,)) if alias in accepted), None)
        if target is None:
            ignored.append(name)
        else:
            kwargs[target] = value
    return fold_deprecated(cls, kwargs), ignored


def to_ratings(data):
    from bayesmf import Ratings

    scale = None if data["kind"] == "implicit" else (data["rating_min"], data["rating_max"])
    return Ratings.from_arrays(data["train_users"], data["train_items"], data["train_values"],
                               n_users=data["n_users"], n_items=data["n_items"], rating_scale=scale)


def signature(method) -> list[str]:
    """The parameter names of ``method``."""
    return list(inspect.signature(method).parameters)


def fm_predict(model, test, timed: bool):
    """(predictive means, class probabilities or None) of a factorization machine on the test
    ratings' pairs; ``timed``: its features include time, so the pairs' timestamps are passed
    (``main`` checked that ``predict`` takes them)."""
    kwargs = {"timestamps": test.timestamps} if timed else {}
    if getattr(model, "likelihood", "gaussian") == "gaussian":
        return np.asarray(model.predict(test.users, test.items, clip=False, **kwargs)), None
    dist = model.predict_dist(test.users, test.items, **kwargs)
    return np.asarray(dist.mean), np.asarray(dist.probabilities)


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    import bayesmf
    from bayesmf.registry import ESTIMATOR_MODULES

    if args.algo not in ESTIMATOR_MODULES:
        _common.emit(unavailable=f"bayesmf.{args.algo} not available yet (not in bayesmf.registry)")
        return
    cls = getattr(bayesmf, args.algo)  # a registered estimator that fails to import is an error, not a gap
    params = dict(args.params)
    warm = params.pop("warm", False)
    params.setdefault("seed", args.seed)
    features = params.get("features")
    if isinstance(features, str):
        from benchmarks import fm_features

        params["features"] = fm_features.features(features, data.get("data_dir"))
        train, test = fm_features.ratings_of(data, "train"), fm_features.ratings_of(data, "test")
    else:
        train, test = to_ratings(data), None
    kwargs, ignored = map_params(cls, params)
    if params.get("likelihood", "gaussian") != "gaussian" and "likelihood" in ignored:
        _common.emit(unavailable=f"bayesmf.{args.algo} has no likelihood parameter "
                     f"(likelihood={params['likelihood']!r} not available yet)")
        return
    if test is not None and params["features"].time is not None and "timestamps" not in signature(cls.predict):
        _common.emit(unavailable=f"bayesmf.{args.algo}.predict takes no timestamps: the test pairs' time "
                     "features cannot be given")
        return
    with _common.Timer() as fit:
        model = cls(**kwargs).fit(train)
    extra = {"params_used": {k: (features if k == "features" else v) for k, v in kwargs.items()},
             "params_ignored": ignored, "fit_cpu_seconds": fit.cpu_seconds}
    if warm:
        with _common.Timer() as refit:
            model = cls(**kwargs).fit(train)
        extra["fit_seconds_warm"] = refit.seconds
    sweeps = params.get("burn_in", 0) + params.get("n_samples", 0)
    n_iter = int(params.get("n_iter") or params.get("svi_steps") or sweeps)
    if data["kind"] == "implicit":
        _common.finish(data, library="bayesmf", version=bayesmf.__version__, fit_seconds=fit.seconds,
                       n_iter=n_iter, score_users=model.score_users, **extra)
        return
    if test is not None:
        with _common.Timer() as predict:
            pred, probs = fm_predict(model, test, params["features"].time is not None)
        if probs is not None:
            extra.update(_fm.categorical_metrics(probs, data))
        _common.finish(data, library="bayesmf", version=bayesmf.__version__, fit_seconds=fit.seconds,
                       n_iter=n_iter, predict_seconds=predict.seconds, pred=pred, **extra)
        return
    with _common.Timer() as predict:
        try:
            pred = model.predict(data["test_users"], data["test_items"], clip=False)
        except TypeError:  # an estimator whose predict has no clip argument
            pred = model.predict(data["test_users"], data["test_items"])
        pred = np.asarray(pred)
    _common.finish(data, library="bayesmf", version=bayesmf.__version__, fit_seconds=fit.seconds,
                   n_iter=n_iter, predict_seconds=predict.seconds, pred=pred, **extra)


if __name__ == "__main__":
    main()
