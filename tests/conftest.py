import ctypes
import gc
import os
from pathlib import Path

import jax
import pytest

# The test process compiles without the persistent compilation cache (no process-wide JAX cache
# settings in the suite); tests/test_compile_cache.py exercises the cache in subprocesses.
os.environ["BAYESMF_COMPILATION_CACHE"] = "0"

from bayesmf.data import synthetic  # noqa: E402


def _shared_data() -> Path | None:
    env = os.environ.get("BAYESMF_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if (c / "ml-100k" / "u.data").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data folder (BAYESMF_DATA); tests using it skip with a reason when it is absent."""
    found = _shared_data()
    if found is None:
        pytest.skip("MovieLens data not found: set BAYESMF_DATA to a folder holding ml-100k/ and ml-1m/")
    return found


@pytest.fixture(scope="session")
def small():
    """A small synthetic data set from the BPMF generative model (the core suite's data)."""
    return synthetic(n_users=200, n_items=120, n_ratings=4000, rank=3, noise=0.3, seed=1)


def _return_freed_memory_to_the_system() -> None:
    """glibc keeps freed heap pages; ``malloc_trim`` hands them back (a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_per_module():
    """Every test module starts from JAX's defaults and leaves nothing compiled behind.

    JAX keeps every compiled program for the life of the process, and the suite fits models of
    hundreds of different shapes: without clearing, one pytest process grows by tens of MiB per
    new shape until the machine runs out of memory. ``check_dtype("float64")`` switches x64 on
    process-wide; switching it back here keeps a module's results independent of the modules run
    before it.
    """
    x64 = bool(jax.config.jax_enable_x64)
    yield
    jax.config.update("jax_enable_x64", x64)
    jax.clear_caches()
    gc.collect()
    _return_freed_memory_to_the_system()
