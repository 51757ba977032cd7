"""``python -m benchmarks``: bayesmf next to its peers, same data, same split, same machine.

    python -m benchmarks                      # full run: set up missing peer envs, run all pairs,
                                              # rewrite the harness section of benchmarks/RESULTS.md
    python -m benchmarks --quick              # bayesmf side of every pair on tiny synthetic data
    python -m benchmarks --setup [PEER ...]   # (re)create peer virtual environments, then stop
    python -m benchmarks --pairs nmf bpmf-gibbs --protocols ml100k-u1 --repeats 3

Full mode needs the MovieLens files (``--data-dir`` or ``$BAYESMF_DATA``) and network access for
the first set-up of the peers; it is not part of the test suite. ``--quick`` exits non-zero when
an available bayesmf estimator fails (a missing estimator is reported, not failed).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import envs, fm_features, pairs, report, runner
from benchmarks.data import PROTOCOLS, write_split

HERE = Path(__file__).resolve().parent


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="bayesmf side only, synthetic data, seconds")
    parser.add_argument("--setup", nargs="*", metavar="PEER", help="create peer envs (all when none named) and stop")
    parser.add_argument("--force", action="store_true", help="with --setup: rebuild even if set up")
    parser.add_argument("--pairs", nargs="*", help=f"subset of {[p.name for p in pairs.PAIRS]}")
    parser.add_argument("--protocols", nargs="*", help=f"subset of {list(PROTOCOLS)}")
    parser.add_argument("--only", choices=("bayesmf", "peers"), help="run one side only")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per job (default 3; --quick 1)")
    parser.add_argument("--repeats-1m", type=int, default=None,
                        help="repeats on the MovieLens-1M protocols (default: --repeats)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every library (default 1)")
    parser.add_argument("--data-dir", default=None, help="MovieLens root (default $BAYESMF_DATA)")
    parser.add_argument("--results", default=None,
                        help="markdown file to update (default benchmarks/RESULTS.md in full mode)")
    parser.add_argument("--json", default=None, help="also write every run's raw results here")
    parser.add_argument("--report-only", action="store_true",
                        help="with --json: rewrite the RESULTS.md section from that file's records, run nothing")
    parser.add_argument("--merge", action="store_true",
                        help="with --json: keep the records already in that file for the (pair, protocol) "
                        "combinations not run now, and report them all (rerun one pair without losing the rest)")
    parser.add_argument("--timeout", type=float, default=runner.TIMEOUT_S, help="seconds per job")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, progress=print, on_record=None) -> list[dict]:
    """Run the selected pairs; returns one record per (pair, protocol). ``on_record(records)`` is
    called after each, so a long run leaves its results behind as it goes."""
    selected = pairs.select(args.pairs)
    repeats = args.repeats or (1 if args.quick else 3)
    records = []
    with tempfile.TemporaryDirectory(prefix="bayesmf-bench-") as tmp:
        splits: dict[str, Path] = {}
        for pair in selected:
            if args.quick:
                implicit = any(p.endswith("implicit") for p in pair.protocols)
                ordinal = pair.bayesmf.params.get("likelihood") == "ordinal"
                protocols = ["synthetic-implicit" if implicit else "synthetic-ordinal" if ordinal else "synthetic"]
            else:
                protocols = [p for p in pair.protocols if not args.protocols or p in args.protocols]
            for protocol in protocols:
                if protocol not in splits:
                    started = time.perf_counter()
                    splits[protocol] = write_split(protocol, tmp, args.data_dir)
                    progress(f"split {protocol}: written in {time.perf_counter() - started:.1f} s")
                if not args.quick and args.only != "bayesmf":  # the peers' copy of bayesmf's FM designs
                    for name in sorted({job.params["features"] for job in pair.peers if "features" in job.params}):
                        if not fm_features.design_path(splits[protocol], name).exists():
                            fm_features.write_design(splits[protocol], name)
                progress(f"{pair.name} on {protocol}")
                reps = args.repeats_1m if args.repeats_1m and protocol.startswith("ml1m") else repeats
                record = runner.run_pair(pair, protocol, splits[protocol], repeats=reps, threads=args.threads,
                                         quick=args.quick, bayesmf=args.only != "peers",
                                         peers=not args.quick and args.only != "bayesmf", progress=progress)
                with np.load(splits[protocol]) as f:
                    record["dropped_unseen"] = int(f["dropped_unseen"])
                record["command"] = _command()
                record["date"] = time.strftime("%Y-%m-%d %H:%M")
                records.append(record)
                if on_record is not None:
                    on_record(records)
    return records


def merge_records(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``earlier`` records whose (pair, protocol) was not rerun, plus ``new``, in the order of
    :data:`pairs.PAIRS` and of each pair's protocols."""
    rerun = {(r["pair"], r["protocol"]) for r in new}
    kept = [r for r in earlier if (r["pair"], r["protocol"]) not in rerun]
    order = {p.name: i for i, p in enumerate(pairs.PAIRS)}
    return sorted(kept + new, key=lambda r: (order.get(r["pair"], len(order)), list(PROTOCOLS).index(r["protocol"])
                                              if r["protocol"] in PROTOCOLS else len(PROTOCOLS)))


def _peers_used(selected) -> list[str]:
    return sorted({job.side for pair in selected for job in pair.peers})


def main(argv=None) -> int:
    args = parse(argv)
    if args.setup is not None:
        failed = 0
        for peer in args.setup or list(envs.PEER_ENVS):
            st = envs.setup(peer, force=args.force)
            print(f"{peer}: {'ok' if st['ok'] else 'FAILED: ' + st['reason']}", flush=True)
            failed += not st["ok"]
        return 1 if failed else 0
    selected = pairs.select(args.pairs)
    if args.report_only:
        if not args.json or not Path(args.json).exists():
            raise SystemExit("--report-only needs --json FILE written by an earlier run")
        records = json.loads(Path(args.json).read_text())
        path = Path(args.results) if args.results else HERE / "RESULTS.md"
        report.write(path, _section(records, args, ()))
        print(f"wrote {path} from {len(records)} records")
        return 0
    if not args.quick and args.only != "bayesmf":
        for peer in _peers_used(selected):  # first use: build missing envs (a failure becomes a row)
            if not envs.status_of(peer)["ok"] and not (envs.peers_root() / peer / "setup-failed.txt").exists():
                print(f"setting up {peer} in {envs.peers_root() / peer} ...", flush=True)
                envs.setup(peer)
    path = Path(args.results) if args.results else (None if args.quick else HERE / "RESULTS.md")

    earlier = []
    if args.merge:
        if not args.json:
            raise SystemExit("--merge needs --json FILE (the earlier run's raw results)")
        if Path(args.json).exists():
            earlier = json.loads(Path(args.json).read_text())

    def save(records):
        records = merge_records(earlier, records)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1, default=str))
        if path is not None:
            report.write(path, _section(records, args, selected))

    records = run(args, progress=lambda msg: print(msg, flush=True), on_record=save)
    if args.quick:
        broken = [(r["pair"], name, row["error"]) for r in records for name, row in r["jobs"].items()
                  if "error" in row and "not available yet" not in row["error"]]
        for pair, name, why in broken:
            print(f"FAILED {pair} / {name}: {why}", file=sys.stderr)
        return 1 if broken else 0
    print(f"wrote {path}")
    return 0


def _command() -> str:
    return ("python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip()


def _section(records, args, selected) -> str:
    commands = list(dict.fromkeys(r.get("command", _command()) for r in records))
    peers_in_records = {job.side for r in records for job in pairs.select([r["pair"]])[0].peers}
    return report.section(records, command="`; then `".join(commands), threads=args.threads,
                          repeats=_repeats_text(records), thread_env=runner.thread_env(args.threads),
                          peer_names=sorted(peers_in_records | set(_peers_used(selected))))


def _repeats_text(records) -> str:
    """Repeats per protocol, from the records themselves (they may come from several commands)."""
    per_protocol = {}
    for r in records:
        for row in r["jobs"].values():
            per_protocol.setdefault(r["protocol"], set()).add(row.get("of", row.get("repeats", 1)))
    return "; ".join(f"{'/'.join(map(str, sorted(n)))} on {p}" for p, n in per_protocol.items()) or "0"


if __name__ == "__main__":
    sys.exit(main())
