"""Book-keeping that :func:`petrec.attach` leaves on a model: which adapters exist and which is active.

The record is a plain attribute (``model.petrec_state``), not a module, so it never shows up in
``state_dict`` and survives ``copy.deepcopy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from petrec.methods.errors import PetrecMethodError

#: Attribute name under which the state lives on the adapted model.
STATE_ATTR = "petrec_state"


@dataclass
class AdapterRecord:
    """One named adapter attached to a model."""

    method: str
    """Registry name of the method (``"lora"``, ``"prefix"``, ...)."""
    config: dict[str, Any]
    """The method's options as plain JSON-able values (the method config dataclass, as a dict)."""
    targets: list[str]
    """Full module names the method changed (sorted), empty for methods without targets."""
    head: list[str]
    """Names of the task-head modules trained and saved with this adapter."""
    quantize: str | None = None
    """``"nf4"`` / ``"int8"`` when the base was quantized by petrec, else ``None``."""
    trainable: list[str] = field(default_factory=list)
    """Full parameter names this adapter trains (used by save, report and tests)."""


@dataclass
class PetrecState:
    """All adapters attached to one model, plus the active one."""

    adapters: dict[str, AdapterRecord] = field(default_factory=dict)
    """Adapter name → its record, in the order they were added."""
    active: str | None = None
    """Name of the adapter used by ``forward`` (``None`` while disabled)."""
    quantize: str | None = None
    """How the base weights were quantized (shared by every adapter)."""
    base_fingerprint: dict[str, Any] = field(default_factory=dict)
    """Shape summary of the base model taken before any adapter was attached."""


def get_state(model: nn.Module, *, required: bool = True) -> PetrecState | None:
    """Return the petrec state of ``model``.

    Args:
        model: A model returned by :func:`petrec.attach`.
        required: Raise when the model carries no state.

    Raises:
        PetrecMethodError: ``required`` and no adapter was attached with petrec.
    """
    state = getattr(model, STATE_ATTR, None)
    if state is None and required:
        raise PetrecMethodError(
            f"{type(model).__name__} has no petrec adapter: call petrec.attach(model, method) first"
        )
    return state


def set_state(model: nn.Module, state: PetrecState | None) -> None:
    """Attach (or remove, with ``None``) the state record on ``model``."""
    if state is None:
        model.__dict__.pop(STATE_ATTR, None)
    else:
        model.__dict__[STATE_ATTR] = state
