"""Plain-sentence findings computed from the summary: goals met or not, best method vs baselines.

Nothing here is typed in by hand: every sentence quotes numbers from the summary table, and
a goal that cannot be checked (its runs failed or are missing) says so.

A claim is only made when the 95% intervals support it: a method "beats" a baseline when
both have at least two runs and their intervals do not overlap, and a goal is "met" when
the whole interval of the measured quantity lies on the goal's side of its value. Anything
else is reported as not distinguishable, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from petrec.bench.aggregate import MEMORY_SOURCES, lower_is_better
from petrec.bench.system import SHARED_CPU_SHARE

#: Goal quantities that are a ratio of a method's mean to full fine-tuning's mean → the run column.
RATIO_COLUMNS = {"train_sps_ratio": "train_samples_per_s", "infer_sps_ratio": "inference_samples_per_s"}
#: Goal quantities that rest on measured speeds (only clean when the run had the CPU to itself).
SPEED_QUANTITIES = ("train_sps", "infer_sps", "train_sps_ratio", "infer_sps_ratio")


@dataclass(frozen=True)
class Estimate:
    """A goal quantity: its point value, 95% interval (NaN when none) and fewest runs on a side."""

    value: float
    low: float
    high: float
    n_min: int


def _baseline_kind(name: str) -> str:
    """How a findings line names a baseline row: plain statistics or a trained ID-based model."""
    from petrec.bench.baselines import TRAINED_BASELINES

    return "ID-based sequence model" if name in TRAINED_BASELINES else "statistics"


def _cell(summary: pd.DataFrame, table: str, variant: str, k: str) -> pd.DataFrame:
    return summary[(summary["table"] == table) & (summary["variant"] == variant) & (summary["k_label"] == k)]


def _welch_half(terms: list[tuple[float, int]]) -> float:
    """Half-width ``t(0.975, df) · √Σv`` of independent terms (variance of a mean, runs behind it).

    ``df`` is the Welch–Satterthwaite degrees of freedom; all-zero variances give 0.
    """
    from scipy import stats

    total = sum(v for v, _ in terms)
    if total == 0:
        return 0.0
    df = total**2 / sum(v**2 / (n - 1) for v, n in terms if v > 0)
    return float(stats.t.ppf(0.975, df)) * math.sqrt(total)


def difference_interval(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Welch 95% interval of ``a − b`` from two summary rows' metric mean / std / n (NaN below 2 runs)."""
    if min(int(a["metric_n"]), int(b["metric_n"])) < 2:
        return math.nan, math.nan
    diff = float(a["metric_mean"]) - float(b["metric_mean"])
    half = _welch_half([(float(a["metric_std"]) ** 2 / int(a["metric_n"]), int(a["metric_n"])),
                        (float(b["metric_std"]) ** 2 / int(b["metric_n"]), int(b["metric_n"]))])
    return diff - half, diff + half


def ratio_interval(num: list[float], den: list[float]) -> tuple[float, float]:
    """95% interval of ``mean(num) / mean(den)`` by the delta method (NaN below 2 values a side).

    The relative variances of the two means add; the t quantile uses the Welch–Satterthwaite
    degrees of freedom of those two terms.
    """
    if min(len(num), len(den)) < 2:
        return math.nan, math.nan
    terms = []
    for values in (num, den):
        s = pd.Series(values, dtype=float)
        if s.mean() == 0:
            return math.nan, math.nan
        terms.append((float(s.var(ddof=1)) / (len(s) * float(s.mean()) ** 2), len(s)))
    ratio = float(pd.Series(num).mean()) / float(pd.Series(den).mean())
    half = ratio * _welch_half(terms)
    return ratio - half, ratio + half


def _ok_runs(runs: pd.DataFrame, table: str, variant: str, k_label: str, method: str) -> pd.DataFrame:
    """The successful runs of ``method`` in one table cell."""
    return runs[(runs["table"] == table) & (runs["variant"] == variant) & (runs["k_label"] == k_label)
                & (runs["method"] == method) & (runs["status"] == "ok")]


def _run_column(quantity: str, part: pd.DataFrame) -> str | None:
    """The runs.csv column whose method / full means make up a ratio quantity (None: not a ratio)."""
    if quantity == "memory_ratio":
        source = next((s for s in part["memory_source"] if s), "")
        return next((key for key, label in MEMORY_SOURCES if label == source), None)
    return RATIO_COLUMNS.get(quantity)


def estimate(part: pd.DataFrame, runs: pd.DataFrame, method: str, quantity: str) -> Estimate | None:
    """A goal quantity of ``method`` in one table cell with its 95% interval; None when not measured.

    ``metric_minus_full`` gets the Welch interval of the difference of means, the ``*_ratio``
    quantities the delta-method interval of a ratio of means (from the cell's run records),
    any other summary column the ``<prefix>_ci_low`` / ``_ci_high`` pair when it has one.
    """
    row = part[part["method"] == method]
    full = part[part["method"] == "full"]
    if row.empty:
        return None
    r = row.iloc[0]
    if quantity == "metric_minus_full":
        if full.empty or math.isnan(float(r["metric_mean"])) or math.isnan(float(full["metric_mean"].iloc[0])):
            return None
        low, high = difference_interval(r, full.iloc[0])
        value = float(r["metric_mean"]) - float(full["metric_mean"].iloc[0])
        return Estimate(value, low, high, min(int(r["metric_n"]), int(full["metric_n"].iloc[0])))
    value = float(r[quantity]) if quantity in r.index else math.nan
    if math.isnan(value):
        return None
    column = _run_column(quantity, part)
    if column is not None:
        cell = {key: r[key] for key in ("table", "variant", "k_label")}
        num = _ok_runs(runs, **cell, method=method)[column].dropna().tolist()
        den = _ok_runs(runs, **cell, method="full")[column].dropna().tolist()
        low, high = ratio_interval(num, den)
        return Estimate(value, low, high, min(len(num), len(den)))
    prefix = quantity.removesuffix("_mean")
    if f"{prefix}_ci_low" in r.index:
        n = int(r[f"{prefix}_n"]) if f"{prefix}_n" in r.index else int(r["n_ok"])
        return Estimate(value, float(r[f"{prefix}_ci_low"]), float(r[f"{prefix}_ci_high"]), n)
    return Estimate(value, math.nan, math.nan, int(r["n_ok"]))


def speed_problem(runs: pd.DataFrame, cell: dict[str, str], methods: list[str]) -> str | None:
    """Why the speeds of ``methods`` in a table cell are not clean figures, or None when they are."""
    for method in methods:
        timed = _ok_runs(runs, **cell, method=method)
        timed = timed[timed["train_samples_per_s"].notna() | timed["inference_samples_per_s"].notna()]
        if timed["other_cpu_share"].isna().any():
            return f"speed not recorded alone: a {method} run has no CPU-sharing figure"
        if (timed["other_cpu_share"] > SHARED_CPU_SHARE).any():
            return f"speed measured on a shared CPU: other processes used over {SHARED_CPU_SHARE:.0%} in a {method} run"
    return None


def goal_verdict(est: Estimate, op: str, goal: float) -> str:
    """The verdict of one goal from its estimate: met / NOT met / not distinguishable / single run."""
    if est.n_min < 2:
        return f"single run: point estimate {est.value:.3f} vs goal {op} {goal:g}, not a tested result"
    if math.isnan(est.low):
        return f"no 95% interval: point estimate {est.value:.3f} vs goal {op} {goal:g}, not a tested result"
    measured = f"measured {est.value:.3f} [95% CI {est.low:.3f}, {est.high:.3f}] (n={est.n_min})"
    good, bad = (est.high <= goal, est.low > goal) if op == "<=" else (est.low >= goal, est.high < goal)
    if good:
        return f"{measured}, met (the whole interval is {op} {goal:g})"
    if bad:
        return f"{measured}, NOT met (the whole interval is on the wrong side of {goal:g})"
    return f"{measured}, not distinguishable from the goal (the interval contains {goal:g})"


def _goal_cells(tpart: pd.DataFrame, goal: dict[str, Any]) -> pd.DataFrame:
    cells = tpart[["variant", "k_label"]].drop_duplicates()
    if goal.get("variant") is not None:
        cells = cells[cells["variant"] == goal["variant"]]
    if goal.get("few_shot_k") is not None:
        cells = cells[cells["k_label"] == str(goal["few_shot_k"])]
    return cells


def _goal_line(summary: pd.DataFrame, runs: pd.DataFrame, goal: dict[str, Any], cell: dict[str, str]) -> str:
    """The verdict text of one goal in one table cell (after ``goal '…' (where): ``)."""
    part = _cell(summary, cell["table"], cell["variant"], cell["k_label"])
    if goal["quantity"] in SPEED_QUANTITIES:
        problem = speed_problem(runs, cell, [goal["method"], "full"])
        if problem:
            return f"not checked, {problem}"
    est = estimate(part, runs, goal["method"], goal["quantity"])
    if est is None:
        return f"not checked, the {goal['method']} or full runs failed or are missing"
    return goal_verdict(est, goal["op"], float(goal["value"]))


def check_goals(summary: pd.DataFrame, meta: dict[str, Any], runs: pd.DataFrame) -> list[str]:
    """One sentence per goal and table cell it applies to.

    Args:
        summary: :func:`petrec.bench.aggregate.summarize` output.
        meta: The results folder's metadata (its ``suite_config`` holds the goals).
        runs: :func:`petrec.bench.aggregate.runs_frame` output, for the intervals of ratios
            and whether speeds were measured alone.
    """
    out = []
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table = exp.get("table") or exp.get("name")
        tpart = summary[summary["table"] == table]
        for goal in exp.get("goals") or []:
            cells = _goal_cells(tpart, goal)
            label = goal.get("label") or f"{goal['method']} {goal['quantity']} {goal['op']} {goal['value']}"
            if cells.empty:
                out.append(f"goal '{label}' ({table}): not checked, no runs of that cell")
                continue
            for _, c in cells.iterrows():
                single = len(tpart[tpart["variant"] == c["variant"]]["k_label"].unique()) == 1
                where = f"{table} {c['variant']}" + ("" if c["k_label"] == "full" and single else f" k={c['k_label']}")
                cell = {"table": table, "variant": c["variant"], "k_label": c["k_label"]}
                out.append(f"goal '{label}' ({where}): {_goal_line(summary, runs, goal, cell)}")
    return out


def _ci(row: pd.Series) -> str:
    return f"[{row['metric_ci_low']:.3f}, {row['metric_ci_high']:.3f}]"


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    """Whether two summary rows' 95% intervals of the metric mean overlap."""
    return bool(a["metric_ci_low"] <= b["metric_ci_high"] and b["metric_ci_low"] <= a["metric_ci_high"])


def versus_baseline(best: pd.Series, base: pd.Series, low: bool) -> str:
    """Whether the best parameter-efficient method beats the best baseline, by their 95% intervals.

    "beats" / "does NOT beat" only when both rows have at least two runs and the intervals do
    not overlap; otherwise "not distinguishable" with the reason.
    """
    pair = f"the best parameter-efficient method ({best['method']}) and the best baseline ({base['method']})"
    if min(int(best["metric_n"]), int(base["metric_n"])) < 2:
        return f"{pair} are not distinguishable (one run on a side: no interval)"
    if _overlap(best, base):
        return f"{pair} are not distinguishable (their 95% intervals overlap: {_ci(best)} vs {_ci(base)})"
    beats = best["metric_mean"] < base["metric_mean"] if low else best["metric_mean"] > base["metric_mean"]
    return (f"the best parameter-efficient method {'beats' if beats else 'does NOT beat'} the best baseline "
            f"({base['method']}) (95% intervals {_ci(best)} vs {_ci(base)} do not overlap)")


def _references(meta: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    refs: dict[str, dict[str, dict[str, float]]] = {}
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table = exp.get("table") or exp.get("name")
        for label, values in (exp.get("references") or {}).items():
            refs.setdefault(table, {}).setdefault(label, {}).update({str(k): v for k, v in values.items()})
    return refs


def _lora_vs_full(metric: str, lora: pd.DataFrame, full: pd.DataFrame) -> str:
    diff = float(lora["metric_mean"].iloc[0]) - float(full["metric_mean"].iloc[0])
    scale = 100 if metric in ("auc", "accuracy", "f1") or metric.startswith(("hr@", "ndcg@")) else 1
    if scale != 100:
        return f"lora − full = {diff:+.4f}"
    return f"lora − full = {diff:+.4f} ({'within' if abs(diff) * scale <= 1.0 else 'not within'} 1 point)"


def _cell_parts(part: pd.DataFrame, k: str, refs: dict[str, dict[str, float]]) -> list[str]:
    """The clauses of one table cell's comparison line."""
    metric = part["metric"].iloc[0]
    low = lower_is_better(metric)
    ok = part[part["metric_mean"].notna()]
    peft = ok[(ok["kind"] != "baseline") & (ok["method"] != "full")]
    base = ok[ok["kind"] == "baseline"]
    full = ok[ok["method"] == "full"]
    lora = ok[ok["method"] == "lora"]

    def pick(f: pd.DataFrame) -> pd.Series:
        return f.loc[f["metric_mean"].idxmin()] if low else f.loc[f["metric_mean"].idxmax()]

    parts = []
    if not peft.empty:
        best = pick(peft)
        parts.append(f"best parameter-efficient method {best['method']} {metric}={best['metric_mean']:.4f}")
    if not full.empty:
        parts.append(f"full {full['metric_mean'].iloc[0]:.4f}")
    if not base.empty:
        b = pick(base)
        parts.append(f"best baseline {b['method']} ({_baseline_kind(b['method'])}) {b['metric_mean']:.4f}")
    parts += [f"{label} (published) {values[k]:.4f}" for label, values in refs.items() if k in values]
    if not lora.empty and not full.empty:
        parts.append(_lora_vs_full(metric, lora, full))
    if not peft.empty and not base.empty:
        parts.append(versus_baseline(pick(peft), pick(base), low))
    failed = part[part["n_failed"] > 0]
    if not failed.empty:
        parts.append("failed runs: " + ", ".join(f"{r['method']} ({r['n_failed']}/{r['n_runs']})"
                                                 for _, r in failed.iterrows()))
    return parts


def compare_methods(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Per table cell with a metric: best parameter-efficient method vs full, baselines and references."""
    refs = _references(meta)
    out = []
    several_k = summary.groupby(["table", "variant"])["k_label"].nunique().to_dict()
    for (table, variant, k), part in summary.groupby(["table", "variant", "k_label"], sort=False):
        metric = part["metric"].iloc[0]
        if not metric or part["metric_mean"].isna().all():
            continue
        where = f"{table} {variant}" + ("" if k == "full" and several_k.get((table, variant), 1) == 1 else f" k={k}")
        parts = _cell_parts(part, str(k), refs.get(str(table), {}))
        if parts:
            out.append(f"{where}: " + "; ".join(parts))
    return out


def _paired_key(frame: pd.DataFrame) -> pd.Series:
    """(seed, fold) of each run: the runs of two rows that share a data sample and split."""
    folds = frame["fold"] if "fold" in frame else pd.Series(math.nan, index=frame.index)
    keys = [(int(seed), None if pd.isna(fold) else int(fold)) for seed, fold in zip(frame["seed"], folds, strict=True)]
    return pd.Series(keys, index=frame.index, dtype=object)


def paired_difference(runs: pd.DataFrame, cell: dict[str, str], method: str, against: str,
                      column: str) -> tuple[list[float], dict[str, float]]:
    """Per-seed differences ``method − against`` in one table cell and their mean / 95% interval.

    Runs are paired by (seed, fold); a seed with only one side is left out. The interval is the
    Student-t interval of the mean difference (:func:`petrec.bench.aggregate.mean_std_ci`).
    """
    from petrec.bench.aggregate import mean_std_ci

    sides = []
    for name in (method, against):
        part = _ok_runs(runs, cell["table"], cell["variant"], cell["k_label"], name)
        part = part[part[column].notna()] if column in part else part.iloc[0:0]
        sides.append(dict(zip(_paired_key(part), part[column].astype(float), strict=True)))
    keys = sorted(set(sides[0]) & set(sides[1]), key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    diffs = [sides[0][k] - sides[1][k] for k in keys]
    return diffs, mean_std_ci(diffs)


def _ablation_line(summary: pd.DataFrame, runs: pd.DataFrame, cell: dict[str, str], ablation: dict[str, Any],
                   metric: str) -> str:
    diffs, stats = paired_difference(runs, cell, ablation["method"], ablation["against"], f"test_{metric}")
    if not diffs:
        return "not checked, no seed has both rows"
    per_seed = ", ".join(f"{d:+.4f}" for d in diffs)
    if len(diffs) < 2:
        return f"{per_seed} (one seed: not a tested difference)"
    head = f"{stats['mean']:+.4f} [{stats['ci_low']:+.4f}, {stats['ci_high']:+.4f}] paired over {len(diffs)} seeds ({per_seed})"
    if stats["ci_low"] <= 0 <= stats["ci_high"]:
        return f"{head}: the paired interval holds 0, not distinguishable"
    rows = _cell(summary, cell["table"], cell["variant"], cell["k_label"]).set_index("method")
    a, b = rows.loc[ablation["method"]], rows.loc[ablation["against"]]
    side = "above" if stats["mean"] > 0 else "below"
    if _overlap(a, b):
        return (f"{head}: the paired interval lies {side} 0, but the rows' own 95% intervals overlap ({_ci(a)} vs {_ci(b)}), "
                "so by this report's rule they are not distinguishable")
    return f"{head}: {ablation['method']} is {side} {ablation['against']} (their 95% intervals {_ci(a)} vs {_ci(b)} do not overlap)"


def ablation_lines(summary: pd.DataFrame, meta: dict[str, Any], runs: pd.DataFrame) -> list[str]:
    """One sentence per suite ablation (``experiments[].ablations``) and table cell it applies to.

    Each gives the per-seed differences of the two rows' test metric, their mean and paired 95%
    interval. "above" / "below" is said only when the paired interval excludes 0 *and* the rows'
    own intervals do not overlap (the rule every other finding follows).
    """
    out = []
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        table, metric = exp.get("table") or exp.get("name"), exp.get("metric")
        if not metric:
            continue
        tpart = summary[summary["table"] == table]
        for ablation in exp.get("ablations") or []:
            label = ablation.get("label") or f"{ablation['method']} − {ablation['against']}"
            cells = tpart if ablation.get("variant") is None else tpart[tpart["variant"] == ablation["variant"]]
            cells = cells[cells["method"] == ablation["method"]]
            if cells.empty:
                out.append(f"ablation '{label}' ({table}): not checked, no runs of that cell")
            for _, c in cells.iterrows():
                cell = {"table": table, "variant": c["variant"], "k_label": c["k_label"]}
                where = f"{table} {c['variant']}" + ("" if c["k_label"] == "full" else f" k={c['k_label']}")
                out.append(f"ablation '{label}' ({where}, test {metric}): "
                           f"{_ablation_line(summary, runs, cell, ablation, metric)}")
    return out


def findings(summary: pd.DataFrame, meta: dict[str, Any], runs: pd.DataFrame) -> list[str]:
    """Goals first, then ablations, then method comparisons."""
    if summary.empty:
        return []
    return check_goals(summary, meta, runs) + ablation_lines(summary, meta, runs) + compare_methods(summary, meta)
