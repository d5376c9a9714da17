"""GRU4Rec: a recurrent network over the item sequence (GRU, or an LSTM cell).

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016
(https://arxiv.org/abs/1511.06939). Trained here like SASRec: next-item cross-entropy over all
items at every position, the output tied to the item embeddings (as RecBole's GRU4Rec).
"""

from __future__ import annotations

import torch
from torch import nn

from petrec.models.sequential.common import SeqOutput, full_ce


class GRU4Rec(nn.Module):
    """Embedding → GRU/LSTM → projection to the item-embedding space; scores by dot product."""

    def __init__(
        self,
        n_items: int,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.2,
        cell: str = "gru",
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"GRU4Rec cell={cell!r}; accepted: gru, lstm")
        self.n_items = n_items
        self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.items.weight, std=hidden**-0.5)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            hidden,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, hidden)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` left-padded tokens → ``(B, L, d)`` outputs.

        Padding steps feed zero vectors (``padding_idx``), so the state reached after k padded
        steps depends only on k, never on the user: it acts as an initial state. All models share
        one left-padded batch layout (the last column is the most recent item); packing the
        sequences would avoid the padded steps at extra cost and is not needed for correctness.
        """
        return self.encode_embeddings(self.items(input_ids))

    def encode_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` left-padded input embeddings → ``(B, L, d)`` outputs (the encoder part).

        :meth:`encode` is this over the item embeddings; other heads (the binary CTR model of
        :mod:`petrec.models.sequential.ctr`) feed their own inputs, zero at padded steps.
        """
        out, _ = self.rnn(self.drop(emb))
        return self.proj(self.drop(out))

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor, **_: torch.Tensor
    ) -> SeqOutput:
        """Cross-entropy over all items at every labelled position."""
        return SeqOutput(full_ce(self.encode(input_ids), self.items.weight[1:], labels))

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item after the last history item."""
        return self.encode(batch["input_ids"])[:, -1] @ self.items.weight[1:].T
