"""SMURFF job: BPMF by Gibbs sampling (normal-Wishart priors on user and item factors).

The training mean is subtracted before sampling and added back (SMURFF models the ratings as
``U V^T`` with no global offset). The noise precision is adaptive (``AdaptiveNoise``, as SMURFF's
docs advise: the default fixed precision 5 over-fits MovieLens). SMURFF averages the test
predictions while it samples, so that work is inside ``fit_seconds``; ``predict_seconds`` only
collects them. SMURFF 1.1 samples on one thread whatever ``num_threads`` says.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
from importlib.metadata import version  # noqa: E402

import _common  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import smurff  # noqa: E402


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    p = dict(args.params)
    shape = (data["n_users"], data["n_items"])
    mean = float(data["train_values"].mean())
    train = sp.coo_matrix((data["train_values"] - mean, (data["train_users"], data["train_items"])), shape=shape)
    test = sp.coo_matrix((data["test_values"] - mean, (data["test_users"], data["test_items"])), shape=shape)
    session = smurff.TrainSession(
        priors=["normal", "normal"], num_latent=p["rank"], burnin=p["burnin"], nsamples=p["nsamples"],
        seed=args.seed, num_threads=args.threads, verbose=0,
    )
    noise = smurff.AdaptiveNoise(p.get("sn_init", 1.0), p.get("sn_max", 10.0))
    session.addTrainAndTest(train.tocsr(), test.tocsr(), noise=noise)
    with _common.Timer() as fit:
        session.init()
        while session.step():
            pass
    with _common.Timer() as predict:
        results = session.getTestPredictions()
        coords = np.array([r.coords for r in results], dtype=np.int64)
        pred_avg = np.array([r.pred_avg for r in results], dtype=np.float64)
    # results come in SMURFF's own order: put them back in the split's test order
    lookup = dict(zip(map(tuple, coords.tolist()), pred_avg.tolist(), strict=True))
    pred = np.array([lookup[pair] for pair in _common.test_pairs(data)]) + mean
    _common.finish(data, library="smurff", version=version("smurff"), fit_seconds=fit.seconds,
                   n_iter=p["burnin"] + p["nsamples"], predict_seconds=predict.seconds, pred=pred,
                   predict_note="test predictions averaged during sampling (inside fit)")


if __name__ == "__main__":
    main()
