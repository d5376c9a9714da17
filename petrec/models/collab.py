"""Collaborative tokens: an ID model's view of each example, read by the language model as soft tokens.

What the language model cannot read from a prompt is how the *other* users treated the items:
that is what an ID-based recommender learns. Following CoLLM (Zhang et al., 2023: ID
embeddings through an MLP into the LM's token space) and LLaRA (Liao et al., 2024: SASRec
embeddings as item tokens), a collaborative-token model

1. trains an ID click model (:class:`petrec.models.sequential.ctr.SequenceCTR`: GRU4Rec,
   SASRec or Caser over item-ID + like/dislike embeddings) on training examples only
   (:func:`petrec.recipes.collab.fit_id_model`);
2. turns each example into ``history_len + 2`` vectors of that model: one per history position
   (item + feedback embedding), the encoder's user state, and the candidate's item embedding;
3. maps them through a trainable MLP (:class:`CollabTokens`) into the backbone's input-embedding
   space and inserts them into the prompt's embeddings (:meth:`BehaviourModel.pooled`): after the
   first real token of an encoder (its ``[CLS]``), before the first real token of a decoder, so
   a decoder's answer position stays the prompt's last token.

The tokens sit as one block (history in order, then the user state, then the candidate), not
interleaved with each item's title: a block needs no knowledge of where a template put each
title, so it works with any template and tokenizer (a departure from LLaRA's hybrid item tokens).

The ID model is frozen by default (``model.collab_tune: false``, CoLLM's second stage) or trained
with the adapter. Everything a run needs to rebuild the tokens, the ID vocabulary and shape, is
:class:`CollabSpec` (JSON, ``collab_tokens.json`` beside the adapter); the ID model's weights are
saved with the adapter (the ``collab`` module is a head of :func:`petrec.attach`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petrec.collate import COLLAB_COLUMNS
from petrec.data.errors import DataError
from petrec.files import write_json_atomic
from petrec.models.sequential.ctr import ItemVocab, SequenceCTR, SequenceCTRConfig, encode_inputs

__all__ = ["COLLAB_COLUMNS", "COLLAB_FILE", "CollabSpec", "CollabTokens"]

COLLAB_FILE = "collab_tokens.json"
COLLAB_FORMAT = "petrec-collab-tokens"
COLLAB_VERSION = 1
#: Token roles: each history position, the ID encoder's user state, the candidate item.
_HISTORY, _USER, _CANDIDATE = 0, 1, 2


@dataclass
class CollabSpec:
    """The ID vocabulary and ID-model shape behind a run's collaborative tokens.

    Attributes:
        items: Item ids with their own ID embedding (token 2.. in order); others share OOV.
        encoder: ``gru4rec``, ``sasrec`` or ``caser``.
        hidden: ID embedding width.
        history_len: History positions read (the data's ``history_len``).
        fit: ``heldout`` or ``train`` (which examples the ID model was trained on).
        fitted_on: How many examples it was trained on (early stopping on a held-out tenth of them).
        id_metrics: The ID model's own metrics on its held-out tenth (``auc`` ...).
    """

    items: list[str]
    encoder: str
    hidden: int
    history_len: int
    fit: str = "heldout"
    fitted_on: int = 0
    id_metrics: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def vocab(self) -> ItemVocab:
        """Item id → ID token, built once per spec (a server calls :meth:`columns` on every batch;
        ``items`` is not changed after the spec is made)."""
        return ItemVocab(self.items)

    @property
    def n_tokens(self) -> int:
        """Rows of the ID model's item table (padding and OOV included)."""
        return len(self.items) + 2

    @property
    def n_soft_tokens(self) -> int:
        """Soft tokens each example gets: one per history position, the user state, the candidate."""
        return self.history_len + 2

    def id_config(self, dropout: float = 0.2) -> SequenceCTRConfig:
        """Shape of the ID model (:class:`SequenceCTR`)."""
        return SequenceCTRConfig(encoder=self.encoder, hidden=self.hidden, max_len=self.history_len,  # type: ignore[arg-type]
                                 dropout=dropout)

    def columns(self, examples: Any) -> dict[str, list]:
        """The collaborative-token inputs of ctr examples (their history, its like/dislike labels, the candidate).

        Reads nothing but each example's own inputs and this spec: a label of the example itself
        never enters (tests/models/test_collab.py flips them).

        Raises:
            DataError: A missing column or a malformed history (the row is named).
        """
        names = set(examples.column_names) if hasattr(examples, "column_names") else set(examples.keys())
        missing = [c for c in ("history_item_ids", "history_labels", "item_id") if c not in names]
        if missing:
            raise DataError(f"collaborative tokens need the example columns {missing}; the examples have "
                            f"{sorted(names)}")
        try:
            out = encode_inputs(examples["history_item_ids"], examples["history_labels"], examples["item_id"],
                                self.vocab, self.history_len)
        except ValueError as exc:
            raise DataError(f"collaborative tokens: {exc}") from None
        return {name: out[key].tolist()
                for name, key in zip(COLLAB_COLUMNS, ("history_ids", "history_feedback", "item_ids"), strict=True)}

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``collab_tokens.json`` into ``folder`` (atomically)."""
        path = Path(folder) / COLLAB_FILE
        write_json_atomic(path, {"format": COLLAB_FORMAT, "version": COLLAB_VERSION, **asdict(self)})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> CollabSpec:
        """Read ``collab_tokens.json`` from a run or export folder.

        Raises:
            DataError: A missing or unreadable file, or one that is not petrec's (named).
        """
        path = Path(folder) / COLLAB_FILE
        if not path.is_file():
            raise DataError(f"{path} not found: a model with model.collab_tokens needs the ID vocabulary "
                            "its recipe wrote")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(raw, Mapping) or raw.get("format") != COLLAB_FORMAT:
            raise DataError(f"{path}: expected a {COLLAB_FORMAT!r} file")
        if raw.get("version") != COLLAB_VERSION:
            raise DataError(f"{path}: version {raw.get('version')!r}; this petrec reads version {COLLAB_VERSION}")
        try:
            spec = cls(**{k: v for k, v in raw.items() if k not in ("format", "version")})
        except TypeError as exc:
            raise DataError(f"{path}: {exc}") from None
        if not isinstance(spec.items, list) or len(set(map(str, spec.items))) != len(spec.items):
            raise DataError(f"{path}: 'items' must be a list of distinct item ids")
        return spec


class CollabTokens(nn.Module):
    """ID model + projector: ``(B, history_len + 2, lm_hidden)`` soft tokens of a batch.

    Each vector of the ID model (a history position, the user state, the candidate) plus a learned
    role vector goes through ``Linear → GELU → Linear → LayerNorm`` into the backbone's width; the
    LayerNorm's gain starts at the spread of the backbone's own input embeddings, so the new
    tokens start at the size of real ones.

    Args:
        spec: Vocabulary and shape of the ID model.
        lm_hidden: The backbone's embedding width.
        embed_std: Standard deviation of the backbone's input-embedding entries.
        tune: Train the ID model with the projector (else it stays as fitted, in eval mode).
    """

    def __init__(self, spec: CollabSpec, lm_hidden: int, embed_std: float, *, tune: bool = False) -> None:
        super().__init__()
        self.id_model = SequenceCTR(spec.n_tokens, spec.id_config())
        self.tune = tune
        d = spec.hidden
        self.role = nn.Parameter(torch.zeros(3, d))
        self.proj = nn.Sequential(nn.Linear(d, lm_hidden), nn.GELU(), nn.Linear(lm_hidden, lm_hidden),
                                  nn.LayerNorm(lm_hidden))
        with torch.no_grad():
            self.proj[-1].weight.fill_(float(embed_std))

    def freeze_id_model(self, *, logit_only: bool = False) -> None:
        """Keep the fitted ID model as it is (the default): only the role vectors and projector train.

        Args:
            logit_only: The model reads the ID model's logit only (``model.collab_prompt_tokens:
                false``): the role vectors and projector are unused and freeze too.
        """
        if not self.tune:
            for p in self.id_model.parameters():
                p.requires_grad_(False)
        if logit_only:
            for p in (self.role, *self.proj.parameters()):
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> CollabTokens:
        """As ``nn.Module.train``, but a frozen ID model stays in eval mode (no dropout)."""
        super().train(mode)
        if not self.tune:
            self.id_model.eval()
        return self

    def forward(self, history_ids: torch.Tensor, history_feedback: torch.Tensor,
                item_ids: torch.Tensor) -> torch.Tensor:
        """Soft tokens of a batch (history positions in order, then the user state, then the candidate).

        Args:
            history_ids: ``(B, history_len)`` left-padded ID tokens (``collab_history_ids``).
            history_feedback: ``(B, history_len)`` like / dislike tokens.
            item_ids: ``(B,)`` candidate ID tokens.
        """
        return self.tokens_and_logits(history_ids, history_feedback, item_ids)[0]

    def _id_pass(self, history_ids: torch.Tensor, history_feedback: torch.Tensor, item_ids: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass of the ID model: history embeddings, user state, candidate, click logits
        (with gradients only when the ID model is tuned)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.tune):
            emb, user, item = self.id_model.represent(history_ids, history_feedback, item_ids)
            return emb, user, item, self.id_model.score(user, item)

    def logits(self, history_ids: torch.Tensor, history_feedback: torch.Tensor,
               item_ids: torch.Tensor) -> torch.Tensor:
        """The ID model's own ``(B,)`` click logits alone (``model.collab_prompt_tokens: false``)."""
        return self._id_pass(history_ids, history_feedback, item_ids)[3]

    def tokens_and_logits(self, history_ids: torch.Tensor, history_feedback: torch.Tensor,
                          item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The soft tokens (as :meth:`forward`) and the ID model's own ``(B,)`` click logits, from
        one pass of the ID model (``model.collab_in_fusion`` mixes those logits in)."""
        emb, user, item, id_logits = self._id_pass(history_ids, history_feedback, item_ids)
        x = torch.cat([emb + self.role[_HISTORY], (user + self.role[_USER]).unsqueeze(1),
                       (item + self.role[_CANDIDATE]).unsqueeze(1)], dim=1)
        return self.proj(x.to(self.role.dtype)), id_logits


def insert_tokens(embeds: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor, *,
                  after_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``tokens`` into each row's real tokens (padding on either side stays outside).

    Args:
        embeds: ``(B, T, H)`` input embeddings of the prompt.
        mask: ``(B, T)`` attention mask (right or left padding, no holes).
        tokens: ``(B, K, H)`` soft tokens.
        after_first: Insert after each row's first real token (an encoder's ``[CLS]``) instead of
            before it.

    Returns:
        ``(B, T + K, H)`` embeddings and their ``(B, T + K)`` mask.
    """
    batch, length = mask.shape
    k = tokens.shape[1]
    start = (mask == 0).long().cumprod(dim=1).sum(dim=1)  # left padding before the first real token
    at = (start + int(after_first)).clamp(max=length).unsqueeze(1)  # (B, 1) insertion offset
    j = torch.arange(length + k, device=mask.device).unsqueeze(0)  # positions of the new rows
    source = torch.where(j < at, j, torch.where(j < at + k, length + (j - at), j - k))
    both = torch.cat([embeds, tokens.to(embeds.dtype)], dim=1)
    both_mask = torch.cat([mask, torch.ones(batch, k, dtype=mask.dtype, device=mask.device)], dim=1)
    out = both.gather(1, source.unsqueeze(-1).expand(-1, -1, both.shape[-1]))
    return out, both_mask.gather(1, source)
