"""Run records → one flat table of runs → one row per (table, variant, k, method) with mean ± std and 95% CI.

pandas does the grouping; the confidence interval is Student's t over seeds
(``mean ± t(0.975, n−1) · s / √n``, scipy), undefined (NaN) for a single seed. The user folds
of a k-fold experiment (``folds``) are pooled like seeds: one cell's n runs are its folds × seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from petrec.bench.system import SHARED_CPU_SHARE

#: Where a peak-memory number may come from, most like-for-like first; one table uses one source.
MEMORY_SOURCES: tuple[tuple[str, str], ...] = (
    ("cuda_max_allocated_mb", "CUDA max allocated"),
    ("train_rss_delta_mb", "CPU RSS growth during training (peak − before model)"),
    ("process_peak_rss_mb", "CPU peak RSS of the run process"),
    ("cpu_peak_rss_mb", "CPU peak RSS reported by the run"),
)
#: Metrics where lower is better (everything else: higher is better).
LOWER_IS_BETTER = ("rmse", "mae", "logloss", "loss", "mse")
GROUP_KEYS = ["table", "variant", "k_label", "method"]


def lower_is_better(metric: str) -> bool:
    """True for error-type metrics (rmse, mae, logloss …)."""
    return metric.split("@")[0].lower() in LOWER_IS_BETTER


def k_label(k: Any) -> str:
    """``"full"`` for None/NaN, else the integer as text."""
    if k is None or (isinstance(k, float) and math.isnan(k)):
        return "full"
    return str(int(k))


def runs_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run with every number the report needs (missing values are NaN)."""
    rows = []
    for rec in records:
        info = rec.get("run_info") or {}
        tinfo = rec.get("train_info") or {}
        peak = tinfo.get("peak_memory") or {}
        metrics = rec.get("metrics") or {}
        error = (info.get("error") or "").strip()
        row: dict[str, Any] = {
            "run_id": info.get("run_id"),
            "suite": info.get("suite"),
            "experiment": info.get("experiment"),
            "table": info.get("table") or info.get("experiment"),
            "kind": info.get("kind"),
            "method": info.get("method"),
            "variant": info.get("variant") or "default",
            "few_shot_k": info.get("few_shot_k"),
            "k_label": k_label(info.get("few_shot_k")),
            "seed": info.get("seed"),
            "status": info.get("status") or "unknown",
            "error": error.splitlines()[0] if error else "",
            "error_last": error.splitlines()[-1] if error else "",
            "labels": ";".join(tinfo.get("labels") or []),
        }
        for key in ("trainable_params", "total_params", "trainable_percent", "train_samples_per_s",
                    "inference_samples_per_s", "wall_seconds", "steps", "steps_to_best", "adapter_bytes"):
            row[key] = tinfo.get(key)
        for key, _ in MEMORY_SOURCES:
            row[key] = peak.get(key)
        row["cuda_max_reserved_mb"] = peak.get("cuda_max_reserved_mb")
        row["other_cpu_share"] = (tinfo.get("cpu_sharing") or {}).get("other_share")
        for split in ("test", "valid"):
            for name, value in (metrics.get(split) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[f"{split}_{name}"] = value
        if info.get("fold") is not None:  # k-fold runs only: other results keep their columns
            row["fold"] = info["fold"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    numeric = [c for c in frame.columns if c.startswith(("test_", "valid_"))] + [
        "trainable_params", "total_params", "trainable_percent", "train_samples_per_s",
        "inference_samples_per_s", "wall_seconds", "steps", "steps_to_best", "adapter_bytes",
        "cuda_max_reserved_mb", "other_cpu_share", *(k for k, _ in MEMORY_SOURCES)]
    for col in numeric:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def memory_source(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The first memory source of :data:`MEMORY_SOURCES` present in any ok run of ``frame``."""
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    for key, label in MEMORY_SOURCES:
        if key in ok and ok[key].notna().any():
            return key, label
    return None


def mean_std_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1), and the 95% Student-t interval of the mean; NaNs are ignored.

    Returns:
        ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high`` (std and CI are NaN for n < 2).
    """
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(arr)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(arr.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def summarize(frame: pd.DataFrame, metrics: dict[str, str | None] | None = None,
              reference_method: str = "full") -> pd.DataFrame:
    """Aggregate runs over seeds: one row per (table, variant, k, method).

    Args:
        frame: :func:`runs_frame` output.
        metrics: table → test metric name (None: no task metric); tables not listed use
            ``auc`` when present, else the first ``test_*`` column.
        reference_method: Method whose memory and speed are the ratio denominators.

    Returns:
        Columns: the group keys, kind, metric, n_runs, n_ok, n_failed, seeds, metric_mean /
        _std / _ci_low / _ci_high / _n, trainable_params, trainable_percent, memory_mb,
        memory_source, memory_ratio, train_sps, train_sps_ratio, infer_sps, adapter_bytes,
        wall_seconds, shared_cpu_runs (ok runs whose speed was measured while other processes
        used more than :data:`SHARED_CPU_SHARE` of the CPU), errors; when any run is a k-fold
        run (``fold`` column): folds (the fold indices) and n_folds (0 for a cell without
        folds). A cell's folds are pooled like seeds: metric_n counts its ok fold × seed runs.
    """
    if frame.empty:
        return pd.DataFrame()
    metrics = metrics or {}
    out_rows = []
    for table, tframe in frame.groupby("table", sort=False):
        metric = metrics[str(table)] if str(table) in metrics else _default_metric(tframe)
        source = memory_source(tframe)
        for keys, g in tframe.groupby(GROUP_KEYS, sort=False, dropna=False):
            ok = g[g["status"] == "ok"]
            col = f"test_{metric}" if metric else None
            stats_ = mean_std_ci(ok[col].tolist() if col and col in ok else [])
            mem = ok[source[0]].mean() if source and len(ok) else math.nan
            row = dict(zip(GROUP_KEYS, keys, strict=True))
            row.update(
                kind=g["kind"].iloc[0],
                metric=metric,
                n_runs=len(g),
                n_ok=len(ok),
                n_failed=int((g["status"] != "ok").sum()),
                seeds=",".join(str(s) for s in sorted(g["seed"].dropna().unique())),
                metric_mean=stats_["mean"], metric_std=stats_["std"], metric_ci_low=stats_["ci_low"],
                metric_ci_high=stats_["ci_high"], metric_n=stats_["n"],
                trainable_params=ok["trainable_params"].mean(),
                trainable_percent=ok["trainable_percent"].mean(),
                memory_mb=mem,
                memory_source=source[1] if source else "",
                train_sps=ok["train_samples_per_s"].mean(),
                infer_sps=ok["inference_samples_per_s"].mean(),
                adapter_bytes=ok["adapter_bytes"].mean(),
                wall_seconds=ok["wall_seconds"].mean(),
                shared_cpu_runs=int((ok["other_cpu_share"] > SHARED_CPU_SHARE).sum()),
                labels=";".join(sorted({lbl for lbl in g["labels"] if lbl})),
                errors=" | ".join(sorted({e for e in g.loc[g["status"] != "ok", "error"] if e})),
            )
            if "fold" in g:
                folds = sorted(int(f) for f in g["fold"].dropna().unique())
                row.update(folds=",".join(str(f) for f in folds), n_folds=len(folds))
            out_rows.append(row)
    summary = pd.DataFrame(out_rows)
    ref = summary[summary["method"] == reference_method].set_index(["table", "variant", "k_label"])
    for col, ratio in (("memory_mb", "memory_ratio"), ("train_sps", "train_sps_ratio"),
                       ("infer_sps", "infer_sps_ratio")):
        denom = summary.apply(lambda r, c=col: ref[c].get((r["table"], r["variant"], r["k_label"]), math.nan)
                              if len(ref) else math.nan, axis=1)
        summary[ratio] = summary[col] / denom.astype(float)
    return summary


def _default_metric(frame: pd.DataFrame) -> str | None:
    tests = [c[5:] for c in frame.columns if c.startswith("test_") and frame[c].notna().any()]
    if "auc" in tests:
        return "auc"
    return tests[0] if tests else None
