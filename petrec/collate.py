"""Tokenised examples → padded tensor batches for :class:`petrec.models.BehaviourModel`.

Dynamic padding per batch (to the longest sequence in it), on the side the tokenizer
pads on. Evaluation splits annotated by :func:`petrec.data.exposure.annotate_splits` also get their
per-example weights and groups. Pointwise tasks get ``labels``; next-item batches also get the target's item
tokens (for in-batch negatives), its catalogue index and the history's indices (to
exclude seen items from the full ranking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from petrec.debias import DEBIAS_COLUMNS

#: Example columns / batch keys of collaborative tokens' ID inputs (petrec.models.collab), in the
#: order of the behaviour model's forward arguments.
COLLAB_COLUMNS = ("collab_history_ids", "collab_history_feedback", "collab_item_ids")

#: Example column holding the training target per task.
LABEL_COLUMN = {"ctr": "label", "rating": "rating"}


def longest_first(split: Any) -> Any:
    """The examples of a ``datasets.Dataset`` reordered by token count, longest first.

    Batches of neighbours in this order pad to nearly their own lengths (dynamic padding pads to
    each batch's longest sequence), so evaluation spends less compute on padding. Ties keep the
    split's order. ``Dataset.select`` only writes an index mapping: no rows are copied. Evaluation
    only: a training order must stay shuffled.
    """
    lengths = np.fromiter((len(ids) for ids in split["input_ids"]), dtype=np.int64, count=len(split))
    return split.select(np.argsort(-lengths, kind="stable"))


def pad_sequences(seqs: Sequence[Sequence[int]], pad_value: int, side: str = "right") -> torch.Tensor:
    """Stack ragged integer lists into one ``(len(seqs), longest)`` long tensor."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(width, 1)), pad_value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not seq:
            continue
        values = torch.as_tensor(seq, dtype=torch.long)
        if side == "left":
            out[row, width - len(seq) :] = values
        else:
            out[row, : len(seq)] = values
    return out


@dataclass
class BehaviourCollator:
    """Collate function for a ``torch.utils.data.DataLoader`` over tokenised examples.

    Attributes:
        task: ``ctr``, ``rating`` or ``next_item``.
        pad_token_id: The tokenizer's padding id.
        padding_side: ``right`` or ``left`` (decoders pooled on the last token may use left).
        item_index: Next-item only: item id → row of the tokenised catalogue.
        item_tokens: Next-item only: ``input_ids`` of every catalogue item, by row.
    """

    task: str
    pad_token_id: int
    padding_side: str = "right"
    item_index: Mapping[str, int] = field(default_factory=dict)
    item_tokens: Sequence[Sequence[int]] = ()

    def __post_init__(self) -> None:
        if self.task not in ("ctr", "rating", "next_item"):
            raise ValueError(f"unknown task {self.task!r}; accepted: ctr, rating, next_item")
        if self.task == "next_item" and not self.item_index:
            raise ValueError("next_item batches need item_index and item_tokens from the catalogue")

    def _tokens(self, seqs: Sequence[Sequence[int]], prefix: str = "") -> dict[str, torch.Tensor]:
        ids = pad_sequences(seqs, self.pad_token_id, self.padding_side)
        mask = pad_sequences([[1] * len(s) for s in seqs], 0, self.padding_side)
        return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask}

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._tokens([r["input_ids"] for r in rows])
        if "features" in rows[0]:  # behaviour features of the prior path (petrec.data.features)
            batch["features"] = torch.tensor([r["features"] for r in rows], dtype=torch.float32)
        for name in COLLAB_COLUMNS:  # ID tokens of the collaborative tokens (petrec.models.collab)
            if name in rows[0]:
                batch[name] = torch.tensor([r[name] for r in rows], dtype=torch.long)
        for name in DEBIAS_COLUMNS:  # evaluation splits' propensity weights and groups (petrec.debias)
            if name in rows[0]:
                batch[name] = torch.tensor([float(r[name]) for r in rows], dtype=torch.float32)
        if self.task in LABEL_COLUMN:
            column = LABEL_COLUMN[self.task]
            batch["labels"] = torch.tensor([float(r[column]) for r in rows], dtype=torch.float32)
            return batch
        targets = [self._index(r["item_id"]) for r in rows]
        batch["target_index"] = torch.tensor(targets, dtype=torch.long)
        batch.update(self._tokens([self.item_tokens[t] for t in targets], prefix="item_"))
        history = [[self.item_index[i] for i in r["history_item_ids"] if i in self.item_index] for r in rows]
        batch["history_index"] = pad_sequences(history, -1)
        return batch

    def _index(self, item_id: str) -> int:
        try:
            return self.item_index[item_id]
        except KeyError:
            raise KeyError(f"target item {item_id!r} is not in the item catalogue") from None


@dataclass
class ItemCollator:
    """Collate catalogue items (lists of token ids) into ``input_ids`` / ``attention_mask``."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": pad_sequences(rows, self.pad_token_id, self.padding_side),
            "attention_mask": pad_sequences([[1] * len(r) for r in rows], 0, self.padding_side),
        }
