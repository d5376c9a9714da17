"""Text-based next-item model: a frozen pretrained encoder embeds every item's text once; a
small transformer over those item embeddings (UniSRec-style) predicts the next item.

Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems",
KDD 2022 (https://arxiv.org/abs/2206.05941): items are represented by frozen text embeddings
passed through a small trainable adaptor (parametric whitening); the sequence encoder is
SASRec's; scores are dot products with every item's adapted embedding. ``id_embeddings=True``
adds a learned item-ID embedding to the text embedding (UniSRec's transductive, hybrid setting).

The encoder is frozen, so item texts are embedded once (:func:`encode_item_texts`) and cached
as a safetensors file keyed by the model path and the texts' hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from petrec.files import atomic_path


class TextItemEmbedding(nn.Module):
    """Frozen text embeddings → parametric whitening (``(x - b) W``) [+ learned ID embedding]."""

    def __init__(
        self,
        text_embeddings: torch.Tensor,
        hidden: int,
        id_embeddings: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        n_items, dim = text_embeddings.shape
        self.register_buffer("text", text_embeddings.float().clone(), persistent=False)
        self.whiten_bias = nn.Parameter(torch.zeros(dim))
        self.adaptor = nn.Linear(dim, hidden, bias=False)
        self.drop = nn.Dropout(dropout)
        self.ids = nn.Embedding(n_items, hidden) if id_embeddings else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=hidden**-0.5)

    def table(self) -> torch.Tensor:
        """``(n_items + 1, hidden)`` adapted item embeddings, row 0 = padding (zeros)."""
        x = self.adaptor(self.drop(self.text - self.whiten_bias))
        if self.ids is not None:
            x = x + self.ids.weight
        return torch.cat([x.new_zeros(1, x.shape[1]), x], 0)


@torch.no_grad()
def encode_item_texts(
    texts: Sequence[str],
    model_path: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    max_length: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """Mean-pooled last-layer embeddings of ``texts`` from a frozen encoder (default MiniLM-L6).

    Args:
        texts: One text per item code, in code order.
        model_path: Local model folder; None = :func:`petrec.paths.minilm_path`.
        batch_size: Texts per forward pass.
        max_length: Token budget per text.
        cache_dir: When given, reuse / write ``item_text_<hash>.safetensors`` there.

    Returns:
        ``(len(texts), hidden)`` float32 embeddings.
    """
    from transformers import AutoModel, AutoTokenizer

    from petrec.paths import minilm_path

    path = str(model_path or minilm_path())
    key = hashlib.sha256(("\n".join([path, str(max_length), *texts])).encode("utf-8")).hexdigest()[
        :16
    ]
    cache = Path(cache_dir) / f"item_text_{key}.safetensors" if cache_dir else None
    if cache is not None and cache.is_file():
        return load_file(str(cache))["embeddings"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
    emb = torch.cat(out).float().contiguous()
    if cache is not None:
        with atomic_path(cache) as tmp:
            save_file({"embeddings": emb}, str(tmp))
    return emb
