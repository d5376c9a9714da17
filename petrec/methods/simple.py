"""Methods without new modules: ``full`` fine-tuning, ``head`` (linear probe) and ``bitfit``.

Paper: BitFit https://arxiv.org/abs/2106.10199

Also holds :func:`wrap_heads`, which every method except ``full`` uses for the task head: peft's
``ModulesToSaveWrapper`` keeps a trained copy of the head per adapter name (and the original for
``disable_adapter``), which is exactly peft's ``modules_to_save`` format on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from petrec.methods.discovery import under
from petrec.methods.errors import PetrecMethodError


@dataclass
class NoOptions:
    """``full`` and ``head`` take no options."""


@dataclass
class BitFitOptions:
    """Options of ``bitfit``."""

    include_norm: bool = True
    """Also train the biases of normalisation layers (the paper trains every bias)."""

    def __post_init__(self) -> None:
        if not isinstance(self.include_norm, bool):
            raise PetrecMethodError(f"bitfit option include_norm must be True or False, got {self.include_norm!r}")


def wrap_heads(model: nn.Module, heads: Sequence[str], adapter_name: str) -> None:
    """Wrap each head in peft's ``ModulesToSaveWrapper`` (or add ``adapter_name`` to its wrapper)."""
    from peft.utils import ModulesToSaveWrapper

    for name in heads:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        if isinstance(module, ModulesToSaveWrapper):
            if adapter_name not in module.modules_to_save:
                module.update(adapter_name)
            module.set_adapter(adapter_name)
        else:
            setattr(parent, child, ModulesToSaveWrapper(module, adapter_name))


def apply_full(model: nn.Module, opts: NoOptions, targets: object, heads: list[str], adapter_name: str) -> list[str]:
    """Make every parameter trainable."""
    if targets is not None:
        raise PetrecMethodError("method 'full' trains everything; it takes no targets=")
    for p in model.parameters():
        p.requires_grad_(True)
    return []


def apply_head(model: nn.Module, opts: NoOptions, targets: object, heads: list[str], adapter_name: str) -> list[str]:
    """Train only the task head (a linear probe on frozen features)."""
    if not heads:
        raise PetrecMethodError(
            "method 'head' needs a task head: pass head=[...] (no 'classifier', 'score' or "
            "'head' module was found)"
        )
    if targets is not None:
        raise PetrecMethodError("method 'head' trains the head only; it takes no targets=")
    wrap_heads(model, heads, adapter_name)
    return []


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()


def apply_bitfit(
    model: nn.Module, opts: BitFitOptions, targets: object, heads: list[str], adapter_name: str
) -> list[str]:
    """Train every bias of the base (optionally not the normalisation biases) plus the head."""
    if targets is not None:
        raise PetrecMethodError("method 'bitfit' trains the biases; it takes no targets=")
    found = []
    for mname, module in model.named_modules():
        if under(mname, heads):
            continue
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter) and (opts.include_norm or not _is_norm(module)):
            bias.requires_grad_(True)
            found.append(mname)
    if not found:
        raise PetrecMethodError(f"method 'bitfit': {type(model).__name__} has no bias parameters")
    wrap_heads(model, heads, adapter_name)
    return sorted(found)
