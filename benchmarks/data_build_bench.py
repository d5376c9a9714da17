"""Micro-benchmark: build every ctr example of MovieLens-1M (1,000,209 ratings) with petrec.data.

Measures, over ``--repeats`` runs (median reported, every run listed):
  read      read_ml1m (gzip TSV + movies.dat)
  validate  validate_interactions (ids, rating range, duplicates, catalogue)
  build     build_examples alone: chronological sort, leave-one-out split, 10-item history
            windows, labels (rating > 3), Arrow list columns and the rendered compact prompts
  prepare   the whole petrec.data.prepare() (all of the above + datasets.DatasetDict + summary)

and, around the build and prepare runs, how much CPU other processes took
(:class:`petrec.bench.system.CpuSharingMeter`). Writes the JSON record (``--out``) and renders the
Markdown beside it from that JSON alone (``--render-only`` re-renders an existing record);
``--previous`` quotes an earlier record (e.g. of the code before a change) as "before".

Usage:
    PETREC_DATA_DIR=../shared/data python benchmarks/data_build_bench.py \
        [--repeats 3] [--out benchmarks/results/data/ml1m_ctr_build.json] [--previous OLD.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from petrec.bench.system import (
    SHARED_CPU_SHARE,
    CpuSharingMeter,
    describe_machine,
    git_state,
    machine,
    versions,
    write_record,
)
from petrec.data import DataConfig, prepare, read_ml1m
from petrec.data.tasks import build_examples
from petrec.data.validate import validate_interactions
from petrec.files import write_text_atomic
from petrec.paths import data_dir

GOAL_EXAMPLES_PER_S = 200_000
STAGES = ("read", "validate", "build", "prepare")


def _usage() -> tuple[float, float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime, ru.ru_minflt


def _timed(fn: Callable[[], Any], meter: bool = False) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Run ``fn``: its result, its wall seconds and own CPU (user, system, minor page faults), and
    (when ``meter``) the CPU-sharing record."""
    sharing = CpuSharingMeter() if meter else None
    if sharing is not None:
        sharing.start()
    before, start = _usage(), time.perf_counter()
    out = fn()
    seconds, after = time.perf_counter() - start, _usage()
    own = {"wall_s": seconds, "user_s": after[0] - before[0], "sys_s": after[1] - before[1],
           "minor_faults": after[2] - before[2]}
    return out, own, sharing.stop() if sharing is not None else None


def _repeat(folder: Path, cfg: DataConfig) -> dict[str, Any]:
    """One measured repeat of every stage."""
    tables, read, _ = _timed(lambda: read_ml1m(folder))
    (inter, _report), validate, _ = _timed(lambda: validate_interactions(
        tables.interactions, tables.source, rating_range=(1, 5), catalogue=tables.items["item_id"],
        require_rating=True))
    (splits, _info), build, build_sharing = _timed(lambda: build_examples(
        inter, tables.items["item_id"].to_numpy(dtype=object), tables.items["title"].to_numpy(dtype=object),
        cfg, implicit=False, noun="movie"), meter=True)
    built = sum(t.num_rows for t in splits.values())
    del splits
    data, whole, prepare_sharing = _timed(lambda: prepare(cfg), meter=True)
    examples = sum(d.num_rows for d in data.splits.values())
    if examples != built:
        raise RuntimeError(f"prepare built {examples} examples, build_examples {built}")
    return {"examples": examples, "ratings": len(inter), "users": int(inter["user_id"].nunique()),
            "own": {"read": read, "validate": validate, "build": build, "prepare": whole},
            "cpu_sharing": {"build": build_sharing, "prepare": prepare_sharing}}


def _command(argv: list[str]) -> str:
    prefix = "PETREC_DATA_DIR=../shared/data " if os.environ.get("PETREC_DATA_DIR") else ""
    if os.environ.get("PYTHONPATH"):  # e.g. an older checkout of petrec measured by this script
        prefix = f"PYTHONPATH={os.environ['PYTHONPATH']} " + prefix
    return prefix + shlex.join(["python", "benchmarks/data_build_bench.py", *argv])


def _versions() -> dict[str, str | None]:
    out = versions()
    for dist in ("pandas", "pyarrow", "xxhash"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def previous_summary(path: Path) -> dict[str, Any]:
    """The headline of an earlier record (e.g. the code before a change, measured by this script)."""
    old = json.loads(path.read_text(encoding="utf-8"))
    keys = ("created_utc", "examples_per_s", "examples_per_s_runs", "build_examples_per_s", "git")
    return {"record": str(path), **{k: old[k] for k in keys},
            "prepare_other_share": [(r.get("prepare") or {}).get("other_share") for r in old["cpu_sharing"]]}


def measure(folder: Path, repeats: int, argv: list[str], previous: Path | None = None) -> dict[str, Any]:
    """Run the benchmark and return its JSON record.

    Args:
        folder: The ml-1m folder.
        repeats: Measured repeats (at least 3 for a median).
        argv: The command-line arguments, for the record.
        previous: An earlier record to quote beside this one (None: none).

    Returns:
        The record (see the module docstring).
    """
    cfg = DataConfig(dataset="ml-1m", data_dir=str(folder.parent), task="ctr", protocol="loo", history_len=10)
    load_before = os.getloadavg()
    runs = [_repeat(folder, cfg) for _ in range(repeats)]
    load_after = os.getloadavg()
    examples = runs[0]["examples"]
    rate = {stage: [examples / r["own"][stage]["wall_s"] for r in runs] for stage in ("build", "prepare")}
    info = machine()
    return {
        "benchmark": "ml1m_ctr_build",
        "what": "every ctr example of ml-1m (leave-one-out, 10-item history, label = rating > 3, "
                "compact prompt text) built by petrec.data.prepare",
        "command": _command(argv),
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg.to_dict() | {"data_dir": "$PETREC_DATA_DIR"},
        "input": {"ratings": runs[0]["ratings"], "users": runs[0]["users"], "file": "ml-1m/ratings_chrono.tsv.gz"},
        "examples": examples,
        "repeats": repeats,
        "examples_per_s": statistics.median(rate["prepare"]),
        "examples_per_s_runs": rate["prepare"],
        "build_examples_per_s": statistics.median(rate["build"]),
        "build_examples_per_s_runs": rate["build"],
        "stage_seconds": {s: [r["own"][s]["wall_s"] for r in runs] for s in STAGES},
        "stage_own_cpu": {s: [{k: v for k, v in r["own"][s].items() if k != "wall_s"} for r in runs] for s in STAGES},
        "cpu_sharing": [r["cpu_sharing"] for r in runs],
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "goal_examples_per_s": GOAL_EXAMPLES_PER_S,
        "goal_met": statistics.median(rate["prepare"]) >= GOAL_EXAMPLES_PER_S,
        "previous": previous_summary(previous) if previous else None,
        "machine": info,
        "machine_summary": describe_machine(info),
        "versions": _versions(),
        "git": git_state(),
    }


def _share(record: dict[str, Any], stage: str) -> list[float | None]:
    return [(run.get(stage) or {}).get("other_share") for run in record["cpu_sharing"]]


def _fmt_shares(shares: list[float | None]) -> str:
    return ", ".join("n/a" if s is None else f"{s:.2f}" for s in shares)


def _stage_rows(record: dict[str, Any]) -> list[str]:
    rows = ["| stage | median s | runs (s) | examples/s (median; runs) | other processes' CPU share per run "
            "| own CPU s per run (system part) | minor page faults per run |",
            "|---|---|---|---|---|---|---|"]
    rates = {"build": record["build_examples_per_s_runs"], "prepare": record["examples_per_s_runs"]}
    for stage, runs in record["stage_seconds"].items():
        rate = (f"{statistics.median(rates[stage]):,.0f}; " + ", ".join(f"{r:,.0f}" for r in rates[stage])
                if stage in rates else "—")
        share = _fmt_shares(_share(record, stage)) if stage in rates else "—"
        own = record["stage_own_cpu"][stage]
        cpu = ", ".join(f"{u['user_s'] + u['sys_s']:.2f} ({u['sys_s']:.2f})" for u in own)
        faults = ", ".join(f"{u['minor_faults']:,}" for u in own)
        rows.append(f"| {stage} | {statistics.median(runs):.2f} | {', '.join(f'{s:.2f}' for s in runs)} "
                    f"| {rate} | {share} | {cpu} | {faults} |")
    return rows


def render_markdown(record: dict[str, Any]) -> str:
    """The Markdown report of a record (everything in it comes from the record).

    Args:
        record: What :func:`measure` returned (or the JSON file holds).

    Returns:
        The Markdown text.
    """
    shares = [s for s in _share(record, "prepare") if s is not None]
    shared = bool(shares) and max(shares) > SHARED_CPU_SHARE
    rate, goal = record["examples_per_s"], record["goal_examples_per_s"]
    git = record["git"]
    versions_line = ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)
    load = record["load_average"]
    prev = record.get("previous") or {}
    lines = [
        "# ml-1m: building every ctr example (petrec.data micro-benchmark)",
        "",
        "Rendered from `ml1m_ctr_build.json` (the record) by `benchmarks/data_build_bench.py`.",
        "",
        f"Command: `{record['command']}` ({record['repeats']} repeats, {record['created_utc']}).",
        "",
        f"Machine: {record['machine_summary']}; {record['machine'].get('platform')}.",
        f"Versions: {versions_line}.",
        f"Git: {git.get('commit')} ({'uncommitted changes' if git.get('dirty') else 'clean'}).",
        "",
        f"Input: {record['input']['ratings']:,} ratings ({record['input']['file']}), "
        f"{record['input']['users']:,} users. Output: {record['examples']:,} examples: {record['what']}.",
        "",
        *_stage_rows(record),
        "",
        "CPU sharing: other processes' share of the machine's CPU while each run measured "
        f"(`cpu_sharing.other_share`; 0 = idle): prepare {_fmt_shares(_share(record, 'prepare'))}; "
        f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load['before'])}, "
        f"after {'/'.join(f'{x:.1f}' for x in load['after'])}.",
        ("**Measured on a shared machine**: other work took CPU during the runs, so these are not idle "
         "figures (times are wall-clock)." if shared else "The machine was (nearly) idle during the runs."),
        "",
        f"Whole `prepare` (read → examples): **{rate:,.0f} examples/s** (median of {record['repeats']}); "
        f"goal ≥ {goal:,} examples/s: **{'met' if record['goal_met'] else 'NOT met'}**. "
        f"Example building alone: {record['build_examples_per_s']:,.0f} examples/s.",
    ]
    if prev:
        lines += ["", f"Before: `{prev['record']}` (commit {prev['git'].get('commit')}, "
                      f"{prev['created_utc']}, same script): **{prev['examples_per_s']:,.0f} examples/s** for the "
                      f"whole `prepare` (runs {', '.join(f'{r:,.0f}' for r in prev['examples_per_s_runs'])}; "
                      f"other processes' CPU share {_fmt_shares(prev['prepare_other_share'])}), "
                      f"{prev['build_examples_per_s']:,.0f} for the build alone."]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure, write the JSON record and render the Markdown beside it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ml-1m/ (default $PETREC_DATA_DIR)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/data/ml1m_ctr_build.json")
    parser.add_argument("--render-only", action="store_true", help="re-render the .md from the existing --out")
    parser.add_argument("--previous", default=None, help="an earlier record (JSON) to quote as 'before'")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.render_only:
        if args.repeats < 3:
            parser.error("--repeats must be at least 3 (the record reports a median)")
        record = measure(data_dir(args.data_dir, dataset="ml-1m"), args.repeats, sys.argv[1:],
                         Path(args.previous) if args.previous else None)
        write_record(out, record)
    text = render_markdown(json.loads(out.read_text(encoding="utf-8")))
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
