"""Reuse the recipe fixtures (tiny random BERT, the finetune recipe module); one trained run."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.recipes.conftest import finetune, tiny_bert  # noqa: F401

FAST = [
    "--train.progress",
    "false",
    "--train.trackers",
    "[]",
    "--train.eval_batch_size",
    "256",
    "--train.max_steps",
    "3",
    "--train.epochs",
    "1",
    "--data.max_train_examples",
    "48",
]


def train_run(finetune: ModuleType, tiny_bert: Path, out: Path, method: str) -> Path:  # noqa: F811
    """Train ``method`` on the tiny BERT for 3 steps (synthetic data) into ``out``."""
    finetune.main(
        [
            "--model.backbone",
            str(tiny_bert),
            "--model.method",
            method,
            "--train.output_dir",
            str(out),
            *FAST,
        ]
    )
    return out


@pytest.fixture(scope="session")
def lora_run(
    finetune: ModuleType,  # noqa: F811
    tiny_bert: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A LoRA ctr run folder (config.yaml, adapter/, metrics.json), shared by the deploy tests."""
    return train_run(finetune, tiny_bert, tmp_path_factory.mktemp("lora") / "run", "lora")
