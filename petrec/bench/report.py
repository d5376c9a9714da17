"""REPORT.md, terminal tables and CSVs of a results folder (plots: :mod:`petrec.bench.plots`).

One section per report table (protocol), one table per variant × few-shot size: method,
trainable %, the test metric mean ± std over seeds with its 95% interval, peak memory and
its ratio to full fine-tuning, train / inference samples/s and the ratio, adapter size. A
k-fold experiment (``folds``) pools its folds × seeds runs into the same mean and interval,
and says so beside the count (``n=10: 5 folds × 2 seeds``).
Every missing number prints as ``—``; failed runs are listed with their error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from petrec.bench.aggregate import k_label, lower_is_better, runs_frame, summarize
from petrec.bench.beyond import beyond_accuracy_lines
from petrec.bench.runner import load_meta, load_records
from petrec.bench.system import SHARED_CPU_SHARE, describe_machine
from petrec.files import atomic_path, write_text_atomic

MISSING = "—"
#: Marks a speed cell averaging a run measured on a shared CPU (see "Runs that shared the CPU").
SHARED_MARK = " †"
#: Marks a speed cell left blank because a run behind it has no CPU-sharing figure.
UNRECORDED_MARK = " ‡"
#: The footnote of :data:`UNRECORDED_MARK`.
UNRECORDED_NOTE = "speed not recorded alone: no CPU-sharing figure"


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant decimals, or ``—`` when missing."""
    v = _num(x)
    if math.isnan(v):
        return MISSING
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:.1f}"


def fmt_bytes(x: Any) -> str:
    """Bytes as KB / MB / GB, or ``—``."""
    v = _num(x)
    if math.isnan(v):
        return MISSING
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_ratio(x: Any) -> str:
    """``0.42×`` or ``—``."""
    v = _num(x)
    return MISSING if math.isnan(v) else f"{v:.2f}×"


def n_folds(row: pd.Series) -> int:
    """User folds behind one summary row (0 when it is not a k-fold cell)."""
    v = _num(row.get("n_folds"))
    return 0 if math.isnan(v) else int(v)


def fmt_runs(row: pd.Series) -> str:
    """``n=3``, or for a k-fold cell ``n=10: 5 folds × 2 seeds`` (the runs the mean pools)."""
    text = f"n={int(row.get('metric_n', 0))}"
    folds = n_folds(row)
    if folds:
        seeds = len([s for s in str(row.get("seeds") or "").split(",") if s])
        text += f": {folds} folds × {seeds} seed{'' if seeds == 1 else 's'}"
    return text


def fmt_metric(row: pd.Series) -> str:
    """``0.7312 ± 0.0120 [0.701, 0.761] (n=3)``; failures noted; ``—`` when nothing ran ok."""
    mean = _num(row.get("metric_mean"))
    n_ok, n_runs = int(row.get("n_ok", 0)), int(row.get("n_runs", 0))
    failed = f" ({n_runs - n_ok}/{n_runs} failed)" if n_ok < n_runs else ""
    if math.isnan(mean):
        return MISSING + failed
    text = f"{mean:.4f}"
    std = _num(row.get("metric_std"))
    if not math.isnan(std):
        text += f" ± {std:.4f} [{_num(row.get('metric_ci_low')):.3f}, {_num(row.get('metric_ci_high')):.3f}]"
    return text + f" ({fmt_runs(row)})" + failed


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: str = "md") -> str:
    """A Markdown (``md``) or aligned plain-text (``text``) table."""
    if style == "md":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _method_order(summary: pd.DataFrame, meta: dict[str, Any]) -> dict[str, int]:
    suite = meta.get("suite_config") or {}
    order: list[str] = []
    for exp in suite.get("experiments") or []:
        order += [b for b in exp.get("baselines") or [] if b not in order]
    order += [m for m in suite.get("methods") or {} if m not in order]
    order += sorted(m for m in summary["method"].unique() if m not in order)
    return {m: i for i, m in enumerate(order)}


def _k_sort(label: str) -> float:
    return math.inf if label == "full" else float(label)


def fmt_count(x: Any) -> str:
    """``74.1K`` / ``22.6M`` / ``1.2B`` or ``—``."""
    v = _num(x)
    if math.isnan(v):
        return MISSING
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{unit}"
    return f"{v:.0f}"


def table_rows(part: pd.DataFrame, style: str = "md") -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows of one (table, variant, k) block of the summary.

    The metric column is left out when the table has no task metric (E1 model shapes).
    """
    metric = part["metric"].iloc[0] if len(part) else None
    metric = metric if isinstance(metric, str) and metric else None
    arrow = "" if not metric else (" ↓" if lower_is_better(metric) else " ↑")
    source = next((s for s in part["memory_source"] if s), "")
    headers = ["method", "trainable params", "trainable %"]
    if metric:
        headers.append(f"test {metric}{arrow} mean ± std [95% CI]")
    headers += [f"peak mem MB{' (' + _short_source(source) + ')' if source else ''}", "mem ÷ full",
                "train samples/s", "speed ÷ full", "infer samples/s", "adapter size"]
    full = part[part["method"] == "full"]
    full_unrecorded = bool(len(full)) and _unrecorded(full.iloc[0])
    rows = []
    for _, r in part.iterrows():
        name = r["method"] if r["kind"] != "baseline" else f"{r['method']} (baseline)"
        row = [name, fmt_count(r["trainable_params"]), fmt(r["trainable_percent"], 4)]
        if metric:
            row.append(fmt_metric(r))
        elif int(r.get("n_ok", 0)) < int(r.get("n_runs", 0)):
            row[0] += f" ({int(r['n_runs']) - int(r['n_ok'])}/{int(r['n_runs'])} failed)"
        train, ratio, infer = speed_cells(r, full_unrecorded)
        row += [fmt(r["memory_mb"]), fmt_ratio(r["memory_ratio"]), train, ratio, infer, fmt_bytes(r["adapter_bytes"])]
        rows.append(row)
    return headers, rows


def _unrecorded(row: pd.Series) -> bool:
    return int(row.get("speed_unrecorded_runs", 0) or 0) > 0


def speed_cells(row: pd.Series, full_unrecorded: bool) -> tuple[str, str, str]:
    """Train samples/s, speed ÷ full and inference samples/s of one summary row, as table cells.

    A speed averaging a run without a CPU-sharing figure is not shown (``— ‡``), nor is a ratio
    that divides by or into one; a speed averaging a run measured on a shared CPU is marked ``†``.
    """
    blank = MISSING + UNRECORDED_MARK
    if _unrecorded(row):
        return blank, blank, blank
    mark = SHARED_MARK if int(row.get("shared_cpu_runs", 0) or 0) else ""
    ratio = blank if full_unrecorded and not math.isnan(_num(row["train_sps"])) else fmt_ratio(row["train_sps_ratio"])
    return fmt(row["train_sps"]) + mark, ratio, fmt(row["infer_sps"]) + mark


def _short_source(label: str) -> str:
    if label.startswith("CUDA"):
        return "CUDA allocated"
    if "growth" in label:
        return "CPU RSS growth"
    return "CPU peak RSS"


def _references(meta: dict[str, Any], table: str) -> dict[str, dict[str, float]]:
    refs: dict[str, dict[str, float]] = {}
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        if (exp.get("table") or exp.get("name")) == table:
            for label, values in (exp.get("references") or {}).items():
                refs.setdefault(label, {}).update({str(k): float(v) for k, v in values.items()})
    return refs


def _experiments_of(meta: dict[str, Any], table: str) -> list[dict[str, Any]]:
    return [e for e in (meta.get("suite_config") or {}).get("experiments") or []
            if (e.get("table") or e.get("name")) == table]


def _jobs_note(invocation: dict[str, Any]) -> str:
    """Says when runs shared the machine (``petrec bench --jobs N``): their speed is not a clean figure."""
    jobs = invocation.get("jobs") or 1
    return f"; {jobs} runs in flight at once, so samples/s and wall times are shared" if jobs > 1 else ""


def render(summary: pd.DataFrame, runs: pd.DataFrame, meta: dict[str, Any], style: str = "md",
           plots: dict[str, list[str]] | None = None) -> str:
    """The whole report as Markdown (``md``) or terminal text (``text``)."""
    from petrec.bench.findings import findings

    plots = plots or {}
    suite = meta.get("suite_config") or {}
    h1, h2, h3 = ("# ", "## ", "### ") if style == "md" else ("", "== ", "-- ")
    out = [f"{h1}petrec benchmark report: {meta.get('suite') or suite.get('name') or 'results'}", ""]
    if suite.get("description"):
        out += [str(suite["description"]).strip(), ""]
    mach = meta.get("machine")
    invocations = meta.get("invocations") or []
    git = meta.get("git") or {}
    if len(invocations) > 1:
        out.append(f"- commands ({len(invocations)} invocations on this folder; each skips runs already "
                   "finished unless --force / --retry-failed):")
        out += [f"  - `{i.get('command')}` ({i.get('started_at')} → {i.get('finished_at') or 'interrupted'}, "
                f"{i.get('runs_selected', '?')} runs selected{_jobs_note(i)})" for i in invocations]
    else:
        out += [f"- command: `{meta.get('command', MISSING)}`",
                f"- started {meta.get('started_at', MISSING)}, finished {meta.get('finished_at') or 'not finished'}"
                + (_jobs_note(invocations[0]) if invocations else "")]
    out += [f"- machine: {describe_machine(mach) if mach else MISSING}",
            f"- git commit{' of the latest invocation' if len(invocations) > 1 else ''}: "
            f"{git.get('commit') or MISSING}{' (with uncommitted changes)' if git.get('dirty') else ''}"
            " (each run's own commit is in its JSON)",
            f"- runs: {len(runs)} ({int((runs['status'] == 'ok').sum()) if len(runs) else 0} ok, "
            f"{int((runs['status'] != 'ok').sum()) if len(runs) else 0} failed)"]
    vers = meta.get("versions") or {}
    if vers:
        out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v))
    out.append("")
    if summary.empty:
        out += ["No runs recorded yet.", ""]
        return "\n".join(out)
    order = _method_order(summary, meta)
    facts = findings(summary, meta, runs)
    if facts:
        out += [f"{h2}Findings (computed from the runs below)", "", *[f"- {f}" for f in facts], ""]
    for table, tpart in summary.groupby("table", sort=False):
        exps = _experiments_of(meta, str(table))
        title = exps[0].get("title") if exps else table
        out += [f"{h2}{title if str(title).startswith(str(table)) else f'{table}: {title}'}", ""]
        for exp in exps:
            if exp.get("note"):
                out += [str(exp["note"]).strip(), ""]
            if exp.get("folds"):
                seeds = exp.get("seeds") or [1]
                out += [f"Cross-validation ({exp.get('name')}): {exp['folds']} user folds (kfold protocol; each run "
                        f"tests one fold, the next fold is its validation set) × {len(seeds)} "
                        f"seed{'' if len(seeds) == 1 else 's'} = {exp['folds'] * len(seeds)} runs per row, "
                        "baselines included; each row's mean and 95% interval pool them.", ""]
        refs = _references(meta, str(table))
        for variant, vpart in tpart.groupby("variant", sort=False):
            labels = sorted({lbl for lbl in vpart["labels"] if lbl and not lbl.startswith("baseline")})
            ks = sorted(vpart["k_label"].unique(), key=_k_sort)
            metric = vpart["metric"].iloc[0]
            if len(ks) > 1 and metric:
                over = "folds × seeds" if any(n_folds(r) for _, r in vpart.iterrows()) else "seeds"
                out += [f"{h3}{variant}: test {metric} by training-set size (mean over {over})", ""]
                pivot_rows = []
                methods = sorted(vpart["method"].unique(), key=lambda m: order.get(m, 999))
                for m in methods:
                    cells = []
                    for k in ks:
                        cell = vpart[(vpart["method"] == m) & (vpart["k_label"] == k)]
                        cells.append(fmt(cell["metric_mean"].iloc[0], 4) if len(cell) else MISSING)
                    pivot_rows.append([m, *cells])
                for label, values in refs.items():
                    pivot_rows.append([f"{label} (published, not run here)",
                                       *[fmt(values.get(k), 4) for k in ks]])
                out += [format_table(["method", *[f"k={k}" for k in ks]], pivot_rows, style), ""]
            for k in ks:
                part = vpart[vpart["k_label"] == k].copy()
                part["_o"] = part["method"].map(lambda m: order.get(m, 999))
                part = part.sort_values("_o")
                name = f"{variant}" + ("" if k == "full" and len(ks) == 1 else f", k={k}")
                out += [f"{h3}{name}", ""]
                if labels:
                    out += ["Labels: " + "; ".join(labels), ""]
                headers, rows = table_rows(part, style)
                for label, values in refs.items():
                    if k in values:
                        rows.append([f"{label} (published, not run here)", MISSING, MISSING, f"{values[k]:.4f}",
                                     *[MISSING] * (len(headers) - 4)])
                out += [format_table(headers, rows, style), ""]
                out += beyond_accuracy_lines(runs, {"table": table, "variant": variant, "k_label": k}, metric, order,
                                             style, f"{h3}{name}: beyond accuracy")
        for name in plots.get(str(table), []):
            out += [f"![{Path(name).stem}]({name})" if style == "md" else f"plot: {name}", ""]
    missing = coverage(runs, meta)
    if missing:
        out += [f"{h2}Planned but not run", "", *[f"- {m}" for m in missing], ""]
    shared = shared_cpu_lines(runs)
    if shared:
        out += [f"{h2}Runs that shared the CPU", "",
                f"Other processes used more than {SHARED_CPU_SHARE:.0%} of the machine's CPU while these runs "
                f"ran (measured from /proc/stat around each run), so their samples/s are lower than alone; "
                f"table cells that average them are marked {SHARED_MARK}.", "", *shared, ""]
    unrecorded = unrecorded_speed_lines(runs)
    if unrecorded:
        out += [f"{h2}Speeds not recorded alone", "",
                f"{UNRECORDED_MARK.strip()} {UNRECORDED_NOTE}. These run records carry samples/s but no "
                "`train_info.cpu_sharing` figure, so whether other processes shared the CPU while they ran "
                f"is unknown; table cells that average them, and speed ÷ full ratios that use them, show "
                f"{MISSING}{UNRECORDED_MARK}. The raw figures stay in runs/<run_id>.json and runs.csv.", "",
                *unrecorded, ""]
    failed = runs[runs["status"] != "ok"] if len(runs) else runs
    if len(failed):
        out += [f"{h2}Failed runs", ""]
        for _, r in failed.iterrows():
            last = f" … {r['error_last']}" if r["error_last"] and r["error_last"] != r["error"] else ""
            out.append(f"- `{r['run_id']}`: {r['error'] or 'no error text'}{last}")
        out.append("")
    out += [f"{h2}How to read this", "",
            "- mean ± std over seeds (sample std); [95% CI] is the Student-t interval of the mean; "
            "std and CI need ≥ 2 seeds.",
            *(["- k-fold rows (n=…: folds × seeds) pool their fold runs like seeds; folds share training users, "
               "so those runs are not independent and the interval is narrower than the true uncertainty "
               "(no unbiased variance estimator of k-fold cross-validation exists: Bengio & Grandvalet, 2004)."]
              if any(n_folds(r) for _, r in summary.iterrows()) else []),
            "- mem ÷ full and speed ÷ full divide by the `full` fine-tuning row of the same table; "
            "peak memory is measured in the run's own process.",
            "- baselines run in-process: plain statistics, and small ID-based sequence models trained "
            "on the CPU (no memory or speed numbers); "
            "rows marked 'published, not run here' are reference numbers from papers.",
            "- every run's raw record is in runs/<run_id>.json; runs.csv has one row per run, "
            "summary.csv one row per table cell.", ""]
    return "\n".join(out)


def shared_cpu_lines(runs: pd.DataFrame) -> list[str]:
    """One line per ok run whose speed was measured on a shared CPU (``other_cpu_share``)."""
    if not len(runs):
        return []
    hit = runs[(runs["status"] == "ok") & (runs["other_cpu_share"] > SHARED_CPU_SHARE)]
    return [f"- `{r['run_id']}`: other processes used {r['other_cpu_share']:.0%} of the CPU"
            for _, r in hit.iterrows()]


def unrecorded_speed_runs(runs: pd.DataFrame) -> pd.Series:
    """True for each ok run that has a samples/s figure but no CPU-sharing figure."""
    if not len(runs):
        return pd.Series(dtype=bool)
    timed = runs["train_samples_per_s"].notna() | runs["inference_samples_per_s"].notna()
    return (runs["status"] == "ok") & timed & runs["other_cpu_share"].isna()


def unrecorded_speed_lines(runs: pd.DataFrame) -> list[str]:
    """One line per table cell naming its runs whose speed was not recorded alone (method, seeds)."""
    hit = runs[unrecorded_speed_runs(runs)] if len(runs) else runs
    out = []
    for (table, variant, k), cell in hit.groupby(["table", "variant", "k_label"], sort=False):
        methods = [f"{m} ({', '.join(f's{int(s)}' for s in g['seed'].dropna())})" for m, g in cell.groupby("method", sort=False)]
        out.append(f"- {table} {variant} k={k}: " + "; ".join(methods))
    return out


def with_speed_provenance(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``summary`` plus ``speed_unrecorded_runs``: per row, ok runs with a speed but no CPU-sharing figure."""
    if summary.empty:
        return summary
    keys = ["table", "variant", "k_label", "method"]
    counts = runs.assign(_u=unrecorded_speed_runs(runs)).groupby(keys)["_u"].sum().rename("speed_unrecorded_runs")
    merged = summary.merge(counts.reset_index(), on=keys, how="left")
    return merged.assign(speed_unrecorded_runs=merged["speed_unrecorded_runs"].fillna(0).astype(int))


def coverage(runs: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Per experiment: how many of the suite's planned runs have a record, and which cells lack one."""
    from petrec.bench.suite import SuiteConfig, expand
    from petrec.config import ConfigError, from_dict

    raw = meta.get("suite_config")
    if not raw:
        return []
    try:
        planned = expand(from_dict(SuiteConfig, raw))
    except (ConfigError, ValueError):
        return ["the stored suite.yaml no longer loads; coverage not computed"]
    done = set(runs["run_id"]) if len(runs) else set()
    out = []
    for exp in dict.fromkeys(r.experiment for r in planned):
        specs = [r for r in planned if r.experiment == exp]
        absent = [r for r in specs if r.run_id not in done]
        if not absent:
            continue
        cells: dict[str, list[str]] = {}
        for r in absent:
            fold = "" if r.fold is None else f"/f{r.fold}"
            cells.setdefault(r.method, []).append(f"{r.variant}/k={k_label(r.few_shot_k)}{fold}/s{r.seed}")
        detail = "; ".join(f"{m}: {', '.join(c) if len(c) <= 4 else f'{len(c)} runs'}" for m, c in cells.items())
        out.append(f"{exp}: {len(specs) - len(absent)} of {len(specs)} planned runs recorded; missing — {detail}")
    return out


def _metrics_by_table(meta: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for exp in (meta.get("suite_config") or {}).get("experiments") or []:
        if "metric" in exp:
            out[exp.get("table") or exp["name"]] = exp["metric"]
    return out


def build_report(results_dir: str | os.PathLike[str], *, make_plots: bool = True) -> tuple[Path, str]:
    """Write REPORT.md, runs.csv, summary.csv and plots/ for a results folder.

    Returns:
        The REPORT.md path and the terminal-text version of the report.
    """
    results = Path(results_dir)
    records = load_records(results)
    meta = load_meta(results)
    runs = runs_frame(records)
    summary = summarize(runs, _metrics_by_table(meta)) if len(runs) else pd.DataFrame()
    if not summary.empty:  # rows in report order: baselines, then the suite's method order
        order = _method_order(summary, meta)
        variants: list[str] = []
        for exp in (meta.get("suite_config") or {}).get("experiments") or []:
            variants += [v for v in exp.get("variants") or {} if v not in variants]
        summary = summary.assign(_o=summary["method"].map(lambda m: order.get(m, 999)),
                                 _k=summary["k_label"].map(_k_sort),
                                 _v=summary["variant"].map(lambda v: variants.index(v) if v in variants else 999))
        summary = summary.sort_values(["table", "_v", "variant", "_k", "_o"], kind="stable")
        summary = summary.drop(columns=["_o", "_k", "_v"])
        summary = with_speed_provenance(summary.reset_index(drop=True), runs)
    plots: dict[str, list[str]] = {}
    if make_plots and not summary.empty:
        from petrec.bench.plots import make_plots as _plots

        plots = _plots(summary, results / "plots", meta)
    for name, frame in (("runs.csv", runs), ("summary.csv", summary)):
        with atomic_path(results / name) as tmp:
            frame.to_csv(tmp, index=False)
    text_md = render(summary, runs, meta, "md", {t: [f"plots/{p}" for p in ps] for t, ps in plots.items()})
    write_text_atomic(results / "REPORT.md", text_md + _extra_notes(results))
    return results / "REPORT.md", render(summary, runs, meta, "text")


def _extra_notes(results: Path) -> str:
    """Hand-written notes (``NOTES.md`` in the results folder) appended verbatim to the report."""
    notes = results / "NOTES.md"
    return "\n" + notes.read_text(encoding="utf-8") if notes.is_file() else ""
