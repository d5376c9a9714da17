"""petrec.runs reads back the run folder the recipe writes: the same values, the recipe's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from petrec.config import ConfigError, to_dict
from petrec.recipes.finetune import FinetuneConfig
from petrec.runs import RunConfig, read_run_config


def _write(folder: Path, config: dict) -> Path:
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def test_a_written_recipe_config_reads_back_as_the_same_values(tmp_path: Path) -> None:
    written = FinetuneConfig(max_length=40, item_max_length=12)
    cfg = read_run_config(_write(tmp_path, to_dict(written)))
    assert isinstance(cfg, RunConfig)
    assert (cfg.data, cfg.model, cfg.max_length, cfg.item_max_length) == (
        written.data, written.model, 40, 12)
    assert read_run_config(tmp_path, data_dir="/elsewhere").data.data_dir == "/elsewhere"


def test_a_missing_item_budget_takes_the_recipes_default(tmp_path: Path) -> None:
    raw = to_dict(FinetuneConfig(item_max_length=7))
    del raw["item_max_length"]
    assert read_run_config(_write(tmp_path, raw)).item_max_length == FinetuneConfig().item_max_length


@pytest.mark.parametrize("key", ["max_length", "item_max_length"])
def test_a_bad_token_budget_is_named(tmp_path: Path, key: str) -> None:
    raw = {**to_dict(FinetuneConfig()), key: 0}
    with pytest.raises(ConfigError, match=rf"config\.yaml: key '{key}' is 0; expected a positive integer"):
        read_run_config(_write(tmp_path, raw))
