"""Aggregation over seeds: mean, sample std, Student-t 95% interval, ratios to full, failures excluded."""

from __future__ import annotations

import math
from typing import Any

import pytest

from petrec.bench.aggregate import k_label, lower_is_better, mean_std_ci, runs_frame, summarize


def record(method: str, seed: int, auc: float | None, *, status: str = "ok", k: int | None = 256,
           mem: float | None = 100.0, sps: float | None = 10.0, kind: str = "finetune",
           params: int | None = 10, table: str = "P1", fold: int | None = None) -> dict[str, Any]:
    test = {} if auc is None else {"auc": auc, "logloss": 0.5}
    f = "" if fold is None else f"__f{fold}"
    return {
        "run_info": {"run_id": f"{table}__default__{method}__k{k}{f}__s{seed}", "suite": "s", "kind": kind,
                     "experiment": table, "table": table, "method": method, "variant": "default",
                     "few_shot_k": k, "seed": seed, **({} if fold is None else {"fold": fold}), "status": status,
                     "error": None if status == "ok" else "exit code 1\nTraceback ...\nMemoryError"},
        "train_info": {"peak_memory": {} if mem is None else {"process_peak_rss_mb": mem},
                       "train_samples_per_s": sps, "inference_samples_per_s": None if sps is None else 2 * sps,
                       "trainable_params": params, "trainable_percent": None if params is None else params / 10,
                       "adapter_bytes": 1000, "wall_seconds": 3.0},
        "metrics": {"valid": {}, "test": test},
    }


def test_mean_std_ci_matches_hand_computation() -> None:
    out = mean_std_ci([0.7, 0.8, 0.9])
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(0.8)
    assert out["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) from tables
    assert out["ci_low"] == pytest.approx(0.8 - half)
    assert out["ci_high"] == pytest.approx(0.8 + half)


def test_mean_std_ci_single_and_empty_and_nan() -> None:
    one = mean_std_ci([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert mean_std_ci([])["n"] == 0 and math.isnan(mean_std_ci([])["mean"])
    assert mean_std_ci([0.4, float("nan"), 0.6])["mean"] == pytest.approx(0.5)


def test_summarize_groups_seeds_excludes_failures_and_divides_by_full() -> None:
    records = [
        record("full", 1, 0.70, mem=400, sps=10), record("full", 2, 0.72, mem=400, sps=10),
        record("lora", 1, 0.69, mem=100, sps=15), record("lora", 2, 0.71, mem=140, sps=25),
        record("lora", 3, None, status="failed", mem=None, sps=None),
        record("history-share", 1, 0.726, kind="baseline", mem=None, sps=None, params=0),
        record("lora", 1, 0.60, k=16, mem=100, sps=15),
    ]
    summary = summarize(runs_frame(records), {"P1": "auc"})
    assert len(summary) == 4
    lora = summary[(summary["method"] == "lora") & (summary["k_label"] == "256")].iloc[0]
    assert (lora["n_runs"], lora["n_ok"], lora["n_failed"]) == (3, 2, 1)
    assert lora["seeds"] == "1,2,3"
    assert lora["metric_mean"] == pytest.approx(0.70)
    assert lora["metric_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert lora["memory_mb"] == pytest.approx(120.0)
    assert lora["memory_ratio"] == pytest.approx(120.0 / 400.0)
    assert lora["train_sps_ratio"] == pytest.approx(2.0)
    assert lora["infer_sps_ratio"] == pytest.approx(2.0)
    assert "MemoryError" not in lora["errors"] and lora["errors"] == "exit code 1"
    assert lora["memory_source"] == "CPU peak RSS of the run process"
    k16 = summary[summary["k_label"] == "16"].iloc[0]
    assert math.isnan(k16["memory_ratio"])  # no full run at k=16: no ratio, never a wrong one
    base = summary[summary["method"] == "history-share"].iloc[0]
    assert base["kind"] == "baseline" and base["metric_mean"] == pytest.approx(0.726)
    assert math.isnan(base["memory_mb"]) and math.isnan(base["memory_ratio"])


def test_folds_are_pooled_like_seeds_into_one_mean_and_interval() -> None:
    aucs = {(f, s): 0.70 + 0.01 * f + 0.003 * s for f in range(5) for s in (1, 2)}
    records = [record("lora", s, auc, fold=f) for (f, s), auc in aucs.items()]
    records += [record("history-share", 1, 0.60 + 0.02 * f, kind="baseline", fold=f) for f in range(5)]
    records += [record("full", 1, 0.75, fold=0), record("full", 1, None, fold=1, status="failed")]
    frame = runs_frame(records)
    assert sorted(frame["fold"].dropna().unique()) == [0, 1, 2, 3, 4]
    summary = summarize(frame, {"P1": "auc"}).set_index("method")
    lora = summary.loc["lora"]
    expected = mean_std_ci(list(aucs.values()))  # the t-interval over all 10 fold × seed runs
    assert (lora["n_runs"], lora["metric_n"], lora["n_folds"], lora["folds"], lora["seeds"]) == (
        10, 10, 5, "0,1,2,3,4", "1,2")
    for key in ("mean", "std", "ci_low", "ci_high"):
        assert lora[f"metric_{key}"] == pytest.approx(expected[key])
    assert lora["metric_mean"] == pytest.approx(0.7245)
    base = summary.loc["history-share"]
    assert (base["metric_n"], base["n_folds"]) == (5, 5)
    assert base["metric_mean"] == pytest.approx(0.64)
    assert base["metric_ci_low"] < 0.64 < base["metric_ci_high"]
    full = summary.loc["full"]  # a failed fold counts as a planned fold, not as a run of the mean
    assert (full["n_runs"], full["n_ok"], full["metric_n"], full["n_folds"]) == (2, 1, 1, 2)


def test_runs_without_folds_get_no_fold_columns() -> None:
    frame = runs_frame([record("full", 1, 0.7), record("lora", 1, 0.6)])
    assert "fold" not in frame
    assert not {"folds", "n_folds"} & set(summarize(frame).columns)
    mixed = summarize(runs_frame([record("full", 1, 0.7), record("lora", 1, 0.6, fold=0, table="CV")]))
    assert mixed.set_index("method")["n_folds"].to_dict() == {"full": 0, "lora": 1}


def test_summary_metric_none_and_default() -> None:
    frame = runs_frame([record("full", 1, 0.7), record("lora", 1, 0.6)])
    assert summarize(frame)["metric"].tolist() == ["auc", "auc"]  # auc preferred when present
    none = summarize(frame, {"P1": None})
    assert none["metric"].isna().all() and none["metric_mean"].isna().all()


def test_memory_source_prefers_cuda_allocated() -> None:
    recs = [record("full", 1, 0.7), record("lora", 1, 0.6)]
    recs[0]["train_info"]["peak_memory"]["cuda_max_allocated_mb"] = 800.0
    recs[1]["train_info"]["peak_memory"]["cuda_max_allocated_mb"] = 200.0
    summary = summarize(runs_frame(recs))
    assert summary["memory_source"].tolist() == ["CUDA max allocated"] * 2
    assert summary.loc[summary["method"] == "lora", "memory_ratio"].iloc[0] == pytest.approx(0.25)


def test_helpers() -> None:
    assert k_label(None) == "full" and k_label(float("nan")) == "full" and k_label(64) == "64"
    assert lower_is_better("rmse") and lower_is_better("logloss") and not lower_is_better("ndcg@10")
    assert runs_frame([]).empty and summarize(runs_frame([])).empty
