"""Prefix tuning for DeBERTa-v2/v3, whose disentangled attention bypasses ``AttentionInterface``.

DeBERTa computes its scores itself (content-to-content plus relative-position terms), so the
generic hook in :mod:`petrec.methods.prefix` never sees it. Here each ``DisentangledSelfAttention``
gets an instance-level ``forward`` that is transformers 5.24's forward plus the prefix: prefix
keys get content scores only (they have no position, hence no relative-position term), are
always visible in the mask, and their values join the weighted sum. Without an active prefix the
original class forward runs unchanged.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

#: ``model_type`` values served by this module.
DEBERTA_TYPES = ("deberta-v2",)


def _forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    output_attentions: bool = False,
    query_states: torch.Tensor | None = None,
    relative_pos: torch.Tensor | None = None,
    rel_embeddings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from transformers.models.deberta_v2.modeling_deberta_v2 import scaled_size_sqrt

    ref = self.__dict__.get("_petrec_prefix_ref")
    kv = ref[0].layer_kv(ref[1]) if ref is not None else None
    if kv is None:
        return type(self).forward(self, hidden_states, attention_mask, output_attentions,
                                  query_states, relative_pos, rel_embeddings)
    if query_states is None:
        query_states = hidden_states
    heads = self.num_attention_heads
    query = self.transpose_for_scores(self.query_proj(query_states), heads)
    key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
    value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = scaled_size_sqrt(query, scale_factor).to(dtype=query.dtype)
    scores = torch.bmm(query, key.transpose(-1, -2) / scale)
    if self.relative_attention:
        rel_embeddings = self.pos_dropout(rel_embeddings)
        scores = scores + self.disentangled_attention_bias(query, key, relative_pos, rel_embeddings, scale_factor)
    batch, q_len = hidden_states.shape[0], scores.shape[-2]
    pk, pv = (t.to(query.dtype).unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * heads, -1, t.shape[-1])
              for t in kv)
    n_prefix = pk.shape[1]
    prefix_scores = torch.bmm(query, pk.transpose(-1, -2) / scale)
    scores = torch.cat([prefix_scores, scores], dim=-1).view(batch, heads, q_len, -1)
    mask = attention_mask.bool()
    mask = torch.cat([torch.ones(*mask.shape[:-1], n_prefix, dtype=torch.bool, device=mask.device), mask], dim=-1)
    scores = scores.masked_fill(~mask, torch.finfo(query.dtype).min)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))
    context = torch.bmm(probs.view(batch * heads, q_len, -1), torch.cat([pv, value], dim=1))
    context = context.view(batch, heads, q_len, -1).permute(0, 2, 1, 3).contiguous()
    context = context.view(*context.shape[:-2], -1)
    return (context, probs if output_attentions else None)


def patch_deberta(base: nn.Module, store: Any) -> list[tuple[int, int]]:
    """Route every DeBERTa attention layer of ``base`` through the prefix; returns (heads, dim)."""
    shapes = []
    for module in base.modules():
        if type(module).__name__ == "DisentangledSelfAttention":
            module.__dict__["_petrec_prefix_ref"] = (store, len(shapes))
            module.forward = types.MethodType(_forward, module)
            shapes.append((module.num_attention_heads, module.attention_head_size))
    return shapes


def unpatch_deberta(base: nn.Module) -> None:
    """Restore the class forward of every patched DeBERTa attention layer."""
    for module in base.modules():
        if type(module).__name__ == "DisentangledSelfAttention":
            module.__dict__.pop("forward", None)
