"""The prior path end to end: the recipe fits behaviour statistics, trains the prior, reloads exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from petrec.data.features import STATS_FILE, BehaviourStats
from petrec.runs import load_run, score_examples

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256"]


@pytest.mark.parametrize("task", ["ctr", "rating"])
def test_prior_run_writes_stats_and_reloads_to_the_same_scores(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, task: str
) -> None:
    out = tmp_path / "run"
    metrics = finetune.main([
        "--model.backbone", str(tiny_bert), "--train.output_dir", str(out), "--train.max_steps", "3",
        "--train.epochs", "1", "--data.max_train_examples", "64", "--model.behaviour_prior", "true",
        "--data.task", task, "--model.task", task, *FAST,
    ])
    stats = BehaviourStats.load(out)
    assert (out / STATS_FILE).is_file() and stats.task == task
    # prior_stats: block (default) counts the whole training split, not the 64 sampled examples
    assert stats.fitted_on > 64
    run = load_run(out)
    assert run.stats is not None and run.stats.to_json() == stats.to_json()
    data = finetune.prepare(run.data)
    scores = score_examples(run, data.splits["test"], items=data.items)
    if task == "ctr":
        auc = roc_auc_score(np.asarray(data.splits["test"]["label"]), scores)
        assert auc == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    else:
        rmse = float(np.sqrt(np.mean((scores - np.asarray(data.splits["test"]["rating"])) ** 2)))
        assert rmse == pytest.approx(metrics["test"]["rmse"], abs=1e-5)
    saved = json.loads((out / "adapter" / "petrec_adapter.json").read_text())
    assert "prior" in json.dumps(saved)  # the prior head is saved with the adapter


def test_prior_stats_from_train_counts_only_the_sampled_examples(finetune: ModuleType) -> None:
    cfg, _ = finetune.parse_args(["--model.behaviour_prior", "true", "--prior_stats", "train",
                                  "--data.max_train_examples", "50"])
    data = finetune.prepare(cfg.data)
    assert finetune.fit_behaviour_stats(cfg, data.splits["train"]).fitted_on == 50


def test_export_refuses_a_prior_run_until_serving_computes_features(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path
) -> None:
    from petrec.deploy.export import ExportError, export_run

    out = tmp_path / "run"
    finetune.main(["--model.backbone", str(tiny_bert), "--train.output_dir", str(out), "--train.max_steps", "1",
                   "--train.epochs", "1", "--data.max_train_examples", "32", "--model.behaviour_prior", "true",
                   "--evaluate_test", "false", *FAST])
    with pytest.raises(ExportError, match="behaviour_prior cannot be exported yet"):
        export_run(out, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_a_prior_model_starts_as_the_prior_alone(tiny_bert: Path) -> None:
    import torch

    from petrec.data.features import FEATURE_NAMES
    from petrec.models import ModelConfig, build_model

    model = build_model(ModelConfig(backbone=str(tiny_bert), behaviour_prior=True, dropout=0.0)).eval()
    ids = torch.randint(1000, 2000, (3, 7))
    feats = torch.randn(3, len(FEATURE_NAMES))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), features=feats).logits
        torch.testing.assert_close(out, model.prior(feats), atol=0, rtol=0)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"backbone", "head", "prior"}
