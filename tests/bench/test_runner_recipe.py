"""The runner on the REAL recipe: recipes/finetune.py's run folder → the run record → the runs table.

The other runner tests use tests/bench/fake_run.py, which writes a hand-made metrics.json; this
one checks the contract with what the recipe itself writes (a tiny random BERT, 2 steps, the
synthetic world), started the way ``petrec bench`` starts it (the default command).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from petrec.bench.aggregate import runs_frame, summarize
from petrec.bench.runner import WORK_DIR, load_records, run_suite
from petrec.bench.suite import SuiteConfig
from petrec.config import from_dict, read_yaml
from tests.recipes.conftest import tiny_bert  # noqa: F401  (fixture)


def _suite(backbone: Path) -> SuiteConfig:
    """One LoRA run of the finetune recipe: tiny BERT, 32 examples of a small synthetic world, 2 steps."""
    return from_dict(SuiteConfig, {
        "name": "real", "timeout_s": 300,  # command: None = the runner's default (the recipe)
        "defaults": {
            "data": {"dataset": "synthetic", "task": "ctr", "history_len": 5, "synthetic_users": 60,
                     "synthetic_items": 80, "max_train_examples": 32},
            "model": {"backbone": str(backbone), "task": "ctr"},
            "train": {"epochs": 1, "max_steps": 2, "batch_size": 16, "eval_batch_size": 256,
                      "metric_for_best": "auc", "progress": False, "trackers": []},
            "max_length": 48,
        },
        "methods": {"lora": {"model": {"method_kwargs": {"r": 4, "alpha": 8}}}},
        "experiments": [{"name": "R", "seeds": [3], "metric": "auc"}],
    })


def _saved_tensor_elements(adapter_dir: Path) -> int:
    """Elements of every tensor the recipe saved as the adapter (only what was trained)."""
    total = 0
    for path in adapter_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    return total


@pytest.mark.slow
def test_runner_records_what_the_real_recipe_wrote(tiny_bert: Path, tmp_path: Path) -> None:  # noqa: F811
    res = tmp_path / "res"
    (record,) = run_suite(_suite(tiny_bert), res, progress=lambda _: None)
    info, tinfo = record["run_info"], record["train_info"]
    assert info["status"] == "ok", info["error"]
    assert info["run_id"] == "R__default__lora__kfull__s3" and info["returncode"] == 0
    argv = info["command"].split()
    assert argv[:3] == [sys.executable, "-m", "petrec.recipes.finetune"]

    out = res / WORK_DIR / info["run_id"] / "out"
    saved = json.loads((out / "metrics.json").read_text())
    # The recipe got the run config the suite describes (its own config.yaml says what ran).
    ran = read_yaml(out / "config.yaml")
    assert ran["model"]["method"] == "lora" and ran["model"]["method_kwargs"] == {"r": 4, "alpha": 8}
    assert (ran["train"]["seed"], ran["data"]["seed"], ran["train"]["max_steps"]) == (3, 3, 2)
    assert ran["data"]["max_train_examples"] == 32 and ran["train"]["output_dir"] == str(out)

    # The record holds exactly the metrics the recipe produced ...
    assert record["metrics"] == {k: saved[k] for k in ("valid", "valid_best", "test")}
    assert set(saved["test"]) >= {"auc", "logloss"} and 0.0 <= saved["test"]["auc"] <= 1.0
    assert saved["valid_best"] == {"metric": "auc", "value": saved["valid"]["auc"], "step": saved["valid"]["step"]}
    # ... and its measurements, under the runner's names.
    assert {k: tinfo[k] for k in ("trainable_params", "total_params", "trainable_percent", "steps",
                                   "stopped_early", "train_samples_per_s", "inference_samples_per_s",
                                   "num_processes")} == {
        k: saved[k] for k in ("trainable_params", "total_params", "trainable_percent", "steps", "stopped_early",
                              "train_samples_per_s", "inference_samples_per_s", "num_processes")}
    assert tinfo["train_wall_seconds"] == saved["wall_seconds"]
    assert tinfo["steps"] == 2 and tinfo["steps_to_best"] == saved["valid_best"]["step"]
    assert tinfo["train_examples"] == saved["examples"]["train"] == 32
    assert tinfo["peak_memory"] == {**saved["peak_memory"], "process_peak_rss_mb": tinfo["peak_memory"][
        "process_peak_rss_mb"]} and tinfo["peak_memory"]["process_peak_rss_mb"] > 50
    assert tinfo["adapter_bytes"] == sum(p.stat().st_size for p in (out / "adapter").rglob("*") if p.is_file())
    # Trainable parameters: what the recipe saved as the adapter, counted independently.
    assert 0 < saved["trainable_params"] == _saved_tensor_elements(out / "adapter") < saved["total_params"]
    assert saved["trainable_percent"] == pytest.approx(100 * saved["trainable_params"] / saved["total_params"])

    # The stored record and the runs table / summary the report is built from say the same.
    assert load_records(res) == [json.loads(json.dumps(record))]
    (row,) = runs_frame(load_records(res)).to_dict("records")
    assert row["test_auc"] == saved["test"]["auc"] and row["test_logloss"] == saved["test"]["logloss"]
    assert row["valid_auc"] == saved["valid"]["auc"] and row["status"] == "ok" and row["method"] == "lora"
    assert row["trainable_params"] == saved["trainable_params"] and row["steps"] == 2
    (summary,) = summarize(runs_frame(load_records(res)), {"R": "auc"}).to_dict("records")
    assert summary["metric_mean"] == saved["test"]["auc"] and summary["metric_n"] == 1
    assert summary["trainable_params"] == saved["trainable_params"] and summary["n_ok"] == 1
