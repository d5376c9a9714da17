"""Pool token states into one vector per sequence: CLS, mean, or last real token.

Every function works for right *and* left padding: positions are taken from the attention
mask, never assumed. Padding positions are excluded with ``torch.where`` (not multiplied by
zero), so a non-finite value at a padding position cannot leak into the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from petrec.models.config import PetrecModelError

__all__ = ["first_token_index", "last_token_index", "pool", "resolve_pooling"]

#: sentence-transformers' pooling flags (``1_Pooling/config.json``) → petrec's pooling names.
_ST_MODES = (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
             ("pooling_mode_lasttoken", "last"))


def resolve_pooling(choice: str, backbone: Any, *, is_decoder: bool) -> str:
    """The pooling a model uses: ``choice`` itself unless it is ``auto``.

    ``auto`` follows what the checkpoint was trained with where it says so: a
    sentence-transformers folder (``1_Pooling/config.json`` beside the weights, as the packaged
    all-MiniLM-L6-v2 has) names its pooling, and its CLS token was never trained as a sentence
    vector (on P1 a linear probe on MiniLM's CLS states scores test AUC 0.608, on its mean-pooled
    states 0.669; benchmarks/results/ml100k-ctr). Otherwise ``last`` for decoders, ``cls`` for
    encoders.

    Args:
        choice: ``cls``, ``mean``, ``last`` or ``auto``.
        backbone: The loaded Hugging Face model (its ``config.name_or_path`` locates the folder).
        is_decoder: Whether the backbone is a causal decoder.
    """
    if choice != "auto":
        return choice
    folder = getattr(getattr(backbone, "config", None), "name_or_path", "") or ""
    st_config = Path(folder) / "1_Pooling" / "config.json"
    if folder and st_config.is_file():
        try:
            flags = json.loads(st_config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            flags = {}
        for key, name in _ST_MODES:
            if flags.get(key):
                return name
    return "last" if is_decoder else "cls"


def _checked_mask(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise PetrecModelError(
            f"pooling: hidden states {tuple(hidden.shape)} and attention mask "
            f"{tuple(attention_mask.shape)} do not match (expected (batch, seq, dim) and (batch, seq))"
        )
    mask = attention_mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        row = int(torch.nonzero(empty)[0, 0])
        raise PetrecModelError(f"pooling: row {row} of the batch has no real token (all padding)")
    return mask


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token per row (0 under right padding)."""
    seq = attention_mask.shape[1]
    pos = torch.arange(seq, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), pos, seq).min(dim=1).values.clamp(max=seq - 1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row (``seq - 1`` under left padding)."""
    seq = attention_mask.shape[1]
    pos = torch.arange(seq, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), pos, -1).max(dim=1).values.clamp(min=0)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per sequence.

    Args:
        hidden: ``(batch, seq, dim)`` token states.
        attention_mask: ``(batch, seq)``; 1 = real token, 0 = padding (either side).
        mode: ``cls`` (first real token: position 0 under right padding), ``mean``
            (average over real tokens) or ``last`` (last real token).

    Returns:
        ``(batch, dim)``.

    Raises:
        PetrecModelError: Unknown mode, mismatched shapes, or a row without real tokens.
    """
    mask = _checked_mask(hidden, attention_mask)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "cls":
        return hidden[rows, first_token_index(mask)]
    if mode == "last":
        return hidden[rows, last_token_index(mask)]
    if mode == "mean":
        summed = torch.where(mask.unsqueeze(-1), hidden, torch.zeros_like(hidden)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).to(hidden.dtype)
    raise PetrecModelError(f"pooling: unknown mode {mode!r}; accepted: cls, mean, last")
