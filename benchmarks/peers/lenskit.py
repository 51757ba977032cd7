"""LensKit job: ``BiasedMFScorer``, explicit ALS with a damped bias model (LensKit 2025).

LensKit first removes damped global/item/user biases (``damping``), then runs ALS on the
residuals; its penalty is ``regularization * n_r |p_r|^2`` (per-row rating count, as Spark and
bayesmf's ALS). Threads follow ``LK_NUM_THREADS``/``LK_NUM_BACKEND_THREADS`` (set by the runner)
and ``torch.set_num_threads``. Prediction calls the scorer once per test user with the user's
test items (LensKit's query API); the pairs are put back in the split's order.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import lenskit  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from lenskit.als import BiasedMFScorer  # noqa: E402
from lenskit.data import ItemList, from_interactions_df  # noqa: E402


def main():
    args = _common.parse_args()
    torch.set_num_threads(args.threads)
    data = _common.load(args.data)
    frame = pd.DataFrame({"user_id": data["train_users"], "item_id": data["train_items"],
                          "rating": data["train_values"]})
    dataset = from_interactions_df(frame, user_col="user_id", item_col="item_id", rating_col="rating")
    scorer = BiasedMFScorer(**args.params)
    with _common.Timer() as fit:
        scorer.train(dataset)
    users, items = data["test_users"], data["test_items"]
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    pred = np.empty(users.size)
    with _common.Timer() as predict:
        for rows in np.split(order, bounds):
            scored = scorer(int(users[rows[0]]), ItemList(item_ids=items[rows]))
            pred[rows] = scored.scores()
    _common.finish(data, library="lenskit", version=lenskit.__version__, fit_seconds=fit.seconds,
                   n_iter=args.params.get("epochs", 10), predict_seconds=predict.seconds, pred=pred,
                   torch_version=torch.__version__)


if __name__ == "__main__":
    main()
