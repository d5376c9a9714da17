"""``petrec evaluate --data-override KEY=VALUE --out FILE``: a run scored on other data than it trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from petrec.cli import main as petrec_main
from petrec.config import ConfigError
from petrec.data import DataConfig, prepare
from petrec.runs import read_run_config, with_data_overrides

PERIOD_2 = ["--data-override", "protocol=periods", "--data-override", "n_periods=3", "--data-override", "period=2"]


def test_evaluate_scores_the_run_on_an_overridden_split_and_writes_the_json(
        lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval" / "period2.json"
    assert petrec_main(["evaluate", "--run", str(lora_run), "--split", "valid", *PERIOD_2, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    run_data = read_run_config(lora_run).data
    expected = prepare(DataConfig(**{**run_data.to_dict(), "protocol": "periods", "n_periods": 3, "period": 2}))
    assert printed["examples"] == len(expected.splits["valid"]) != len(prepare(run_data).splits["valid"])
    assert printed["data_overrides"] == ["protocol=periods", "n_periods=3", "period=2"]
    assert 0 <= printed["auc"] <= 1


def test_overrides_are_checked_like_a_config() -> None:
    base = DataConfig(protocol="periods", n_periods=3, max_eval_examples=50)
    moved = with_data_overrides(base, ["period=3", "temporal_quantiles=[0.7, 0.85]"])
    assert (moved.period, moved.temporal_quantiles, moved.max_eval_examples) == (3, (0.7, 0.85), 50)
    assert base.period == 1  # the run's own config is left as it was
    with pytest.raises(ConfigError, match=r"unknown key 'data\.perod'"):
        with_data_overrides(base, ["perod=2"])
    with pytest.raises(ConfigError, match=r"data override 'period': expected KEY=VALUE"):
        with_data_overrides(base, ["period"])
    with pytest.raises(ConfigError, match=r"DataConfig\.period=4 .*n_periods=3"):
        with_data_overrides(base, ["period=4"])


def test_a_bad_override_is_one_error_line(lora_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert petrec_main(["evaluate", "--run", str(lora_run), "--data-override", "period=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("petrec evaluate: ") and "period" in err and "Traceback" not in err
