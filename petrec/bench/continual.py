"""Continual fine-tuning results (``benchmarks/continual.py``): records → summary → REPORT.md and plots.

The driver trains one model per (job, period, seed) and writes one record per trained model;
everything here is computed from those records alone, so the report quotes nothing else.

Strategies and the job that serves each (period ``p``, periods counted from 1):

- ``warm``: LoRA trained on period p from the adapter of ``warm`` at p-1 (``init_adapter``);
- ``scratch``: LoRA trained on period p from the pretrained base (fresh adapter and head);
- ``full``: every weight trained on period p from the pretrained base;
- ``replay``: as ``warm``, with a sample of earlier periods' training examples mixed in
  (``data.period_replay``).

At period 1 no earlier adapter or data exists, so ``warm`` and ``replay`` *are* ``scratch``
there: one run serves all three (:func:`job_for`).

Forgetting of period q after period p (q < p) = test metric of the strategy's model right
after q was learned, on q's test split, minus that of its model after p on the same split
(positive = worse now). For the from-scratch strategies it says how well a model trained on the
newest period alone still serves an older one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from petrec.bench.aggregate import mean_std_ci
from petrec.bench.plots import pyplot, save_figure
from petrec.bench.report import MISSING, format_table
from petrec.bench.system import SHARED_CPU_SHARE, describe_machine, write_record
from petrec.files import read_json_object, write_text_atomic

STRATEGIES = ("warm", "scratch", "full", "replay")
#: What each strategy is, for the report.
STRATEGY_TEXT = {
    "warm": "LoRA, warm start: trained on period p from the adapter of period p-1",
    "scratch": "LoRA from scratch: trained on period p from the pretrained base",
    "full": "full fine-tuning from scratch on period p",
    "replay": "LoRA, warm start + replay: as warm, with earlier periods' training examples mixed in",
}
RUNS_DIR = "runs"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "REPORT.md"
PLOTS_DIR = "plots"


class ContinualError(ValueError):
    """A results folder or record the report cannot use (named)."""


def job_for(strategy: str, period: int) -> str:
    """The trained job that serves ``strategy`` at ``period`` (warm and replay start as scratch)."""
    if strategy not in STRATEGIES:
        raise ContinualError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return "scratch" if strategy in ("warm", "replay") and period == 1 else strategy


def record_name(job: str, period: int, seed: int) -> str:
    """File name of one trained model's record, e.g. ``warm__p2__s1.json``."""
    return f"{job}__p{period}__s{seed}.json"


def load_records(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record under ``RESULTS/runs/`` (sorted by name)."""
    folder = Path(results_dir) / RUNS_DIR
    return [read_json_object(p, ContinualError, "a continual run record") for p in sorted(folder.glob("*.json"))]


def _index(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, int], Mapping[str, Any]]:
    out = {}
    for rec in records:
        info = rec.get("run_info") or {}
        if info.get("status") == "ok":
            out[(str(info["job"]), int(info["period"]), int(info["seed"]))] = rec
    return out


def strategies_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The strategies a measurement planned: those its records serve (``run_info.strategies``) or are jobs of."""
    named = set()
    for rec in records:
        info = rec.get("run_info") or {}
        named.update(info.get("strategies") or [])
        named.add(info.get("job"))
    return [s for s in STRATEGIES if s in named]


def metric_matrix(records: Sequence[Mapping[str, Any]], metric: str = "auc"
                  ) -> dict[tuple[str, int], dict[tuple[int, int], float]]:
    """(strategy, seed) → {(trained through period p, evaluated on period q): metric}, from the records.

    A record's ``eval`` maps each period q ≤ p (as text) to the metrics of its model on q's test split.
    """
    idx = _index(records)
    seeds = sorted({seed for (_, _, seed) in idx})
    periods = sorted({p for (_, p, _) in idx})
    out: dict[tuple[str, int], dict[tuple[int, int], float]] = {}
    for strategy in strategies_of(records):
        for seed in seeds:
            cells = {}
            for p in periods:
                rec = idx.get((job_for(strategy, p), p, seed))
                for q, metrics in ((rec or {}).get("eval") or {}).items():
                    value = (metrics or {}).get(metric)
                    if value is not None and not math.isnan(float(value)):
                        cells[(p, int(q))] = float(value)
            if cells:
                out[(strategy, seed)] = cells
    return out


def forgetting(cells: Mapping[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    """{(p, q): metric after q on q − metric after p on q} for every q < p with both measured."""
    return {(p, q): cells[(q, q)] - value for (p, q), value in cells.items() if q < p and (q, q) in cells}


def average_forgetting(drops: Mapping[tuple[int, int], float], period: int) -> float:
    """Mean forgetting of every earlier period after ``period`` (NaN when none was measured)."""
    values = [v for (p, _), v in drops.items() if p == period]
    return sum(values) / len(values) if values else math.nan


def _stats_rows(values: Mapping[tuple, list[float]], names: Sequence[str]) -> list[dict[str, Any]]:
    return [{**dict(zip(names, key, strict=True)), **mean_std_ci(vals)} for key, vals in sorted(values.items())]


def summarize(records: Sequence[Mapping[str, Any]], metric: str = "auc") -> dict[str, Any]:
    """Everything the report prints, computed from the records (means and 95% intervals over seeds).

    Returns:
        ``metric``, ``strategies``, ``periods``, ``seeds``, ``cells`` (metric of the model after p on
        q's test), ``forgetting`` (per p > q), ``average_forgetting`` (per p ≥ 2), ``train_seconds``
        (the recipe's training wall time of the job serving each strategy and period), and ``failed``.
    """
    matrix = metric_matrix(records, metric)
    by_cell: dict[tuple, list[float]] = {}
    by_drop: dict[tuple, list[float]] = {}
    by_avg: dict[tuple, list[float]] = {}
    for (strategy, _seed), cells in matrix.items():
        for (p, q), v in cells.items():
            by_cell.setdefault((strategy, p, q), []).append(v)
        drops = forgetting(cells)
        for (p, q), v in drops.items():
            by_drop.setdefault((strategy, p, q), []).append(v)
        for p in sorted({p for p, _ in drops}):
            by_avg.setdefault((strategy, p), []).append(average_forgetting(drops, p))
    idx = _index(records)
    by_time: dict[tuple, list[float]] = {}
    for strategy in {s for s, _ in matrix}:
        for (job, p, _seed), rec in idx.items():
            if job == job_for(strategy, p):
                seconds = (rec.get("metrics") or {}).get("wall_seconds")
                if seconds is not None:
                    by_time.setdefault((strategy, p), []).append(float(seconds))
    failed = [{"run_id": (r.get("run_info") or {}).get("run_id"), "status": (r.get("run_info") or {}).get("status"),
               "error": (r.get("run_info") or {}).get("error")}
              for r in records if (r.get("run_info") or {}).get("status") != "ok"]
    shares = [float(share) for rec in idx.values()
              if (share := (((rec.get("train_info") or {}).get("cpu_sharing") or {}).get("other_share"))) is not None]
    return {
        "metric": metric,
        "cpu_other_share": {"min": min(shares), "max": max(shares), "n": len(shares)} if shares else None,
        "strategies": strategies_of(records),
        "periods": sorted({p for (_, p, _) in idx}),
        "seeds": sorted({seed for (_, _, seed) in idx}),
        "cells": _stats_rows(by_cell, ("strategy", "period", "eval_period")),
        "forgetting": _stats_rows(by_drop, ("strategy", "period", "eval_period")),
        "average_forgetting": _stats_rows(by_avg, ("strategy", "period")),
        "train_seconds": _stats_rows(by_time, ("strategy", "period")),
        "failed": failed,
    }


def fmt_stat(row: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.7123`` for one run, ``0.7123 ± 0.0100 [0.700, 0.725] (n=3)`` for several, ``—`` when missing."""
    if not row or row.get("n", 0) == 0 or row.get("mean") is None or math.isnan(row["mean"]):
        return MISSING
    text = f"{row['mean']:.{digits}f}"
    if row["n"] >= 2 and row.get("std") is not None and not math.isnan(row["std"]):
        text += f" ± {row['std']:.{digits}f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] (n={row['n']})"
    return text


def _count(x: Any) -> str:
    return MISSING if x is None else f"{int(x):,}"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (lines[-1][-300:] if lines else MISSING).replace("|", "/")


def _lookup(rows: Sequence[Mapping[str, Any]], **keys: Any) -> Mapping[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def render(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """REPORT.md text from :func:`summarize`'s output and the driver's ``meta`` (command, machine, data)."""
    metric, strategies, periods = summary["metric"].upper(), summary["strategies"], summary["periods"]
    n_seeds = len(summary["seeds"])
    settings = meta.get("settings") or {}
    lines = [f"# Continual fine-tuning: {meta.get('title', 'time-sliced P2')}", ""]
    lines += [f"Generated by `{meta.get('command', '?')}` from the records in `runs/` "
              "(one JSON per trained model) and `summary.json`; every number below is computed from them.", ""]
    git = meta.get("git") or {}
    lines += [f"- machine: {describe_machine(meta.get('machine') or {})}",
              f"- git commit: {git.get('commit', '?')}" + (" (uncommitted changes)" if git.get("dirty") else ""),
              f"- started {meta.get('started', '?')}, ended {meta.get('ended', '?')}",
              f"- seeds: {', '.join(str(s) for s in summary['seeds']) or MISSING}"]
    for key, text in (settings.get("describe") or {}).items():
        lines.append(f"- {key}: {text}")
    share = summary.get("cpu_other_share")
    if share:
        lines.append(f"- CPU taken by other processes during the training runs: {100 * share['min']:.0f}–"
                     f"{100 * share['max']:.0f}% of the machine (`train_info.cpu_sharing`, {share['n']} runs); "
                     "wall times are those of a shared machine" + (" and not clean speeds"
                                                                   if share["max"] > SHARED_CPU_SHARE else ""))
    lines += ["", "Strategies:", ""] + [f"- `{s}`: {STRATEGY_TEXT[s]}" for s in strategies]
    lines += ["", "At period 1 `warm` and `replay` are the `scratch` run (nothing earlier to start from or replay)."]
    if n_seeds < 2:
        lines += ["", "One seed per cell: no interval, and a difference between two cells is one run against "
                      "one run, so no strategy is said to beat another here (not distinguishable)."]
    data = meta.get("data") or {}
    if data:
        lines += ["", "## Periods", "", format_table(
            ["period", "from", "to", "examples (all)", "train used", "valid used", "test used"],
            [[str(p["period"]), p.get("start", MISSING), p.get("end", MISSING),
              *(_count(p.get(k)) for k in ("examples", "train", "valid", "test"))] for p in data.get("periods", [])])]
        if data.get("note"):
            lines += ["", data["note"]]
    cells = summary["cells"]
    lines += ["", f"## Test {metric} on the newest period (what each strategy gains on new data)", ""]
    lines.append(format_table(["strategy", *(f"period {p}" for p in periods)],
                              [[s, *(fmt_stat(_lookup(cells, strategy=s, period=p, eval_period=p)) for p in periods)]
                               for s in strategies]))
    lines += ["", f"## Test {metric} on every period so far", "",
              "Row = the model after training on period p; column = the test split of period q (q ≤ p).", ""]
    for s in strategies:
        lines += [f"`{s}`:", "", format_table(
            ["after", *(f"period {q} test" for q in periods)],
            [[f"period {p}", *(fmt_stat(_lookup(cells, strategy=s, period=p, eval_period=q)) if q <= p else ""
                               for q in periods)] for p in periods]), ""]
    drops = summary["forgetting"]
    pairs = sorted({(r["period"], r["eval_period"]) for r in drops})
    lines += [f"## Forgetting ({metric} right after period q was learned − {metric} after period p, on q's test)", ""]
    if pairs:
        avg = summary["average_forgetting"]
        last = max(p for p, _ in pairs)
        lines.append(format_table(
            ["strategy", *(f"q={q} after p={p}" for p, q in pairs), f"mean over q < {last}, after p={last}"],
            [[s, *(fmt_stat(_lookup(drops, strategy=s, period=p, eval_period=q)) for p, q in pairs),
              fmt_stat(_lookup(avg, strategy=s, period=last))] for s in strategies]))
        lines += ["", "Positive = the model got worse on the older period. For `scratch` and `full` the later "
                      "model never saw period q: the number says how well a model of the newest period alone "
                      "serves the older one. A later period's training examples may carry period q's "
                      "interactions (test ones included) in their histories, as inputs, never as targets: by "
                      "then they are the users' past."]
    else:
        lines.append(MISSING + " (needs two periods of one strategy)")
    times = summary["train_seconds"]
    lines += ["", "## Training wall time (s, the recipe's training loop incl. its validation pass)", "",
              format_table(["strategy", *(f"period {p}" for p in periods)],
                           [[s, *(fmt_stat(_lookup(times, strategy=s, period=p), 0) for p in periods)]
                            for s in strategies])]
    if summary["failed"]:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- `{f['run_id']}`: {f['status']}: {_last_line(f.get('error'))}" for f in summary["failed"]]
    plots = meta.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _series(rows: Sequence[Mapping[str, Any]], strategy: str, keys: Sequence[tuple[str, Any]]
            ) -> tuple[list[float], list[float]]:
    means, halves = [], []
    for key in keys:
        row = _lookup(rows, strategy=strategy, **dict(key)) or {}
        mean = row.get("mean", math.nan)
        means.append(math.nan if mean is None else mean)
        low = row.get("ci_low")
        halves.append(0.0 if low is None or math.isnan(low) else mean - low)
    return means, halves


def _runs_note(summary: Mapping[str, Any]) -> str:
    return "\n(one run per bar / point: no interval)" if len(summary["seeds"]) < 2 else "\n(95% intervals over seeds)"


def make_plots(summary: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> list[str]:
    """Write ``metric_per_period.png``, ``forgetting.png`` and ``train_time.png``; return their paths
    relative to ``out_dir``'s parent (as REPORT.md links them). A plot with no number is skipped."""
    plt, out, written = pyplot(), Path(out_dir), []
    strategies, periods, metric = summary["strategies"], summary["periods"], summary["metric"].upper()
    if summary["cells"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, s in enumerate(strategies):
            means, halves = _series(summary["cells"], s, [(("period", p), ("eval_period", p)) for p in periods])
            ax.errorbar([p + (i - 1.5) * 0.05 for p in periods], means, yerr=halves if any(halves) else None,
                        marker="o", capsize=3, label=s)
        ax.set(xlabel="period (trained on, tested on)", ylabel=f"test {metric}", xticks=periods,
               title=f"Test {metric} on the newest period" + _runs_note(summary))
        ax.legend()
        save_figure(fig, out / "metric_per_period.png")
        written.append("metric_per_period.png")
    pairs = sorted({(r["period"], r["eval_period"]) for r in summary["forgetting"]})
    for name, rows, keys, labels, ylabel, title in (
        ("forgetting.png", summary["forgetting"], [(("period", p), ("eval_period", q)) for p, q in pairs],
         [f"q={q}\nafter p={p}" for p, q in pairs], f"{metric} drop on period q",
         f"Forgetting ({metric} after q − after p, on q's test)"),
        ("train_time.png", summary["train_seconds"], [(("period", p),) for p in periods],
         [f"period {p}" for p in periods], "training wall time (s)", "Training wall time per period"),
    ):
        if not rows or not keys:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(keys)), 4))
        width = 0.8 / max(1, len(strategies))
        for i, s in enumerate(strategies):
            means, halves = _series(rows, s, keys)
            ax.bar([k + i * width for k in range(len(keys))], means, width, yerr=halves if any(halves) else None,
                   capsize=3, label=s)
        ax.set_xticks([k + width * (len(strategies) - 1) / 2 for k in range(len(keys))], labels)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set(ylabel=ylabel, title=title + _runs_note(summary))
        ax.legend()
        save_figure(fig, out / name)
        written.append(name)
    return [f"{out.name}/{name}" for name in written]


def write_outputs(results_dir: str | os.PathLike[str], meta: Mapping[str, Any], *, plots: bool = True
                  ) -> dict[str, Any]:
    """Recompute ``summary.json``, the plots and ``REPORT.md`` of a results folder from its records.

    Args:
        results_dir: The folder holding ``runs/``.
        meta: The driver's facts (command, machine, git, settings, data, started / ended).
        plots: Draw the plots (matplotlib).

    Returns:
        The summary as written.
    """
    results = Path(results_dir)
    records = load_records(results)
    if not records:
        raise ContinualError(f"{results / RUNS_DIR}: no run records to report")
    summary = summarize(records)
    drawn = make_plots(summary, results / PLOTS_DIR) if plots else []
    document = {**meta, "plots": drawn, "records": sorted(p.name for p in (results / RUNS_DIR).glob("*.json")),
                "summary": summary}
    write_record(results / SUMMARY_FILE, document)
    write_text_atomic(results / REPORT_FILE, render(summary, {**meta, "plots": drawn}))
    return summary
