"""Command line: ``bayesmf demo`` and ``bayesmf datasets`` (also ``python -m bayesmf``)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_datasets(args) -> int:
    from bayesmf.data.datasets import DATASETS, available, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    print(f"data directory: {root}")
    for name, path in available(args.data_dir).items():
        spec = DATASETS[name]
        where = str(path) if path else f"missing (expected {root / spec.folder / spec.files[0]})"
        print(f"  {name:<24} {where}")
    return 0


def _cmd_demo(args) -> int:
    from bayesmf.data import summary, synthetic
    from bayesmf.data.splits import random

    data = synthetic(n_users=args.users, n_items=args.items, n_ratings=args.ratings, rank=5, noise=0.5, seed=0)
    split = random(data.ratings, 0.1, seed=0)
    print(f"synthetic data from the BPMF generative model: {data.ratings}")
    print(json.dumps(summary(data.ratings), indent=2))
    print("random 90/10 split:", json.dumps(split.report()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bayesmf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="summarise an embedded synthetic data set (no download)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--ratings", type=int, default=50_000)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("datasets", help="list the named data sets and where they are expected")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_datasets)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
