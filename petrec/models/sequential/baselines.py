"""Non-sequential baselines: most-popular items and BPR matrix factorisation.

BPR: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009
(https://arxiv.org/abs/1205.2618).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petrec.models.sequential.common import SeqOutput, sample_negatives


class Popularity(nn.Module):
    """Scores every item by its number of training interactions (same ranking for every user).

    Nothing is trained: :meth:`fit` counts, and ``forward`` exists only for the uniform
    interface (it returns a zero loss with no trainable parameters behind it).
    """

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.register_buffer("counts", torch.zeros(n_items))

    def fit(self, counts: np.ndarray) -> Popularity:
        """Set the per-item training counts (:func:`petrec.models.sequential.data.item_counts`)."""
        if counts.shape != (self.n_items,):
            raise ValueError(f"counts must have shape ({self.n_items},), got {counts.shape}")
        self.counts.copy_(torch.as_tensor(counts, dtype=torch.float32))
        return self

    def forward(self, **_: torch.Tensor) -> SeqOutput:
        """Zero loss: popularity has nothing to learn by gradient descent."""
        return SeqOutput(torch.zeros((), device=self.counts.device))

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The popularity counts, one row per user of the batch."""
        b = next(iter(batch.values())).shape[0]
        return self.counts.unsqueeze(0).expand(b, -1)


class BPRMF(nn.Module):
    """Matrix factorisation trained with the BPR pairwise loss (one uniform negative per positive)."""

    def __init__(self, n_users: int, n_items: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_items = n_items
        self.users = nn.Embedding(n_users, hidden)
        self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def forward(
        self, user_index: torch.Tensor, labels: torch.Tensor, **_: torch.Tensor
    ) -> SeqOutput:
        """BPR loss of ``(user, positive token)`` pairs against sampled negatives."""
        u = self.users(user_index)
        neg = sample_negatives(labels, self.n_items, 1)[:, 0]
        pos_logit = (u * self.items(labels)).sum(-1)
        neg_logit = (u * self.items(neg)).sum(-1)
        return SeqOutput(-F.logsigmoid(pos_logit - neg_logit).mean(), logits=pos_logit)

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """User embedding · every item embedding."""
        return self.users(batch["user_index"]) @ self.items.weight[1:].T
