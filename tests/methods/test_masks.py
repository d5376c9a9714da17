"""Prompt and prefix tuning respect padding and causality (the masks they extend are right)."""

from __future__ import annotations

import pytest
import torch

import petrec
from tests.methods.families import FAMILIES_BY_NAME

CASES = [(f, m) for f in ("wrapped_bert", "wrapped_gpt2", "wrapped_llama", "deberta_cls") for m in ("prefix", "prompt")]


def _hidden(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    backbone = model.backbone if hasattr(model, "backbone") else model.base_model
    with torch.no_grad():
        return backbone(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize(("family", "method"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_padding_invariance_and_causality(family: str, method: str) -> None:
    model = petrec.attach(FAMILIES_BY_NAME[family].fresh(), method, num_virtual_tokens=3)
    with torch.no_grad():  # make the adapter matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    padded = _hidden(model, ids, mask)
    alone = _hidden(model, ids[1:, :3], mask[1:, :3])
    # a padded row's real positions equal the same sequence without padding
    torch.testing.assert_close(padded[1, :3], alone[0], atol=1e-5, rtol=0)
    # unpadded single row: transformers may drop the mask entirely (the ``None`` path)
    one, full = ids[:1], torch.ones(1, 5, dtype=torch.long)
    changed = one.clone()
    changed[0, 4] = 11
    before, after = _hidden(model, one, full), _hidden(model, changed, full)
    if family not in ("wrapped_bert", "deberta_cls"):  # decoders: a later token never changes earlier positions
        torch.testing.assert_close(after[0, :4], before[0, :4], atol=1e-5, rtol=0)
    else:  # the encoder attends both ways: the same change does reach position 0
        assert not torch.allclose(after[0, 0], before[0, 0])
