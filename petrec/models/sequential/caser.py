"""Caser: horizontal and vertical convolutions over the embedding matrix of the last L items.

Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018 (https://arxiv.org/abs/1809.07426). Trained here with cross-entropy
over all items (the paper uses BCE with sampled negatives) so that every baseline shares the
loss of SASRec-CE; the user embedding and per-item output weights and bias are the paper's.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from petrec.models.sequential.common import SeqOutput


def conv_layers(
    hidden: int, window: int, n_horizontal: int, n_vertical: int
) -> tuple[nn.Conv2d, nn.ModuleList, nn.Linear]:
    """Caser's vertical convolution, horizontal convolutions (heights 1..window) and the layer after them."""
    vertical = nn.Conv2d(1, n_vertical, (window, 1))
    horizontal = nn.ModuleList(
        nn.Conv2d(1, n_horizontal, (h, hidden)) for h in range(1, window + 1)
    )
    fc = nn.Linear(n_vertical * hidden + n_horizontal * window, hidden)
    return vertical, horizontal, fc


class _ConvParts(Protocol):
    window: int
    vertical: nn.Conv2d
    horizontal: nn.ModuleList
    fc: nn.Linear
    drop: nn.Dropout


def convolve(m: _ConvParts, emb: torch.Tensor) -> torch.Tensor:
    """``(B, L ≤ window, d)`` left-padded embeddings → ``(B, d)`` Caser sequence embedding ``z``.

    Shorter sequences are left-padded with zero rows up to ``window``.
    """
    e = emb.unsqueeze(1)  # (B, 1, L, d)
    if e.shape[2] < m.window:
        e = F.pad(e, (0, 0, m.window - e.shape[2], 0))
    v = m.vertical(e).flatten(1)
    h = [F.relu(conv(e).squeeze(3)).amax(2) for conv in m.horizontal]
    return F.relu(m.fc(m.drop(torch.cat([v, *h], 1))))


class CaserEncoder(nn.Module):
    """Caser's convolutional part alone: ``(B, L, d)`` input embeddings → ``(B, d)``.

    The same layers and computation as :class:`Caser` without its item / user embeddings and
    next-item output, for heads that build their own inputs (the binary CTR model of
    :mod:`petrec.models.sequential.ctr`). Reads the last ``window`` positions.
    """

    def __init__(
        self, hidden: int, window: int = 5, n_horizontal: int = 16, n_vertical: int = 4, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if min(hidden, window, n_horizontal, n_vertical) < 1:
            raise ValueError("CaserEncoder: hidden, window, n_horizontal and n_vertical must be ≥ 1")
        self.window = window
        self.vertical, self.horizontal, self.fc = conv_layers(hidden, window, n_horizontal, n_vertical)
        self.drop = nn.Dropout(dropout)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` left-padded embeddings (zero rows at padding) → ``(B, d)``."""
        return convolve(self, emb[:, -self.window :])


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
        self.vertical, self.horizontal, self.fc = conv_layers(hidden, window, n_horizontal, n_vertical)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Embedding(n_items, 2 * hidden)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for emb in (self.items, self.users, self.out):
            nn.init.normal_(emb.weight, std=hidden**-0.5)

    def represent(self, input_ids: torch.Tensor, user_index: torch.Tensor) -> torch.Tensor:
        """``(B, window)`` left-padded last items + users → ``(B, 2d)``."""
        z = convolve(self, self.items(input_ids[:, -self.window :]))
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
