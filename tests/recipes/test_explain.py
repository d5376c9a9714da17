"""Explanations of trained models: a planted pattern found first, the CLI, the prior's share."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from petrec.cli import main as petrec_main
from petrec.collate import BehaviourCollator
from petrec.data import DataConfig, tokenize_examples
from petrec.explain import explain_examples
from petrec.models import ModelConfig, build_model, load_tokenizer
from petrec.runs import TrainedRun
from petrec.train import TrainConfig, make_accelerator, train

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256"]
WORDS = ("apple", "river", "candle", "mountain", "violin", "pepper", "garden", "rocket", "castle", "tiger",
         "lemon", "forest", "mirror", "engine", "island", "thunder", "silver", "pillow", "comet", "harbor")
PLANTED = "i07"  # "Rocket": a user who had it clicks, whatever the candidate; no one else does


def _planted_examples(n: int, seed: int) -> datasets.Dataset:
    """Histories of 4 distinct items; label 1 exactly when the planted item is among them (half the rows)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("history_item_ids", "history_labels", "history_ratings", "item_id",
                                            "label")}
    others = [k for k in range(len(WORDS)) if f"i{k:02d}" != PLANTED]
    for k in range(n):
        hist = [f"i{x:02d}" for x in rng.choice(others, size=4, replace=False)]
        if k % 2 == 0:
            hist[int(rng.integers(0, 4))] = PLANTED
        rows["history_item_ids"].append(hist)
        rows["history_labels"].append([1] * 4)
        rows["history_ratings"].append([1.0] * 4)
        rows["item_id"].append(f"i{int(rng.integers(0, len(WORDS))):02d}")
        rows["label"].append(int(PLANTED in hist))
    return datasets.Dataset.from_dict(rows)


def test_planted_item_is_ranked_first(tiny_bert: Path, tmp_path: Path) -> None:
    """A tiny random BERT fully fine-tuned for 72 steps (a few seconds) learns the planted rule."""
    items = datasets.Dataset.from_dict({"item_id": [f"i{k:02d}" for k in range(len(WORDS))],
                                        "title": [w.capitalize() for w in WORDS]})
    cfg = ModelConfig(backbone=str(tiny_bert), task="ctr", method="full", pooling="mean", dropout=0.0)
    tokenizer = load_tokenizer(cfg)
    rows = tokenize_examples(_planted_examples(192, 0), tokenizer, max_length=48, items=items, task="ctr")
    torch.manual_seed(0)
    model = build_model(cfg)
    train_cfg = TrainConfig(output_dir=str(tmp_path), epochs=6, batch_size=16, lr=5e-3, warmup_ratio=0.0,
                            progress=False, trackers=[], mixed_precision="no", seed=0)
    loader = DataLoader(rows.select_columns(["input_ids", "label"]), batch_size=16, shuffle=True,
                        collate_fn=BehaviourCollator("ctr", tokenizer.pad_token_id))
    train(model, loader, None, train_cfg, evaluate_fn=lambda *a: {}, accelerator=make_accelerator(train_cfg))
    model.eval()
    run = TrainedRun(tmp_path, DataConfig(template="compact"), cfg, model, tokenizer, 48)
    found = explain_examples(run, _planted_examples(20, 1), items=items)
    with_planted = [e for e in found if PLANTED in e.history_item_ids]
    assert len(with_planted) == 10
    assert min(e.score for e in with_planted) > 0.8 > 0.2 > max(e.score for e in found if e not in with_planted)
    for e in with_planted:  # the planted item first, and the only one that matters much
        assert e.history_item_ids[e.ranking[0]] == PLANTED, e
        top, second = (abs(e.effects[j]) for j in e.ranking[:2])
        assert top > 0.5 and second < 0.1 * top


def test_cli_explains_split_rows_and_the_prior_share(finetune: ModuleType, tiny_bert: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prior"
    # A behaviour-prior run kept at its step-0 weights: the count model alone (the LM head starts at 0).
    finetune.main(["--model.backbone", str(tiny_bert), "--train.output_dir", str(out), "--model.behaviour_prior",
                   "true", "--train.max_steps", "1", "--train.epochs", "1", "--train.lr", "1e-9",
                   "--train.head_lr", "1e-9", "--data.max_train_examples", "64", *FAST])
    capsys.readouterr()
    assert petrec_main(["explain", "--run", str(out), "--rows", "0", "3"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [e["method"] for e in found] == ["occlusion", "occlusion"]
    for e in found:
        assert len(e["effects"]) == len(e["history_item_ids"]) > 0
        assert sorted(e["ranking"]) == list(range(len(e["effects"])))
        assert e["prior_share"] == pytest.approx(1.0, abs=1e-3) and abs(e["lm"]) < 1e-3
        assert e["prior"] + e["lm"] == pytest.approx(math.log(e["score"] / (1 - e["score"])), abs=1e-5)
        # The prior reads the history's mean label, so occluding a disliked / liked item moves it.
        assert any(abs(x) > 1e-4 for x in e["effects"])
    assert petrec_main(["explain", "--run", str(out), "--rows", "99999"]) == 2
    assert "--rows 99999 is outside the test split" in capsys.readouterr().err
    assert petrec_main(["explain", "--run", str(tmp_path / "nowhere")]) == 2
    assert "is not a petrec run folder" in capsys.readouterr().err
