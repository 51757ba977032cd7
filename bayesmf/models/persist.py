"""On-disk format of saved models: one directory, ``arrays.npz`` + ``meta.json``, written atomically.

Layout of a saved model (format version :data:`FORMAT_VERSION`)::

    path/arrays.npz   NumPy arrays (factors, biases, posterior samples, the seen-item CSR ...)
    path/meta.json    {"format": "bayesmf-model", "format_version": 2, "bayesmf_version": ...,
                       "class": ..., "params": ..., "arrays": [names], "sha256": {file: digest}, ...}

Guarantees:

* **Atomic**: everything is written into a hidden temporary sibling directory, which is renamed
  to ``path`` only once complete, so a failed or interrupted save never leaves a directory at
  ``path`` that loads. An existing ``path`` is replaced only if it is a directory this module
  wrote (it holds the marker file) or is empty, never an unrelated directory.
* **Verified**: ``meta.json`` records the SHA-256 of ``arrays.npz``; a truncated or corrupted
  file is reported as such on load instead of surfacing as a zip or pickle error.
* **Versioned**: a file of another format version raises :class:`~bayesmf.errors.DataError`
  naming both versions. Arrays are loaded with ``allow_pickle=False``.

This module knows nothing about models: :mod:`bayesmf.models.base` decides what goes into the
arrays and the metadata; :meth:`~bayesmf.models.recommend.RecommendMixin.export_factors` reuses
:func:`write_dir_atomically`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bayesmf.errors import DataError

FORMAT_NAME = "bayesmf-model"
FORMAT_VERSION = 2
ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_dir_atomically(path, write_into: Callable[[Path], None], marker: str) -> Path:
    """Create directory ``path`` by calling ``write_into(tmp)`` on a temporary sibling, then renaming.

    ``marker`` is the name of a file ``write_into`` creates; an existing ``path`` is replaced only
    when it holds that file (it is an earlier output of the same kind) or is empty. On any
    exception the temporary directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path} exists and is not a directory; choose another path")
        if any(path.iterdir()) and not (path / marker).is_file():
            raise DataError(f"{path} is a non-empty directory without {marker}; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        write_into(tmp)
        if path.exists():
            # Move the old copy aside first: rename is atomic, rmtree is not.
            old = tmp.with_suffix(".old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_dir(path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (plus format name, version, array list, checksum) to ``path``."""

    def write_into(tmp: Path) -> None:
        np.savez(tmp / ARRAYS_FILE, **arrays)
        full = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "arrays": sorted(arrays),
            "sha256": {ARRAYS_FILE: sha256_of(tmp / ARRAYS_FILE)},
            **meta,
        }
        # meta.json last: a directory without it is never mistaken for a saved model.
        (tmp / META_FILE).write_text(json.dumps(full, indent=1))

    return write_dir_atomically(path, write_into, marker=META_FILE)


def load_dir(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a directory written by :func:`save_dir`; returns ``(meta, arrays)``."""
    path = Path(path)
    meta_path, arrays_path = path / META_FILE, path / ARRAYS_FILE
    if not meta_path.is_file():
        raise DataError(f"{path} holds no saved bayesmf model ({META_FILE} missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path} is corrupted: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataError(f"{meta_path} is not a bayesmf model file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: saved with model format version {version!r} (bayesmf {meta.get('bayesmf_version')}); "
            f"this bayesmf reads version {FORMAT_VERSION} only"
        )
    if not arrays_path.is_file():
        raise DataError(f"{path}: {ARRAYS_FILE} is missing")
    expected = meta.get("sha256", {}).get(ARRAYS_FILE)
    actual = sha256_of(arrays_path)
    if actual != expected:
        raise DataError(
            f"{arrays_path} is corrupted or truncated: SHA-256 {actual[:12]}... does not match "
            f"{str(expected)[:12]}... recorded in {META_FILE}"
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{arrays_path} cannot be read: {exc}") from None
    missing = sorted(set(meta.get("arrays", [])) - set(arrays))
    if missing:
        raise DataError(f"{arrays_path} lacks the array(s) {missing} listed in {META_FILE}")
    return meta, arrays
