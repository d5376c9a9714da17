"""LoRA, DoRA and IA3 through peft's tuner layers, injected in place into any model.

Papers: LoRA https://arxiv.org/abs/2106.09685 · DoRA https://arxiv.org/abs/2402.09353 ·
IA3 https://arxiv.org/abs/2205.05638 · QLoRA https://arxiv.org/abs/2305.14314

We use ``peft.inject_adapter_in_model`` rather than ``get_peft_model`` so the user's model keeps
its own class (``BehaviourModel`` stays a ``BehaviourModel`` and its ``forward`` signature is
untouched); peft still owns the layers, the multi-adapter switching, the merge and the state-dict
format, which is why an adapter saved by petrec loads in plain ``peft.PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from petrec.methods.discovery import linear_names, match_targets, model_type
from petrec.methods.errors import PetrecMethodError


@dataclass
class LoraOptions:
    """Options of ``lora`` / ``dora`` / ``qlora``."""

    r: int = 8
    """Rank of the low-rank update."""
    alpha: float = 16.0
    """Scaling numerator: the update is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapter input during training."""

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise PetrecMethodError(f"lora option r must be a positive int, got {self.r!r}")
        if self.alpha <= 0:
            raise PetrecMethodError(f"lora option alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise PetrecMethodError(f"lora option dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class IA3Options:
    """Options of ``ia3``."""

    feedforward: list[str] | None = None
    """Target names scaled on their input (feed-forward layers); default: peft's mapping / none."""

    def __post_init__(self) -> None:
        if self.feedforward is not None and (
            isinstance(self.feedforward, str) or not all(isinstance(n, str) for n in self.feedforward)
        ):
            raise PetrecMethodError(f"ia3 option feedforward must be a list of module names, got {self.feedforward!r}")


def _lora_targets(model: nn.Module, targets: str | Sequence[str] | None, heads: list[str]) -> list[str]:
    if targets is not None:
        found = match_targets(model, targets, exclude=heads)
    else:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

        mtype = model_type(model)
        if mtype in MAP:
            found = match_targets(model, MAP[mtype], exclude=heads)
        else:
            found = linear_names(model, exclude=heads)
    if not found:
        raise PetrecMethodError(
            f"no target modules found for targets={targets!r} in {type(model).__name__} "
            "(pass targets=[...] with module names or a regex)"
        )
    return sorted(found)


def _is_conv1d(model: nn.Module, names: list[str]) -> bool:
    """GPT-2's ``Conv1D`` stores its weight transposed; peft must be told (it would warn)."""
    return any(type(model.get_submodule(n)).__name__ == "Conv1D" for n in names)


def _inject(model: nn.Module, cfg: Any, heads: list[str], adapter_name: str) -> None:
    """Inject peft layers; wrap the heads ourselves, then record them as ``modules_to_save``.

    peft matches ``modules_to_save`` names with a bare ``str.endswith`` (a head called ``out``
    would also match ``lora_dropout``), so petrec wraps the named heads itself and only writes the
    list into the config afterwards, where peft's save/load code reads it.
    """
    from peft import inject_adapter_in_model

    from petrec.methods.simple import wrap_heads

    wrap_heads(model, heads, adapter_name)
    inject_adapter_in_model(cfg, model, adapter_name=adapter_name)
    model.peft_config[adapter_name].modules_to_save = list(heads) or None


def apply_lora(
    model: nn.Module,
    opts: LoraOptions,
    targets: str | Sequence[str] | None,
    heads: list[str],
    adapter_name: str,
    *,
    use_dora: bool = False,
) -> list[str]:
    """Inject LoRA (or DoRA) layers into ``model`` in place; returns the targeted module names."""
    from peft import LoraConfig

    found = _lora_targets(model, targets, heads)
    cfg = LoraConfig(
        r=opts.r,
        lora_alpha=opts.alpha,
        lora_dropout=opts.dropout,
        target_modules=found,
        use_dora=use_dora,
        fan_in_fan_out=_is_conv1d(model, found),
    )
    _inject(model, cfg, heads, adapter_name)
    return found


def apply_ia3(
    model: nn.Module,
    opts: IA3Options,
    targets: str | Sequence[str] | None,
    heads: list[str],
    adapter_name: str,
) -> list[str]:
    """Inject IA3 scaling vectors into ``model`` in place; returns the targeted module names."""
    from peft import IA3Config
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF_MAP,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as MAP,
    )

    mtype = model_type(model)
    if targets is not None:
        found = sorted(match_targets(model, targets, exclude=heads))
    elif mtype in MAP:
        found = sorted(match_targets(model, MAP[mtype], exclude=heads))
    else:
        found = sorted(linear_names(model, exclude=heads))
    if not found:
        raise PetrecMethodError(f"no IA3 target modules found for targets={targets!r}")
    if opts.feedforward is not None:
        ff = sorted(set(match_targets(model, opts.feedforward, exclude=heads)) & set(found))
    elif mtype in FF_MAP:
        ff = sorted(set(match_targets(model, FF_MAP[mtype], exclude=heads)) & set(found))
    else:
        ff = []
    cfg = IA3Config(target_modules=found, feedforward_modules=ff, fan_in_fan_out=_is_conv1d(model, found))
    _inject(model, cfg, heads, adapter_name)
    return found
