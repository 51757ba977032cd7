"""Command line (also ``python -m bayesmf``)::

    bayesmf --version
    bayesmf run FILE.toml --out DIR [--force] [--quiet] [--data-dir PATH] [--wait]
    bayesmf report DIR [--wait]
    bayesmf datasets [--data-dir PATH]
    bayesmf demo [--out DIR] [--print]  # runs the quickstart experiment shipped in the package
                                        # (synthetic data, no download); --print shows its file

One command at a time works in an output directory: a second ``run`` or ``report`` on the same
DIR is refused (exit status 2, naming the process holding DIR/.lock), or with --wait waits for
the first to finish.

Exit status: 0 on success, 1 when some runs failed, 2 on a configuration, data or file-system
error, a busy output directory or an --out that is a file or cannot be written (one line naming
the file and key, or the directory; nothing is written then), 130 when interrupted with Ctrl-C
(finished runs are kept, every file is left whole).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesmf._version import __version__

DEMO = "quickstart"  # the shipped experiment (bayesmf/experiments/templates/quickstart.toml) `demo` runs
REDELIVER_S = 0.05  # delay before a Ctrl-C lost in a garbage-collector callback is delivered again
WAIT_HELP = "when another bayesmf command is working in the output directory, wait for it (default: refuse)"


def _cmd_datasets(args) -> int:
    from bayesmf.data.datasets import DATASETS, available, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    print(f"data directory: {root}")
    for name, path in available(args.data_dir).items():
        spec = DATASETS[name]
        where = str(path) if path else f"missing (expected {root / spec.folder / spec.files[0]})"
        print(f"  {name:<24} {where}")
    return 0


def _run(load, out, force: bool, quiet: bool, data_dir, wait: bool) -> int:
    """Run the experiment ``load()`` returns into ``out``; the exit status of the module docstring."""
    from bayesmf.experiments import run_experiment

    experiment = load()
    outcome = run_experiment(experiment, out, force=force, progress=not quiet, data_dir=data_dir, wait=wait)
    print(f"{len(outcome.records)} runs: {outcome.computed} computed, {outcome.cached} from the cache, "
          f"{outcome.failed} failed. Results: {Path(out) / 'results.csv'}, report: {Path(out) / 'report.md'}")
    if not outcome.report_written:
        print(_report_interrupted(out), file=sys.stderr)
        return 130
    if outcome.interrupted:
        print(f"bayesmf: interrupted; finished runs are kept in {out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if outcome.failed else 0


def _report_interrupted(out) -> str:
    return f"bayesmf: interrupted; finished runs are kept in {out}; rerun `bayesmf report {out}`"


def _cmd_run(args) -> int:
    from bayesmf.experiments import load_experiment

    return _run(lambda: load_experiment(args.file), args.out, args.force, args.quiet, args.data_dir, args.wait)


def _cmd_report(args) -> int:
    from bayesmf.experiments import write_report

    try:
        path = write_report(args.dir, wait=args.wait)
    except KeyboardInterrupt:
        print(_report_interrupted(args.dir), file=sys.stderr)
        return 130
    print(f"report: {path}")
    return 0


def _cmd_demo(args) -> int:
    from bayesmf.experiments import load_template, template_text

    if args.print:
        sys.stdout.write(template_text(DEMO))
        return 0
    return _run(lambda: load_template(DEMO), args.out, args.force, args.quiet, None, args.wait)


def _interrupted_message(args) -> str:
    """What Ctrl-C outside the grid loop and the report leaves (loading, waiting, writing results)."""
    out = getattr(args, "out", None)
    if out is None:
        return "bayesmf: interrupted"
    return f"bayesmf: interrupted; finished runs are kept in {out}; run the same command again to resume"


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
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("report", help="rewrite report.md and figures of an output directory")
    p.add_argument("dir")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
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
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    previous = sys.unraisablehook
    sys.unraisablehook = _redeliver_interrupts(previous)
    try:
        return _call(args)
    finally:
        sys.unraisablehook = previous


def _redeliver_interrupts(previous):
    """An unraisable-exception hook for Ctrl-C. A KeyboardInterrupt raised inside a garbage
    collector callback (JAX registers one) cannot propagate: Python prints "Exception ignored"
    with a traceback and the command runs on as if Ctrl-C had not been pressed. This hook
    delivers it to the main thread again, from a timer thread a moment later so that it lands
    after the callback has returned; other exceptions go to ``previous``."""
    import _thread
    import threading

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            timer = threading.Timer(REDELIVER_S, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook


def _call(args) -> int:
    """Run a command; the package's errors and file-system errors become one line on stderr and
    exit status 2, Ctrl-C a one-line message and 130 (never a traceback for either)."""
    from bayesmf.errors import BayesmfError

    try:
        return args.func(args)
    except (BayesmfError, OSError) as exc:
        print(f"bayesmf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_message(args), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
