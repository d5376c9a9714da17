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


def test_a_prior_run_exports_with_its_stats(finetune: ModuleType, tiny_bert: Path, tmp_path: Path) -> None:
    """Once refused; now exported with behaviour_stats.json (scores: tests/deploy/test_export_inputs.py)."""
    from petrec.deploy.export import export_run, load_export

    out = tmp_path / "run"
    finetune.main(["--model.backbone", str(tiny_bert), "--train.output_dir", str(out), "--train.max_steps", "1",
                   "--train.epochs", "1", "--data.max_train_examples", "32", "--model.behaviour_prior", "true",
                   "--evaluate_test", "false", *FAST])
    manifest = export_run(out, tmp_path / "export", notice=None)
    assert manifest.inputs["behaviour_stats"]["file"] == STATS_FILE
    assert load_export(tmp_path / "export").stats.to_json() == BehaviourStats.load(out).to_json()


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


def test_a_stacked_model_starts_as_the_prior_and_trains_the_language_model_alone(tiny_bert: Path) -> None:
    import torch
    import torch.nn.functional as F

    from petrec.data.features import FEATURE_NAMES
    from petrec.models import ModelConfig, build_model

    cfg = ModelConfig(backbone=str(tiny_bert), behaviour_prior=True, prior_fusion="stacked", dropout=0.0)
    model = build_model(cfg)
    ids = torch.randint(1000, 2000, (4, 7))
    feats, labels = torch.randn(4, len(FEATURE_NAMES)), torch.tensor([0.0, 1.0, 1.0, 0.0])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), features=feats, labels=labels)
    torch.testing.assert_close(out.logits, out.prior_logits, atol=0, rtol=0)  # fusion weight 0: the prior
    assert out.lm_logits.abs().sum() > 0  # the language model's head is not zeroed as in joint mode
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.lm_logits, labels))
    model.prior.freeze_fit()
    out.loss.backward()
    # (the prior is peft's modules_to_save copy under LoRA: its names carry a prefix)
    assert {n.rsplit(".", 1)[-1] for n, p in model.prior.named_parameters() if p.requires_grad} == {
        "fusion_weight", "fusion_bias"}
    assert all(p.grad is None or not p.grad.any() for p in model.prior.parameters())
    model.prior.set_fusion(0.5, 0.25)
    with torch.no_grad():
        again = model(input_ids=ids, attention_mask=torch.ones_like(ids), features=feats)
    torch.testing.assert_close(again.logits, again.prior_logits + 0.5 * again.lm_logits + 0.25)


def test_stacked_fusion_needs_the_prior() -> None:
    from petrec.models import ModelConfig, PetrecModelError

    with pytest.raises(PetrecModelError, match=r"set model\.behaviour_prior: true"):
        ModelConfig(prior_fusion="stacked")
    with pytest.raises(PetrecModelError, match="prior_fusion"):
        ModelConfig(behaviour_prior=True, prior_fusion="late")


def test_stacked_run_fits_its_mix_on_validation_keeps_the_prior_and_reloads(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    common = ["--model.backbone", str(tiny_bert), "--data.max_train_examples", "64", "--model.behaviour_prior",
              "true", "--model.prior_fusion", "stacked", "--train.eval_at_start", "true", *FAST]
    trained = finetune.main([*common, "--train.output_dir", str(tmp_path / "run"), "--train.epochs", "1",
                             "--train.max_steps", "4", "--train.eval_every_steps", "2"])
    start = finetune.main([*common, "--train.output_dir", str(tmp_path / "start"), "--train.epochs", "0"])
    for metrics in (trained, start):
        assert {"fusion_weight", "fusion_bias", "lm_auc"} <= set(metrics["valid"])
        assert "fusion_weight" not in metrics["test"]  # test is scored with the validation's mix
    tensors = [load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")) for name in ("run", "start")]
    prior_keys = [k for k in tensors[0] if ".prior." in f".{k}" and "linear" in k]
    assert prior_keys and all(torch.equal(tensors[0][k], tensors[1][k]) for k in prior_keys)  # never trained
    run = load_run(tmp_path / "run")
    assert float(run.model.prior.fusion_weight.detach()) == pytest.approx(trained["valid"]["fusion_weight"], abs=1e-6)
    data = finetune.prepare(run.data)
    scores = score_examples(run, data.splits["test"], items=data.items)
    auc = roc_auc_score(np.asarray(data.splits["test"]["label"]), scores)
    assert auc == pytest.approx(trained["test"]["auc"], abs=1e-6)
