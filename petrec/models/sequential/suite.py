"""Run a next-item benchmark suite (``benchmarks/suites/<name>.yaml``), one subprocess per run.

::

    python -m petrec.models.sequential.suite --suite benchmarks/suites/ml1m-next-item.yaml \
        --work /tmp/petrec_runs [--only sasrec-ce,gru4rec] [--train.resume true ...]
    python -m petrec.models.sequential.suite --suite ... --report-only

A suite file has ``name``, ``protocol``, ``base`` (a :class:`~petrec.models.sequential.run.SeqRunConfig`
mapping shared by all runs) and ``runs`` (``name`` + ``config``, merged over ``base``; an optional
``group`` names runs that repeat one configuration under other seeds). Each run's ``metrics.json``
is copied to ``benchmarks/results/<name>/<run>.json`` (with the command, the machine and the peak
RSS of its own process), and the results table is printed from all of them, with each group's
mean and 95% interval over its seeds (REPORT.md quotes these tables).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from petrec.config import merge_dicts
from petrec.files import write_json_atomic


def machine() -> str:
    """One line on the CPU, cores, memory and GPU (:func:`petrec.bench.system.describe_machine`)."""
    from petrec.bench import system

    return system.describe_machine(system.machine())


def _flat(prefix: str, obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [a for k, v in obj.items() for a in _flat(f"{prefix}.{k}" if prefix else k, v)]
    value = json.dumps(obj) if isinstance(obj, list) else str(obj)
    return [f"--{prefix}", value]


def run_one(suite: dict[str, Any], run: dict[str, Any], work: Path, results: Path,
            extra: list[str] | None = None) -> dict[str, Any]:
    """Run one entry in a subprocess (``extra``: more dotted overrides); returns its metrics."""
    cfg = merge_dicts(suite.get("base", {}), run.get("config", {}))
    cfg = merge_dicts(cfg, {"train": {"output_dir": str(work / suite["name"] / run["name"])}})
    args = [sys.executable, "-m", "petrec.models.sequential.run", *_flat("", cfg), *(extra or [])]
    tick = time.perf_counter()
    proc = subprocess.run(args, check=False)
    if proc.returncode:
        raise SystemExit(f"run {run['name']!r} failed with exit code {proc.returncode}: {shlex.join(args)}")
    metrics = json.loads((Path(cfg["train"]["output_dir"]) / "metrics.json").read_text(encoding="utf-8"))
    metrics.update(name=run["name"], label=run.get("label", run["name"]), command=shlex.join(args[1:]),
                   machine=machine(), subprocess_wall_seconds=time.perf_counter() - tick,
                   subprocess_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    write_json_atomic(results / f"{run['name']}.json", metrics, default=float)
    return metrics


def table(results: Path, ks: tuple[int, ...]) -> str:
    """Markdown table over every ``<run>.json`` in ``results``."""
    head = ["run"] + [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")] + ["steps (best)", "stopped by", "trainable",
                                                                          "%", "train s", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in sorted(results.glob("*.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        t = m.get("test", {})
        steps = f"{m['steps']:,} ({m.get('best_step', 0):,})" if m.get("steps") else "0"
        stop = ("time budget" if m.get("time_budget_hit") else "early stopping" if m.get("stopped_early")
                else "all epochs" if m.get("steps") else "-")
        cells = [m.get("label", path.stem)] + [f"{t.get(f'{x}@{k}', float('nan')):.4f}" for k in ks
                                                for x in ("hr", "ndcg")]
        rss = m.get("peak_memory", {}).get("cpu_peak_rss_mb", m.get("subprocess_peak_rss_mb", 0.0))
        cells += [steps, stop, f"{m['trainable_params']:,}", f"{m['trainable_percent']:.1f}",
                  f"{m.get('train_seconds', 0.0):.0f}", f"{rss:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(results: Path, ks: tuple[int, ...], groups: dict[str, str]) -> str:
    """Markdown table of each seed group's mean and 95% interval (runs sharing a ``group`` in the suite).

    Args:
        results: The suite's results folder (``<run>.json`` per run).
        ks: Cut-offs of the HR / NDCG columns.
        groups: Run name → group name; groups with fewer than two recorded runs are left out.
    """
    from petrec.bench.aggregate import mean_std_ci

    members: dict[str, list[dict[str, Any]]] = {}
    for name, group in groups.items():
        path = results / f"{name}.json"
        if path.is_file():
            members.setdefault(group, []).append(json.loads(path.read_text(encoding="utf-8")))
    cols = [(x, k) for k in ks for x in ("hr", "ndcg")]
    head = ["group", "runs"] + [f"{x.upper() if x == 'hr' else 'NDCG'}@{k} mean [95% CI]" for x, k in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, runs in members.items():
        if len(runs) < 2:
            continue
        cells = [group, ", ".join(str(r.get("name", "?")) for r in runs)]
        for x, k in cols:
            st = mean_std_ci([float(r.get("test", {}).get(f"{x}@{k}", float("nan"))) for r in runs])
            cells.append(f"{st['mean']:.4f} [{st['ci_low']:.4f}, {st['ci_high']:.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main(argv: list[str] | None = None) -> None:
    """Run the selected entries of a suite, then regenerate its results table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--work", default="/tmp/petrec_runs", help="folder for checkpoints and weights")
    parser.add_argument("--results", default=None, help="default: benchmarks/results/<suite name>")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--report-only", action="store_true", help="only print the table of existing results")
    args, extra = parser.parse_known_args(argv)
    suite = yaml.safe_load(Path(args.suite).read_text(encoding="utf-8"))
    results = Path(args.results or Path("benchmarks/results") / suite["name"])
    results.mkdir(parents=True, exist_ok=True)
    ks = tuple(suite.get("base", {}).get("ks", [10, 50]))
    if not args.report_only:
        wanted = {n for n in args.only.split(",") if n}
        unknown = wanted - {r["name"] for r in suite["runs"]}
        if unknown:
            raise SystemExit(f"--only names {sorted(unknown)} are not runs of {args.suite}")
        for run in suite["runs"]:
            if not wanted or run["name"] in wanted:
                run_one(suite, run, Path(args.work), results, extra)
    print(table(results, ks))
    seeds = seed_table(results, ks, {r["name"]: r["group"] for r in suite["runs"] if r.get("group")})
    if seeds:
        print("\nMean over seeds (runs sharing a `group`):\n\n" + seeds)


if __name__ == "__main__":
    main()
