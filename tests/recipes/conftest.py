"""Fixtures for recipe tests: a tiny random BERT that loads like a real checkpoint."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a local checkpoint.

    Dropout is off so that runs compare exactly (1 vs 2 processes).
    """
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def finetune() -> ModuleType:
    """The fine-tuning recipe, :mod:`petrec.recipes.finetune`."""
    return importlib.import_module("petrec.recipes.finetune")
