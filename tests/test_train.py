"""The Accelerate loop on a toy model: resume exactness, early stopping, accumulation, groups."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from torch import nn
from torch.utils.data import DataLoader

from petrec.train import TrainConfig, build_optimizer, is_head_param, make_accelerator, train


@dataclass
class _Out:
    loss: torch.Tensor
    logits: torch.Tensor


class Toy(nn.Module):
    """Embedding-bag 'backbone' + dropout + linear head: small, but with every moving part."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.EmbeddingBag(50, 16, mode="mean")
        self.norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(16, 1)

    def forward(self, input_ids, attention_mask=None, labels=None):
        h = self.drop(self.norm(self.backbone(input_ids)))
        logits = self.head(h).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels) if labels is not None else None
        return _Out(loss, logits)


def _rows(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, 6), generator=g)
    labels = (ids.float().mean(1) > 24.5).float()  # learnable from the ids
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]


def _loaders(batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    return (DataLoader(_rows(96, 1), batch_size=batch_size, shuffle=True),
            DataLoader(_rows(40, 2), batch_size=16))


def _accuracy(model, loader, accelerator) -> dict[str, float]:
    model.eval()
    right, total, loss = 0.0, 0, 0.0
    with torch.no_grad():
        for batch in loader:
            out = model(**batch)
            logits, labels = accelerator.gather_for_metrics((out.logits, batch["labels"]))
            right += float(((logits > 0).float() == labels).sum())
            total += len(labels)
            loss += float(out.loss) * len(labels)
    return {"acc": right / total, "loss": loss / total}


def _fresh_accelerator(cfg: TrainConfig):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return make_accelerator(cfg)


def _run(tmp: Path, on_step=None, resume=False, **overrides):
    settings = dict(output_dir=str(tmp), epochs=3, batch_size=8, lr=5e-3, checkpoint_every_steps=4,
                    eval_every_steps=5, progress=False, trackers=[], mixed_precision="no", seed=7,
                    log_every_steps=1, metric_for_best="loss")
    settings.update(overrides)
    cfg = TrainConfig(resume=resume, **settings)
    model = Toy()
    train_loader, valid_loader = _loaders(cfg.batch_size)
    acc = _fresh_accelerator(cfg)
    result = train(model, train_loader, valid_loader, cfg, evaluate_fn=_accuracy, accelerator=acc,
                   on_step=on_step)
    return model, result


class _KillError(Exception):
    pass


@pytest.mark.parametrize(
    ("kill_at", "ckpt_step", "ckpt_batches"),
    [(7, 4, 4), (14, 12, 0)],  # mid-epoch; just after an epoch-end checkpoint (12 steps/epoch)
)
def test_interrupted_run_resumes_to_identical_result(
    tmp_path: Path, kill_at: int, ckpt_step: int, ckpt_batches: int
) -> None:
    full_model, full = _run(tmp_path / "full")

    def kill(step: int) -> None:
        if step == kill_at:
            raise _KillError

    with pytest.raises(_KillError):
        _run(tmp_path / "resumed", on_step=kill)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == ckpt_step and state["batches_done"] == ckpt_batches
    model, resumed = _run(tmp_path / "resumed", resume=True)

    assert resumed.global_step == full.global_step == 36
    assert resumed.best_step == full.best_step
    assert resumed.best_metric == pytest.approx(full.best_metric, abs=0, rel=1e-12)
    assert [h["loss"] for h in resumed.valid_history] == pytest.approx([h["loss"] for h in full.valid_history])
    for (name, a), (_, b) in zip(full_model.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping_keeps_the_best_weights(tmp_path: Path) -> None:
    calls: list[int] = []
    snapshots: list[torch.Tensor] = []

    def fake_metric(model, loader, accelerator):
        # Best at the 2nd evaluation, then worse: patience 2 stops at the 4th.
        calls.append(1)
        snapshots.append(model.head.weight.detach().clone())
        return {"score": [0.5, 0.9, 0.7, 0.6, 0.8][len(calls) - 1]}

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=20, eval_every_steps=3, early_stopping_patience=2,
                      progress=False, trackers=[], mixed_precision="no", lr=1e-2)
    model = Toy()
    train_loader, valid_loader = _loaders()
    result = train(model, train_loader, valid_loader, cfg, evaluate_fn=fake_metric,
                   accelerator=_fresh_accelerator(cfg))
    assert result.stopped_early
    assert len(calls) == 4 and result.global_step == 12
    assert result.best_metric == 0.9 and result.best_step == 6
    assert torch.equal(model.head.weight, snapshots[1])
    assert not torch.equal(model.head.weight, snapshots[-1])
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["valid/score"] for r in log if "valid/score" in r] == [0.5, 0.9, 0.7, 0.6]


def test_time_budget_stops_at_the_next_evaluation_and_keeps_the_best(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_metric(model, loader, accelerator):
        calls.append(1)
        if len(calls) == 2:
            time.sleep(3.5)  # the 2nd evaluation alone spends the 3 s budget
        return {"score": [0.5, 0.9, 0.7, 0.6, 0.8][min(len(calls), 5) - 1]}

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=20, eval_every_steps=3, max_train_minutes=0.05,
                      progress=False, trackers=[], mixed_precision="no", lr=1e-2)
    result = train(Toy(), *_loaders(), cfg, evaluate_fn=slow_metric, accelerator=_fresh_accelerator(cfg))
    assert result.time_budget_hit and not result.stopped_early
    assert len(calls) == 2 and result.global_step == 6  # checked after the 2nd evaluation: stop there
    assert result.best_metric == 0.9 and result.best_step == 6
    unbounded = train(Toy(), *_loaders(), TrainConfig(**{**cfg.__dict__, "max_train_minutes": 0.0,
                                                           "output_dir": str(tmp_path / "b"), "epochs": 1}),
                      evaluate_fn=lambda m, loader, a: {"score": 0.5}, accelerator=_fresh_accelerator(cfg))
    assert not unbounded.time_budget_hit
    with pytest.raises(ValueError, match="max_train_minutes"):
        TrainConfig(max_train_minutes=-1)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path: Path) -> None:
    common = dict(epochs=1, progress=False, trackers=[], mixed_precision="no", lr=1e-2, max_grad_norm=0,
                  warmup_ratio=0.0, scheduler="constant", weight_decay=0.0)
    weights = []
    for bs, accum in ((16, 1), (8, 2)):
        cfg = TrainConfig(output_dir=str(tmp_path / f"{bs}"), batch_size=bs, grad_accum_steps=accum, **common)
        model = Toy(dropout=0.0)
        rows = _rows(96, 1)
        loader = DataLoader(rows, batch_size=bs, shuffle=False)
        result = train(model, loader, None, cfg, evaluate_fn=_accuracy, accelerator=_fresh_accelerator(cfg))
        assert result.global_step == 6 and result.train_samples == 96
        weights.append(model.head.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_optimizer_groups_split_head_and_decay() -> None:
    model = Toy()
    model.backbone.weight.requires_grad_(False)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-2, weight_decay=0.1))
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert id(names["backbone.weight"]) not in by_param  # frozen parameters are not optimised
    assert by_param[id(names["head.weight"])]["lr"] == 1e-2
    assert by_param[id(names["head.weight"])]["weight_decay"] == 0.1
    assert by_param[id(names["head.bias"])]["weight_decay"] == 0.0
    assert by_param[id(names["norm.weight"])]["lr"] == 1e-3
    assert by_param[id(names["norm.weight"])]["weight_decay"] == 0.0
    assert is_head_param("backbone.base_model.head.weight") and not is_head_param("model.heads_count")


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", -1), ("epochs", 1.5), ("batch_size", 0), ("lr", 0.0), ("warmup_ratio", 1.0), ("max_steps", 0)],
)
def test_train_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_nan_validation_metric_is_never_an_improvement(tmp_path: Path) -> None:
    values = iter([float("nan"), 0.6, float("nan"), 0.5])

    def metric(model, loader, accelerator):
        return {"auc": next(values)}

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=20, eval_every_steps=2, early_stopping_patience=2,
                      progress=False, trackers=[], mixed_precision="no")
    model = Toy()
    train_loader, valid_loader = _loaders()
    result = train(model, train_loader, valid_loader, cfg, evaluate_fn=metric, accelerator=_fresh_accelerator(cfg))
    assert result.best_metric == 0.6 and result.best_step == 4
    assert result.stopped_early and result.global_step == 8


def test_eval_at_start_keeps_the_initial_weights_when_training_only_hurts(tmp_path: Path) -> None:
    snapshots: list[torch.Tensor] = []

    def fake_metric(model, loader, accelerator):
        snapshots.append(model.head.weight.detach().clone())
        return {"score": [0.9, 0.7, 0.8, 0.6][len(snapshots) - 1]}  # the start is best

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, eval_every_steps=4, eval_at_start=True,
                      progress=False, trackers=[], mixed_precision="no", lr=1e-2)
    model = Toy()
    initial = model.head.weight.detach().clone()
    train_loader, valid_loader = _loaders()
    result = train(model, train_loader, valid_loader, cfg, evaluate_fn=fake_metric,
                   accelerator=_fresh_accelerator(cfg))
    assert [h["step"] for h in result.valid_history] == [0, 4, 8, 12]
    assert result.best_step == 0 and result.best_metric == 0.9
    assert torch.equal(snapshots[0], initial) and torch.equal(model.head.weight, initial)
    assert not torch.equal(snapshots[-1], initial)  # it did train
