import os
from pathlib import Path

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
