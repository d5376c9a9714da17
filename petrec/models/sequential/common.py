"""The uniform interface every sequential model follows, and the losses they share.

Every model has ``n_items`` and

* ``forward(**batch) -> SeqOutput`` with ``.loss`` (training batches from
  :mod:`petrec.models.sequential.data`; keys it does not need are ignored),
* ``score_all(batch) -> (B, n_items)`` scores of every item code for each row of an
  evaluation batch (higher = ranked first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SeqOutput:
    """What ``forward`` returns."""

    loss: torch.Tensor
    """Scalar training loss."""
    logits: torch.Tensor | None = None
    """Pointwise scores the loss was computed from, when there is one row per example."""


def full_ce(
    hidden: torch.Tensor,
    item_table: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of every labelled position over **all** items (RecSys 2023 "SASRec+").

    Args:
        hidden: ``(..., d)`` sequence representations.
        item_table: ``(n_items, d)`` output item embeddings (codes, no padding row).
        labels: ``(...)`` target tokens (code + 1); 0 marks positions without a target.
        bias: Optional ``(n_items,)`` per-item bias.
    """
    keep = labels > 0
    logits = hidden[keep] @ item_table.T
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits.float(), labels[keep] - 1)


def sample_negatives(labels: torch.Tensor, n_items: int, n_neg: int) -> torch.Tensor:
    """Uniform negative tokens shaped ``labels.shape + (n_neg,)``, resampled where equal to the label."""
    neg = torch.randint(1, n_items + 1, (*labels.shape, n_neg), device=labels.device)
    clash = neg == labels.unsqueeze(-1)
    while bool(clash.any()) and n_items > 1:
        neg[clash] = torch.randint(1, n_items + 1, (int(clash.sum()),), device=labels.device)
        clash = neg == labels.unsqueeze(-1)
    return neg


def sampled_bce(
    hidden: torch.Tensor, item_table: torch.Tensor, labels: torch.Tensor, n_neg: int
) -> torch.Tensor:
    """SASRec's original loss: BCE of the positive against ``n_neg`` uniform negatives per position."""
    keep = labels > 0
    h, pos = hidden[keep], labels[keep]
    neg = sample_negatives(pos, item_table.shape[0], n_neg)
    pos_logit = (h * item_table[pos - 1]).sum(-1)
    neg_logit = (h.unsqueeze(1) * item_table[neg - 1]).sum(-1)
    return F.binary_cross_entropy_with_logits(
        torch.cat([pos_logit.unsqueeze(1), neg_logit], 1).float(),
        torch.cat(
            [torch.ones_like(pos_logit).unsqueeze(1), torch.zeros_like(neg_logit)], 1
        ).float(),
    )
