"""Shared fixtures: the packaged encoder, the shared data folder, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from petrec.paths import DATA_DIR_ENV, minilm_path  # noqa: E402


def _shared_data_dir() -> Path | None:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    guess = Path(__file__).resolve().parents[2] / "shared" / "data"
    return guess if guess.is_dir() else None


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data (or $PETREC_DATA_DIR); skips the test when it is absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip(f"shared behaviour data not found: set {DATA_DIR_ENV} or place ../shared/data")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2."""
    return minilm_path()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
