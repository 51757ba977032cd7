"""myFM job: Bayesian factorization machine by Gibbs sampling on one-hot (user, item) features
(``--algo BPMF``), or on a bayesmf feature set's relation blocks (``--algo FM``, ``FMOrdinal``).

With ``group_shapes=[n_users, n_items]`` the user and item columns get separate normal-gamma
priors, which is myFM's "BPMF-like" configuration (README: ML-100K grouped MF). The FM keeps a
global bias ``w0`` and per-feature linear terms (user and item biases), myFM's defaults; the
prediction averages the last ``n_kept_samples`` samples. myFM 0.4.0 has no thread setting for
the sampler (it runs on one thread); ``predict`` uses ``n_workers=threads``.

``FM`` / ``FMOrdinal``: ``params["features"]`` names a feature set whose train and test designs the
harness wrote next to the split (``benchmarks/fm_features.py``); each bayesmf block becomes a
``myfm.RelationBlock`` and the feature groups become ``group_shapes`` (``_fm.myfm_layout``).
``FM`` is ``MyFMRegressor``; ``FMOrdinal`` is ``MyFMOrderedProbit`` on the classes
``rating - rating_min`` (integer ratings), scored by the expected rating and by the class
probabilities of ``predict_proba`` (categorical NLL, RPS, ECE).
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import _fm  # noqa: E402
import myfm  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def one_hot(users, items, n_users, n_items):
    """CSR rows [e_user | e_item]: shape (n, n_users + n_items), two ones per row."""
    n = users.size
    cols = np.stack([users, n_users + items], axis=1).reshape(-1)
    return sp.csr_matrix((np.ones(2 * n), cols, np.arange(0, 2 * n + 1, 2)), shape=(n, n_users + n_items))


def fit_fm(args, data, p):
    """``FM`` / ``FMOrdinal`` on the relation blocks of ``p["features"]`` (module docstring)."""
    with np.load(_fm.design_path(args.data, p["features"])) as f:
        train, test = _fm.read_design(f, "train_"), _fm.read_design(f, "test_")
    layout = _fm.myfm_layout(train)
    x_train, blocks_train = _fm.relation_blocks(train, layout)
    x_test, blocks_test = _fm.relation_blocks(test, layout)
    rel_train = [myfm.RelationBlock(index, block) for index, block in blocks_train]
    rel_test = [myfm.RelationBlock(index, block) for index, block in blocks_test]
    ordinal = args.algo == "FMOrdinal"
    y = data["train_values"].astype(np.float64)
    if ordinal:
        y = np.rint(y - data["rating_min"]).astype(np.int64)
        model = myfm.MyFMOrderedProbit(rank=p["rank"], random_seed=args.seed)
    else:
        model = myfm.MyFMRegressor(rank=p["rank"], random_seed=args.seed)
    with _common.Timer() as fit:
        model.fit(x_train, y, X_rel=rel_train, n_iter=p["n_iter"], n_kept_samples=p["n_kept_samples"],
                  group_shapes=layout["group_shapes"])
    extra = {"fit_cpu_seconds": fit.cpu_seconds,
             "group_shapes": dict(zip(layout["group_names"], layout["group_shapes"], strict=True)),
             "block_rows": {b["name"]: b["n_rows"] for b in train["blocks"]}}
    with _common.Timer() as predict:
        if ordinal:
            probs = model.predict_proba(x_test, rel_test, n_workers=args.threads)
            pred = data["rating_min"] + probs @ np.arange(probs.shape[1])
        else:
            pred = model.predict(x_test, rel_test, n_workers=args.threads)
    if ordinal:
        extra.update(_fm.categorical_metrics(probs, data))
    _common.finish(data, library="myfm", version=myfm.__version__, fit_seconds=fit.seconds, n_iter=p["n_iter"],
                   predict_seconds=predict.seconds, pred=pred, **extra)


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    p = dict(args.params)
    if args.algo in ("FM", "FMOrdinal"):
        fit_fm(args, data, p)
        return
    nu, ni = data["n_users"], data["n_items"]
    x_train = one_hot(data["train_users"], data["train_items"], nu, ni)
    x_test = one_hot(data["test_users"], data["test_items"], nu, ni)
    model = myfm.MyFMRegressor(rank=p["rank"], random_seed=args.seed)
    with _common.Timer() as fit:
        model.fit(x_train, data["train_values"].astype(np.float64), n_iter=p["n_iter"],
                  n_kept_samples=p["n_kept_samples"], group_shapes=[nu, ni])
    with _common.Timer() as predict:
        pred = model.predict(x_test, n_workers=args.threads)
    _common.finish(data, library="myfm", version=myfm.__version__, fit_seconds=fit.seconds,
                   n_iter=p["n_iter"], predict_seconds=predict.seconds, pred=pred)


if __name__ == "__main__":
    main()
