"""The real pretrained encoder (all-MiniLM-L6-v2, 6 layers, hidden 384) through every method.

It sits inside a BehaviourModel-shaped wrapper (``.backbone`` = ``AutoModel``, ``.head``), the way
petrec.models uses it; default options of every method; counts by formula.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import petrec
from petrec.methods import disable_adapter

H, LAYERS, FF = 384, 6, 1536
HEAD = H * 2 + 2


def _adapter(width: int, rf: int = 16) -> int:
    b = width // rf
    return 2 * width * b + b + width


EXPECTED = {
    "head": HEAD,
    "bitfit": LAYERS * (7 * H + FF) + 2 * H + HEAD,
    "lora": 2 * LAYERS * 2 * H * 8 + HEAD,  # the formula: q,v x 6 layers x (384+384) x r=8
    "qlora": 2 * LAYERS * 2 * H * 8 + HEAD,
    "dora": 2 * LAYERS * 2 * H * 8 + 2 * LAYERS * H + HEAD,
    "ia3": LAYERS * (3 * H + FF) + HEAD,
    "adapter": 2 * LAYERS * _adapter(H) + HEAD,
    "prefix": LAYERS * 2 * H * 10 + HEAD,
    "prompt": 10 * H + HEAD,
}


class Behaviour(nn.Module):
    """Backbone + CLS pooling + linear head, as petrec.models builds it."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(H, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])


@pytest.fixture(scope="module")
def behaviour(minilm_dir) -> nn.Module:
    from transformers import AutoModel

    torch.manual_seed(0)
    return Behaviour(AutoModel.from_pretrained(minilm_dir)).eval()


def test_minilm_through_every_method(behaviour: nn.Module) -> None:
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102, 0], [101, 6659, 2143, 102, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    with torch.no_grad():
        base = behaviour(**batch)
    for method in petrec.METHODS:
        model = copy.deepcopy(behaviour)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            petrec.attach(model, method, head=["head"])
        report = petrec.trainable_report(model)
        want = report.total if method == "full" else EXPECTED[method]
        assert report.trainable == want, f"{method}: {report.trainable} != {want}"
        with torch.no_grad():
            out = model(**batch)
        if method in ("full", "head", "bitfit", "lora", "dora", "ia3", "adapter"):
            torch.testing.assert_close(out, base, atol=1e-5, rtol=0, msg=f"{method} changed the init output")
        if method in ("prefix", "prompt"):
            with disable_adapter(model), torch.no_grad():
                torch.testing.assert_close(model(**batch), base, atol=1e-5, rtol=0)
        model.train()
        model(**batch).pow(2).sum().backward()
        # the pooler is not used by CLS pooling of last_hidden_state, so it gets no gradient
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad and ".pooler." not in n}
        assert all(g is not None for g in grads.values()), method
        assert any(g.abs().sum() > 0 for n, g in grads.items() if "head" not in n or method == "head"), method
