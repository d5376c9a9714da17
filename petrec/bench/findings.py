"""Plain-sentence findings computed from the summary: goals met or not, best method vs baselines.

Nothing here is typed in by hand: every sentence quotes numbers from the summary table, and
a goal that cannot be checked (its runs failed or are missing) says so.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from petrec.bench.aggregate import lower_is_better


def _baseline_kind(name: str) -> str:
    """How a findings line names a baseline row: plain statistics or a trained ID-based model."""
    from petrec.bench.baselines import STATS_BASELINES

    return "statistics" if name in STATS_BASELINES else "ID-based sequence model"

def _cell(summary: pd.DataFrame, table: str, variant: str, k: str) -> pd.DataFrame:
    return summary[(summary["table"] == table) & (summary["variant"] == variant) & (summary["k_label"] == k)]


def _value(part: pd.DataFrame, method: str, column: str) -> float:
    row = part[part["method"] == method]
    if row.empty:
        return math.nan
    if column == "metric_minus_full":
        full = part[part["method"] == "full"]
        if full.empty:
            return math.nan
        return float(row["metric_mean"].iloc[0]) - float(full["metric_mean"].iloc[0])
    return float(row[column].iloc[0])


def check_goals(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """One sentence per goal and table cell it applies to."""
    out = []
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table = exp.get("table") or exp.get("name")
        tpart = summary[summary["table"] == table]
        for goal in exp.get("goals") or []:
            cells = tpart[["variant", "k_label"]].drop_duplicates()
            if goal.get("variant") is not None:
                cells = cells[cells["variant"] == goal["variant"]]
            if goal.get("few_shot_k") is not None:
                cells = cells[cells["k_label"] == str(goal["few_shot_k"])]
            label = goal.get("label") or f"{goal['method']} {goal['quantity']} {goal['op']} {goal['value']}"
            if cells.empty:
                out.append(f"goal '{label}' ({table}): not checked, no runs of that cell")
                continue
            for _, c in cells.iterrows():
                v = _value(_cell(summary, table, c["variant"], c["k_label"]), goal["method"], goal["quantity"])
                single = len(tpart[tpart["variant"] == c["variant"]]["k_label"].unique()) == 1
                where = f"{table} {c['variant']}" + ("" if c["k_label"] == "full" and single else f" k={c['k_label']}")
                if math.isnan(v):
                    out.append(f"goal '{label}' ({where}): not checked, the {goal['method']} or full runs "
                               "failed or are missing")
                    continue
                met = v <= goal["value"] if goal["op"] == "<=" else v >= goal["value"]
                out.append(f"goal '{label}' ({where}): measured {v:.3f}, {'met' if met else 'NOT met'}")
    return out


def compare_methods(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Per table cell with a metric: best parameter-efficient method vs full, baselines and references."""
    refs: dict[str, dict[str, dict[str, float]]] = {}
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table = exp.get("table") or exp.get("name")
        for label, values in (exp.get("references") or {}).items():
            refs.setdefault(table, {}).setdefault(label, {}).update({str(k): v for k, v in values.items()})
    out = []
    several_k = summary.groupby(["table", "variant"])["k_label"].nunique().to_dict()
    for (table, variant, k), part in summary.groupby(["table", "variant", "k_label"], sort=False):
        metric = part["metric"].iloc[0]
        if not metric or part["metric_mean"].isna().all():
            continue
        low = lower_is_better(metric)
        ok = part[part["metric_mean"].notna()]
        peft = ok[(ok["kind"] != "baseline") & (ok["method"] != "full")]
        base = ok[ok["kind"] == "baseline"]
        pick = (lambda f: f.loc[f["metric_mean"].idxmin()]) if low else (lambda f: f.loc[f["metric_mean"].idxmax()])
        where = f"{table} {variant}" + ("" if k == "full" and several_k.get((table, variant), 1) == 1 else f" k={k}")
        parts = []
        if not peft.empty:
            best = pick(peft)
            parts.append(f"best parameter-efficient method {best['method']} {metric}={best['metric_mean']:.4f}")
        full = ok[ok["method"] == "full"]
        if not full.empty:
            parts.append(f"full {full['metric_mean'].iloc[0]:.4f}")
        if not base.empty:
            b = pick(base)
            parts.append(f"best baseline {b['method']} ({_baseline_kind(b['method'])}) {b['metric_mean']:.4f}")
        for label, values in refs.get(table, {}).items():
            if k in values:
                parts.append(f"{label} (published) {values[k]:.4f}")
        lora = ok[ok["method"] == "lora"]
        if not lora.empty and not full.empty:
            diff = float(lora["metric_mean"].iloc[0]) - float(full["metric_mean"].iloc[0])
            scale = 100 if metric in ("auc", "accuracy", "f1") or metric.startswith(("hr@", "ndcg@")) else 1
            within = abs(diff) * scale <= 1.0
            parts.append(f"lora − full = {diff:+.4f} ({'within' if within else 'not within'} 1 point)"
                         if scale == 100 else f"lora − full = {diff:+.4f}")
        if not peft.empty and not base.empty:
            best, b = pick(peft), pick(base)
            beats = best["metric_mean"] < b["metric_mean"] if low else best["metric_mean"] > b["metric_mean"]
            parts.append("the best parameter-efficient method " + ("beats" if beats else "does NOT beat")
                         + f" the best baseline ({b['method']}){_certainty(best, b)}")
        failed = part[part["n_failed"] > 0]
        if not failed.empty:
            parts.append("failed runs: " + ", ".join(f"{r['method']} ({r['n_failed']}/{r['n_runs']})"
                                                     for _, r in failed.iterrows()))
        if parts:
            out.append(f"{where}: " + "; ".join(parts))
    return out


def _certainty(a: pd.Series, b: pd.Series) -> str:
    """How far a comparison of two summary rows' means can be trusted, as a parenthesis."""
    if min(a["metric_n"], b["metric_n"]) < 2:
        return " (one run on a side: no interval, so not a tested difference)"
    if a["metric_ci_low"] <= b["metric_ci_high"] and b["metric_ci_low"] <= a["metric_ci_high"]:
        return " (their 95% intervals overlap)"
    return ""


def findings(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Goals first, then method comparisons."""
    if summary.empty:
        return []
    return check_goals(summary, meta) + compare_methods(summary, meta)
