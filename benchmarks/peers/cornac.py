"""Cornac jobs: MF (biased SGD), NMF (Surprise-style SGD NMF), PMF (Salakhutdinov-Mnih gradient).

Cornac renumbers users and items in first-seen order; the job maps the split's indices through
``train_set.uid_map`` / ``iid_map``. Predictions use ``score(user, item)`` per test pair: for PMF
only the pair form applies the sigmoid and the rescaling to the rating range (the whole-row
``score(user)`` returns raw ``V @ U[u]``), so every model is scored the same way.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import cornac  # noqa: E402
import numpy as np  # noqa: E402

MODELS = {"MF": cornac.models.MF, "NMF": cornac.models.NMF, "PMF": cornac.models.PMF}


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    columns = (data["train_users"].tolist(), data["train_items"].tolist(), data["train_values"].tolist())
    triples = list(zip(*columns, strict=True))
    train_set = cornac.data.Dataset.from_uir(triples, seed=args.seed)
    params = dict(args.params)
    if args.algo in ("MF", "NMF"):
        params.setdefault("num_threads", args.threads)
    model = MODELS[args.algo](seed=args.seed, verbose=False, **params)
    with _common.Timer() as fit:
        model.fit(train_set)
    uid = np.vectorize(train_set.uid_map.__getitem__, otypes=[np.int64])(data["test_users"])
    iid = np.vectorize(train_set.iid_map.__getitem__, otypes=[np.int64])(data["test_items"])
    with _common.Timer() as predict:
        scores = (model.score(u, i) for u, i in zip(uid.tolist(), iid.tolist(), strict=True))
        pred = np.fromiter(scores, np.float64, uid.size)
    _common.finish(data, library="cornac", version=cornac.__version__, fit_seconds=fit.seconds,
                   n_iter=params.get("max_iter", 0), predict_seconds=predict.seconds, pred=pred,
                   predict_note="score(u, i) per test pair")


if __name__ == "__main__":
    main()
