"""The one estimator registry: every estimator name, where its class lives, and the classes
defined so far.

``bayesmf.<Name>`` (lazy attribute), :func:`bayesmf.load` and the experiment catalogue
(``[[models]] model = "<Name>"``) all read this table. A built-in estimator is one line in
:data:`ESTIMATOR_MODULES`; its class registers itself in :data:`CLASSES` when its module is
imported (:class:`bayesmf.models.base.Estimator` does it in ``__init_subclass__``), so a user's
own estimator can be loaded from disk once its module has been imported.

This module imports nothing from the package, so ``import bayesmf`` stays cheap (no JAX).
"""

from __future__ import annotations

import importlib

__all__ = ["CLASSES", "ESTIMATOR_MODULES", "estimator_class", "register"]

#: Built-in estimator name -> the module that defines its class.
ESTIMATOR_MODULES: dict[str, str] = {
    "Baseline": "bayesmf.models.baseline",
    "Popularity": "bayesmf.models.baseline",
    "ALS": "bayesmf.models.als",
    "ImplicitALS": "bayesmf.models.als",
    "NMF": "bayesmf.models.nmf",
    "FunkSVD": "bayesmf.models.sgd",
    "SVDpp": "bayesmf.models.sgd",
    "BPMF": "bayesmf.models.bpmf",
    "PMF": "bayesmf.models.bpmf",
    "BayesFM": "bayesmf.models.fm",
    "EASE": "bayesmf.models.ease",
    "GMF": "bayesmf.models.ncf",
    "MLP": "bayesmf.models.ncf",
    "NeuMF": "bayesmf.models.ncf",
    "BPR": "bayesmf.models.bpr",
    "MultVAE": "bayesmf.models.vae",
    "MultDAE": "bayesmf.models.vae",
}

#: Class name -> class, for every estimator class defined so far (built-in or not).
CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Record ``cls`` under its ``__name__`` (a later class of the same name replaces it).

    Parameters
    ----------
    cls : type
        An estimator class.

    Returns
    -------
    type
        ``cls`` itself, so the function also works as a class decorator.
    """
    CLASSES[cls.__name__] = cls
    return cls


def estimator_class(name: str) -> type | None:
    """The estimator class called ``name``, importing its module when it is a built-in one.

    Parameters
    ----------
    name : str
        The class name, e.g. ``"BPMF"``.

    Returns
    -------
    type or None
        The class, or None when no estimator of that name is built in or has been defined.
    """
    if name not in CLASSES and name in ESTIMATOR_MODULES:
        importlib.import_module(ESTIMATOR_MODULES[name])
    return CLASSES.get(name)
