"""ID-based sequence models with a binary head: click / like prediction (BENCHMARKS.md P1, P2).

The examples of ``petrec.data`` ctr tasks (``user_id``, ``history_item_ids``,
``history_labels``, ``item_id``, ``label``) become tokens: every history position is the sum
of an item-ID embedding and a learned like / dislike embedding (P1 histories carry labels),
left-padded to ``max_len`` with id 0; a sequence encoder turns them into ``h``; a small MLP
over ``[h, e_cand, h * e_cand]`` gives one logit, trained with binary cross-entropy.

Encoders (the existing next-item models' encoder parts, unchanged):

* ``gru4rec`` — :meth:`petrec.models.sequential.rnn.GRU4Rec.encode_embeddings`, output at the
  most recent position;
* ``caser`` — :class:`petrec.models.sequential.caser.CaserEncoder` (horizontal + vertical
  convolutions over the last ``window`` positions; no user embedding: few-shot users are
  rarely seen twice);
* ``sasrec`` — :meth:`petrec.models.sequential.sasrec.SASRec.encode_embeddings` (causal
  self-attention), output at the most recent position.

Item tokens: 0 = padding, 1 = out-of-vocabulary (items not seen, or seen fewer than
``min_count`` times, in the training examples), 2.. = known items (:class:`ItemVocab`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from petrec.models.sequential.caser import CaserEncoder
from petrec.models.sequential.data import TensorRows  # noqa: F401  (re-exported for callers)
from petrec.models.sequential.rnn import GRU4Rec
from petrec.models.sequential.sasrec import SASRec, SASRecConfig

ENCODERS = ("gru4rec", "caser", "sasrec")
PAD, OOV = 0, 1
#: Feedback tokens of a history position (0 = padding).
DISLIKE, LIKE = 1, 2


@dataclass
class SequenceCTRConfig:
    """Shape of a :class:`SequenceCTR` model."""

    encoder: Literal["gru4rec", "caser", "sasrec"] = "gru4rec"
    """Sequence encoder: gru4rec (GRU), caser (convolutions) or sasrec (causal self-attention)."""
    hidden: int = 64
    """Embedding / encoder width d."""
    max_len: int = 10
    """Most recent history items read (histories are left-padded to this length)."""
    dropout: float = 0.2
    """Dropout of the encoder and of the head's hidden layer."""
    layers: int = 1
    """gru4rec: recurrent layers."""
    window: int | None = None
    """caser: positions convolved (the last ``window``); None = ``max_len``."""
    n_horizontal: int = 16
    """caser: horizontal filters per height."""
    n_vertical: int = 4
    """caser: vertical filters."""
    blocks: int = 2
    """sasrec: transformer blocks."""
    heads: int = 1
    """sasrec: attention heads (must divide ``hidden``)."""

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"SequenceCTRConfig.encoder={self.encoder!r}; accepted: {', '.join(ENCODERS)}")
        sizes = {"hidden": self.hidden, "max_len": self.max_len, "layers": self.layers,
                 "n_horizontal": self.n_horizontal, "n_vertical": self.n_vertical, "blocks": self.blocks,
                 "heads": self.heads, "window": self.window if self.window is not None else 1}
        bad = [name for name, v in sizes.items() if v < 1]
        if bad:
            raise ValueError(f"SequenceCTRConfig: {', '.join(bad)} must be ≥ 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SequenceCTRConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.hidden % self.heads:
            raise ValueError(f"SequenceCTRConfig.heads={self.heads} must divide hidden={self.hidden}")


@dataclass
class CTROutput:
    """What :meth:`SequenceCTR.forward` returns."""

    logits: torch.Tensor
    """``(B,)`` like logits."""
    loss: torch.Tensor | None = None
    """Mean binary cross-entropy, when labels were given."""


class ItemVocab:
    """Item id → token: 0 padding, 1 out-of-vocabulary, 2.. items counted often enough in training."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = [str(i) for i in items]
        self.index = {item: i + 2 for i, item in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError("ItemVocab: item ids repeat")

    @classmethod
    def from_examples(cls, histories: Sequence[Sequence[Any]], items: Sequence[Any], min_count: int = 1) -> ItemVocab:
        """Items occurring at least ``min_count`` times among the histories and candidates of ``examples``.

        Rarer items share the OOV token, so that token is trained on items seen rarely, which is
        what an unseen item at test time resembles.
        """
        if min_count < 1:
            raise ValueError(f"ItemVocab.min_count must be ≥ 1, got {min_count}")
        counts: Counter[str] = Counter(str(i) for i in items)
        for hist in histories:
            counts.update(str(i) for i in hist)
        return cls(sorted(item for item, n in counts.items() if n >= min_count))

    @property
    def n_tokens(self) -> int:
        """Rows of the item table (padding and OOV included)."""
        return len(self.items) + 2

    def token(self, item: Any) -> int:
        """The token of one item id (OOV when unknown)."""
        return self.index.get(str(item), OOV)


def encode_examples(split: Any, vocab: ItemVocab, max_len: int) -> dict[str, torch.Tensor]:
    """Tensors of a ctr split (a ``datasets.Dataset``, DataFrame or dict of columns).

    Returns:
        ``history_ids`` and ``history_feedback`` ``(N, max_len)`` left-padded (the last column is
        the most recent item; longer histories keep their last ``max_len`` items), ``item_ids``
        ``(N,)`` and ``labels`` ``(N,)`` float.

    Raises:
        ValueError: A missing column, a history whose items and labels differ in length, or a
            label that is not 0/1 (the message names the row).
    """
    missing = [c for c in ("history_item_ids", "history_labels", "item_id", "label") if c not in _columns(split)]
    if missing:
        raise ValueError(f"a ctr split needs the columns {missing} (has {sorted(_columns(split))})")
    out = encode_inputs(split["history_item_ids"], split["history_labels"], split["item_id"], vocab, max_len)
    y = np.asarray(list(split["label"]), dtype=np.float32).reshape(-1)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0/1, got {sorted(set(y.tolist()) - {0.0, 1.0})[:3]}")
    return {**out, "labels": torch.from_numpy(y)}


def encode_inputs(histories: Sequence[Sequence[Any]], history_labels: Sequence[Sequence[Any]],
                  candidates: Sequence[Any], vocab: ItemVocab, max_len: int) -> dict[str, torch.Tensor]:
    """Input tensors of ctr examples (no target needed: also what a server sees).

    Args:
        histories: Item ids per example, oldest first.
        history_labels: 0/1 per history item (same lengths).
        candidates: The candidate item id per example.
        vocab: Item id → token.
        max_len: Positions kept (the most recent items).

    Returns:
        ``history_ids`` / ``history_feedback`` ``(N, max_len)`` left-padded and ``item_ids`` ``(N,)``.

    Raises:
        ValueError: A history whose items and labels differ in length, or a history label that
            is not 0/1 (the message names the row).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")
    hist_items, hist_labels, cand = list(histories), list(history_labels), list(candidates)
    if not len(hist_items) == len(hist_labels) == len(cand):
        raise ValueError(f"{len(hist_items)} histories, {len(hist_labels)} history label lists and "
                         f"{len(cand)} candidates: expected one of each per example")
    n = len(cand)
    ids = np.zeros((n, max_len), dtype=np.int64)
    feedback = np.zeros((n, max_len), dtype=np.int64)
    for row, (items, fb) in enumerate(zip(hist_items, hist_labels, strict=True)):
        items, fb = list(items), list(fb)
        if len(items) != len(fb):
            raise ValueError(f"row {row}: {len(items)} history items but {len(fb)} history labels")
        bad = [v for v in fb if v not in (0, 1)]
        if bad:
            raise ValueError(f"row {row}: history labels must be 0/1, got {bad[0]!r}")
        items, fb = items[-max_len:], fb[-max_len:]
        if items:
            ids[row, max_len - len(items):] = [vocab.token(i) for i in items]
            feedback[row, max_len - len(fb):] = [LIKE if v else DISLIKE for v in fb]
    return {"history_ids": torch.from_numpy(ids), "history_feedback": torch.from_numpy(feedback),
            "item_ids": torch.tensor([vocab.token(i) for i in cand], dtype=torch.long)}


def _columns(split: Any) -> list[str]:
    if hasattr(split, "column_names"):
        return list(split.column_names)
    return list(split.keys()) if hasattr(split, "keys") else list(split.columns)


class _Backbone(nn.Module):
    """An item table (row 0 = padding) and an encoder of ``(B, L, d)`` inputs → ``(B, d)``."""

    def table(self) -> torch.Tensor:
        """``(n_tokens, d)`` item embeddings."""
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` left-padded inputs (zero at padding) + ``(B, L)`` validity → ``(B, d)``."""
        raise NotImplementedError


class _GRUBackbone(_Backbone):
    """A :class:`GRU4Rec` (its item table and GRU); the output at the most recent position."""

    def __init__(self, n_tokens: int, cfg: SequenceCTRConfig) -> None:
        super().__init__()
        self.net = GRU4Rec(n_tokens - 1, cfg.hidden, cfg.layers, cfg.dropout)

    def table(self) -> torch.Tensor:
        return self.net.items.weight

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net.encode_embeddings(emb)[:, -1]


class _SASRecBackbone(_Backbone):
    """A :class:`SASRec` (its item table, positions and causal blocks); the most recent position."""

    def __init__(self, n_tokens: int, cfg: SequenceCTRConfig) -> None:
        super().__init__()
        self.net = SASRec(n_tokens - 1, SASRecConfig(cfg.hidden, cfg.max_len, cfg.blocks, cfg.heads, cfg.dropout))

    def table(self) -> torch.Tensor:
        return self.net.items.table()

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net.encode_embeddings(emb, valid)[:, -1]


class _CaserBackbone(_Backbone):
    """An item table (initialised as Caser's) and a :class:`CaserEncoder` over the last ``window`` positions."""

    def __init__(self, n_tokens: int, cfg: SequenceCTRConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_tokens, cfg.hidden, padding_idx=PAD)
        nn.init.normal_(self.items.weight, std=cfg.hidden**-0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        window = cfg.window or cfg.max_len
        self.net = CaserEncoder(cfg.hidden, window, cfg.n_horizontal, cfg.n_vertical, cfg.dropout)

    def table(self) -> torch.Tensor:
        return self.items.weight

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net(emb)


_BACKBONES: dict[str, type[_Backbone]] = {"gru4rec": _GRUBackbone, "caser": _CaserBackbone, "sasrec": _SASRecBackbone}


class SequenceCTR(nn.Module):
    """Item-ID + like/dislike embeddings → sequence encoder → MLP over ``[h, e, h*e]`` → one logit."""

    def __init__(self, n_tokens: int, cfg: SequenceCTRConfig | None = None) -> None:
        """Build the model.

        Args:
            n_tokens: Item-table rows, padding (0) and OOV (1) included (:attr:`ItemVocab.n_tokens`).
            cfg: Shape; defaults to :class:`SequenceCTRConfig`.
        """
        super().__init__()
        self.cfg = cfg or SequenceCTRConfig()
        if n_tokens < 2:
            raise ValueError(f"SequenceCTR needs n_tokens ≥ 2 (padding and OOV), got {n_tokens}")
        self.n_tokens = n_tokens
        d = self.cfg.hidden
        self.encoder = _BACKBONES[self.cfg.encoder](n_tokens, self.cfg)
        self.feedback = nn.Embedding(3, d, padding_idx=PAD)
        nn.init.normal_(self.feedback.weight, std=d**-0.5)
        with torch.no_grad():
            self.feedback.weight[PAD].zero_()
        self.head = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Dropout(self.cfg.dropout), nn.Linear(d, 1))

    def forward(
        self,
        history_ids: torch.Tensor,
        history_feedback: torch.Tensor,
        item_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> CTROutput:
        """Logits (and the BCE loss when ``labels`` are given) of a batch.

        Args:
            history_ids: ``(B, L)`` left-padded item tokens (0 = padding); the last ``max_len``
                columns are read.
            history_feedback: ``(B, L)`` 1 = disliked, 2 = liked, 0 at padding.
            item_ids: ``(B,)`` candidate item tokens.
            labels: Optional ``(B,)`` 0/1 targets.
        """
        if history_ids.shape != history_feedback.shape or history_ids.ndim != 2:
            raise ValueError(f"history_ids {tuple(history_ids.shape)} and history_feedback "
                             f"{tuple(history_feedback.shape)} must be the same (B, L) shape")
        if item_ids.shape != history_ids.shape[:1]:
            raise ValueError(f"item_ids {tuple(item_ids.shape)} must be (B,) with B = {history_ids.shape[0]}")
        ids = history_ids[:, -self.cfg.max_len:]
        fb = history_feedback[:, -self.cfg.max_len:]
        for name, t in (("history_ids", ids), ("item_ids", item_ids)):
            if t.numel() and (int(t.max()) >= self.n_tokens or int(t.min()) < 0):
                raise ValueError(f"{name} holds a token outside [0, {self.n_tokens})")
        _, h, e = self.represent(ids, fb, item_ids)
        logits = self.score(h, e)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float().reshape(-1))
        return CTROutput(logits=logits, loss=loss)

    def score(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """``(B,)`` click logits from :meth:`represent`'s user state and candidate embedding."""
        return self.head(torch.cat([user, item, user * item], -1)).squeeze(-1)

    def represent(self, history_ids: torch.Tensor, history_feedback: torch.Tensor,
                  item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's own representations: what collaborative tokens are made of (petrec.models.collab).

        Args:
            history_ids: ``(B, L)`` left-padded item tokens, ``L <= max_len``.
            history_feedback: ``(B, L)`` like / dislike tokens.
            item_ids: ``(B,)`` candidate tokens.

        Returns:
            ``(B, L, d)`` history-position embeddings (item + feedback, zero at padding), ``(B, d)``
            the encoder's user state and ``(B, d)`` the candidate's item embedding.
        """
        table = self.encoder.table()
        valid = history_ids != PAD
        emb = (table[history_ids] + self.feedback(history_feedback)) * valid.unsqueeze(-1)
        return emb, self.encoder(emb, valid), table[item_ids]


#: Batch keys a :class:`SequenceCTR` reads.
INPUTS = ("history_ids", "history_feedback", "item_ids")


def evaluate_sequence_ctr(model: nn.Module, loader: Any, accelerator: Accelerator) -> dict[str, float]:
    """AUC (first: the selection metric), log loss, accuracy and F1 over a prepared loader."""
    from petrec.evaluation import evaluate_ctr

    return evaluate_ctr(model, loader, accelerator, input_keys=INPUTS)
