"""Fixtures for the data-layer tests: prepared P1/P3 data (built once) and the MiniLM tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from petrec.data import DataConfig, PreparedData, prepare


@pytest.fixture(scope="session")
def p1(shared_data_dir: Path) -> PreparedData:
    """BENCHMARKS P1 on the shared ml-100k."""
    return prepare(DataConfig.preset("P1", data_dir=str(shared_data_dir)))


@pytest.fixture(scope="session")
def p3(shared_data_dir: Path) -> PreparedData:
    """BENCHMARKS P3 on the shared ml-1m."""
    return prepare(DataConfig.preset("P3", data_dir=str(shared_data_dir)))


@pytest.fixture(scope="session")
def tokenizer(minilm_dir: Path):
    """The packaged all-MiniLM-L6-v2 WordPiece tokenizer (offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))
