"""Benchmark harness: suites of runs in subprocesses, aggregation over seeds, reports and plots.

Typical use::

    petrec bench                                   # the quick suite → benchmarks/results/quick/
    petrec bench --suite ml100k-ctr --experiments P1
    petrec report benchmarks/results/quick

or from Python::

    from petrec.bench import load_suite, run_suite, build_report
    run_suite(load_suite("quick"), "benchmarks/results/quick")
    build_report("benchmarks/results/quick")
"""

from petrec.bench.aggregate import mean_std_ci, runs_frame, summarize
from petrec.bench.report import build_report
from petrec.bench.runner import BenchError, load_records, run_suite
from petrec.bench.suite import (
    AblationConfig,
    ExperimentConfig,
    GoalConfig,
    RunSpec,
    SuiteConfig,
    SuiteError,
    expand,
    load_suite,
)

__all__ = [
    "AblationConfig",
    "BenchError",
    "ExperimentConfig",
    "GoalConfig",
    "RunSpec",
    "SuiteConfig",
    "SuiteError",
    "build_report",
    "expand",
    "load_records",
    "load_suite",
    "mean_std_ci",
    "run_suite",
    "runs_frame",
    "summarize",
]
