"""scikit-surprise jobs: SVD (biased Funk SGD) and NMF (Luo et al. multiplicative SGD).

Surprise reads ratings through its own ``Reader``; the job writes the training triples to a
temporary file once (untimed) and builds the full trainset. Raw IDs are the split's indices as
strings. Prediction is ``algo.test(pairs)``, Surprise's batch path (it clips to the rating
scale).
"""

import os
import sys
import tempfile

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import numpy as np  # noqa: E402
import surprise  # noqa: E402

MODELS = {"SVD": surprise.SVD, "NMF": surprise.NMF}


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        np.savetxt(path, np.column_stack([data["train_users"], data["train_items"], data["train_values"]]),
                   fmt=["%d", "%d", "%.6g"], delimiter="\t")
        reader = surprise.Reader(line_format="user item rating", sep="\t",
                                 rating_scale=(data["rating_min"], data["rating_max"]))
        trainset = surprise.Dataset.load_from_file(path, reader).build_full_trainset()
    algo = MODELS[args.algo](random_state=args.seed, **args.params)
    with _common.Timer() as fit:
        algo.fit(trainset)
    pairs = [(str(u), str(i), 0.0) for u, i in _common.test_pairs(data)]
    with _common.Timer() as predict:
        pred = np.array([p.est for p in algo.test(pairs)])
    _common.finish(data, library="scikit-surprise", version=surprise.__version__, fit_seconds=fit.seconds,
                   n_iter=args.params.get("n_epochs", 20 if args.algo == "SVD" else 50),
                   predict_seconds=predict.seconds, pred=pred)


if __name__ == "__main__":
    main()
