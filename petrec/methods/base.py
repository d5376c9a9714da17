"""The one base class of petrec's own adapter modules: named adapters, one active at a time.

peft's layers already switch between named adapters; petrec's own methods (bottleneck adapters,
prefix tuning, prompt tuning) follow the same contract so :func:`petrec.methods.set_adapter`
and :func:`petrec.methods.disable_adapter` treat all of them alike.
"""

from __future__ import annotations

from torch import nn


class NamedAdapterModule(nn.Module):
    """Holds one sub-module per adapter name in ``self.adapters``; ``self.active`` picks one.

    ``active is None`` means the module is disabled and behaves like the base model.
    """

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.active: str | None = None

    def set_active(self, name: str | None) -> None:
        """Activate adapter ``name`` (``None`` or a name this module lacks: disabled).

        Only the active adapter's parameters require gradients.
        """
        self.active = name if name in self.adapters else None
        for key, sub in self.adapters.items():
            sub.requires_grad_(key == self.active)

    def current(self) -> nn.Module | None:
        """The active adapter sub-module, or ``None`` when disabled."""
        return self.adapters[self.active] if self.active is not None else None
