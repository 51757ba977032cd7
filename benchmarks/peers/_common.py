"""What every benchmark job script shares: arguments, data loading, timing, metrics, output.

This file runs inside each peer's own virtual environment, where only NumPy can be assumed (not
bayesmf), so it depends on NumPy alone. A job script is invoked as

    <venv>/bin/python -P benchmarks/peers/<peer>.py --data split.npz --algo NAME --params JSON

(``-P``: the script's folder is not put first on ``sys.path``, so ``surprise.py`` does not shadow
the ``surprise`` package; the scripts append it themselves to find this module). It prints one
line ``BENCH_RESULT {json}`` on stdout; anything else it prints is log.

Every side is scored by the same code here: predictions are clipped to the training rating
scale and then RMSE = sqrt(mean((clip(r_hat) - r)^2)), MAE = mean(|clip(r_hat) - r|) over the
test pairs; for implicit feedback, recall@10 and NDCG@10 over users with a held-out positive,
after excluding each user's training positives from the ranking (full catalogue), and, where the
split has sampled candidates, HR@10 and NDCG@10 of the sampled protocol.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

TOP_K = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="split .npz written by benchmarks.data")
    parser.add_argument("--algo", required=True)
    parser.add_argument("--params", default="{}", help="JSON hyperparameters of the job")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.params = json.loads(args.params)
    return args


def load(path) -> dict:
    """The split's arrays; scalars come back as Python numbers/strings."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for key in ("n_users", "n_items", "dropped_unseen"):
        data[key] = int(data[key])
    for key in ("rating_min", "rating_max"):
        data[key] = float(data[key])
    for key in ("kind", "name", "data_dir"):
        if key in data:
            data[key] = str(data[key])
    return data


def test_pairs(data) -> list[tuple[int, int]]:
    """The test (user, item) pairs as Python ints, in the split's order (for per-pair peer APIs)."""
    return list(zip(data["test_users"].tolist(), data["test_items"].tolist(), strict=True))


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, perf_counter) and ``t.cpu_seconds``
    (this process's CPU time, all threads: on a shared machine the less noisy of the two)."""

    def __enter__(self):
        self._start, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu
        return False


def explicit_metrics(pred, data) -> dict:
    """RMSE and MAE of clipped predictions against the test values (aligned with the test pairs)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = data["test_values"].astype(np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"{pred.size} predictions for {truth.size} test pairs")
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} non-finite predictions")
    err = np.clip(pred, data["rating_min"], data["rating_max"]) - truth
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _csr(users, items, n_users):
    order = np.argsort(users, kind="stable")
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items[order]


def _rows_of(indptr, indices, batch):
    """(row position within batch, column) of every stored entry of rows ``batch``."""
    counts = indptr[batch + 1] - indptr[batch]
    starts = np.repeat(indptr[batch], counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.arange(batch.size), counts), indices[starts + offsets]


def ranking_metrics(score_users, data, batch_size: int = 512) -> dict:
    """Recall@10 and NDCG@10 (binary relevance) over users with at least one test positive.

    ``score_users(user_indices) -> (len, n_items)`` scores; training positives are set to -inf
    before taking the top 10. Recall@10 = hits / min(10, n_test_positives(u)) averaged over users.
    Where the split has sampled ``candidates`` (one row per test pair), the same scores also give
    the sampled protocol's HR@10 and NDCG@10 (:func:`sampled_rank_metrics`), averaged over test
    pairs: every user is scored once for both protocols.
    """
    n_users, n_items = data["n_users"], data["n_items"]
    train_ptr, train_idx = _csr(data["train_users"], data["train_items"], n_users)
    test_ptr, test_idx = _csr(data["test_users"], data["test_items"], n_users)
    test_rows_by_user = np.argsort(data["test_users"], kind="stable")  # the order _csr grouped them in
    candidates = data.get("candidates")
    users = np.flatnonzero(np.diff(test_ptr) > 0)
    discount = 1.0 / np.log2(np.arange(2, TOP_K + 2))
    recall, ndcg, sampled_hr, sampled_ndcg = [], [], [], []
    for start in range(0, users.size, batch_size):  # bounded user batches: O(batch * n_items) memory
        batch = users[start:start + batch_size]
        scores = np.asarray(score_users(batch), dtype=np.float64).copy()
        if candidates is not None:  # candidates hold no training positive: read them before masking
            rows = test_rows_by_user[test_ptr[batch[0]]:test_ptr[batch[-1] + 1]]
            local = np.searchsorted(batch, data["test_users"][rows])
            hr, nd = sampled_rank_metrics(np.take_along_axis(scores[local], candidates[rows].astype(np.int64), 1))
            sampled_hr.append(hr)
            sampled_ndcg.append(nd)
        rows, cols = _rows_of(train_ptr, train_idx, batch)
        scores[rows, cols] = -np.inf
        top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)
        relevant = np.zeros((batch.size, n_items), dtype=bool)
        rows, cols = _rows_of(test_ptr, test_idx, batch)
        relevant[rows, cols] = True
        hits = np.take_along_axis(relevant, top, 1)
        n_pos = np.diff(test_ptr)[batch]
        recall.append(hits.sum(1) / np.minimum(n_pos, TOP_K))
        ideal = np.cumsum(discount)[np.minimum(n_pos, TOP_K) - 1]
        ndcg.append((hits * discount).sum(1) / ideal)
    out = {"recall_at_10": float(np.concatenate(recall).mean()), "ndcg_at_10": float(np.concatenate(ndcg).mean())}
    if candidates is not None:
        out["sampled_hr_at_10"] = float(np.concatenate(sampled_hr).mean())
        out["sampled_ndcg_at_10"] = float(np.concatenate(sampled_ndcg).mean())
    return out


def sampled_rank_metrics(candidate_scores):
    """Per-row HR@10 and NDCG@10 of the sampled protocol from ``candidate_scores`` (rows, 1 + N):
    column 0 the held-out item's score, the others its N sampled negatives'.

    Ties are broken uniformly at random in expectation: with ``g`` negatives scoring above the
    held-out item and ``e`` scoring equal, its 0-based rank is uniform on ``g..g+e``, so
    HR@10 = P(rank < 10) and NDCG@10 = E[1/log2(rank + 2); rank < 10]. Without this, a model that
    scores many items equally (popularity, a constant) would be scored by the order of the list.
    """
    s = candidate_scores
    positions = np.arange(s.shape[1])
    prefix = np.concatenate([[0.0], np.cumsum(np.where(positions < TOP_K, 1.0 / np.log2(positions + 2.0), 0.0))])
    greater = (s[:, 1:] > s[:, :1]).sum(1)
    equal = (s[:, 1:] == s[:, :1]).sum(1)
    hr = np.clip(TOP_K - greater, 0, equal + 1) / (equal + 1)
    return hr, (prefix[greater + equal + 1] - prefix[greater]) / (equal + 1)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB: ``VmHWM`` of /proc/self/status.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries the high-water mark of the memory image
    replaced by ``exec`` into it, so a job spawned by a large runner would report the runner's size.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(**fields) -> None:
    """Print the one result line the runner parses."""
    fields.setdefault("peak_rss_mb_self", round(peak_rss_mb(), 1))
    sys.stdout.write("BENCH_RESULT " + json.dumps(fields) + "\n")
    sys.stdout.flush()


def finish(data, *, library: str, version: str, fit_seconds: float, n_iter: int, predict_seconds=None,
           pred=None, score_users=None, **extra) -> None:
    """Score and emit a fitted job: ``pred`` (explicit; ``predict_seconds`` measured by the caller)
    or ``score_users`` (implicit; ``predict_seconds`` is the time to rank every test user, the
    shared masking/top-k code included, identical for every library)."""
    if pred is not None:
        metrics = explicit_metrics(pred, data)
    else:
        with Timer() as t:
            metrics = ranking_metrics(score_users, data)
        predict_seconds = t.seconds
    emit(library=library, version=version, fit_seconds=fit_seconds, predict_seconds=predict_seconds,
         n_iter=n_iter, seconds_per_iteration=fit_seconds / max(n_iter, 1), **metrics, **extra)
