"""On-disk format of saved models: a directory holding ``meta.json`` and one arrays file, both
verified on load, replaced atomically.

Layout of a saved model (format version :data:`FORMAT_VERSION`)::

    path/meta.json              {"format": "bayesmf-model", "format_version": 3, "bayesmf_version": ...,
                                 "class": ..., "params": ..., "arrays": [names],
                                 "arrays_file": "arrays-<sha256[:16]>.npz", "sha256": {arrays_file: digest},
                                 "meta_sha256": digest of everything else in meta.json, ...}
    path/arrays-<sha16>.npz     NumPy arrays (factors, biases, posterior samples, the seen-item CSR ...)

Format 2 directories (``arrays.npz`` + ``meta.json`` without ``meta_sha256``) still load, with
their arrays verified but their metadata unverifiable; saving over one turns it into format 3.

Guarantees (POSIX file systems):

* **Atomic for readers and crashes**: ``meta.json`` is the commit point. A save over an existing
  model writes the new arrays under a new name, replaces ``meta.json`` with ``os.replace`` and
  only then deletes the old arrays file; a first save fills a hidden sibling directory and renames
  it to ``path``. So ``path`` always holds a complete model, the old one or the new one, whatever
  step a ``kill -9`` interrupts. A reader whose arrays file disappears or changes under it (a save
  committed meanwhile) re-reads ``meta.json`` and retries, so concurrent loads do not fail.
* **Safe**: an existing ``path`` is written into only if it is a directory this module wrote (it
  holds ``meta.json``) or is empty, never an unrelated directory.
* **Verified**: ``meta.json`` records the SHA-256 of the arrays file and of its own content (the
  canonical JSON of every other field), so a changed byte in either file, a truncation or a
  mismatched pair is reported as :class:`~bayesmf.errors.DataError` instead of loading a different
  model or surfacing as a zip or JSON error. Arrays are loaded with ``allow_pickle=False``.
* **Clean**: saves into one parent directory serialise on an exclusive ``flock`` of it (released
  by the kernel if the process dies); holding it, a save deletes what killed saves of the same
  ``path`` left behind (hidden ``.<name>.<token>.partial``/``.old`` siblings, unreferenced arrays
  files and temporary files inside ``path``), and nothing else.
* **Permissions**: files and directories are created with mode ``0o666``/``0o777`` minus the umask.
* **Versioned**: a file of another format version raises :class:`~bayesmf.errors.DataError`
  naming both versions.

Not guaranteed: durability of the directory entries across power loss (files are fsynced, the
directories are not), nor any of the above on file systems without atomic rename or ``flock``.

This module knows nothing about models: :mod:`bayesmf.models.base` decides what goes into the
arrays and the metadata; :meth:`~bayesmf.models.recommend.export.ExportMixin.export_factors` reuses
:func:`write_dir_atomically`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bayesmf.errors import DataError

FORMAT_NAME = "bayesmf-model"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
META_FILE = "meta.json"
LEGACY_ARRAYS_FILE = "arrays.npz"  # format 2
_ARRAYS_NAME = re.compile(r"arrays-[0-9a-f]{16}\.npz")
_TEMP_NAME = re.compile(r"\.(arrays|meta)\.[0-9a-f]{8}\.tmp")
_READ_ATTEMPTS = 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


def _sha256_stream(fh) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def meta_digest(meta: dict) -> str:
    """SHA-256 of the canonical JSON of ``meta`` without its ``meta_sha256`` field: what
    ``meta.json`` records about itself (a JSON round trip leaves it unchanged)."""
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _token() -> str:
    return secrets.token_hex(4)


def _write_file(path: Path, write: Callable) -> None:
    """Create ``path`` (it must not exist; mode 0o666 minus the umask), fill it with
    ``write(fh)`` and fsync it, so that a rename that follows publishes complete content."""
    with open(path, "xb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _exclusive(directory: Path):
    """Hold an exclusive advisory lock on ``directory`` (``flock``); proceeds unlocked where that
    is unavailable (no ``fcntl``, an unreadable directory, a file system without locks)."""
    fd = None
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _check_target(path: Path, marker: str) -> None:
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path} exists and is not a directory; choose another path")
        if any(path.iterdir()) and not (path / marker).is_file():
            raise DataError(f"{path} is a non-empty directory without {marker}; refusing to overwrite it")


def _remove_stale_siblings(path: Path) -> None:
    """Delete the hidden sibling directories that killed saves of ``path`` left: exactly
    ``.<name>.<8-character token>.partial`` or ``.old``, as this module names them."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(partial|old)")
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def write_dir_atomically(path, write_into: Callable[[Path], None], marker: str) -> Path:
    """Create directory ``path`` by calling ``write_into(tmp)`` on a hidden sibling, then renaming.

    ``marker`` is the name of a file ``write_into`` creates; an existing ``path`` is replaced only
    when it holds that file (it is an earlier output of the same kind) or is empty. On any
    exception the temporary directory is removed and ``path`` is left as it was. Replacing an
    existing directory takes two renames (old one aside, new one in): a crash between them leaves
    no directory at ``path`` (the next call cleans the leftovers); saved models avoid this gap by
    replacing in place (:func:`save_dir`).
    """
    path = Path(path)
    _check_target(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.parent):
        _check_target(path, marker)
        _remove_stale_siblings(path)
        tmp = path.parent / f".{path.name}.{_token()}.partial"
        os.mkdir(tmp)
        try:
            write_into(tmp)
            if path.exists():
                old = path.parent / f".{path.name}.{_token()}.old"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def _write_model(directory: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays file, then ``meta.json`` by ``os.replace`` (the commit), into ``directory``."""
    tmp = directory / f".arrays.{_token()}.tmp"
    try:
        _write_file(tmp, lambda fh: np.savez(fh, **arrays))
        digest = sha256_of(tmp)
        name = f"arrays-{digest[:16]}.npz"
        os.replace(tmp, directory / name)
    finally:
        tmp.unlink(missing_ok=True)
    full = json.loads(json.dumps({
        **meta, "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "arrays": sorted(arrays),
        "arrays_file": name, "sha256": {name: digest},
    }))
    full["meta_sha256"] = meta_digest(full)
    tmp = directory / f".meta.{_token()}.tmp"
    try:
        _write_file(tmp, lambda fh: fh.write(json.dumps(full, indent=1).encode()))
        os.replace(tmp, directory / META_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_leftovers(directory: Path) -> None:
    """Delete temporary files and every arrays file the current ``meta.json`` does not name (all
    arrays files are kept when it cannot be read)."""
    try:
        meta = _parse_meta(directory, (directory / META_FILE).read_bytes())
        keep = _arrays_name(directory, meta)
    except (DataError, OSError):
        keep = None
    for entry in directory.iterdir():
        name = entry.name
        stale_arrays = keep is not None and name != keep and (
            _ARRAYS_NAME.fullmatch(name) or name == LEGACY_ARRAYS_FILE)
        if stale_arrays or _TEMP_NAME.fullmatch(name):
            entry.unlink(missing_ok=True)


def save_dir(path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (plus format name, version, array list, checksums) to
    directory ``path``: a new directory appears complete, an existing one is replaced in place
    with ``meta.json`` as the atomic commit (see the module docstring)."""
    path = Path(path)
    _check_target(path, META_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.parent):
        _check_target(path, META_FILE)
        _remove_stale_siblings(path)
        if path.exists():
            try:
                _write_model(path, meta, arrays)
            finally:
                _remove_leftovers(path)
            return path
        tmp = path.parent / f".{path.name}.{_token()}.partial"
        os.mkdir(tmp)
        try:
            _write_model(tmp, meta, arrays)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def _parse_meta(path: Path, raw: bytes) -> dict:
    """The verified metadata of the model directory ``path`` from the bytes of its ``meta.json``."""
    meta_path = path / META_FILE
    try:
        meta = json.loads(raw.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path} is corrupted: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{meta_path} is not a bayesmf model file (format {found!r})")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: saved with model format version {version!r} (bayesmf {meta.get('bayesmf_version')}); "
            f"this bayesmf reads versions {' and '.join(map(str, READABLE_VERSIONS))}"
        )
    if version >= 3 and meta.get("meta_sha256") != meta_digest(meta):
        raise DataError(f"{meta_path} is corrupted or was modified: its content does not match the SHA-256 "
                        "recorded in it; save the model again")
    return meta


def _arrays_name(path: Path, meta: dict) -> str:
    if meta["format_version"] == 2:
        return LEGACY_ARRAYS_FILE
    name = meta.get("arrays_file")
    if not isinstance(name, str) or not _ARRAYS_NAME.fullmatch(name):
        raise DataError(f"{path / META_FILE} names no valid arrays file ({name!r})")
    return name


def _meta_changed(path: Path, raw: bytes) -> bool:
    try:
        return (path / META_FILE).read_bytes() != raw
    except OSError:
        return True


def _read_arrays(fh, arrays_path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(fh, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{arrays_path} cannot be read: {exc}") from None


def load_dir(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a directory written by :func:`save_dir`; returns ``(meta, arrays)``.

    Reads ``meta.json``, then the arrays file it names, through one open file handle; when that
    file is missing or does not match its recorded digest while ``meta.json`` has changed
    meanwhile (a concurrent save committed), starts over.
    """
    path = Path(path)
    for _ in range(_READ_ATTEMPTS):
        try:
            raw = (path / META_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(f"{path} holds no saved bayesmf model ({META_FILE} missing)") from None
        meta = _parse_meta(path, raw)
        name = _arrays_name(path, meta)
        arrays_path = path / name
        try:
            fh = open(arrays_path, "rb")  # noqa: SIM115 - held open across the checks below
        except FileNotFoundError:
            if _meta_changed(path, raw):
                continue
            raise DataError(f"{path}: {name} is missing") from None
        with fh:
            expected = (meta.get("sha256") or {}).get(name)
            actual = _sha256_stream(fh)
            if actual != expected:
                if _meta_changed(path, raw):
                    continue
                raise DataError(
                    f"{arrays_path} is corrupted or truncated: SHA-256 {actual[:12]}... does not match "
                    f"{str(expected)[:12]}... recorded in {META_FILE}"
                )
            fh.seek(0)
            arrays = _read_arrays(fh, arrays_path)
        missing = sorted(set(meta.get("arrays", [])) - set(arrays))
        if missing:
            raise DataError(f"{arrays_path} lacks the array(s) {missing} listed in {META_FILE}")
        return meta, arrays
    raise DataError(f"{path} changed during each of {_READ_ATTEMPTS} reads: another process keeps saving to it")
