"""The recipe with answer-token scoring on a decoder: the zero-shot row and a trained run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from sklearn.metrics import log_loss

from petrec.cli import main as petrec_main
from petrec.config import read_yaml
from petrec.data.frame import get_frame
from petrec.runs import load_run

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256",
        "--data.max_train_examples", "64", "--model.scoring", "answer"]


def test_zero_shot_row_trains_nothing_and_reloads_as_scored(
    finetune: ModuleType, tiny_llama_lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "zero"
    metrics = finetune.main(["--model.backbone", str(tiny_llama_lm), "--train.output_dir", str(out),
                             "--train.epochs", "0", *FAST])
    assert metrics["steps"] == 0 and metrics["train_samples_per_s"] == 0.0
    assert 0.0 <= metrics["test"]["auc"] <= 1.0
    assert read_yaml(out / "config.yaml")["model"]["scoring"] == "answer"
    # The run folder brings the prompt frame back: the reloaded model scores what the run measured.
    run = load_run(out)
    assert get_frame(run.tokenizer) is not None
    preds = tmp_path / "preds.csv"
    assert petrec_main(["predict", "--run", str(out), "--out", str(preds)]) == 0
    frame = pd.read_csv(preds)
    assert log_loss(frame["label"], frame["probability"]) == pytest.approx(metrics["test"]["logloss"], rel=1e-5)
    capsys.readouterr()


def test_training_moves_the_answer_model_away_from_zero_shot(
    finetune: ModuleType, tiny_llama_lm: Path, tmp_path: Path
) -> None:
    zero = finetune.main(["--model.backbone", str(tiny_llama_lm), "--train.output_dir", str(tmp_path / "z"),
                          "--train.epochs", "0", *FAST])
    trained = finetune.main(["--model.backbone", str(tiny_llama_lm), "--train.output_dir", str(tmp_path / "t"),
                             "--train.epochs", "1", "--train.max_steps", "4", "--train.log_every_steps", "1", *FAST])
    assert trained["steps"] == 4
    assert trained["test"]["logloss"] != zero["test"]["logloss"]
    log = [json.loads(line) for line in (tmp_path / "t" / "train_log.jsonl").read_text().splitlines()]
    assert any("train/loss" in row for row in log)


def test_epochs_must_be_a_non_negative_integer(finetune: ModuleType) -> None:
    from petrec.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"train\.epochs must be an integer ≥ 0"):
        finetune.parse_args(["--train.epochs", "-1"])


def test_answer_scoring_with_the_behaviour_prior_starts_as_the_prior(
    finetune: ModuleType, tiny_llama_lm: Path, tmp_path: Path
) -> None:
    # The scale of the LM's Yes-No logit starts at 0: before training the model is the prior alone,
    # so an untrained run scores exactly what a run with the prior and a zeroed LM scores.
    common = ["--model.backbone", str(tiny_llama_lm), "--model.behaviour_prior", "true", "--train.epochs", "0",
              *FAST]
    zero = finetune.main([*common, "--train.output_dir", str(tmp_path / "a")])
    run = load_run(tmp_path / "a")
    assert run.model.head.scale.item() == 0.0 and run.stats is not None
    other = finetune.main([*common, "--train.output_dir", str(tmp_path / "b"), "--model.prompt_format", "plain"])
    assert zero["test"]["auc"] == pytest.approx(other["test"]["auc"], abs=1e-9)  # the LM's prompt plays no part
    assert zero["test"]["auc"] > 0.55  # the fitted count model, not chance
