"""Where a first fit's time goes: XLA compilation per jitted function, then a warm refit.

    BAYESMF_DATA=../shared/data XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/compile_times.py --model bpmf --data ml-100k

JAX reports each compilation through its logger when ``jax_log_compiles`` is on; this script
collects those records during the first fit, prints every compilation over 0.1 s and their total,
and times a second fit of the same shapes (compiled code reused). Splits as in bench_bpmf.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time

import jax

# this script times XLA compilation, so executables must not come from the persistent cache
os.environ.setdefault("BAYESMF_COMPILATION_CACHE", "0")

MODELS = {
    "als": lambda bayesmf: bayesmf.ALS(rank=10, regularization=0.1, n_iter=10),
    "bpmf": lambda bayesmf: bayesmf.BPMF(rank=10, n_warmup=50, n_samples=150, biases=True, noise_prior=(1.0, 1.0)),
    "nmf": lambda bayesmf: bayesmf.NMF(),  # Surprise's NMF defaults: rank 15, 50 iterations, reg 0.06
    # the harness's implicit-als settings; trained on the ratings >= 4 (the ml1m-implicit protocol)
    "implicit": lambda bayesmf: bayesmf.ImplicitALS(rank=64, n_iter=15, regularization=0.01, alpha=10.0),
}


class CompileLog(logging.Handler):
    """Collects ``(function, seconds)`` from JAX's "Finished XLA compilation of F in S sec" records."""

    PATTERN = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.]+) sec")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, float]] = []

    def emit(self, record):
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.records.append((match.group(1), float(match.group(2))))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="bpmf")
    parser.add_argument("--data", choices=["ml-100k", "ml-1m"], default="ml-100k")
    args = parser.parse_args(argv)

    import bayesmf
    from bayesmf import datasets, splits

    if args.data == "ml-100k":
        train = splits.predefined("movielens-100k", "u1").train
    else:
        train = splits.random(datasets.load("movielens-1m"), 0.1, seed=42).train
    if args.model == "implicit":
        train, _ = bayesmf.to_implicit(train, threshold=4.0)
    log = CompileLog()
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(log)
    jax_logger.propagate = False  # keep the per-op compile records off the terminal
    jax.config.update("jax_log_compiles", True)
    start = time.perf_counter()
    MODELS[args.model](bayesmf).fit(train)
    first = time.perf_counter() - start
    jax.config.update("jax_log_compiles", False)
    start = time.perf_counter()
    MODELS[args.model](bayesmf).fit(train)
    warm = time.perf_counter() - start
    for name, seconds in sorted(log.records, key=lambda r: -r[1]):
        if seconds > 0.1:
            print(f"  compile {name}: {seconds:.2f} s")
    total = sum(s for _, s in log.records)
    print(f"{args.model} on {args.data}: first fit {first:.2f} s (XLA compilation {total:.2f} s), "
          f"warm fit {warm:.2f} s")


if __name__ == "__main__":
    main()
