"""The one registry of PEFT methods: name → :class:`MethodSpec`.

Every fact about a method that another module needs (can it be merged, does it write the base
weights, does it take target modules, does it imply a quantized base) is a field of its spec;
no module outside ``petrec.methods`` spells out method names (``tests/test_layout.py`` checks).
Adding a method = one module with an options dataclass and an ``apply_*`` function, one entry
here, one row in ``tests/methods/test_table.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from petrec.methods.bottleneck import AdapterOptions, apply_adapter
from petrec.methods.errors import PetrecMethodError
from petrec.methods.peft_methods import IA3Options, LoraOptions, apply_ia3, apply_lora
from petrec.methods.prefix import PrefixOptions, apply_prefix
from petrec.methods.prompt import PromptOptions, apply_prompt
from petrec.methods.simple import BitFitOptions, NoOptions, apply_bitfit, apply_full, apply_head


@dataclass(frozen=True)
class MethodSpec:
    """How to apply one PEFT method and what it supports."""

    name: str
    """Registry name, as users type it (``petrec.attach(model, name)``)."""
    summary: str
    """One line for ``petrec methods``."""
    paper: str
    """Link to the paper (or ``"-"``)."""
    options: type
    """Dataclass of the method's keyword options (``r``, ``alpha`` ...)."""
    apply: Callable[..., list[str]]
    """``apply(model, options, targets, heads, adapter_name) -> targeted module names``."""
    mergeable: bool
    """``petrec.merge`` can fold it into the base weights."""
    peft_native: bool
    """Saved in peft's format; loads in ``peft.PeftModel.from_pretrained``."""
    multi_adapter: bool
    """Several named adapters of this method can share one frozen base."""
    writes_base: bool = False
    """Trains base-model tensors in place (``full``, ``bitfit``): the adapter cannot be disabled,
    and a server never shares its base with other adapters."""
    takes_targets: bool = False
    """Adds layers to chosen target modules (``targets=``); the saved adapter records them and
    loading re-attaches to exactly those."""
    quantize: str | None = None
    """Quantization of the frozen base the method implies (``qlora`` → ``"nf4"``)."""
    changes_input: bool = False
    """Adds virtual tokens or prefixes to every input sequence (``prompt``, ``prefix``), so no other
    soft tokens (``model.collab_tokens``) can be inserted beside them."""

    def make_options(self, kwargs: dict[str, Any]) -> Any:
        """Build the options dataclass, naming any unknown keyword."""
        fields = [f.name for f in dataclasses.fields(self.options)]
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise PetrecMethodError(
                f"method {self.name!r} got unknown option(s) {unknown}; it accepts {fields or 'none'}"
            )
        return self.options(**kwargs)


def _check_unique(specs: Iterable[MethodSpec]) -> dict[str, MethodSpec]:
    out: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in out:
            raise RuntimeError(f"duplicate PEFT method name {spec.name!r} in the registry")
        out[spec.name] = spec
    return out


#: name → spec. ``petrec methods`` prints it.
METHODS: dict[str, MethodSpec] = _check_unique(
    [
        MethodSpec("full", "every parameter trains (the reference point)", "-", NoOptions, apply_full,
                   mergeable=True, peft_native=False, multi_adapter=False, writes_base=True),
        MethodSpec("head", "linear probe: only the task head trains", "-", NoOptions, apply_head,
                   mergeable=True, peft_native=False, multi_adapter=True),
        MethodSpec("bitfit", "biases + head train", "https://arxiv.org/abs/2106.10199", BitFitOptions, apply_bitfit,
                   mergeable=True, peft_native=False, multi_adapter=False, writes_base=True),
        MethodSpec("lora", "low-rank updates of attention projections (peft)", "https://arxiv.org/abs/2106.09685",
                   LoraOptions, apply_lora,
                   mergeable=True, peft_native=True, multi_adapter=True, takes_targets=True),
        MethodSpec("dora", "weight-decomposed LoRA (peft)", "https://arxiv.org/abs/2402.09353",
                   LoraOptions, partial(apply_lora, use_dora=True),
                   mergeable=True, peft_native=True, multi_adapter=True, takes_targets=True),
        MethodSpec("ia3", "learned rescaling of keys, values, FFN (peft)", "https://arxiv.org/abs/2205.05638",
                   IA3Options, apply_ia3,
                   mergeable=True, peft_native=True, multi_adapter=True, takes_targets=True),
        MethodSpec("prompt", "soft prompt prepended to the input embeddings", "https://arxiv.org/abs/2104.08691",
                   PromptOptions, apply_prompt, mergeable=False, peft_native=False, multi_adapter=True,
                   changes_input=True),
        MethodSpec("prefix", "trained key/value prefixes in every attention layer", "https://arxiv.org/abs/2101.00190",
                   PrefixOptions, apply_prefix, mergeable=False, peft_native=False, multi_adapter=True,
                   changes_input=True),
        MethodSpec("adapter", "bottleneck adapters (houlsby / pfeiffer)", "https://arxiv.org/abs/1902.00751",
                   AdapterOptions, apply_adapter,
                   mergeable=False, peft_native=False, multi_adapter=True, takes_targets=True),
        MethodSpec("qlora", "LoRA on a 4-bit NF4 base (bitsandbytes; CPU and CUDA)", "https://arxiv.org/abs/2305.14314",
                   LoraOptions, apply_lora,
                   mergeable=True, peft_native=True, multi_adapter=True, takes_targets=True, quantize="nf4"),
    ]
)


def get_method(name: str) -> MethodSpec:
    """Look up a method by registry name.

    Raises:
        PetrecMethodError: Unknown name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise PetrecMethodError(f"unknown PEFT method {name!r}; known methods: {sorted(METHODS)}") from None
