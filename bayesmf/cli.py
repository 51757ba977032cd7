"""Command line (also ``python -m bayesmf``)::

    bayesmf --version
    bayesmf run FILE.toml --out DIR [--force] [--quiet] [--data-dir PATH]
    bayesmf report DIR
    bayesmf datasets [--data-dir PATH]
    bayesmf demo [--out DIR] [--print]  # runs the quickstart experiment shipped in the package
                                        # (synthetic data, no download); --print shows its file

Exit status: 0 on success, 1 when some runs failed, 2 on a configuration or data error (the
message names the file and key) or an --out that is a file or cannot be written (nothing is
written then), 130 when interrupted with Ctrl-C (finished runs are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesmf._version import __version__

DEMO = "quickstart"  # the shipped experiment (bayesmf/experiments/templates/quickstart.toml) `demo` runs


def _cmd_datasets(args) -> int:
    from bayesmf.data.datasets import DATASETS, available, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    print(f"data directory: {root}")
    for name, path in available(args.data_dir).items():
        spec = DATASETS[name]
        where = str(path) if path else f"missing (expected {root / spec.folder / spec.files[0]})"
        print(f"  {name:<24} {where}")
    return 0


def _run(load, out, force: bool, quiet: bool, data_dir) -> int:
    """Run the experiment ``load()`` returns into ``out``; the exit status of the module docstring."""
    from bayesmf.errors import BayesmfError
    from bayesmf.experiments import run_experiment

    try:
        experiment = load()
        outcome = run_experiment(experiment, out, force=force, progress=not quiet, data_dir=data_dir)
    except BayesmfError as exc:
        print(f"bayesmf: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(outcome.records)} runs: {outcome.computed} computed, {outcome.cached} from the cache, "
          f"{outcome.failed} failed. Results: {Path(out) / 'results.csv'}, report: {Path(out) / 'report.md'}")
    if outcome.interrupted:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if outcome.failed else 0


def _cmd_run(args) -> int:
    from bayesmf.experiments import load_experiment

    return _run(lambda: load_experiment(args.file), args.out, args.force, args.quiet, args.data_dir)


def _cmd_report(args) -> int:
    from bayesmf.errors import BayesmfError
    from bayesmf.experiments import write_report

    try:
        path = write_report(args.dir)
    except BayesmfError as exc:
        print(f"bayesmf: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def _cmd_demo(args) -> int:
    from bayesmf.errors import BayesmfError
    from bayesmf.experiments import load_template, template_text

    if args.print:
        try:
            sys.stdout.write(template_text(DEMO))
        except BayesmfError as exc:
            print(f"bayesmf: error: {exc}", file=sys.stderr)
            return 2
        return 0
    return _run(lambda: load_template(DEMO), args.out, args.force, args.quiet, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bayesmf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bayesmf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run an experiment file into an output directory")
    p.add_argument("file", help="experiment file (TOML)")
    p.add_argument("--out", required=True, help="output directory (created; finished runs there are reused)")
    p.add_argument("--force", action="store_true", help="recompute runs found in the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data-dir", default=None, help="data directory (default: [data].data_dir, $BAYESMF_DATA)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("report", help="rewrite report.md and figures of an output directory")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("datasets", help="list the named data sets and where they are expected")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_datasets)
    p = sub.add_parser("demo", help="run the quickstart experiment shipped in the package (synthetic data, "
                                    "no download)")
    p.add_argument("--out", default="runs/quickstart", help="output directory (default: runs/quickstart)")
    p.add_argument("--force", action="store_true", help="recompute runs found in the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--print", action="store_true",
                   help="write the demo's experiment file to standard output instead (a starting point for your own)")
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
