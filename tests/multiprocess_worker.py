"""One of two processes of a sharded fit (tests/test_multiprocess.py): ``python
tests/multiprocess_worker.py PORT PROCESS_ID CASE NAMES OUT.npz``. Joins the coordinator on
127.0.0.1:PORT with CPU collectives over gloo, then runs the fits of tests/sharding_worker.py on
the mesh of both processes' devices (label "2") and writes what this process sees to OUT.npz."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np


def main(argv) -> None:
    port, process_id, case, names, path = argv[1], int(argv[2]), argv[3], argv[4], argv[5]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=120)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sharding_worker

    sharding_worker.LABELS = [str(jax.device_count())]
    sharding_worker.NAMES = names.split(",")
    out = {"device_count": np.asarray(jax.device_count()), "process_count": np.asarray(jax.process_count())}
    sharding_worker.CASES[case](out)
    np.savez(path, **out)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv)
