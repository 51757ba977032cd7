"""The output directory of an experiment: whole-file writes, the directory lock, the run cache.

**Whole files.** Every file the runner and the report write (``runs/<key>.json``/``.npz``,
results.csv, results.json, report.md, every figure) goes through :func:`atomic_write`: the
content is written to a temporary file with a unique name in the same folder, flushed to disk
and renamed over the target. A reader (or a crash, or Ctrl-C) therefore sees the old file or the
new one, never half of one, and two writers of the same file never share a temporary name: the
last rename wins. A write that fails or is interrupted removes its temporary file.

**The lock.** ``bayesmf run`` and ``bayesmf report`` hold an advisory lock on ``DIR/.lock``
(``flock``, exclusive) while they read and write ``DIR``, and write their process id into it.
A second command on the same directory is refused with :class:`~bayesmf.errors.OutputBusyError`
(exit status 2) naming the lock and that process, or with ``wait=True`` (``--wait``) waits for
it. The operating system releases the lock when its process ends, however it ends, so a crashed
run never leaves a stale lock; the empty ``.lock`` file itself stays. On platforms without
``fcntl`` (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bayesmf.errors import OutputBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


# -- whole-file writes ------------------------------------------------------------------------
def atomic_write(path, write) -> None:
    """Write ``path`` whole: ``write(f)`` fills a binary temporary file in the same folder, which
    then replaces ``path``. On any exception (KeyboardInterrupt included) the temporary file is
    removed, ``path`` is left as it was and the exception propagates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_savefig(fig, path, **kwargs) -> None:
    """Save a matplotlib figure as PNG through :func:`atomic_write` (``kwargs`` go to ``savefig``)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", **kwargs))


# -- the output directory's lock --------------------------------------------------------------
def _holder(handle) -> str:
    """The process id written into a lock file by its holder (``"pid unknown"`` before it has)."""
    handle.seek(0)
    text = handle.read().strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"


@contextlib.contextmanager
def output_lock(out_dir, wait: bool = False, notify=None):
    """Hold the exclusive lock of the existing output directory ``out_dir`` for the ``with``
    block. Busy: raise :class:`~bayesmf.errors.OutputBusyError`, or with ``wait`` call
    ``notify(message)`` (default: print to stderr) once and block until the holder is done."""
    out_dir = Path(out_dir)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = out_dir / LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            if not wait:
                raise OutputBusyError(
                    f"{out_dir}: in use by another bayesmf run ({holder}, holding {path}); wait for it to finish, "
                    "rerun with --wait, or choose another --out") from None
            (notify or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"waiting for the run holding {path} ({holder})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the run cache ----------------------------------------------------------------------------
class RunCache:
    """Finished runs in ``DIR/runs``: ``<key>.json`` (+ ``<key>.npz`` with sampler draws)."""

    def __init__(self, out_dir: Path):
        self.folder = Path(out_dir) / "runs"

    def json_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def draws_path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> dict | None:
        """The cached record of ``key`` when it finished successfully and its files are readable
        (the record, and its draws when it has some), else None: the run is computed again."""
        path = self.json_path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("status") != "ok":
            return None
        if record.get("has_draws") and self.load_draws(key) is None:
            return None
        return record

    def load_draws(self, key: str) -> dict | None:
        """The sampler draws saved with run ``key``; None when missing or unreadable."""
        path = self.draws_path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, record: dict, draws: dict | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = record["key"]
        if draws:
            atomic_write(self.draws_path(key), lambda f: np.savez(f, **draws))
        atomic_write(self.json_path(key), lambda f: f.write(json.dumps(record, indent=1).encode()))
