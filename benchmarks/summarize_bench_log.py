"""Table of test metrics from the progress lines of ``petrec bench`` logs (mean ± std over seeds).

For runs whose JSON records were lost but whose runner log survived (the runner prints one
``[i/n] <run_id>: ok in … (auc=…, …)`` line per finished run). Prints a Markdown table.

    python benchmarks/summarize_bench_log.py benchmarks/results/ml100k-ctr/gpu_session_*.log
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"\] (?P<run>(?P<exp>[\w.-]+?)__[\w.-]+__(?P<method>[\w.-]+)__k(?P<k>\w+)__s(?P<seed>\d+)): ok in "
                  r"(?P<secs>[\d.]+) s \((?P<metrics>[^)]*)\)")


def parse(paths: list[Path], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """``(method, column) -> {seed: metric}`` over every finished run line in ``paths``.

    The column is ``k=<size>`` for P1 experiments and the experiment name otherwise.
    """
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            m = LINE.search(line)
            if not m:
                continue
            values = dict(kv.split("=", 1) for kv in m["metrics"].split(", ") if "=" in kv)
            if metric in values:
                column = f"k={m['k']}" if m["exp"].startswith("P1") else m["exp"]
                out[(m["method"], column)][m["seed"]] = float(values[metric])
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--metric", default="auc")
    args = parser.parse_args(argv)
    cells = parse(args.logs, args.metric)
    def order(col: str) -> tuple[int, int]:
        size = col.removeprefix("k=")
        return (0 if col.startswith("k=") and size.isdigit() else 1 if col == "k=full" else 2,
                int(size) if size.isdigit() else 0)

    ks = sorted({k for _, k in cells}, key=order)
    methods = list(dict.fromkeys(m for m, _ in cells))
    print("| method | " + " | ".join(ks) + " |")
    print("|---|" + "---|" * len(ks))
    for method in methods:
        row = []
        for k in ks:
            seeds = cells.get((method, k), {})
            vals = [seeds[s] for s in sorted(seeds)]
            if not vals:
                row.append("—")
            elif len(vals) == 1:
                row.append(f"{vals[0]:.4f} (n=1)")
            else:
                row.append(f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} (n={len(vals)}: "
                           + ", ".join(f"{v:.3f}" for v in vals) + ")")
        print(f"| {method} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
