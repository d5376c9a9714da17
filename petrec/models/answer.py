"""Answer-token scoring for decoder language models (TALLRec's recipe).

A decoder reads the prompt and the score is read off its next-token distribution, restricted
to the answer words:

* ``ctr``: the logit of "Yes" minus the logit of "No", i.e. ``log p(Yes) - log p(No)`` under
  the softmax over the two words (TALLRec scores a click / like as ``p(Yes)`` of that pair).
* ``rating``: the expectation of 1..5 under the softmax over the five digit tokens.

The prompt and its frame (chat template or ``"Answer:"``, and the cue naming the answer
words) are the data layer's: :mod:`petrec.data.frame`.

The head holds only the answer words' rows of the LM head (2 or 5 × hidden), initialised from
the checkpoint (:func:`answer_rows`), so step 0 *is* the zero-shot model: a row "before
training" is the pretrained LM's own answer.
"""

from __future__ import annotations

import torch
from torch import nn

from petrec.data.frame import ANSWER_WORDS
from petrec.models.config import PetrecModelError

__all__ = ["AnswerHead", "answer_rows"]


def answer_rows(backbone: nn.Module, path: str, token_ids: list[int]) -> torch.Tensor:
    """The LM head's rows of ``token_ids`` for a base model loaded from ``path``.

    Checkpoints with tied embeddings (SmolLM2, GPT-2, Qwen2 small) read them from the input
    embeddings; otherwise the causal-LM checkpoint is loaded once on the CPU to read its LM head
    (transformers offers no way to load one tensor by name across its weight formats).
    """
    config = backbone.config
    if getattr(config, "tie_word_embeddings", False):
        weight = backbone.get_input_embeddings().weight
        return weight.detach()[token_ids].float().cpu().clone()
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = lm.get_output_embeddings().weight.detach()[token_ids].clone()
    del lm
    return rows


class AnswerHead(nn.Module):
    """The answer words' rows of the LM head: pooled last-token state → ctr logit / rating.

    Args:
        hidden: Backbone width.
        task: ``ctr`` (2 rows: Yes, No) or ``rating`` (5 rows: 1..5).
        scale: ctr only, the initial multiplier of the Yes−No logit (0 = the model starts as
            whatever is added to it, e.g. the behaviour prior); trained with the head.
    """

    def __init__(self, hidden: int, task: str, scale: float = 1.0) -> None:
        super().__init__()
        self.task = task
        n = len(ANSWER_WORDS[task])
        self.weight = nn.Parameter(torch.zeros(n, hidden))
        self.scale = nn.Parameter(torch.tensor(float(scale))) if task == "ctr" else None
        self.register_buffer("values", torch.arange(1, n + 1, dtype=torch.float32), persistent=False)

    @torch.no_grad()
    def init_rows(self, rows: torch.Tensor) -> None:
        """Copy the LM head's rows of the answer tokens (:func:`answer_rows`)."""
        if rows.shape != self.weight.shape:
            raise PetrecModelError(f"answer rows: expected {tuple(self.weight.shape)}, got {tuple(rows.shape)}")
        self.weight.copy_(rows.to(self.weight.dtype))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(batch, 1)``: the ctr logit (Yes − No), or the expected rating."""
        logits = pooled.to(self.weight.dtype) @ self.weight.T
        if self.scale is not None:
            return (self.scale * (logits[:, 0] - logits[:, 1])).unsqueeze(-1)
        return (logits.float().softmax(-1) @ self.values).unsqueeze(-1)
