"""PNG plots of a summary (matplotlib, Agg backend): metric vs trainable parameters, peak memory, Pareto front.

Per report table: ``<table>__metric_vs_params.png`` (log x, mean ± std over seeds, one
series per few-shot size, baselines and published references as horizontal lines),
``<table>__peak_memory.png`` (bars per method, one group per variant) and
``<table>__pareto.png`` (test metric vs peak memory with the Pareto front). A plot whose
numbers are all missing is skipped rather than drawn empty.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petrec.bench.aggregate import lower_is_better


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _k_sort(label: str) -> float:
    return math.inf if label == "full" else float(label)


def primary_k(part: pd.DataFrame) -> str:
    """The few-shot size with the most successful method runs (ties: the largest)."""
    methods = part[part["kind"] != "baseline"]
    counts = methods.groupby("k_label")["n_ok"].sum()
    if counts.empty:
        return str(part["k_label"].iloc[0])
    best = counts.max()
    return max((k for k, c in counts.items() if c == best), key=_k_sort)


def metric_vs_params(part: pd.DataFrame, table: str, refs: dict[str, dict[str, float]], path: Path) -> bool:
    """Test metric (mean ± std) against trainable parameters, log x. Returns False when nothing to draw."""
    metric = part["metric"].iloc[0]
    methods = part[(part["kind"] != "baseline") & part["metric_mean"].notna() & (part["trainable_params"] > 0)]
    if not metric or methods.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ks = sorted(methods["k_label"].unique(), key=_k_sort)
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(ks), 1)))
    for color, k in zip(colors, ks, strict=True):
        sub = methods[methods["k_label"] == k]
        label = None
        if len(ks) > 1 or k != "full":
            label = f"k={k}"
        ax.errorbar(sub["trainable_params"], sub["metric_mean"], yerr=sub["metric_std"].fillna(0), fmt="o",
                    color=color, capsize=3, label=label)
        for _, r in sub.iterrows():
            ax.annotate(r["method"], (r["trainable_params"], r["metric_mean"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7, color=color)
    base = part[(part["kind"] == "baseline") & part["metric_mean"].notna()]
    if not base.empty:
        k0 = primary_k(part)
        for i, (_, r) in enumerate(base[base["k_label"] == k0].iterrows()):
            ax.axhline(r["metric_mean"], ls="--", lw=1, color=f"C{i + 3}",
                       label=f"{r['method']} (baseline, k={k0})")
    for i, (label, values) in enumerate(refs.items()):
        for k in ks:
            if k in values:
                ax.axhline(values[k], ls=":", lw=1, color=f"C{i}", label=f"{label} k={k} (published)")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"test {metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
    ax.set_title(f"{table}: test {metric} vs trainable parameters")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    _save(fig, path)
    plt.close(fig)
    return True


def peak_memory(part: pd.DataFrame, table: str, path: Path) -> bool:
    """Grouped bars of peak memory per method (one group per variant) at the primary few-shot size."""
    methods = part[(part["kind"] != "baseline")]
    rows = []
    for variant, vpart in methods.groupby("variant", sort=False):
        k = primary_k(vpart)
        rows.append((variant, vpart[vpart["k_label"] == k]))
    if all(r["memory_mb"].isna().all() for _, r in rows):
        return False
    plt = _plt()
    names = list(dict.fromkeys(m for _, r in rows for m in r["method"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(names) * max(len(rows), 1)), 4.5))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(names))
    for i, (variant, r) in enumerate(rows):
        vals = [float(r.loc[r["method"] == m, "memory_mb"].iloc[0]) if (r["method"] == m).any() else np.nan
                for m in names]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=str(variant))
        for b, v in zip(bars, vals, strict=True):
            if not math.isnan(v):
                ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=6)
    source = next((s for s in part["memory_source"] if s), "peak memory")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(f"MB: {source}")
    ax.set_title(f"{table}: peak memory per method")
    ax.grid(axis="y", alpha=0.3)
    if len(rows) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def pareto_front(points: list[tuple[float, float, str]], lower_better: bool) -> list[tuple[float, float, str]]:
    """Points not dominated on (memory ↓, metric ↑ or ↓), sorted by memory.

    A point is on the front when no other point has memory ≤ and a metric at least as good
    with one of them strictly better.
    """
    front = []
    for mem, val, name in points:
        dominated = False
        for m2, v2, _ in points:
            better = v2 <= val if lower_better else v2 >= val
            strictly = m2 < mem or (v2 < val if lower_better else v2 > val)
            if m2 <= mem and better and strictly:
                dominated = True
                break
        if not dominated:
            front.append((mem, val, name))
    return sorted(front)


def pareto(part: pd.DataFrame, table: str, path: Path) -> bool:
    """Test metric against peak memory at the primary few-shot size, with the Pareto front."""
    metric = part["metric"].iloc[0]
    k = primary_k(part)
    sub = part[(part["k_label"] == k) & (part["kind"] != "baseline") & part["metric_mean"].notna()
               & part["memory_mb"].notna()]
    if not metric or sub.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    low = lower_is_better(metric)
    for variant, vsub in sub.groupby("variant", sort=False):
        pts = [(float(r["memory_mb"]), float(r["metric_mean"]), r["method"]) for _, r in vsub.iterrows()]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=f"{variant} runs", zorder=3)
        for m, v, name in pts:
            ax.annotate(name, (m, v), textcoords="offset points", xytext=(4, 3), fontsize=7)
        front = pareto_front(pts, low)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", lw=1.5,
                label=f"{variant} Pareto front", zorder=2)
    source = next((s for s in sub["memory_source"] if s), "peak memory")
    ax.set_xlabel(f"peak memory, MB ({source})")
    ax.set_ylabel(f"test {metric} ({'lower' if low else 'higher'} is better)")
    ax.set_title(f"{table}: accuracy–memory trade-off" + ("" if k == "full" else f" (k={k})"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


def make_plots(summary: pd.DataFrame, out_dir: Path, meta: dict[str, Any]) -> dict[str, list[str]]:
    """Draw every plot for every table; returns table → file names written (relative to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    refs_by_table: dict[str, dict[str, dict[str, float]]] = {}
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table = exp.get("table") or exp.get("name")
        for label, values in (exp.get("references") or {}).items():
            refs_by_table.setdefault(table, {}).setdefault(label, {}).update(
                {str(k): float(v) for k, v in values.items()})
    written: dict[str, list[str]] = {}
    for table, part in summary.groupby("table", sort=False):
        safe = str(table).replace("/", "-")
        names = []
        for suffix, draw in (
            ("metric_vs_params", lambda p, t, f: metric_vs_params(p, t, refs_by_table.get(t, {}), f)),
            ("peak_memory", peak_memory),
            ("pareto", pareto),
        ):
            name = f"{safe}__{suffix}.png"
            if draw(part, str(table), out_dir / name):
                names.append(name)
            elif (out_dir / name).exists():
                (out_dir / name).unlink()  # a stale plot from an earlier report would mislead
        written[str(table)] = names
    return written
