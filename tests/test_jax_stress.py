"""Regression guard for the jaxlib CPU deadlock (see docs/guide/performance.md, "JAX hangs on CPU").

jaxlib 0.10.2 hung nondeterministically in ``block_until_ready`` during repeated JIT-compiled
Gibbs-style sweeps on this kind of 2-core machine. The guard runs such a sweep in fresh
subprocesses under a timeout, so a hang fails this test instead of stalling the suite; it also
checks the installed jaxlib is inside the range pinned in pyproject.toml.
"""

import subprocess
import sys
from pathlib import Path

import jax
import jaxlib
import pytest

SCRIPT = Path(__file__).with_name("jax_stress_sweep.py")


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def test_installed_jaxlib_is_in_the_tested_range():
    assert (0, 7, 2) <= _version(jaxlib.__version__) < (0, 10, 0), jaxlib.__version__
    assert _version(jax.__version__) < (0, 10, 0), jax.__version__


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("run", range(3))
def test_repeated_jitted_sweeps_do_not_hang(run):
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "2000", "1000", "200000", "10", "30"],
            capture_output=True, text=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"JIT-compiled sweep hung (run {run}); jaxlib {jaxlib.__version__} — see docs/guide/performance.md")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
