"""myFM job: Bayesian factorization machine by Gibbs sampling on one-hot (user, item) features.

With ``group_shapes=[n_users, n_items]`` the user and item columns get separate normal-gamma
priors, which is myFM's "BPMF-like" configuration (README: ML-100K grouped MF). The FM keeps a
global bias ``w0`` and per-feature linear terms (user and item biases), myFM's defaults; the
prediction averages the last ``n_kept_samples`` samples. myFM 0.4.0 has no thread setting for
the sampler (it runs on one thread); ``predict`` uses ``n_workers=threads``.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import myfm  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def one_hot(users, items, n_users, n_items):
    """CSR rows [e_user | e_item]: shape (n, n_users + n_items), two ones per row."""
    n = users.size
    cols = np.stack([users, n_users + items], axis=1).reshape(-1)
    return sp.csr_matrix((np.ones(2 * n), cols, np.arange(0, 2 * n + 1, 2)), shape=(n, n_users + n_items))


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    p = dict(args.params)
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
