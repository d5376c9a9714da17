"""Caser: horizontal and vertical convolutions over the embedding matrix of the last L items.

Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018 (https://arxiv.org/abs/1809.07426). Trained here with cross-entropy
over all items (the paper uses BCE with sampled negatives) so that every baseline shares the
loss of SASRec-CE; the user embedding and per-item output weights and bias are the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from petrec.models.sequential.common import SeqOutput


class Caser(nn.Module):
    """Convolutional sequence embedding + user embedding → scores of every item."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden: int = 50,
        window: int = 5,
        n_horizontal: int = 16,
        n_vertical: int = 4,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_items, self.window = n_items, window
        self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.users = nn.Embedding(n_users, hidden)
        self.vertical = nn.Conv2d(1, n_vertical, (window, 1))
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, n_horizontal, (h, hidden)) for h in range(1, window + 1)
        )
        self.fc = nn.Linear(n_vertical * hidden + n_horizontal * window, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Embedding(n_items, 2 * hidden)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for emb in (self.items, self.users, self.out):
            nn.init.normal_(emb.weight, std=hidden**-0.5)

    def represent(self, input_ids: torch.Tensor, user_index: torch.Tensor) -> torch.Tensor:
        """``(B, window)`` left-padded last items + users → ``(B, 2d)``."""
        e = self.items(input_ids[:, -self.window :]).unsqueeze(1)  # (B, 1, L, d)
        if e.shape[2] < self.window:
            e = F.pad(e, (0, 0, self.window - e.shape[2], 0))
        v = self.vertical(e).flatten(1)
        h = [F.relu(conv(e).squeeze(3)).amax(2) for conv in self.horizontal]
        z = F.relu(self.fc(self.drop(torch.cat([v, *h], 1))))
        return torch.cat([z, self.users(user_index)], 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        user_index: torch.Tensor,
        **_: torch.Tensor,
    ) -> SeqOutput:
        """Cross-entropy over all items of the next item ``labels`` (token, (B,))."""
        logits = self.represent(input_ids, user_index) @ self.out.weight.T + self.out_bias
        return SeqOutput(F.cross_entropy(logits, labels - 1), logits=logits)

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item after each user's last ``window`` items."""
        return (
            self.represent(batch["input_ids"], batch["user_index"]) @ self.out.weight.T
            + self.out_bias
        )
