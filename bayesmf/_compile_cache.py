"""JAX's persistent compilation cache, on by default, in a directory only this CPU model can hit.

XLA compiles every jitted function for the host CPU; a new process pays that compilation again
for every data shape. JAX can keep the compiled executables on disk
(``jax_compilation_cache_dir``). :func:`enable` turns that on when an engine is first imported,
in ``$XDG_CACHE_HOME/bayesmf/xla/`` (``~/.cache`` when unset), under a subdirectory named by

* the installed ``jax`` and ``jaxlib`` versions (an upgrade starts an empty directory), and
* a fingerprint of the host CPU: a SHA-256 of the vendor, family, model, model name, stepping and
  the full feature-flag list of ``/proc/cpuinfo`` (the ARM fields on ARM), so an executable
  compiled for one CPU model and instruction set is never loaded on another.

Where ``/proc/cpuinfo`` is missing or names no CPU (macOS, Windows), no exact fingerprint exists
and the cache stays off.

Rules:

* ``BAYESMF_COMPILATION_CACHE=0`` (or ``false``/``no``/``off``) turns it off; ``1``/``true``/
  ``yes``/``on`` or unset leaves it on; anything else is a :class:`~bayesmf.errors.ConfigError`.
* A cache directory the user chose (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.update("jax_compilation_cache_dir", ...)`` before the first engine import) is
  never replaced, and then nothing here changes any setting or log output. The same holds for a
  minimum compile time set through ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``.
* Only computations that took at least :data:`MIN_COMPILE_TIME_SECS` to compile are written
  (benchmarks/RESULTS.md, "Persistent compilation cache", has the measurement behind it), and the
  directory holds at most :data:`MAX_SIZE_BYTES` (least recently used entries go first), unless
  ``JAX_COMPILATION_CACHE_MAX_SIZE`` or the JAX option says otherwise.

Log lines. When it loads a cached executable, XLA:CPU compares the CPU features recorded at
compile time with the host's. On x86 hosts with AVX-512 it records the LLVM *tuning* attributes
``+prefer-no-gather`` and ``+prefer-no-scatter`` among them; these are code-generation
preferences, never reported as host features, so every load logs, per attribute, an E-level line
"Target machine feature +prefer-no-gather is not supported on the host machine ... could lead to
execution errors such as SIGILL" (jax-ml/jax#38445, openxla/xla#44565), plus a W-level line
"Assume version compatibility. PjRt-IFRT does not track XLA executable versions". Neither can
apply to this directory: its name carries the jaxlib version, and a hit can only come from the
same CPU model with the same feature flags. XLA logs through C++ logging straight to file
descriptor 2, which has no per-message switch (``TF_CPP_MIN_LOG_LEVEL`` would hide every XLA
error), so while JAX reads an entry of this directory, descriptor 2 is pointed at a temporary
file; afterwards every line is written back to the real stderr except exactly those lines:
the E line only when the missing feature is one of the two tuning attributes (a missing
instruction-set feature is still shown), the W line only in its exact wording. Reads of any other
cache directory are not touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from bayesmf.errors import ConfigError

ENV = "BAYESMF_COMPILATION_CACHE"
#: Seconds of XLA compilation below which an executable is not written to the cache.
MIN_COMPILE_TIME_SECS = 0.0
#: Bytes the directory may hold; beyond it JAX deletes the least recently used entries.
MAX_SIZE_BYTES = 2 * 1024**3

# the two files of one entry of JAX's size-bounded cache (jax._src.lru_cache)
_CACHE_SUFFIX, _ATIME_SUFFIX = "-cache", "-atime"
_JAX_DEFAULT_MIN_TIME = 1.0  # jax's own default for jax_persistent_cache_min_compile_time_secs
_OFF = {"0", "false", "no", "off"}
_ON = {"", "1", "true", "yes", "on"}
# /proc/cpuinfo fields that identify the CPU model and its instruction set (x86, then ARM).
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags",
               "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision", "Features")
# The two log lines every load from a CPU-keyed directory produces (see the module docstring).
_HIDDEN = (
    re.compile(rb"E\d{4} [0-9:.]+ +\d+ cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT result\. Target machine "
               rb"feature \+prefer-no-(?:gather|scatter) is not +supported on the host machine\. "),
    re.compile(rb"W\d{4} [0-9:.]+ +\d+ pjrt_executable\.cc:\d+\] Assume version compatibility\. "
               rb"PjRt-IFRT does not track XLA executable versions\.\r?\n?\Z"),
)

_lock = threading.Lock()
_enabled_dir: str | None = None
_checked = False


def requested() -> bool:
    """Whether ``BAYESMF_COMPILATION_CACHE`` asks for the cache (unset: yes)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ConfigError(f"{ENV}={os.environ[ENV]!r}: expected 0/false/no/off or 1/true/yes/on")


def cpu_fingerprint(cpuinfo: str | None = None) -> str | None:
    """A 16-hex-digit SHA-256 prefix of the first CPU's identifying ``/proc/cpuinfo`` fields.

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo``; read from the file when omitted.

    Returns
    -------
    str or None
        None when the text is unavailable or holds none of the identifying fields.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    first = cpuinfo.split("\n\n", 1)[0]
    fields = {}
    for line in first.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in _CPU_FIELDS:
            fields[name.strip()] = " ".join(value.split())
    if not fields:
        return None
    text = "\n".join(f"{name}={fields[name]}" for name in _CPU_FIELDS if name in fields)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(cpuinfo: str | None = None, base: str | os.PathLike | None = None) -> Path | None:
    """The cache directory for this jax/jaxlib pair and this CPU, or None without a fingerprint.

    ``base`` defaults to ``$XDG_CACHE_HOME/bayesmf/xla`` (``~/.cache/bayesmf/xla`` when unset);
    ``cpuinfo`` as in :func:`cpu_fingerprint`.
    """
    fingerprint = cpu_fingerprint(cpuinfo)
    if fingerprint is None:
        return None
    if base is None:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(root) / "bayesmf" / "xla"
    versions = f"jax-{importlib.metadata.version('jax')}-jaxlib-{importlib.metadata.version('jaxlib')}"
    return Path(base) / f"{versions}-cpu-{fingerprint}"


def filter_lines(text: bytes) -> bytes:
    """``text`` without the log lines described in the module docstring; every other line kept."""
    return b"".join(line for line in text.splitlines(keepends=True)
                    if not any(p.match(line) for p in _HIDDEN))


@contextlib.contextmanager
def _filtered_stderr():
    """Point file descriptor 2 at a temporary file; on exit write it back through :func:`filter_lines`."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                if sys.stderr is not None:
                    sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = memoryview(filter_lines(tmp.read()))
            while kept:
                kept = kept[os.write(2, kept):]


def _quiet_reads(read, config):
    """Wrap JAX's cache read so that reads of this module's directory run under :func:`_filtered_stderr`."""

    @functools.wraps(read)
    def wrapper(*args, **kwargs):
        if _enabled_dir is None or config.compilation_cache_dir.value != _enabled_dir:
            return read(*args, **kwargs)
        with _lock, _filtered_stderr():
            return read(*args, **kwargs)

    wrapper.__bayesmf_quiet__ = True
    return wrapper


def repair(path: Path) -> int:
    """Give every entry of the cache directory ``path`` that lacks one its access-time file.

    JAX's size-bounded cache writes an entry as two files, ``<key>-cache`` and then
    ``<key>-atime``; a process killed between the two (Ctrl-C, the OOM killer) leaves an entry
    without its ``-atime``, and from then on JAX's eviction, which reads every entry's access
    time before each write, fails on it: every later write is skipped with a warning, and
    nothing new is ever cached. The missing file gets the entry's modification time (an old
    entry, evicted first). Writing it is harmless when another process is about to write it
    itself. Returns the number of entries repaired."""
    repaired = 0
    for entry in path.glob(f"*{_CACHE_SUFFIX}"):
        atime = entry.with_name(entry.name[:-len(_CACHE_SUFFIX)] + _ATIME_SUFFIX)
        if atime.exists():
            continue
        with contextlib.suppress(OSError):  # the entry vanished, or the directory is read-only
            atime.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))
            repaired += 1
    return repaired


def enable() -> Path | None:
    """Turn the persistent compilation cache on, once per process, unless switched off or user-set.

    Returns
    -------
    pathlib.Path or None
        The directory in use, or None when the cache was not turned on here (switched off by
        ``BAYESMF_COMPILATION_CACHE``, a user's own cache directory, no CPU fingerprint, the
        directory cannot be created, or this JAX lacks the cache-read function the log filter
        wraps).
    """
    global _checked, _enabled_dir
    if _checked:
        return Path(_enabled_dir) if _enabled_dir else None
    if not requested():
        _checked = True
        return None
    _checked = True
    import jax
    from jax._src import compilation_cache, config

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir is not None:
        return None  # the user's own cache: leave every setting alone
    read = getattr(compilation_cache, "get_executable_and_time", None)
    path = cache_dir()
    if read is None or path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    repair(path)
    if not getattr(read, "__bayesmf_quiet__", False):
        compilation_cache.get_executable_and_time = _quiet_reads(read, config)
    _enabled_dir = str(path)
    jax.config.update("jax_compilation_cache_dir", _enabled_dir)
    user_min_time = ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in os.environ
                     or jax.config.jax_persistent_cache_min_compile_time_secs != _JAX_DEFAULT_MIN_TIME)
    if not user_min_time:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    user_max_size = ("JAX_COMPILATION_CACHE_MAX_SIZE" in os.environ
                     or jax.config.jax_compilation_cache_max_size != -1)
    if not user_max_size:  # JAX's eviction needs the filelock package, a dependency of bayesmf
        jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    return path


__all__ = ["ENV", "MAX_SIZE_BYTES", "MIN_COMPILE_TIME_SECS", "cache_dir", "cpu_fingerprint", "enable", "filter_lines",
           "repair", "requested"]
