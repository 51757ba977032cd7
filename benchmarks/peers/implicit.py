"""implicit job: weighted ALS for implicit feedback (Hu, Koren & Volinsky 2008).

implicit reads the confidence straight from the matrix values (``c_ui = alpha * value``, with
the preference ``p_ui = 1`` wherever a value is stored). To match ``c_ui = 1 + alpha`` for a
binary positive, the job stores ``1 + alpha`` and passes ``alpha=1``. ``use_cg`` (default True)
selects implicit's conjugate-gradient inner solver; ``use_cg=False`` solves exactly by Cholesky.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import implicit  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from implicit.cpu.als import AlternatingLeastSquares  # noqa: E402


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    p = dict(args.params)
    confidence = 1.0 + p.pop("alpha") * data["train_values"].astype(np.float32)
    user_items = sp.csr_matrix((confidence, (data["train_users"], data["train_items"])),
                               shape=(data["n_users"], data["n_items"]))
    model = AlternatingLeastSquares(alpha=1.0, num_threads=args.threads, random_state=args.seed,
                                    calculate_training_loss=False, **p)
    with _common.Timer() as fit:
        model.fit(user_items, show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    _common.finish(data, library="implicit", version=implicit.__version__, fit_seconds=fit.seconds,
                   n_iter=p["iterations"], score_users=lambda batch: users[batch] @ items.T)


if __name__ == "__main__":
    main()
