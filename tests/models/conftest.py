"""Tiny random Hugging Face backbones (hidden 32, 2 layers) for the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (
    AutoModel,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 100
FAMILIES = ("bert", "gpt2", "llama", "qwen2")
DECODERS = ("gpt2", "llama", "qwen2")


@pytest.fixture(autouse=True)
def _one_thread():
    # On the shared 2-core box two spinning intra-op threads are slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(family: str, dropout: float = 0.1) -> PretrainedConfig:
    """A 2-layer, hidden-32 random config of ``family``."""
    if family == "bert":
        return BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        )  # fmt: skip
    if family == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64,
            bos_token_id=1, eos_token_id=1, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        )  # fmt: skip
    common = {
        "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
        "bos_token_id": 1, "eos_token_id": 1, "pad_token_id": None,
    }  # fmt: skip
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(family)


def tiny_backbone(family: str, seed: int = 0, dropout: float = 0.1) -> torch.nn.Module:
    """A freshly initialised tiny base model (no head)."""
    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_config(family, dropout))


def word_tokenizer(with_pad: bool) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``w0 .. w89`` (ids 10..99); eos ``</s>`` = 1."""
    vocab = {"<unk>": 0, "</s>": 1}
    if with_pad:
        vocab["<pad>"] = 2
    vocab.update({f"w{i}": 10 + i for i in range(VOCAB - 10)})
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    special = {"unk_token": "<unk>", "eos_token": "</s>"}
    if with_pad:
        special["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders holding a saved tiny model + tokenizer per family (decoders without pad token)."""
    root = tmp_path_factory.mktemp("tiny_backbones")
    out = {}
    for family in FAMILIES:
        folder = root / family
        tiny_backbone(family).save_pretrained(folder)
        word_tokenizer(with_pad=family == "bert").save_pretrained(folder)
        out[family] = folder
    return out


def batch(
    rows: list[list[int]], side: str = "right", pad: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad integer rows into (input_ids, attention_mask) on ``side``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask
