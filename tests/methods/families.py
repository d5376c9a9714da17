"""The model families every PEFT method must work on, as tiny seeded models, plus their formulas.

Each family builds a fresh model from a seed (so a second build is the identical base), a
batch, a function mapping (model, batch) to the output tensor, and the expected trainable
parameter count of each method computed from the architecture's sizes (not from the code under
test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

H, L, FF, HEADS, KV, V, T, B = 32, 2, 64, 4, 2, 100, 7, 3
R, RF, P = 4, 4, 5  # LoRA rank, adapter reduction factor, virtual tokens
HEAD_OUT = 2


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0  # right padding in one row
    ids[1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class Wrapped(nn.Module):
    """petrec.models' BehaviourModel shape: an HF backbone attribute plus a head, pooled here."""

    def __init__(self, backbone: nn.Module, pool: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.head = nn.Sequential(nn.Linear(H, 8), nn.ReLU(), nn.Linear(8, HEAD_OUT))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pool == "cls":
            pooled = hidden[:, 0]
        else:  # last real token
            last = attention_mask.sum(1) - 1
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.head(pooled)


class Block(nn.Module):
    """A SASRec-style self-attention block written with plain nn.Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(H, FF), nn.Linear(FF, H)
        self.ln1, self.ln2 = nn.LayerNorm(H), nn.LayerNorm(H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        att = (q @ k.transpose(1, 2) / H**0.5).masked_fill(~causal, float("-inf")).softmax(-1)
        x = self.ln1(x + self.o(att @ v))
        return self.ln2(x + self.ff2(torch.relu(self.ff1(x))))


class SASRecLike(nn.Module):
    """A plain recommender: item + position embeddings, blocks, a scoring head named ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.items = nn.Embedding(V, H)
        self.pos = nn.Embedding(T, H)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.out = nn.Linear(H, HEAD_OUT)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.items(input_ids) + self.pos.weight[: input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.out(x[:, -1])


def _bert_cfg() -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                      intermediate_size=FF, max_position_embeddings=64, num_labels=HEAD_OUT)


def _deberta_cfg() -> Any:
    from transformers import DebertaV2Config

    # DeBERTa-v3 style: relative attention with both disentangled terms, no absolute positions
    return DebertaV2Config(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                           intermediate_size=FF, max_position_embeddings=64, num_labels=HEAD_OUT,
                           relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                           position_buckets=8, norm_rel_ebd="layer_norm", share_att_key=True,
                           position_biased_input=False)


def _qwen2_cfg() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                       num_key_value_heads=KV, intermediate_size=FF, max_position_embeddings=64,
                       num_labels=HEAD_OUT, pad_token_id=0)


def _llama_cfg() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                       num_key_value_heads=KV, intermediate_size=FF, max_position_embeddings=64,
                       pad_token_id=0)


def _gpt2_cfg() -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=HEADS, n_inner=FF, n_positions=64,
                      bos_token_id=1, eos_token_id=2)


def _lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _adapter(width: int) -> int:
    b = width // RF
    return _lin(width, b) + _lin(b, width)


@dataclass
class Family:
    """One model family: builder, call convention, head, and per-method expected counts."""

    name: str
    build: Callable[[], nn.Module]
    head: list[str] | None
    head_params: int
    counts: dict[str, int | type[Exception]] = field(default_factory=dict)
    call: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] = lambda m, b: m(**b)

    def fresh(self) -> nn.Module:
        """The base model, identical on every call (seeded)."""
        torch.manual_seed(0)
        return self.build().eval()


def _logits(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return m(**b).logits


def _bert_counts(h: int, layers: int, inter: int, head: int, vocab: int, npos: int) -> dict[str, Any]:
    """Expected trainable counts for a BERT encoder (MiniLM shares these formulas)."""
    bias = layers * (7 * h + inter) + 2 * h  # 4 attn projections + 2 LN + FFN in/out, emb LN, pooler
    lora = layers * 2 * R * (h + h)
    return {
        "head": head,
        "bitfit": bias + head,
        "lora": lora + head,
        "qlora": lora + head,
        "dora": lora + layers * 2 * h + head,
        "ia3": layers * (3 * h + inter) + head,
        "adapter": layers * 2 * _adapter(h) + head,
        "prefix": layers * 2 * h * P + head,
        "prompt": P * h + head,
    }


def families() -> list[Family]:
    """All families of the test table."""
    from transformers import (
        BertForSequenceClassification,
        BertModel,
        DebertaV2ForSequenceClassification,
        GPT2Model,
        LlamaModel,
        Qwen2ForSequenceClassification,
    )

    wrapped_head = _lin(H, 8) + _lin(8, HEAD_OUT)
    bert_head = _lin(H, HEAD_OUT)
    qwen_head = _lin(H, HEAD_OUT, bias=False)
    kvd = KV * (H // HEADS)
    qwen_lora = L * R * ((H + H) + (H + kvd))
    llama_like = {
        "ia3": L * (2 * kvd + FF),
        "adapter": L * 2 * _adapter(H),
        "prefix": L * 2 * kvd * P,
        "prompt": P * H,
        "lora": qwen_lora,
        "qlora": qwen_lora,
        "dora": qwen_lora + L * (H + kvd),
    }
    gpt2_lora = L * R * (H + 3 * H)
    sas_linears = [(H, H)] * 4 + [(H, FF), (FF, H)]
    sas_lora = L * sum(R * (i + o) for i, o in sas_linears)
    out = [
        Family("bert_cls", lambda: BertForSequenceClassification(_bert_cfg()), None, bert_head,
               _bert_counts(H, L, FF, bert_head, V, 64), call=_logits),
        Family("deberta_cls", lambda: DebertaV2ForSequenceClassification(_deberta_cfg()), None, bert_head,
               {**_bert_counts(H, L, FF, bert_head, V, 64),
                # + the encoder's relative-embedding LayerNorm bias (pooler and embedding LN as in BERT)
                "bitfit": L * (7 * H + FF) + 3 * H + bert_head}, call=_logits),
        Family("qwen2_cls", lambda: Qwen2ForSequenceClassification(_qwen2_cfg()), None, qwen_head,
               {**{k: v + qwen_head for k, v in llama_like.items()},
                "ia3": L * (H + kvd + FF) + qwen_head,  # peft's qwen2 IA3 map: q_proj, v_proj, down_proj
                "head": qwen_head, "bitfit": L * (H + 2 * kvd) + qwen_head}, call=_logits),
        Family("wrapped_bert", lambda: Wrapped(BertModel(_bert_cfg()), "cls"), ["head"], wrapped_head,
               _bert_counts(H, L, FF, wrapped_head, V, 64)),
        Family("wrapped_gpt2", lambda: Wrapped(GPT2Model(_gpt2_cfg()), "last"), ["head"], wrapped_head,
               {"head": wrapped_head, "bitfit": L * (7 * H + FF) + H + wrapped_head,
                "lora": gpt2_lora + wrapped_head, "qlora": gpt2_lora + wrapped_head,
                "dora": gpt2_lora + L * 3 * H + wrapped_head,
                "ia3": L * (3 * H + FF) + wrapped_head,
                "adapter": L * 2 * _adapter(H) + wrapped_head,
                "prefix": L * 2 * H * P + wrapped_head, "prompt": P * H + wrapped_head}),
        Family("wrapped_llama", lambda: Wrapped(LlamaModel(_llama_cfg()), "last"), ["head"], wrapped_head,
               {**{k: v + wrapped_head for k, v in llama_like.items()},
                "head": wrapped_head, "bitfit": ValueError}),
        Family("sasrec_plain", SASRecLike, ["out"], bert_head,
               {"head": bert_head, "bitfit": L * (5 * H + FF + 2 * H) + bert_head,
                "lora": sas_lora + bert_head, "qlora": sas_lora + bert_head,
                "dora": sas_lora + L * (5 * H + FF) + bert_head,
                "ia3": L * (5 * H + FF) + bert_head,
                "adapter": L * (5 * _adapter(H) + _adapter(FF)) + bert_head,
                "prefix": ValueError, "prompt": ValueError}),
    ]
    for fam in out:
        fam.counts["full"] = -1  # every parameter; checked against the model's own total
    return out


#: Options per method used by the table (small so everything runs in seconds).
OPTIONS: dict[str, dict[str, Any]] = {
    "full": {}, "head": {}, "bitfit": {},
    "lora": {"r": R, "alpha": 8}, "qlora": {"r": R, "alpha": 8}, "dora": {"r": R, "alpha": 8},
    "ia3": {}, "adapter": {"reduction_factor": RF},
    "prefix": {"num_virtual_tokens": P}, "prompt": {"num_virtual_tokens": P},
}

BATCH = _batch

FAMILIES_BY_NAME = {f.name: f for f in families()}
