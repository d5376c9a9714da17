"""SASRec: causal self-attention over the item sequence.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
(https://arxiv.org/abs/1808.09781); trained by default with cross-entropy over all items as
Klenitskiy & Vasilev recommend ("Turning Dross Into Gold Loss: is BERT4Rec really better than
SASRec?", RecSys 2023, https://arxiv.org/abs/2309.07602); ``loss="bce"`` is the original
sampled-negative BCE.

Attention and feed-forward layers are plain ``nn.Linear`` (``q``, ``k``, ``v``, ``out``,
``ffn.0``, ``ffn.3``) — not ``nn.MultiheadAttention``'s fused ``in_proj_weight`` — so that
``petrec.attach(model, "lora", targets=["q", "v"])`` or ``"adapter"`` can reach them.

Items enter through an *item encoder* (``table() -> (n_items + 1, d)``, row 0 = padding):
:class:`IDItemEmbedding` for SASRec proper, or
:class:`petrec.models.sequential.text.TextItemEmbedding` for the text-based model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from petrec.models.sequential.common import SeqOutput, full_ce, sampled_bce


@dataclass
class SASRecConfig:
    """Shape and loss of a SASRec model."""

    hidden: int = 64
    """Embedding / model width d."""
    max_len: int = 200
    """Most recent items the model reads."""
    blocks: int = 2
    """Transformer blocks."""
    heads: int = 1
    """Attention heads (must divide ``hidden``)."""
    dropout: float = 0.2
    """Dropout on embeddings, attention weights and residual branches."""
    loss: str = "ce"
    """``ce``: cross-entropy over all items; ``bce``: BCE with ``negatives`` sampled negatives."""
    negatives: int = 1
    """Negatives per position for ``loss="bce"``."""
    init: str = "normal"
    """``normal``: every Linear / embedding weight N(0, ``init_std``) with zero biases, as the
    RecSys 2023 code (item and position tables alike); ``torch``: item table N(0, 1/hidden),
    position table N(0, 1) (``nn.Embedding``'s default), torch's default Linear init. ``normal``
    is the default since it more than doubled validation NDCG@10 early in P3 training
    (benchmarks/results/ml1m-next-item/init-probes); runs before 2026-11-28 used ``torch``."""
    init_std: float = 0.02
    """Standard deviation of ``init="normal"``."""
    block: str = "pre_ln"
    """``pre_ln``: x + attn(LN(x)), x + ffn(LN(x)); ``pmixer``: the block of pmixer/SASRec.pytorch
    and the RecSys 2023 code: q = LN(x), x = q + attn(q, x, x), x = LN(x), x = x + ffn(x)."""

    def __post_init__(self) -> None:
        if (
            self.hidden < 1
            or self.max_len < 1
            or self.blocks < 1
            or self.heads < 1
            or self.negatives < 1
        ):
            raise ValueError(
                "SASRecConfig: hidden, max_len, blocks, heads and negatives must be ≥ 1"
            )
        if self.hidden % self.heads:
            raise ValueError(f"SASRecConfig.heads={self.heads} must divide hidden={self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in ("ce", "bce"):
            raise ValueError(f"SASRecConfig.loss={self.loss!r}; accepted: ce, bce")
        if self.init not in ("normal", "torch") or self.init_std <= 0:
            raise ValueError(
                f"SASRecConfig.init={self.init!r} (accepted: normal, torch), "
                f"init_std={self.init_std} must be > 0"
            )
        if self.block not in ("pre_ln", "pmixer"):
            raise ValueError(f"SASRecConfig.block={self.block!r}; accepted: pre_ln, pmixer")


class IDItemEmbedding(nn.Module):
    """A learned embedding per item id (row 0 = padding, kept at zero)."""

    def __init__(self, n_items: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def table(self) -> torch.Tensor:
        """``(n_items + 1, hidden)`` embeddings, row 0 the padding."""
        return self.embedding.weight


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with separate q / k / v / out projections."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x``: (B, L, d) queries (and keys / values unless ``kv``); ``mask``: (B, 1, L, L)
        boolean, True = may attend."""
        b, n, d = x.shape
        kv = x if kv is None else kv

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            split(self.q(x)),
            split(self.k(kv)),
            split(self.v(kv)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Transformer block: attention then a two-layer feed-forward network.

    ``kind="pre_ln"``: the usual pre-norm block. ``kind="pmixer"``: SASRec.pytorch's block (also
    the RecSys 2023 code's): only the queries are normalised, the attention residual starts
    from the normalised queries, and the feed-forward residual from the normalised stream.
    """

    def __init__(self, hidden: int, heads: int, dropout: float, kind: str = "pre_ln") -> None:
        super().__init__()
        self.kind = kind
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "pmixer":
            q = self.norm1(x)
            x = self.norm2(q + self.attn(q, mask, kv=x))  # no residual dropout there either
            return x + self.drop(self.ffn(x))
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender over any item encoder."""

    def __init__(
        self, n_items: int, cfg: SASRecConfig | None = None, item_encoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.n_items, self.cfg = n_items, cfg or SASRecConfig()
        c = self.cfg
        self.items = (
            item_encoder if item_encoder is not None else IDItemEmbedding(n_items, c.hidden)
        )
        self.position = nn.Embedding(c.max_len, c.hidden)
        self.emb_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.hidden, c.heads, c.dropout, c.block) for _ in range(c.blocks)
        )
        self.final_norm = nn.LayerNorm(c.hidden)
        self._cache: dict[str, torch.Tensor] = {}  # a plain dict: never part of state_dict
        if c.init == "normal":
            self._normal_init(c.init_std)

    def _normal_init(self, std: float) -> None:
        """N(0, std) for every Linear / embedding weight (padding row kept zero), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def train(self, mode: bool = True) -> SASRec:
        """Switch mode; leaving eval drops the item table cached for evaluation."""
        self._cache.clear()
        return super().train(mode)

    def item_table(self) -> torch.Tensor:
        """``(n_items + 1, d)`` item embeddings; cached under eval mode + no_grad (cleared by ``train()``)."""
        if self.training or torch.is_grad_enabled():
            return self.items.table()
        if "table" not in self._cache:
            self._cache["table"] = self.items.table()
        return self._cache["table"]

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` left-padded tokens → ``(B, L, d)`` causal representations (last max_len used)."""
        input_ids = input_ids[:, -self.cfg.max_len :]
        return self.encode_embeddings(self.item_table()[input_ids], input_ids > 0)

    def encode_embeddings(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` left-padded input embeddings + ``(B, L)`` validity → ``(B, L, d)``.

        The encoder part of :meth:`encode` (scaling, positions, causal blocks), for heads that
        build their own inputs (the binary CTR model of :mod:`petrec.models.sequential.ctr`).

        Raises:
            ValueError: ``L`` exceeds ``max_len`` (there is no position embedding for it).
        """
        n = emb.shape[1]
        if n > self.cfg.max_len:
            raise ValueError(f"SASRec.encode_embeddings: {n} positions > max_len={self.cfg.max_len}")
        x = emb * math.sqrt(self.cfg.hidden)
        x = x + self.position(torch.arange(self.cfg.max_len - n, self.cfg.max_len, device=x.device))
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        # Causal, no padded keys; a padded row attends to itself only (its output is zeroed).
        mask = (causal & (valid.unsqueeze(1) | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * valid.unsqueeze(-1)
        return self.final_norm(x)

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor, **_: torch.Tensor
    ) -> SeqOutput:
        """Next-item loss at every position of left-padded ``input_ids`` with target ``labels`` (0 = none)."""
        hidden = self.encode(input_ids)
        labels = labels[:, -hidden.shape[1] :]
        table = self.items.table()[1:]
        if self.cfg.loss == "ce":
            return SeqOutput(full_ce(hidden, table, labels))
        return SeqOutput(sampled_bce(hidden, table, labels, self.cfg.negatives))

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item code after each row's history (``batch["input_ids"]``)."""
        hidden = self.encode(batch["input_ids"])[:, -1]
        return hidden @ self.item_table()[1:].T
