"""Micro-benchmark: build every ctr example of MovieLens-1M (1,000,209 ratings) with petrec.data.

Measures, over ``--repeats`` runs (median reported):
  read      read_ml1m (gzip TSV + movies.dat)
  validate  validate_interactions (ids, rating range, duplicates, catalogue)
  build     build_examples: chronological sort, leave-one-out split, 10-item histories,
            labels (rating > 3), Arrow list columns and the rendered compact prompt text
  prepare   the whole petrec.data.prepare() (all of the above + datasets.DatasetDict + summary)

Usage:
    PETREC_DATA_DIR=../shared/data python benchmarks/data_build_bench.py \
        [--repeats 3] [--out benchmarks/results/data/ml1m_ctr_build.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa

from petrec.data import DataConfig, prepare, read_ml1m
from petrec.data.tasks import build_examples
from petrec.data.validate import validate_interactions
from petrec.paths import data_dir


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        mem_gib = int(mem.split()[1]) / 2**20
    except (OSError, StopIteration):
        mem_gib = float("nan")
    return (f"{os.cpu_count()} CPU cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, pandas {pd.__version__}, "
            f"pyarrow {pa.__version__}, datasets {datasets.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ml-1m/ (default $PETREC_DATA_DIR)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/data/ml1m_ctr_build.md")
    args = parser.parse_args()
    folder = data_dir(args.data_dir, dataset="ml-1m")
    root = folder.parent
    cfg = DataConfig(dataset="ml-1m", data_dir=str(root), task="ctr", protocol="loo", history_len=10)
    times: dict[str, list[float]] = {"read": [], "validate": [], "build": [], "prepare": []}
    n_examples = n_rows = n_users = 0
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tables = read_ml1m(folder)
        t1 = time.perf_counter()
        inter, _ = validate_interactions(tables.interactions, tables.source, rating_range=(1, 5),
                                         catalogue=tables.items["item_id"], require_rating=True)
        t2 = time.perf_counter()
        splits, _info = build_examples(inter, tables.items["item_id"].to_numpy(dtype=object),
                                       tables.items["title"].to_numpy(dtype=object), cfg, implicit=False,
                                       noun="movie")
        t3 = time.perf_counter()
        data = prepare(cfg)
        t4 = time.perf_counter()
        n_rows, n_users = len(inter), inter["user_id"].nunique()
        n_examples = sum(t.num_rows for t in splits.values())
        assert n_examples == sum(d.num_rows for d in data.splits.values())
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(value)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# ml-1m: building every ctr example (petrec.data micro-benchmark)",
        "",
        f"Command: `PETREC_DATA_DIR=../shared/data python benchmarks/data_build_bench.py --repeats {args.repeats}`",
        "",
        f"Machine: {_machine()}.",
        f"Load average (1/5/15 min) before: {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
        f"after: {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} "
        "(the machine was shared with other jobs; times are wall-clock).",
        "",
        f"Input: {n_rows:,} ratings (ml-1m/ratings_chrono.tsv.gz), {n_users:,} users. Output: {n_examples:,} ctr "
        "examples (every rating with at least one earlier rating of the same user; leave-one-out split; "
        "10-item history with labels and ratings; label = rating > 3; compact prompt text rendered).",
        "",
        "| stage | median s | runs (s) | examples/s |",
        "|---|---|---|---|",
    ]
    for key in times:
        runs = ", ".join(f"{t:.2f}" for t in times[key])
        rate = f"{n_examples / med[key]:,.0f}" if key in ("build", "prepare") else "—"
        lines.append(f"| {key} | {med[key]:.2f} | {runs} | {rate} |")
    total = med["prepare"]
    lines += ["", f"Whole pipeline (`prepare`, read → examples): **{total:.1f} s** "
              f"({'meets' if total < 30 else 'MISSES'} the < 30 s goal)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
