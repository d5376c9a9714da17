"""``petrec bench`` (run a suite, then report) and ``petrec report RESULTS_DIR``."""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
from pathlib import Path
from typing import Any

from petrec.config import ConfigError


def _bench(args: argparse.Namespace) -> int:
    from petrec.bench.report import build_report
    from petrec.bench.runner import BenchError, run_suite
    from petrec.bench.suite import expand, load_suite

    try:
        suite = load_suite(args.suite)
    except ConfigError as exc:
        print(f"petrec bench: {exc}", file=sys.stderr)
        return 2
    results = Path(args.results or Path("benchmarks") / "results" / suite.name)
    experiments = set(args.experiments.split(",")) if args.experiments else None
    methods = set(args.methods.split(",")) if args.methods else None

    def select(spec: Any) -> bool:
        if experiments and spec.experiment not in experiments:
            return False
        if methods and spec.method not in methods:
            return False
        return not args.only or fnmatch.fnmatch(spec.run_id, args.only)

    if args.dry_run:
        for spec in expand(suite):
            if select(spec):
                print(spec.run_id)
        return 0
    command = ("petrec bench " + shlex.join(sys.argv[2:])).strip() if sys.argv[1:2] == ["bench"] else None
    try:
        records = run_suite(suite, results, force=args.force, retry_failed=args.retry_failed,
                            select=select, jobs=args.jobs,
                            command_line=command or f"petrec bench --suite {args.suite or 'quick'}")
    except BenchError as exc:
        print(f"petrec bench: {exc}", file=sys.stderr)
        return 2
    if not args.no_report:
        path, text = build_report(results)
        print(text)
        print(f"\nreport: {path}")
    failed = sum(1 for r in records if r["run_info"].get("status") != "ok")
    if failed:
        print(f"{failed} of {len(records)} runs failed (see the report)", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from petrec.bench.report import build_report
    from petrec.bench.runner import BenchError

    try:
        path, text = build_report(args.results_dir, make_plots=not args.no_plots)
    except BenchError as exc:
        print(f"petrec report: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nreport: {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench`` and ``report`` to the ``petrec`` command line."""
    p = subparsers.add_parser("bench", help="run a benchmark suite (default: quick) and write its report",
                              description="Run every run of a suite in its own subprocess, skipping runs "
                                          "already finished, then write REPORT.md, CSVs and plots.")
    p.add_argument("--suite", default=None,
                   help="suite name (a file in benchmarks/suites/, or the packaged quick) or YAML path; default: quick")
    p.add_argument("--results", default=None, help="results folder (default: benchmarks/results/<suite>)")
    p.add_argument("--force", action="store_true", help="re-run runs that already have a result")
    p.add_argument("--retry-failed", action="store_true", help="re-run runs whose stored result failed")
    p.add_argument("--experiments", default=None, help="comma-separated experiment names to run")
    p.add_argument("--methods", default=None, help="comma-separated method / baseline names to run")
    p.add_argument("--only", default=None, help="glob over run ids (P1__*__lora__k256__*)")
    p.add_argument("--dry-run", action="store_true", help="list the run ids and exit")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs in flight at once (default 1: clean timings; more fills a big GPU with small runs)")
    p.set_defaults(func=_bench)

    r = subparsers.add_parser("report", help="write REPORT.md, CSVs and plots of a results folder")
    r.add_argument("results_dir", help="folder written by petrec bench (holds runs/)")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.set_defaults(func=_report)
