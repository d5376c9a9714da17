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


def train_run(finetune: ModuleType, tiny_bert: Path, out: Path, method: str, *extra: str) -> Path:  # noqa: F811
    """Train ``method`` on the tiny BERT for 3 steps (synthetic data) into ``out`` (``extra``: more flags)."""
    finetune.main(
        [
            "--model.backbone",
            str(tiny_bert),
            "--model.method",
            method,
            "--train.output_dir",
            str(out),
            *FAST,
            *extra,
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


@pytest.fixture(scope="session")
def prior_run(
    finetune: ModuleType,  # noqa: F811
    tiny_bert: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A LoRA ctr run with a behaviour prior (``behaviour_stats.json`` beside ``adapter/``)."""
    out = tmp_path_factory.mktemp("prior") / "run"
    return train_run(finetune, tiny_bert, out, "lora", "--model.behaviour_prior", "true")


@pytest.fixture(scope="session")
def collab_run(
    finetune: ModuleType,  # noqa: F811
    tiny_bert: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A LoRA ctr run with collaborative tokens (``collab_tokens.json`` beside ``adapter/``)."""
    out = tmp_path_factory.mktemp("collab") / "run"
    return train_run(finetune, tiny_bert, out, "lora", "--model.collab_tokens", "true")
