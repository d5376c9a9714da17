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


#: A minimal chat template (user turn, then the assistant header) for the tiny decoders.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def save_tiny_causal_lm(folder: Path, minilm: Path, *, tied: bool, chat: bool) -> Path:
    """A 2-layer, 32-wide random Llama causal LM with MiniLM's tokenizer, saved as a checkpoint.

    MiniLM's vocabulary (30,522 word pieces) spells "yes", "no" and "1".."5" as single tokens, so
    answer-token scoring works on it; ``chat`` adds a chat template to the tokenizer.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         tie_word_embeddings=tied, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(minilm)
    if chat:
        tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_lm(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """Tiny random Llama causal LM, untied LM head, tokenizer with a chat template."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama-lm"), minilm_dir, tied=False, chat=True)


@pytest.fixture(scope="session")
def tiny_llama_lm_tied(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """Tiny random Llama causal LM, LM head tied to the embeddings, no chat template."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama-tied"), minilm_dir, tied=True, chat=False)
