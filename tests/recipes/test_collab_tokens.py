"""Collaborative tokens end to end: the recipe fits the ID model on training examples only, trains, reloads exactly."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from petrec.config import ConfigError
from petrec.methods.io import TENSORS_FILE
from petrec.models import ModelConfig, PetrecModelError
from petrec.models.collab import COLLAB_FILE, CollabSpec
from petrec.runs import load_run, score_examples

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256"]


def _run(finetune: ModuleType, backbone: Path, out: Path, *extra: str) -> dict:
    return finetune.main(["--model.backbone", str(backbone), "--train.output_dir", str(out), "--train.epochs", "1",
                          "--data.max_train_examples", "64", "--model.collab_tokens", "true", *FAST, *extra])


def test_a_collab_run_writes_its_spec_and_reloads_to_the_same_scores(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    metrics = _run(finetune, tiny_bert, out, "--train.max_steps", "3")
    spec = CollabSpec.load(out)
    # collab_fit: heldout = the training block minus the 64 examples the language model trains on
    block = len(finetune.prepare(load_run(out).data.unsampled()).splits["train"])
    assert spec.fit == "heldout" and spec.fitted_on == block - 64
    assert metrics["collab"]["fitted_on"] == spec.fitted_on and 0 < metrics["collab"]["id_model_test_auc"] < 1
    tensors = load_file(out / "adapter" / TENSORS_FILE)
    assert any(".id_model." in k for k in tensors) and any(".proj." in k for k in tensors)
    run = load_run(out)
    assert run.collab == spec
    data = finetune.prepare(run.data)
    scores = score_examples(run, data.splits["test"], items=data.items)
    auc = roc_auc_score(np.asarray(data.splits["test"]["label"]), scores)
    # Not to 1e-6 as the prior's test: after 3 steps this tiny model's scores spread by ~3e-4, so
    # float32 sigmoid ties (score_examples returns probabilities, the recipe ranks logits) move the
    # AUC by ~2e-5 (measured on this fixture), while the scores of a reload without the ID model's
    # weights or the projector would come from other tokens altogether.
    assert auc == pytest.approx(metrics["test"]["auc"], abs=2e-4)


def test_no_valid_or_test_label_reaches_the_id_model_or_its_tokens(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = finetune.prepare

    def flipped(cfg):  # every valid / test label (and the history labels of those rows) turned over
        data = prepare(cfg)
        for name in ("valid", "test"):
            data.splits[name] = data.splits[name].map(lambda r: {"label": 1 - r["label"]})
        return data

    _run(finetune, tiny_bert, tmp_path / "a", "--train.epochs", "0", "--evaluate_test", "false")
    monkeypatch.setattr(finetune, "prepare", flipped)
    _run(finetune, tiny_bert, tmp_path / "b", "--train.epochs", "0", "--evaluate_test", "false")
    a, b = (CollabSpec.load(tmp_path / n) for n in ("a", "b"))
    assert a.items == b.items and a.id_metrics == b.id_metrics
    ta, tb = (load_file(tmp_path / n / "adapter" / TENSORS_FILE) for n in ("a", "b"))
    ids = [k for k in ta if ".id_model." in k]
    assert ids and all(np.array_equal(ta[k].numpy(), tb[k].numpy()) for k in ids)


def test_heldout_needs_examples_outside_the_training_split(finetune: ModuleType) -> None:
    cfg, _ = finetune.parse_args(["--model.collab_tokens", "true", "--data.max_train_examples", "100000"])
    data = finetune.prepare(cfg.data)
    with pytest.raises(ConfigError, match=r"collab_fit: heldout leaves 0 training examples.*collab_fit: train"):
        finetune.fit_collab(cfg, data.splits["train"])


def test_config_refuses_what_collab_tokens_cannot_do() -> None:
    with pytest.raises(PetrecModelError, match="collab_tokens applies to ctr"):
        ModelConfig(task="rating", collab_tokens=True)
    with pytest.raises(PetrecModelError, match="method 'prompt' rewrites the input"):
        ModelConfig(method="prompt", collab_tokens=True)
    with pytest.raises(PetrecModelError, match="collab_dim"):
        ModelConfig(collab_tokens=True, collab_dim=0)


def test_a_collab_run_exports_with_its_spec(finetune: ModuleType, tiny_bert: Path, tmp_path: Path) -> None:
    """Once refused; now exported with collab_tokens.json (scores: tests/deploy/test_export_inputs.py)."""
    from petrec.deploy.export import export_run, load_export

    out = tmp_path / "run"
    # bf16: the ID model's Accelerator must take the recipe's precision (one Accelerate state per
    # process). The state is reset around the run: a recipe's Accelerator keeps its own precision,
    # so other tests' 'no' must not meet this one's bf16 in the shared state.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        _run(finetune, tiny_bert, out, "--train.max_steps", "1", "--evaluate_test", "false",
             "--train.mixed_precision", "bf16")
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    manifest = export_run(out, tmp_path / "export", notice=None)
    assert manifest.inputs["collab_tokens"]["file"] == COLLAB_FILE
    assert load_export(tmp_path / "export").collab == CollabSpec.load(out)


def test_two_stage_trains_the_text_first_then_only_the_projector(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = finetune.train
    snapshots: list[dict] = []

    def spy(model, *args, **kwargs):
        inner = getattr(model, "base_model", model)
        inner = getattr(inner, "model", inner)
        def snap() -> dict:
            return {n: p.detach().clone() for n, p in model.named_parameters()}
        snapshots.append({"active": inner.collab_active, "before": snap(),
                          "trainable": {n for n, p in model.named_parameters() if p.requires_grad}})
        result = real_train(model, *args, **kwargs)
        snapshots[-1]["after"] = snap()
        return result

    monkeypatch.setattr(finetune, "train", spy)
    out = tmp_path / "run"
    metrics = _run(finetune, tiny_bert, out, "--train.max_steps", "2", "--collab_schedule", "two_stage")
    assert len(snapshots) == 2
    one, two = snapshots
    assert one["active"] is False and two["active"] is True  # stage 1 reads the text alone
    assert not any(n.startswith("collab.") or ".collab." in n for n in one["trainable"])
    assert two["trainable"] and all("collab" in n and ".id_model." not in n for n in two["trainable"])

    def changed(stage: dict, part: str) -> list[str]:
        return [n for n in stage["before"] if part in n and not (stage["before"][n] == stage["after"][n]).all()]

    assert changed(one, "lora_") and not changed(one, "collab")  # stage 1: adapter yes, tokens no
    assert changed(two, "collab") and not changed(two, "lora_")  # stage 2: the projector only
    assert not changed(two, "head")
    assert metrics["collab"]["schedule"] == "two_stage" and metrics["steps"] == 4
    assert metrics["collab"]["stage1"]["steps"] == 2 and 0 < metrics["collab"]["stage1"]["valid_best"]["value"] < 1
    assert metrics["trainable_params"] > 0 and (out / "stage1").is_dir()
    # what was saved is the whole adapter (attach-time trainable set), reloadable to the same scores
    run = load_run(out)
    data = finetune.prepare(run.data)
    scores = score_examples(run, data.splits["test"], items=data.items)
    assert roc_auc_score(np.asarray(data.splits["test"]["label"]), scores) == pytest.approx(
        metrics["test"]["auc"], abs=2e-4)


def test_two_stage_needs_collab_tokens() -> None:
    from petrec.recipes.finetune import FinetuneConfig

    with pytest.raises(ValueError, match=r"collab_schedule: two_stage needs model\.collab_tokens"):
        FinetuneConfig(collab_schedule="two_stage")
    with pytest.raises(ValueError, match="collab_projector_epochs: expected an integer ≥ 1"):
        FinetuneConfig(collab_projector_epochs=0)


@pytest.mark.parametrize("case", ["joint", "two_stage", "logit_only", "residual"])
def test_collab_in_fusion_fits_the_id_weight_on_validation_and_reloads(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, case: str
) -> None:
    from petrec.recipes.finetune import FinetuneConfig

    out = tmp_path / "run"
    # logit_only: the ID model's logit in the mix, no tokens in the prompt (model.collab_prompt_tokens: false)
    # residual: that, with the LM trained beside the count + ID offset fitted on the training examples
    extra = {"logit_only": ["--model.collab_prompt_tokens", "false"],
             "residual": ["--model.collab_prompt_tokens", "false", "--model.lm_target", "residual"]
             }.get(case, ["--collab_schedule", case])
    metrics = _run(finetune, tiny_bert, out, "--train.max_steps", "2", "--model.behaviour_prior", "true",
                   "--model.prior_fusion", "stacked", "--model.collab_in_fusion", "true",
                   "--train.eval_at_start", "true", *extra)
    valid = metrics["valid"]
    assert {"fusion_weight", "fusion_collab_weight", "fusion_bias", "lm_auc", "collab_auc"} <= set(valid)
    assert "fusion_collab_weight" not in metrics["test"]  # test is scored with the validation's mix
    # the ID model alone on validation is the recipe's own reference number for it
    assert valid["collab_auc"] == pytest.approx(metrics["collab"]["id_model_valid_auc"], abs=1e-6)
    run = load_run(out)
    assert run.model.cfg.collab_prompt_tokens == (case not in ("logit_only", "residual"))
    assert float(run.model.prior.fusion_collab_weight.detach()) == pytest.approx(valid["fusion_collab_weight"],
                                                                                  abs=1e-6)
    data = finetune.prepare(run.data)
    scores = score_examples(run, data.splits["test"], items=data.items)
    assert roc_auc_score(np.asarray(data.splits["test"]["label"]), scores) == pytest.approx(
        metrics["test"]["auc"], abs=2e-4)
    if case == "logit_only":
        with pytest.raises(ValueError, match="two_stage trains the soft tokens' projector"):
            FinetuneConfig(collab_schedule="two_stage", model=run.model.cfg)
    if case == "residual":  # the offset's numbers, fitted on the training examples, are in metrics.json
        assert set(metrics["residual_offset"]) == {"collab_weight", "bias"}
        assert np.isfinite(list(metrics["residual_offset"].values())).all()
        with pytest.raises(ValueError, match=r"lm_target: residual with model\.collab_in_fusion needs collab_fit: heldout"):
            FinetuneConfig(collab_fit="train", model=run.model.cfg)
    else:
        assert "residual_offset" not in metrics
