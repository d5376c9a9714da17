"""``attach``, multi-adapter switching, ``merge`` and ``trainable_report``: the public surface.

Everything works in place on the user's model (its class and ``forward`` are kept) and returns
it; what was attached is recorded in ``model.petrec_state`` (see :mod:`petrec.methods.state`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import nn

from petrec.methods.base import NamedAdapterModule
from petrec.methods.bottleneck import AdapterWrapped
from petrec.methods.discovery import fingerprint, get_submodule_parent, resolve_heads
from petrec.methods.errors import MergeError, PetrecMethodError
from petrec.methods.prefix import remove_prefix
from petrec.methods.prompt import remove_prompt
from petrec.methods.quantization import (
    QUANTIZE_KINDS,
    cpu_4bit_paths,
    dequantize_linear,
    guard_quantized,
    is_quantized,
    quantize_model,
    weight_memory,
)
from petrec.methods.registry import MethodSpec, get_method
from petrec.methods.simple import wrap_heads
from petrec.methods.state import AdapterRecord, PetrecState, get_state, set_state


def _detect_quantized(model: nn.Module) -> str | None:
    kinds = {type(m).__name__ for m in model.modules() if is_quantized(m)}
    if "Linear4bit" in kinds:
        return "nf4"
    return "int8" if "Linear8bitLt" in kinds else None


def attach(
    model: nn.Module,
    method: str,
    *,
    targets: str | Sequence[str] | None = None,
    head: str | Sequence[str] | None = None,
    quantize: str | None = None,
    adapter_name: str = "default",
    **method_kwargs: object,
) -> nn.Module:
    """Turn ``model`` into a parameter-efficient one: freeze the base, add ``method``.

    Args:
        model: A Hugging Face model (with or without head), a module holding one (e.g.
            ``BehaviourModel`` with ``.backbone`` and ``.head``), or a plain ``nn.Module``.
        method: A name in :data:`petrec.METHODS`.
        targets: Module names (dotted suffixes) or one regex overriding the automatic choice.
        head: Task-head module name(s) trained and saved with the adapter; default: the first of
            ``classifier``, ``score``, ``head`` that exists.
        quantize: ``"nf4"`` or ``"int8"``: quantize the base's linear layers with bitsandbytes
            first (``qlora`` implies ``"nf4"``). A base loaded with :func:`load_quantized` is used
            as it is.
        adapter_name: Name of this adapter; attaching a second name adds another adapter to the
            same frozen base and makes it the active one.
        **method_kwargs: The method's options (``r=8, alpha=16`` for LoRA ...).

    Returns:
        The same ``model`` object, adapted in place.

    Raises:
        PetrecMethodError: Unknown method or option, no targets found, incompatible adapters.
    """
    spec = get_method(method)
    opts = spec.make_options(dict(method_kwargs))
    if not isinstance(model, nn.Module):
        raise PetrecMethodError(f"attach needs a torch.nn.Module, got {type(model).__name__}")
    if spec.quantize is not None:
        if quantize not in (None, spec.quantize):
            raise PetrecMethodError(f"method {method!r} implies quantize={spec.quantize!r}, got {quantize!r}")
        quantize = spec.quantize
    if quantize is not None and quantize not in QUANTIZE_KINDS:
        raise PetrecMethodError(f"quantize must be one of {QUANTIZE_KINDS} or None, got {quantize!r}")
    if quantize is not None and method == "full":
        raise PetrecMethodError("method 'full' cannot train a quantized base; use 'qlora' or quantize with 'lora'")
    heads = resolve_heads(model, head)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    state = get_state(model, required=False)
    fresh = state is None
    try:
        state = _prepare(model, state, spec, method, quantize, heads, adapter_name)
        found = spec.apply(model, opts, targets, heads, adapter_name)
    except Exception:
        # Leave the model as it was (quantization, if it already ran, cannot be undone).
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
        if fresh:
            set_state(model, None)
        raise
    if heads and method != "full" and not spec.peft_native:
        wrap_heads(model, heads, adapter_name)
    options = dataclasses.asdict(opts)
    state.adapters[adapter_name] = AdapterRecord(method, options, list(found), heads, state.quantize)
    set_state(model, state)
    set_adapter(model, adapter_name)
    state.adapters[adapter_name].trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return model


def _prepare(
    model: nn.Module,
    state: PetrecState | None,
    spec: MethodSpec,
    method: str,
    quantize: str | None,
    heads: list[str],
    adapter_name: str,
) -> PetrecState:
    """Create the state on first attach (fingerprint, quantize, freeze) or check a second one."""
    if state is None:
        state = PetrecState(base_fingerprint=fingerprint(model))
        existing = _detect_quantized(model)
        if quantize is not None and existing is None:
            quantize_model(model, quantize, exclude=heads)
        guard_quantized(model)
        state.quantize = existing or quantize
        for p in model.parameters():
            p.requires_grad_(False)
    else:
        if adapter_name in state.adapters:
            raise PetrecMethodError(
                f"an adapter named {adapter_name!r} is already attached; pick another adapter_name"
            )
        clash = [r.method for r in state.adapters.values() if not get_method(r.method).multi_adapter]
        if clash or not spec.multi_adapter:
            raise PetrecMethodError(
                f"cannot add {method!r} adapter {adapter_name!r}: methods {sorted({*clash, method})} "
                "change base weights in place and cannot share a base with other adapters "
                "(multi-adapter methods: "
                f"{sorted(n for n in _registry() if get_method(n).multi_adapter)})"
            )
        if quantize not in (None, state.quantize):
            raise PetrecMethodError(f"the base is already {state.quantize or 'unquantized'}; got quantize={quantize!r}")
    return state


def _registry() -> list[str]:
    from petrec.methods.registry import METHODS

    return list(METHODS)


def add_adapter(model: nn.Module, adapter_name: str, method: str, **kwargs: object) -> nn.Module:
    """Add another named adapter to an adapted model (same as ``attach(..., adapter_name=...)``)."""
    return attach(model, method, adapter_name=adapter_name, **kwargs)  # type: ignore[arg-type]


def list_adapters(model: nn.Module) -> list[str]:
    """Names of the adapters attached to ``model``, in the order they were added."""
    return list(get_state(model).adapters)


def active_adapter(model: nn.Module) -> str | None:
    """Name of the adapter ``forward`` uses (``None`` inside :func:`disable_adapter`)."""
    return get_state(model).active


def _switch(model: nn.Module, name: str | None) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            owned = any(name in getattr(module, a, {}) for a in module.adapter_layer_names)
            if name is not None and owned:
                module.enable_adapters(True)
                module.set_adapter(name)
            else:
                module.enable_adapters(False)
        elif isinstance(module, ModulesToSaveWrapper):
            if name is not None and name in module.modules_to_save:
                module.enable_adapters(True)
                module.set_adapter(name)
            else:
                module.enable_adapters(False)
        elif isinstance(module, NamedAdapterModule):
            module.set_active(name)


def set_adapter(model: nn.Module, adapter_name: str) -> None:
    """Make ``adapter_name`` the one ``forward`` uses; only its parameters (and head) train.

    Raises:
        PetrecMethodError: No adapter of that name.
    """
    state = get_state(model)
    if adapter_name not in state.adapters:
        raise PetrecMethodError(f"no adapter named {adapter_name!r}; attached: {list(state.adapters)}")
    _switch(model, adapter_name)
    state.active = adapter_name


@contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: inside it ``model`` computes the frozen base's outputs (original head).

    Raises:
        PetrecMethodError: The active method (``full``, ``bitfit``) changed base weights in place.
    """
    state = get_state(model)
    inplace = [r.method for r in state.adapters.values() if get_method(r.method).writes_base]
    if inplace:
        raise PetrecMethodError(f"method {inplace[0]!r} trains base weights in place; it cannot be disabled")
    previous = state.active
    _switch(model, None)
    state.active = None
    try:
        yield model
    finally:
        if previous is not None:
            set_adapter(model, previous)


def merge(model: nn.Module) -> nn.Module:
    """Fold the active adapter into the base weights and return a plain model (in place).

    LoRA / DoRA / IA3 are merged by peft; BitFit and ``full`` already live in the weights; the
    trained head replaces the original one. Every other attached adapter is dropped. A quantized
    base is first de-quantized to fp32 (a :class:`UserWarning` says so) and the result is fp32.

    Raises:
        MergeError: The active method (``prefix``, ``prompt``, ``adapter``) cannot be folded.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    state = get_state(model)
    name = state.active
    if name is None:
        raise MergeError("no active adapter to merge (called inside disable_adapter?)")
    record = state.adapters[name]
    if not get_method(record.method).mergeable:
        raise MergeError(
            f"method {record.method!r} (adapter {name!r}) cannot be merged into the base weights: "
            "it adds computation (extra tokens or bottleneck layers) that no weight matrix can "
            "express; serve the adapted model as is"
        )
    if state.quantize is not None:
        warnings.warn(
            f"merging into a de-quantized fp32 copy of the {state.quantize} base weights; the "
            "merged model is fp32 (re-quantize it for serving if needed)",
            UserWarning,
            stacklevel=2,
        )
    for mname, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and is_quantized(module.get_base_layer()):
            module.base_layer = dequantize_linear(module.get_base_layer())
        elif is_quantized(module) and ".base_layer" not in mname and mname:
            parent, child = get_submodule_parent(model, mname)
            setattr(parent, child, dequantize_linear(module))
    for mname, module in list(model.named_modules()):
        if not mname:
            continue
        if isinstance(module, BaseTunerLayer):
            owned = any(name in getattr(module, a, {}) for a in module.adapter_layer_names)
            if owned:
                module.enable_adapters(True)
                module.merge(adapter_names=[name])
            replacement: nn.Module = module.get_base_layer()
        elif isinstance(module, ModulesToSaveWrapper):
            keep = module.modules_to_save
            replacement = keep[name] if name in keep else module.original_module  # noqa: SIM401
        elif isinstance(module, AdapterWrapped):
            replacement = module.base_layer
        else:
            continue
        parent, child = get_submodule_parent(model, mname)
        setattr(parent, child, replacement)
    remove_prefix(model)
    remove_prompt(model)
    model.__dict__.pop("peft_config", None)
    set_state(model, None)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@dataclass
class TrainableReport:
    """What trains and what the base weighs."""

    trainable: int
    """Parameters with ``requires_grad``."""
    total: int
    """All parameters (a 4-bit weight counts its unpacked size)."""
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Top-level child module → (trainable, total)."""
    weight_bytes: int = 0
    """Bytes of all parameters as stored (quantized weights at their packed size)."""
    quantized_bytes: int = 0
    """Stored bytes of the quantized weights (0 without quantization)."""
    quantized_fp32_bytes: int = 0
    """What the quantized weights would take in fp32."""
    method: str | None = None
    """Active method (``None`` for a model without petrec adapter)."""
    cpu_4bit_paths: dict[str, int] = field(default_factory=dict)
    """4-bit layers by CPU inference kernel (see :func:`petrec.methods.quantization.cpu_4bit_paths`)."""

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    @property
    def quantized_ratio(self) -> float | None:
        """Stored / fp32 bytes of the quantized weights (``None`` without quantization)."""
        return self.quantized_bytes / self.quantized_fp32_bytes if self.quantized_fp32_bytes else None

    def __str__(self) -> str:
        lines = [
            f"method: {self.method or '-'}",
            f"trainable: {self.trainable:,} / {self.total:,} parameters ({self.percent:.4f}%)",
            f"weights: {self.weight_bytes / 2**20:.2f} MiB",
        ]
        if self.quantized_ratio is not None:
            lines.append(
                f"quantized weights: {self.quantized_bytes / 2**20:.2f} MiB "
                f"({self.quantized_ratio:.3f}x of fp32 {self.quantized_fp32_bytes / 2**20:.2f} MiB)"
            )
        paths = self.cpu_4bit_paths
        if paths.get("layers"):
            if paths["packed"] or paths["plain_by_shape"]:
                lines.append(
                    f"4-bit CPU inference kernel: packed for {paths['packed']} layers, plain for "
                    f"{paths['plain_by_shape']} (shape the packed kernel cannot take)"
                )
            else:
                lines.append(f"4-bit CPU inference kernel: plain for all {paths['layers']} layers")
        width = max([len(k) for k in self.by_module] + [6])
        lines.append(f"{'module':<{width}}  {'trainable':>12}  {'total':>12}")
        for key, (tr, tot) in self.by_module.items():
            lines.append(f"{key:<{width}}  {tr:>12,}  {tot:>12,}")
        return "\n".join(lines)


def _numel(p: nn.Parameter) -> int:
    qs = getattr(p, "quant_state", None)
    return int(qs.shape.numel()) if qs is not None else p.numel()


def trainable_report(model: nn.Module) -> TrainableReport:
    """Count trainable / total parameters and measure the base's weight memory.

    Works on any module (also one without petrec adapters).
    """
    by_module: dict[str, list[int]] = {}
    trainable = total = 0
    for name, p in model.named_parameters():
        n = _numel(p)
        key = name.split(".", 1)[0]
        entry = by_module.setdefault(key, [0, 0])
        entry[1] += n
        total += n
        if p.requires_grad:
            entry[0] += n
            trainable += n
    mem = weight_memory(model)
    state = get_state(model, required=False)
    method = state.adapters[state.active].method if state is not None and state.active else None
    return TrainableReport(
        trainable=trainable,
        total=total,
        by_module={k: (v[0], v[1]) for k, v in by_module.items()},
        weight_bytes=mem["total"],
        quantized_bytes=mem["quantized"],
        quantized_fp32_bytes=mem["quantized_fp32"],
        method=method,
        cpu_4bit_paths=cpu_4bit_paths(model),
    )
