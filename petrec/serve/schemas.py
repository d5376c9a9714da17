"""Request / response bodies (pydantic v2), with the limits of a :class:`ServeConfig`.

The classes are built per config by :func:`build_schemas`, so the OpenAPI spec shows the
limits the server enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from petrec.serve.config import ServeConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
AdapterName = Annotated[str, Field(pattern=NAME_PATTERN, description="A loaded adapter's name.")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StrictIn(BaseModel):
    """Request bodies: unknown fields refused, and no type coercion (``"5"`` is no integer,
    ``1`` / ``"yes"`` no boolean, ``true`` no label): what the OpenAPI spec says, exactly."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ScoreOut(_Strict):
    """Answer of ``/v1/predict``: one score per candidate, in request order."""

    adapter: str
    task: str = Field(description="ctr (click/like probability) or rating (predicted rating)")
    scores: list[float]


class HistoryEffect(_Strict):
    """One history item's occlusion effect on the candidate's score."""

    position: int = Field(description="place in the request's history (0 = oldest)")
    item_id: str | None = Field(description="its catalogue id (null for a raw text)")
    effect: float = Field(description="score with the full history minus score without this item")


class ExplainOut(_Strict):
    """Answer of ``/v1/explain``: the candidate's score and each history item's effect on it."""

    adapter: str
    task: str = Field(description="ctr (click/like probability) or rating (predicted rating)")
    method: Literal["occlusion"] = "occlusion"
    score: float = Field(description="the candidate's score with the full history (as /v1/predict)")
    effects: list[HistoryEffect] = Field(description="one per history item, in request order")
    ranking: list[int] = Field(description="history positions by |effect|, largest first")
    prior: float | None = Field(None, description="behaviour-prior adapters: the prior head's part of the "
                                                   "candidate's logit (ctr) or rating, else null")
    lm: float | None = Field(None, description="behaviour-prior adapters: the rest of it (the language "
                                               "model's part), else null")
    prior_share: float | None = Field(None, description="behaviour-prior adapters: |prior| / (|prior| + |lm|), "
                                                        "else null")


class RecommendedItem(_Strict):
    """One recommended item and its cosine score."""

    item_id: str
    score: float


class RecommendOut(_Strict):
    """Answer of ``/v1/recommend``: the top-k items, best first."""

    adapter: str
    items: list[RecommendedItem]


class AdapterInfo(_Strict):
    """A loaded adapter."""

    name: str
    method: str
    task: str
    template: str
    max_length: int
    n_items: int
    shares_base: bool
    own_bytes: int = Field(description="bytes of tensors only this adapter holds")
    shared_bytes: int = Field(description="bytes of base tensors it shares by reference")
    export_name: str
    created_utc: str
    loaded_at: float


class AdapterStatus(_Strict):
    """Where one adapter stands (admin keys, their adapters only)."""

    name: str
    status: Literal["loaded", "unavailable", "available"] = Field(
        description="loaded: served; unavailable: its last load failed (reason) and it is not served; "
                    "available: an export folder not loaded")
    reason: str | None = Field(None, description="why the last load failed (also set for a loaded adapter "
                                                 "whose reload failed: the old one still serves)")


class AdaptersOut(_Strict):
    """``GET /v1/adapters``: loaded adapters, export folders available, failed loads, statuses."""

    loaded: list[AdapterInfo]
    available: list[str]
    refused: dict[str, str] = Field(description="name → reason of the last failed load (admin keys)")
    status: list[AdapterStatus] = Field(default_factory=list, description="every adapter the admin key may "
                                        "manage: loaded, unavailable (with the reason) or available")


class ErrorOut(BaseModel):
    """Every error answer: a message."""

    detail: Any


@dataclass(frozen=True)
class Schemas:
    """The request classes for one config."""

    PredictIn: type[BaseModel]
    RecommendIn: type[BaseModel]
    ExplainIn: type[BaseModel]


def build_schemas(cfg: ServeConfig) -> Schemas:
    """Request classes enforcing ``cfg``'s limits (history, candidates, k, text length)."""
    text_field = Field(None, min_length=1, max_length=cfg.max_text_chars,
                       description="raw item text (instead of item_id)")

    class ItemRef(_StrictIn):
        """An item: a catalogue ``item_id`` or a raw ``text`` (exactly one)."""

        item_id: str | None = Field(None, min_length=1, max_length=256, description="catalogue item id")
        text: str | None = text_field

        @model_validator(mode="after")
        def _one_of(self) -> ItemRef:
            if (self.item_id is None) == (self.text is None):
                raise ValueError("give exactly one of item_id or text")
            return self

    class HistoryItem(ItemRef):
        """A past interaction, oldest first in the list."""

        label: int = Field(1, ge=0, le=1, description="1 liked / clicked, 0 disliked")
        rating: float | None = Field(None, ge=-1e6, le=1e6,
                                     description="rating (rating models); default: the label")

    class PredictIn(_StrictIn):
        """Score candidates for a user history with one adapter."""

        adapter: AdapterName
        history: list[HistoryItem] = Field(default_factory=list, max_length=cfg.max_history)
        candidates: list[ItemRef] = Field(min_length=1, max_length=cfg.max_candidates)

    class RecommendIn(_StrictIn):
        """Top-k catalogue items for a history (next-item adapters)."""

        adapter: AdapterName
        history: list[HistoryItem] = Field(min_length=1, max_length=cfg.max_history)
        k: int = Field(10, ge=1, le=cfg.max_k)
        exclude_seen: bool = Field(True, description="leave the history's items out of the ranking")

    class ExplainIn(_StrictIn):
        """Explain one candidate's score for a history with one adapter (ctr / rating)."""

        adapter: AdapterName
        history: list[HistoryItem] = Field(min_length=1, max_length=cfg.max_history)
        candidate: ItemRef

    for cls in (ItemRef, HistoryItem, PredictIn, RecommendIn, ExplainIn):
        cls.model_rebuild()
    return Schemas(PredictIn, RecommendIn, ExplainIn)
