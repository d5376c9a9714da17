"""Bottleneck adapters (Houlsby and Pfeiffer placements), zero-initialised so init equals the base.

Papers: Houlsby et al. 2019 https://arxiv.org/abs/1902.00751 ·
Pfeiffer et al. 2020 (AdapterFusion) https://arxiv.org/abs/2005.00247

peft has no bottleneck adapter. We keep it a small module of ours instead of registering a peft
tuner (``register_peft_method``): a registered tuner only loads where petrec is imported anyway,
peft's tuner base class expects a config/model/layer trio (~3x the code) and its ``merge`` hooks
would have to be stubbed, while petrec's own save/load/switch already cover what users need.

Placement: the adapter wraps an output projection (BERT ``attention.output.dense`` and
``output.dense``; Llama ``o_proj`` and ``down_proj``; GPT-2 ``attn.c_proj`` and ``mlp.c_proj``), so
it acts on the sub-layer output *before* the residual add and LayerNorm — Houlsby's placement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from petrec.methods.base import NamedAdapterModule
from petrec.methods.discovery import (
    ADAPTER_TARGETS,
    get_submodule_parent,
    linear_names,
    match_targets,
    model_type,
)
from petrec.methods.errors import PetrecMethodError


@dataclass
class AdapterOptions:
    """Options of ``adapter``."""

    variant: str = "houlsby"
    """``"houlsby"`` (after attention and feed-forward) or ``"pfeiffer"`` (after feed-forward only)."""
    reduction_factor: int = 16
    """Bottleneck width = output width // reduction_factor (at least 1)."""
    activation: str = "relu"
    """Non-linearity in the bottleneck: ``"relu"``, ``"gelu"`` or ``"silu"``."""

    def __post_init__(self) -> None:
        if self.variant not in ("houlsby", "pfeiffer"):
            raise PetrecMethodError(
                f"adapter option variant must be 'houlsby' or 'pfeiffer', got {self.variant!r}"
            )
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 1:
            raise PetrecMethodError(
                f"adapter option reduction_factor must be a positive int, got {self.reduction_factor!r}"
            )
        if self.activation not in _ACTIVATIONS:
            raise PetrecMethodError(
                f"adapter option activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}"
            )


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    """``x + up(act(down(x)))`` with ``up`` zero-initialised."""

    def __init__(self, width: int, reduction_factor: int, activation: str) -> None:
        super().__init__()
        hidden = max(1, width // reduction_factor)
        self.down = nn.Linear(width, hidden)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual bottleneck."""
        return x + self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)


class AdapterWrapped(NamedAdapterModule):
    """A layer followed by the active bottleneck adapter; ``base_layer`` is the original layer."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        """Run the base layer, then the active adapter (if any)."""
        out = self.base_layer(*args, **kwargs)
        adapter = self.current()
        return out if adapter is None else adapter(out)


def _out_width(layer: nn.Module) -> int:
    if hasattr(layer, "out_features"):
        return int(layer.out_features)
    if type(layer).__name__ == "Conv1D":
        return int(layer.nf)
    raise PetrecMethodError(f"cannot place a bottleneck adapter after {type(layer).__name__}")


def adapter_targets(
    model: nn.Module, opts: AdapterOptions, targets: str | Sequence[str] | None, heads: list[str]
) -> list[str]:
    """Module names an adapter goes after: ``targets`` or the per-architecture default."""
    if targets is not None:
        found = match_targets(model, targets, exclude=heads)
    else:
        mtype = model_type(model)
        if mtype in ADAPTER_TARGETS:
            attn, ffn = ADAPTER_TARGETS[mtype]
            pattern = ffn if opts.variant == "pfeiffer" else f"(?:{attn})|(?:{ffn})"
            found = match_targets(model, pattern, exclude=heads)
        elif mtype is None:
            # A plain module: every Linear outside the head (name targets= to choose fewer).
            found = linear_names(model, exclude=heads)
        else:
            raise PetrecMethodError(
                f"no default bottleneck-adapter placement for model_type {mtype!r}: pass "
                "targets=[...] naming the attention / feed-forward output projections"
            )
    # A wrapped name like "x.base_layer" must not count: adapters go on the original layers.
    found = [n for n in found if ".base_layer" not in n]
    if not found:
        raise PetrecMethodError(f"no bottleneck-adapter targets found for targets={targets!r}")
    return sorted(found)


def apply_adapter(
    model: nn.Module,
    opts: AdapterOptions,
    targets: str | Sequence[str] | None,
    heads: list[str],
    adapter_name: str,
) -> list[str]:
    """Insert a bottleneck adapter named ``adapter_name`` after each target layer."""
    found = adapter_targets(model, opts, targets, heads)
    for name in found:
        parent, child = get_submodule_parent(model, name)
        layer = getattr(parent, child)
        if not isinstance(layer, AdapterWrapped):
            layer = AdapterWrapped(layer)
            setattr(parent, child, layer)
        ref = next(layer.base_layer.parameters())
        bottleneck = Bottleneck(_out_width(layer.base_layer), opts.reduction_factor, opts.activation)
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        layer.adapters[adapter_name] = bottleneck.to(device=ref.device, dtype=dtype)
        layer.set_active(adapter_name)
    return found
