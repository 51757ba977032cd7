"""One loop that drives every iterative engine: ``step(key, state) -> (state, info)``.

Engines are pure functions over pytree state (as in BlackJAX/NumPyro); this driver owns what is
not mathematics: the per-iteration PRNG key (``fold_in(key, iteration)``, so iteration ``t`` gets
the same key whether or not the run was resumed), the progress bar, the history of scalar
diagnostics, and the check that stops a diverging run with an error naming the cause.
"""

from __future__ import annotations

import jax
import numpy as np

from bayesmf.errors import DivergenceError


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm progress bar (notebook-aware), or a no-op stand-in when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def iterate(
    step,
    state,
    n_iter: int,
    key=None,
    *,
    start: int = 0,
    progress: bool = False,
    desc: str = "fit",
    diverged_hint: str = "",
    history: dict | None = None,
):
    """Run ``state, info = step(key_t, state)`` for ``t = start .. n_iter - 1``.

    ``step`` should be jitted; ``info`` a dict of scalar arrays recorded into ``history`` (a
    dict of lists, returned). A non-finite value in ``info`` raises :class:`DivergenceError`
    with ``diverged_hint`` (e.g. which learning rate to lower). ``key`` may be None for
    deterministic engines.
    """
    history = {} if history is None else history
    bar = progress_bar(n_iter - start, desc, progress)
    try:
        for t in range(start, n_iter):
            k = None if key is None else jax.random.fold_in(key, t)
            state, info = step(k, state)
            info = {name: float(v) for name, v in jax.device_get(info).items()}
            for name, v in info.items():
                history.setdefault(name, []).append(v)
            bad = [name for name, v in info.items() if not np.isfinite(v)]
            if bad:
                message = f"{desc}: {bad[0]} became {info[bad[0]]} at iteration {t}. {diverged_hint}"
                raise DivergenceError(message.strip())
            bar.update(1)
            if info:
                bar.set_postfix({n: f"{v:.4g}" for n, v in list(info.items())[:3]})
    finally:
        bar.close()
    return state, history
