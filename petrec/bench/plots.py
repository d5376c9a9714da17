"""PNG plots of a summary (matplotlib, Agg backend): metric vs trainable parameters, peak memory, Pareto front.

Per report table: ``<table>__metric_vs_params.png`` (log x, one panel per variant ×
few-shot size, each with that cell's baselines and published references as horizontal
lines), ``<table>__peak_memory.png`` (bars per method, one group per variant) and
``<table>__pareto.png`` (test metric vs peak memory with the Pareto front). Points with two
or more runs carry error bars over their 95% interval; single runs are hollow markers. A
plot whose numbers are all missing is skipped rather than drawn empty.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petrec.bench.aggregate import lower_is_better
from petrec.files import atomic_path


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (temporary file, then rename) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    pyplot().close(fig)


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


#: How a metric is written on an axis (others: as they are).
_METRIC_NAMES = {"auc": "AUC", "rmse": "RMSE", "mae": "MAE", "mse": "MSE", "mrr": "MRR", "f1": "F1",
                 "logloss": "log loss", "hr": "HR", "ndcg": "NDCG", "recall": "Recall", "precision": "Precision"}


def metric_name(metric: str) -> str:
    """``auc`` → ``AUC``, ``ndcg@10`` → ``NDCG@10``; unknown names unchanged."""
    head, sep, tail = metric.partition("@")
    return _METRIC_NAMES.get(head.lower(), head) + sep + tail


def _direction(metric: str) -> str:
    return "lower is better" if lower_is_better(metric) else "higher is better"


def _yerr(row: pd.Series) -> list[list[float]]:
    """Asymmetric error bar (below, above the mean) reaching a row's 95% interval ends."""
    mean = float(row["metric_mean"])
    return [[mean - float(row["metric_ci_low"])], [float(row["metric_ci_high"]) - mean]]


def draw_points(ax: Any, rows: pd.DataFrame, x: str, color: str = "C0") -> None:
    """One marker per row at (``x``, metric mean), annotated with the method name.

    Rows with two or more metric values get error bars over their 95% interval (one
    errorbar container each); single runs are hollow markers without a bar.
    """
    for i, (_, r) in enumerate(rows.sort_values(x).iterrows()):
        if int(r["metric_n"]) >= 2:
            ax.errorbar([r[x]], [r["metric_mean"]], yerr=_yerr(r),
                        fmt="o", color=color, capsize=3, zorder=3)
        else:
            ax.plot([r[x]], [r["metric_mean"]], "o", mfc="none", color=color, zorder=3)
        ax.annotate(r["method"], (r[x], r["metric_mean"]), textcoords="offset points", xytext=(4, 3 + 8 * (i % 3)),
                    fontsize=7, color=color)  # staggered so neighbouring labels do not print over each other


def _baseline_lines(ax: Any, base: pd.DataFrame, colors: dict[str, str]) -> None:
    """A dashed line per baseline at its mean, shaded over its 95% interval when it has one."""
    for _, r in base.iterrows():
        color = colors[r["method"]]
        ax.axhline(r["metric_mean"], ls="--", lw=1, color=color, label=f"{r['method']} (baseline)")
        if int(r["metric_n"]) >= 2 and r["metric_ci_high"] > r["metric_ci_low"]:
            ax.axhspan(r["metric_ci_low"], r["metric_ci_high"], color=color, alpha=0.12, lw=0)


def panels(part: pd.DataFrame) -> list[tuple[str, str]]:
    """The (variant, k) cells of a table that have method points to plot, in report order."""
    methods = part[(part["kind"] != "baseline") & part["metric_mean"].notna() & (part["trainable_params"] > 0)]
    cells = list(dict.fromkeys(zip(methods["variant"], methods["k_label"], strict=True)))
    variants = list(dict.fromkeys(v for v, _ in cells))
    return sorted(cells, key=lambda c: (variants.index(c[0]), _k_sort(c[1])))


def _panel_title(variant: str, k: str, several_variants: bool) -> str:
    size = "all training data" if k == "full" else f"k={k}"
    return f"{variant}, {size}" if several_variants else size


def _figure_legend(fig: Any) -> None:
    """One legend below all panels: every labelled line once (each panel draws its own values)."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(entries), 3), fontsize=7, frameon=False)


def draw_metric_vs_params(part: pd.DataFrame, table: str, refs: dict[str, dict[str, float]]) -> Any:
    """A figure of test metric against trainable parameters, one panel per (variant, k); None if empty.

    Each panel holds the methods of that cell (95% interval error bars where ≥ 2 runs), that
    cell's baselines as dashed lines (shaded over their interval) and the published references
    for that k as dotted lines, so nothing is compared across training-set sizes.
    """
    metric = part["metric"].iloc[0]
    cells = panels(part) if metric else []
    if not cells:
        return None
    plt = pyplot()
    ncols = min(len(cells), 3)
    nrows = math.ceil(len(cells) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), sharey=True, squeeze=False)
    several_variants = len({v for v, _ in cells}) > 1
    names = dict.fromkeys(part.loc[part["kind"] == "baseline", "method"])
    colors = {name: f"C{3 + i % 7}" for i, name in enumerate(names)}
    for ax, (variant, k) in zip(axes.flat, cells, strict=False):
        cell = part[(part["variant"] == variant) & (part["k_label"] == k) & part["metric_mean"].notna()]
        draw_points(ax, cell[(cell["kind"] != "baseline") & (cell["trainable_params"] > 0)], "trainable_params")
        _baseline_lines(ax, cell[cell["kind"] == "baseline"], colors)
        for i, (label, values) in enumerate(refs.items()):
            if k in values:
                ax.axhline(values[k], ls=":", lw=1.2, color=f"C{1 + i % 2}", label=f"{label} (published)")
        ax.set_xscale("log")
        ax.margins(y=0.12)  # room for the staggered method labels above the top points
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(f"test {metric_name(metric)}")
        ax.set_title(_panel_title(str(variant), str(k), several_variants), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cells):]:
        ax.remove()
    _figure_legend(fig)
    fig.suptitle(f"{table}: test {metric_name(metric)} vs trainable parameters ({_direction(metric)})\n"
                 "bars: 95% interval; hollow: single run; dashed: baselines, shaded over their 95% interval",
                 fontsize=10)
    fig.tight_layout()
    return fig


def metric_vs_params(part: pd.DataFrame, table: str, refs: dict[str, dict[str, float]], path: Path) -> bool:
    """Draw :func:`draw_metric_vs_params` to ``path``. Returns False when nothing to draw."""
    fig = draw_metric_vs_params(part, table, refs)
    if fig is None:
        return False
    save_figure(fig, path)
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
    plt = pyplot()
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
    save_figure(fig, path)
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


def draw_pareto(part: pd.DataFrame, table: str) -> Any:
    """A figure of test metric against peak memory at the primary few-shot size; None if empty.

    One series per variant with its Pareto front (on the means); points with ≥ 2 runs carry
    error bars over their 95% interval, single runs are hollow.
    """
    metric = part["metric"].iloc[0]
    k = primary_k(part)
    sub = part[(part["k_label"] == k) & (part["kind"] != "baseline") & part["metric_mean"].notna()
               & part["memory_mb"].notna()]
    if not metric or sub.empty:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    low = lower_is_better(metric)
    for i, (variant, vsub) in enumerate(sub.groupby("variant", sort=False)):
        color = f"C{i % 10}"
        draw_points(ax, vsub, "memory_mb", color)
        pts = [(float(r["memory_mb"]), float(r["metric_mean"]), r["method"]) for _, r in vsub.iterrows()]
        front = pareto_front(pts, low)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", lw=1.5, color=color,
                label=f"{variant} Pareto front (means)", zorder=2)
    source = next((s for s in sub["memory_source"] if s), "peak memory")
    ax.margins(y=0.12)
    ax.set_xlabel(f"peak memory, MB ({source})")
    ax.set_ylabel(f"test {metric_name(metric)}")
    ax.set_title(f"{table}: accuracy–memory trade-off" + ("" if k == "full" else f" (k={k})")
                 + f"\n({_direction(metric)}; bars: 95% interval, hollow: single run)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def pareto(part: pd.DataFrame, table: str, path: Path) -> bool:
    """Draw :func:`draw_pareto` to ``path``. Returns False when nothing to draw."""
    fig = draw_pareto(part, table)
    if fig is None:
        return False
    save_figure(fig, path)
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
