"""The one loop that drives a Markov chain kernel: chains, burn-in, thinning, kept samples,
online predictive moments, progress, checkpoints and resumption.

``chain_kernel(keys, states, jitter) -> (states, info)`` advances every chain by one sweep
(e.g. :func:`bayesmf.posterior.gibbs.chain_step` with its data and prior bound by
``functools.partial``); it should be a jitted module-level function so that fitting again on data
of the same shapes reuses the compiled sweep instead of recompiling it. Sweep ``t`` of the run
uses ``fold_in(key, t)`` split over chains, so the chain is a deterministic function of
``(key, t)``: a run interrupted after sweep ``t`` and resumed from its checkpoint continues
bit-identically.

Memory does not grow with the number of samples unless samples are kept: the posterior
predictive at tracked pairs is accumulated online (Welford), and kept samples can be thinned
further (``keep_every``) or restricted to the sites ``collect`` returns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.engines.driver import progress_bar
from bayesmf.errors import ConfigError, DataError, DivergenceError, ResumeWarning


@functools.partial(jax.jit, static_argnums=2)
def sweep_keys(key, t, n_chains: int):
    """The chains' keys of sweep ``t``: ``split(fold_in(key, t), n_chains)``, as one compiled call
    (two op-by-op dispatches would each compile on first use)."""
    return jax.random.split(jax.random.fold_in(key, t), n_chains)


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


class SamplerResult(NamedTuple):
    samples: dict  # site -> array (chains, draws, ...)
    history: dict  # info field -> array (sweeps, chains)
    tracked: OnlineMoments | None
    state: object  # final state (chain-batched pytree)


def run_sampler(
    chain_kernel: Callable,
    init_state,
    key,
    *,
    n_warmup: int,
    n_samples: int,
    thin: int = 1,
    collect: Callable | None = None,
    keep_every: int = 1,
    track: Callable | None = None,
    progress: bool = False,
    desc: str = "sampling",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    fingerprint: dict | None = None,
) -> SamplerResult:
    """Run ``n_warmup + n_samples * thin`` sweeps of every chain in ``init_state`` (a pytree
    whose leaves have a leading chain axis).

    After burn-in every ``thin``-th sweep is a draw: ``track(state)`` (predictions at tracked
    pairs, per chain) feeds :class:`OnlineMoments`, and every ``keep_every``-th draw
    ``collect(state)`` (dict of arrays per chain) is kept in host memory. ``history`` holds every
    sweep's info. With ``checkpoint`` a file is written every ``checkpoint_every`` sweeps and on
    Ctrl-C, and an existing one with the same ``fingerprint`` is resumed (with a
    :class:`~bayesmf.errors.ResumeWarning` naming the sweep).

    ``fingerprint`` maps part names (e.g. ``"data"``, ``"track"``, ``"settings"``) to JSON-able
    values that identify the chain: everything that changes it must be in there, as content
    (see :func:`content_digest`), not as a summary. The sampler adds its own settings as the part
    ``"sampler"``. A checkpoint whose fingerprint differs raises :class:`ConfigError` naming the
    differing parts; one that cannot be read raises :class:`DataError`.
    """
    for name, value in (("n_samples", n_samples), ("thin", thin), ("keep_every", keep_every)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if int(n_warmup) < 0:
        raise ConfigError(f"n_warmup must be >= 0, got {n_warmup}")
    n_chains = jax.tree_util.tree_leaves(init_state)[0].shape[0]
    total = n_warmup + n_samples * thin

    fingerprint = _normalised({**(fingerprint or {}), "sampler": {
        "n_warmup": n_warmup, "n_samples": n_samples, "thin": thin, "keep_every": keep_every, "chains": n_chains}})
    path = None if checkpoint is None else Path(checkpoint)
    state, start, kept, history, moments = init_state, 0, {}, {}, OnlineMoments()
    if path is not None and path.exists():
        state, start, kept, history, moments = _load_checkpoint(path, init_state, fingerprint)
        warnings.warn(f"{desc}: resuming from {path} at sweep {start} of {total}", ResumeWarning, stacklevel=2)

    bar = progress_bar(total, desc, progress)
    bar.update(start)
    done = start
    try:
        for t in range(start, total):
            keys = sweep_keys(key, t, n_chains)
            new_state, info = chain_kernel(keys, state, 0.0)
            if not bool(np.all(jax.device_get(info.finite))):
                warnings.warn(f"{desc}: a Cholesky factorisation failed at sweep {t}; retrying with jitter 1e-5",
                              RuntimeWarning, stacklevel=2)
                new_state, info = chain_kernel(keys, state, 1e-5)
                if not bool(np.all(jax.device_get(info.finite))):
                    partial = SamplerResult(_stacked(kept, axis=1), _stacked(history), moments, state)
                    n_kept = next(iter(partial.samples.values())).shape[1] if partial.samples else 0
                    raise DivergenceError(
                        f"{desc}: non-finite {', '.join(non_finite_fields(new_state)) or 'values'} at sweep {t} "
                        f"(also with jitter 1e-5); the {n_kept} draws kept before it are in this error's .partial",
                        partial=partial)
            draw = t - n_warmup
            is_draw = draw >= 0 and (draw + 1) % thin == 0
            keep = is_draw and collect is not None and ((draw + 1) // thin - 1) % keep_every == 0
            tracked = jax.device_get(track(new_state)) if is_draw and track is not None else None
            collected = jax.device_get(collect(new_state)) if keep else {}
            info = jax.device_get(info)
            # commit sweep t (all slow work is done above, so Ctrl-C leaves a consistent record)
            state = new_state
            for name, value in info._asdict().items():
                if name != "finite":
                    history.setdefault(name, []).append(np.asarray(value))
            if tracked is not None:
                moments.update(tracked)
            for name, value in collected.items():
                kept.setdefault(name, []).append(np.asarray(value))
            done = t + 1
            bar.update(1)
            if path is not None and done % checkpoint_every == 0 and done < total:
                _save_checkpoint(path, state, done, kept, history, moments, fingerprint)
    except KeyboardInterrupt:
        if path is not None:
            _save_checkpoint(path, state, done, kept, history, moments, fingerprint)
            warnings.warn(f"interrupted: progress saved to {path}; call fit again to resume", stacklevel=2)
        raise
    finally:
        bar.close()
    samples = _stacked(kept, axis=1)  # (chains, draws, ...)
    hist = _stacked(history)
    if path is not None and path.exists():
        path.unlink()  # the run finished; its result lives in the model now
    return SamplerResult(samples, hist, moments if track is not None else None, state)


def content_digest(*arrays) -> str:
    """SHA-256 over the dtype, shape and bytes of each array, in order: identifies data by its
    content (a relabelling or a reordering changes it), at memory speed."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(arr.data)
    return digest.hexdigest()


def _normalised(fingerprint: dict) -> dict:
    """The fingerprint as it reads back from JSON (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _stacked(lists: dict, axis: int = 0) -> dict:
    return {name: np.stack(values, axis=axis) for name, values in lists.items() if values}


def non_finite_fields(state) -> list[str]:
    """Names of the fields of a NamedTuple state (e.g. ``GibbsState``) holding NaN or inf."""
    fields = state._asdict() if hasattr(state, "_asdict") else {"state": state}
    return [name for name, value in fields.items()
            if value is not None and not np.all(np.isfinite(np.asarray(jax.device_get(value))))]


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


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
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
    meta, arrays = _read_checkpoint(path)
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
