"""The recipe's metrics record carries the debiased metrics and breakdowns, with the values a
direct computation over the run's own test predictions gives."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from petrec.cli import main as petrec_main
from petrec.data import DataConfig, prepare
from petrec.debias import GROUPS, DebiasConfig, ExposureStats

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256"]


def test_run_record_has_snips_and_groups_matching_its_predictions(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    common = ["--model.backbone", str(tiny_bert), "--train.max_steps", "8", "--train.epochs", "1",
              "--train.log_every_steps", "1", "--debias.eta", "0.8", *FAST]
    metrics = finetune.main(["--train.output_dir", str(out), *common])
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test == pytest.approx(metrics["test"], nan_ok=True)
    assert {"ips_auc", "snips_auc", *(f"{g}/auc" for g in GROUPS), *(f"{g}/n_examples" for g in GROUPS)} <= set(test)

    preds = tmp_path / "preds.csv"
    assert petrec_main(["predict", "--run", str(out), "--out", str(preds)]) == 0
    frame = pd.read_csv(preds, dtype={"user_id": str, "item_id": str})
    # The weights of the whole training block (the run trained on a 2,000-example sample of it).
    data = prepare(DataConfig(history_len=5))
    stats = ExposureStats.fit(data.splits["train"], data.items["item_id"], DebiasConfig(eta=0.8))
    cols = stats.columns(frame)
    w = np.asarray(cols["ips_weight"])
    assert test["snips_auc"] == pytest.approx(roc_auc_score(frame["label"], frame["probability"], sample_weight=w),
                                              abs=1e-3)
    tail = np.asarray(cols["pop_stratum"]) == 2
    assert test["tail/n_examples"] == tail.sum() > 0
    assert test["tail/auc"] == pytest.approx(roc_auc_score(frame["label"][tail], frame["probability"][tail]), abs=1e-3)

    # `petrec evaluate` reloads the run and scores it with the run's own debias settings.
    capsys.readouterr()
    assert petrec_main(["evaluate", "--run", str(out), "--split", "test"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["snips_auc"] == pytest.approx(test["snips_auc"], abs=1e-4)
    assert again["tail/n_examples"] == test["tail/n_examples"]

    # The same run with the IPS-weighted loss: same batches, other losses from the first step on.
    weighted = tmp_path / "weighted"
    finetune.main(["--train.output_dir", str(weighted), "--train.ips_weighting", "true", *common])
    plain_loss, weighted_loss = (_first_train_loss(folder) for folder in (out, weighted))
    assert abs(plain_loss - weighted_loss) > 1e-4


def _first_train_loss(run: Path) -> float:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return next(r["train/loss"] for r in records if "train/loss" in r)
