"""The kernel protocol and the one driver that runs every iterative algorithm.

Every iterative algorithm of the package, classical engines and posterior samplers alike, is a
:class:`Kernel` (as BlackJAX's ``SamplingAlgorithm`` or Optax's ``GradientTransformation``): a
pair of pure functions built once from the data and a configuration,

* ``kernel.init(...) -> State`` — the starting state (a NamedTuple pytree);
* ``kernel.step(key, state) -> (State, Info)`` — one iteration (a sweep, an epoch); ``Info`` is
  a NamedTuple of scalar (or per-chain) diagnostics, recorded into the history;

plus, for kernels that factorise matrices, ``kernel.retry(key, state)``: the same iteration
solved with a diagonal jitter of relative size ``kernel.jitter``, run when ``Info.finite`` says a
factorisation failed.

:func:`run` drives any kernel and owns everything that is not mathematics: the per-iteration
PRNG key ``fold_in(key, t)`` (so iteration ``t`` gets the same key whether or not the run was
resumed), burn-in, thinning, kept draws, online moments of tracked quantities (Welford), the
history of diagnostics, progress, the Cholesky jitter retry (here and nowhere else), the check
that stops a diverging run with an error naming the cause, checkpoints with bit-identical
resumption, and Ctrl-C. :func:`iterate` is its short form for optimisers (no draws).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import CholeskyRetryWarning, ConfigError, DataError, DivergenceError, ResumeWarning


class Kernel(NamedTuple):
    """An iterative algorithm as pure functions over a NamedTuple state.

    Attributes
    ----------
    init : callable
        ``init(...) -> State``: the starting state; its arguments are the algorithm's own
        (a seed, starting factors, ...).
    step : callable
        ``step(key, state) -> (State, Info)``: one iteration. ``key`` is the iteration's PRNG
        key (None for a deterministic kernel run without a key). ``Info`` is a NamedTuple of
        arrays; a boolean field ``finite`` reports whether every factorisation succeeded.
    retry : callable or None
        ``retry(key, state) -> (State, Info)``: ``step`` with every factorised matrix given a
        diagonal jitter; None when the kernel factorises nothing.
    jitter : float
        The jitter ``retry`` adds (for the warning's message).
    """

    init: Callable
    step: Callable
    retry: Callable | None = None
    jitter: float = 0.0


class RunResult(NamedTuple):
    """What :func:`run` returns (and a :class:`DivergenceError`'s ``partial``).

    Attributes
    ----------
    samples : dict
        Site -> kept draws stacked on axis ``draw_axis`` (axis 1 for chain-batched states:
        (chains, draws, ...)); empty without ``collect``.
    history : dict
        Info field -> array (iterations, ...) of every iteration's diagnostics.
    tracked : OnlineMoments or None
        Running mean and variance of ``track(state)`` over the draws; None without ``track``.
    state : pytree
        The final state.
    """

    samples: dict
    history: dict
    tracked: Any
    state: Any


class OnlineMoments:
    """Running mean and variance over draws (Welford), for arrays of a fixed shape.

    ``update(x)`` takes a batch of draws stacked on axis 0 (e.g. one per chain).
    """

    def __init__(self, shape=None, count: int = 0, mean=None, m2=None):
        self.count = count
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.m2 = None if m2 is None else np.asarray(m2, np.float64)

    def update(self, draws) -> None:
        for x in np.asarray(draws, np.float64):
            if self.mean is None:
                self.mean = np.zeros_like(x)
                self.m2 = np.zeros_like(x)
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)

    @property
    def variance(self):
        # the same 1/n convention as the draw averages of the predictive (a plug-in moment)
        return self.m2 / max(self.count, 1)


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


@jax.jit
def iteration_key(key, t):
    """The key of iteration ``t``: ``fold_in(key, t)`` (one compiled call)."""
    return jax.random.fold_in(key, t)


def as_kernel(step) -> Kernel:
    """``step`` itself when it is a :class:`Kernel`, else a kernel with that step and no retry."""
    return step if isinstance(step, Kernel) else Kernel(init=None, step=step)


def _fields(info) -> dict:
    if hasattr(info, "_asdict"):
        return info._asdict()
    return dict(info)


def _check(info: dict) -> tuple[bool, list[str]]:
    """``(every factorisation succeeded, names of the non-finite diagnostics)``."""
    solved = bool(np.all(info["finite"])) if "finite" in info else True
    bad = [name for name, v in info.items() if name != "finite" and not np.all(np.isfinite(v))]
    return solved, bad


def run(
    kernel,
    state,
    key=None,
    *,
    n_samples: int,
    n_warmup: int = 0,
    thin: int = 1,
    collect: Callable | None = None,
    keep_every: int = 1,
    track: Callable | None = None,
    draw_axis: int = 1,
    progress: bool = False,
    desc: str = "fit",
    diverged_hint: str | Callable = "",
    retry_hint: str = "",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    fingerprint: dict | None = None,
) -> RunResult:
    """Run ``state, info = kernel.step(fold_in(key, t), state)`` for ``n_warmup + n_samples * thin``
    iterations.

    Parameters
    ----------
    kernel : Kernel or callable
        The algorithm (a bare ``step(key, state)`` function is a kernel without retry). Its step
        should be jitted.
    state : pytree
        The starting state (for several chains, leaves with a leading chain axis).
    key : PRNG key or None
        None for deterministic kernels (their step gets None).
    n_samples, n_warmup, thin : int
        After ``n_warmup`` iterations every ``thin``-th iteration is a draw.
    collect : callable, optional
        ``collect(state) -> dict`` of arrays kept in host memory at every ``keep_every``-th draw,
        stacked on ``draw_axis``.
    track : callable, optional
        ``track(state) -> array (batch, ...)`` fed to :class:`OnlineMoments` at every draw.
    progress, desc : bool, str
        A progress bar, and the name the bar, warnings and errors use.
    diverged_hint, retry_hint : str
        Appended to the :class:`DivergenceError` and :class:`CholeskyRetryWarning` messages
        (e.g. which setting to change). ``diverged_hint`` may also be a function of the last
        finite state (the one the failing iteration started from) returning that text, to name
        figures of the state that explain the failure.
    checkpoint, checkpoint_every, fingerprint
        With ``checkpoint`` a file is written every ``checkpoint_every`` iterations and on
        Ctrl-C, and an existing one with the same ``fingerprint`` is resumed bit-identically
        (with a :class:`~bayesmf.errors.ResumeWarning` naming the sweep). ``fingerprint`` maps
        part names to JSON-able values that identify the run (everything that changes it, as
        content: :func:`content_digest`); the driver adds its own settings as the part
        ``"sampler"``. A checkpoint whose fingerprint differs raises :class:`ConfigError` naming
        the differing parts; one that cannot be read raises :class:`DataError`.

    Returns
    -------
    RunResult
        Kept draws, the history of every iteration's ``Info`` (but ``finite``), the tracked
        moments (None without ``track``) and the final state.

    Raises
    ------
    DivergenceError
        When ``Info`` holds NaN/inf, or a factorisation fails again after the jitter retry
        (after a :class:`CholeskyRetryWarning`); its ``partial`` is the :class:`RunResult` up to
        the iteration before.
    """
    for name, value in (("n_samples", n_samples), ("thin", thin), ("keep_every", keep_every)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if int(n_warmup) < 0:
        raise ConfigError(f"n_warmup must be >= 0, got {n_warmup}")
    kernel = as_kernel(kernel)
    total = n_warmup + n_samples * thin
    path = None if checkpoint is None else Path(checkpoint)
    n_kept = -(-n_samples // keep_every)
    start, kept, history, moments = 0, _KeptDraws(n_kept, draw_axis), {}, OnlineMoments()
    if path is not None:
        leaves = jax.tree_util.tree_leaves(state)
        fingerprint = _normalised({**(fingerprint or {}), "sampler": {
            "n_warmup": n_warmup, "n_samples": n_samples, "thin": thin, "keep_every": keep_every,
            "chains": leaves[0].shape[0] if draw_axis == 1 else 1}})
        if path.exists():
            state, start, kept_lists, history, moments = _load_checkpoint(path, state, fingerprint)
            kept.extend(kept_lists)
            warnings.warn(f"{desc}: resuming from {path} at sweep {start} of {total}", ResumeWarning, stacklevel=3)

    def partial_result():
        return RunResult(kept.arrays(), _stacked(history), moments, state)

    bar = progress_bar(total, desc, progress)
    bar.update(start)
    done = start
    try:
        for t in range(start, total):
            k = None if key is None else iteration_key(key, t)
            new_state, info = kernel.step(k, state)
            info = _fields(jax.device_get(info))
            solved, bad = _check(info)
            retried = False
            if not solved and kernel.retry is not None:
                warnings.warn(f"{desc}: a Cholesky factorisation failed at sweep {t} (system not positive definite); "
                              f"solved again with jitter {kernel.jitter:g}. {retry_hint}".strip(),
                              CholeskyRetryWarning, stacklevel=3)
                new_state, info = kernel.retry(k, state)
                info = _fields(jax.device_get(info))
                solved, bad = _check(info)
                retried = True
            if not solved or bad:
                what = (f"{bad[0]} became {np.asarray(info[bad[0]]).ravel()[0]}" if bad else
                        f"non-finite {', '.join(non_finite_fields(new_state)) or 'values'}")
                message = f"{desc}: {what} at sweep {t}"
                if retried:
                    message += f" (also with jitter {kernel.jitter:g})"
                if collect is not None:
                    message += f"; the {kept.count} draws kept before it are in this error's .partial"
                hint = diverged_hint(state) if callable(diverged_hint) else diverged_hint
                message = f"{message}. {hint}".strip()
                raise DivergenceError(message, partial=partial_result())
            draw = t - n_warmup
            is_draw = draw >= 0 and (draw + 1) % thin == 0
            keep = is_draw and collect is not None and ((draw + 1) // thin - 1) % keep_every == 0
            tracked = jax.device_get(track(new_state)) if is_draw and track is not None else None
            collected = jax.device_get(collect(new_state)) if keep else {}
            # commit iteration t (all slow work is done above, so Ctrl-C leaves a consistent record)
            state = new_state
            for name, value in info.items():
                if name != "finite":
                    history.setdefault(name, []).append(np.asarray(value))
            if tracked is not None:
                moments.update(tracked)
            if collected:
                kept.append(collected)
            done = t + 1
            bar.update(1)
            if progress and info:
                scalars = {n: v for n, v in info.items() if n != "finite" and np.ndim(v) == 0}
                bar.set_postfix({n: f"{float(v):.4g}" for n, v in list(scalars.items())[:3]})
            if path is not None and done % checkpoint_every == 0 and done < total:
                _save_checkpoint(path, state, done, kept.lists(), history, moments, fingerprint)
    except KeyboardInterrupt:
        if path is not None:
            _save_checkpoint(path, state, done, kept.lists(), history, moments, fingerprint)
            warnings.warn(f"interrupted: progress saved to {path}; call fit again to resume", stacklevel=3)
        raise
    finally:
        bar.close()
    if path is not None and path.exists():
        path.unlink()  # the run finished; its result lives in the caller now
    return RunResult(kept.arrays(), _stacked(history), moments if track is not None else None, state)


def iterate(step, state, n_iter: int, key=None, *, progress: bool = False, desc: str = "fit",
            diverged_hint: str = "", retry_hint: str = "", history: dict | None = None):
    """:func:`run` for an optimiser: ``n_iter`` iterations, no draws.

    Parameters
    ----------
    step : Kernel or callable
        The kernel (or its ``step(key, state)``).
    state : pytree
        The starting state.
    n_iter : int
        Iterations.
    key : PRNG key or None
        None for deterministic kernels.
    history : dict, optional
        A dict of lists extended in place with every iteration's diagnostics as floats.

    Returns
    -------
    state, history
        The final state and ``history`` (a new dict when none was given).
    """
    history = {} if history is None else history
    result = run(step, state, key, n_samples=int(n_iter), draw_axis=0, progress=progress, desc=desc,
                 diverged_hint=diverged_hint, retry_hint=retry_hint)
    for name, values in result.history.items():
        history.setdefault(name, []).extend(float(v) for v in np.asarray(values, np.float64).reshape(len(values)))
    return result.state, history


def content_digest(*arrays) -> str:
    """SHA-256 over the dtype, shape and bytes of each array, in order: identifies data by its
    content (a relabelling or a reordering changes it), at memory speed."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(arr.data)
    return digest.hexdigest()


def non_finite_fields(state) -> list[str]:
    """Names of the fields of a NamedTuple state (e.g. ``GibbsState``) holding NaN or inf."""
    fields = state._asdict() if hasattr(state, "_asdict") else {"state": state}
    return [name for name, value in fields.items()
            if value is not None and not np.all(np.isfinite(np.asarray(jax.device_get(value))))]


def _normalised(fingerprint: dict) -> dict:
    """The fingerprint as it reads back from JSON (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


class _KeptDraws:
    """Kept draws written straight into one array per site, allocated at the first draw in the
    result's layout (``capacity`` draws on ``axis``): a list of per-draw arrays stacked at the
    end would hold every draw twice at once, and the kept factor draws are the largest arrays
    of a fit."""

    def __init__(self, capacity: int, axis: int):
        self.capacity, self.axis, self.count, self.buffers = int(capacity), int(axis), 0, {}

    def append(self, collected: dict) -> None:
        """Store one draw: ``collected`` maps site -> array (the draw axis not included)."""
        if self.count >= self.capacity:
            raise ValueError(f"more than the {self.capacity} draws allocated")  # a bug, not bad input
        for name, value in collected.items():
            value = np.asarray(value)
            if name not in self.buffers:
                shape = value.shape[:self.axis] + (self.capacity,) + value.shape[self.axis:]
                self.buffers[name] = np.empty(shape, value.dtype)
            np.moveaxis(self.buffers[name], self.axis, 0)[self.count] = value
        self.count += 1

    def extend(self, lists: dict) -> None:
        """Store draws given as site -> list of per-draw arrays (a checkpoint's)."""
        for i in range(len(next(iter(lists.values()))) if lists else 0):
            self.append({name: values[i] for name, values in lists.items()})

    def arrays(self) -> dict:
        """Site -> the draws kept so far on ``axis`` (the buffer itself once full: no copy)."""
        return {name: buf if self.count == self.capacity else np.take(buf, np.arange(self.count), axis=self.axis)
                for name, buf in self.buffers.items() if self.count}

    def lists(self) -> dict:
        """Site -> list of per-draw arrays (the checkpoint's layout)."""
        return {name: list(np.moveaxis(buf, self.axis, 0)[:self.count]) for name, buf in self.buffers.items()}


def _stacked(lists: dict, axis: int = 0) -> dict:
    return {name: np.stack(values, axis=axis) for name, values in lists.items() if values}


def _digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _differences(stored: dict, current: dict) -> list[str]:
    """Names of the fingerprint parts (and of the differing keys of dict-valued parts) that differ."""
    out = []
    for part in sorted(set(stored) | set(current)):
        old, new = stored.get(part), current.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>"))
            out.append(f"{part} ({', '.join(keys)})")
        else:
            out.append(part)
    return out


def _save_checkpoint(path: Path, state, next_sweep, kept, history, moments, fingerprint) -> None:
    leaves = jax.tree_util.tree_leaves(jax.device_get(state))
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    for name, values in kept.items():
        arrays[f"kept_{name}"] = np.stack(values)
    for name, values in history.items():
        arrays[f"history_{name}"] = np.stack(values)
    if moments.mean is not None:
        arrays["moments_mean"], arrays["moments_m2"] = moments.mean, moments.m2
    meta = {"next_sweep": next_sweep, "moments_count": moments.count, "digest": _digest(fingerprint),
            "fingerprint": fingerprint}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a crash mid-write never corrupts the last checkpoint


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a checkpoint file; :class:`DataError` naming the path when it is
    empty, truncated or not a checkpoint at all."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        if not isinstance(meta, dict) or not isinstance(meta["next_sweep"], int) or "digest" not in meta:
            raise ValueError("its metadata lacks the sweep or the fingerprint")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"checkpoint {path} is corrupted or truncated ({type(exc).__name__}: {exc}); "
                        "delete it to start over") from None
    return meta, arrays


def _load_checkpoint(path: Path, template, fingerprint: dict):
    meta, arrays = read_checkpoint(path)
    if meta["digest"] != _digest(fingerprint):
        stored = meta.get("fingerprint")
        what = ", ".join(_differences(stored, fingerprint)) if isinstance(stored, dict) else "data/track/settings"
        raise ConfigError(f"checkpoint {path} was written by a different run (differing: {what}); delete it or "
                          "use another checkpoint path")
    treedef = jax.tree_util.tree_structure(template)
    leaves = jax.tree_util.tree_leaves(template)
    names = [f"state_{i}" for i in range(len(leaves))]
    if any(n not in arrays or arrays[n].shape != leaf.shape for n, leaf in zip(names, leaves, strict=True)):
        raise DataError(f"checkpoint {path} is corrupted or truncated (its chain state does not match the run); "
                        "delete it to start over")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[n]) for n in names])
    kept = {k[5:]: list(v) for k, v in arrays.items() if k.startswith("kept_")}
    history = {k[8:]: list(v) for k, v in arrays.items() if k.startswith("history_")}
    moments = OnlineMoments(count=meta["moments_count"], mean=arrays.get("moments_mean"), m2=arrays.get("moments_m2"))
    return state, meta["next_sweep"], kept, history, moments
