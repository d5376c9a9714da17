"""4-bit NF4 and 8-bit bases through bitsandbytes, trainable on CPU as well as CUDA.

Paper: QLoRA https://arxiv.org/abs/2305.14314 · LLM.int8() https://arxiv.org/abs/2208.07339

Two paths, because bitsandbytes 0.50.2 + transformers 5.24 behave differently per device:

* CPU (and any already-loaded fp32 model): :func:`quantize_model` swaps every ``nn.Linear``
  (GPT-2 ``Conv1D`` is first turned into the equivalent ``nn.Linear``) for bitsandbytes'
  ``Linear4bit`` / ``Linear8bitLt`` and quantizes it by moving it with ``.to(device)``. Loading
  with ``from_pretrained(quantization_config=...)`` on CPU does load, but its forward fails
  ("FP4 quantization state not initialized" / "'Parameter' object has no attribute 'CB'").
* CUDA: :func:`load_quantized` is the standard ``quantization_config`` path, which never
  materialises the full fp32 model on the GPU.

Either way the result carries bitsandbytes layers that peft's LoRA wraps, and
:func:`weight_memory` measures the stored weight bytes from the tensors themselves.

bitsandbytes 0.50.2 has two CPU paths for 4-bit layers. On CPUs with avx512_bf16 (Intel Xeon
Sapphire Rapids and later, AMD Zen 4) ``Linear4bit.forward`` repacks its weight, the first time it
runs in eval mode on an input without grad, into the layout of a bf16 CPU kernel; elsewhere it
never does. Left alone that path breaks in three ways (reproduced in
tests/methods/test_quantization_cpu_paths.py):

* the repacking reshapes the block scales to ``[out, in // blocksize]`` and fails for a layer
  whose ``in_features`` is not a multiple of the block size (``shape '[32, 0]' is invalid``);
* the packed kernel has no backward and adds the bias in place: the next training forward after a
  validation pass fails (``a view of a leaf Variable that requires grad ...``) or, where it does
  not, passes no gradient through the frozen base;
* bitsandbytes' inverse repacking re-quantizes the block scales from their bf16 copy, so the frozen
  weights drift with every eval → train switch and a saved adapter no longer reproduces them.

:func:`guard_4bit` takes the routing out of bitsandbytes' hands. By default every forward runs the
plain path, the same on every CPU (:func:`packed_cpu_kernel_enabled`). With the packed kernel
enabled it serves only CPU inference without grad on layers whose shape it takes; every other
forward runs the plain, differentiable path on the exact quantized weights, which petrec keeps
aside while a packed copy exists (the 4-bit weights are held twice during evaluation then).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from petrec.methods.discovery import get_submodule_parent, linear_names
from petrec.methods.errors import PetrecMethodError

QUANTIZE_KINDS = ("nf4", "int8")


def _as_linear(layer: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing the same function as ``layer`` (Linear or GPT-2 Conv1D)."""
    if isinstance(layer, nn.Linear):
        return layer
    if type(layer).__name__ == "Conv1D":  # y = x @ W + b with W [in, out]
        lin = nn.Linear(layer.weight.shape[0], layer.nf, device=layer.weight.device)
        lin.weight.data = layer.weight.data.t().contiguous().float()
        lin.bias.data = layer.bias.data.float()
        return lin
    raise PetrecMethodError(f"cannot quantize a {type(layer).__name__}")


def quantize_linear(layer: nn.Module, kind: str, compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Return a bitsandbytes layer holding ``layer``'s weights quantized as ``kind``."""
    import bitsandbytes as bnb

    lin = _as_linear(layer)
    device = lin.weight.device
    has_bias = lin.bias is not None
    weight = lin.weight.data.detach().float().cpu()
    if kind == "nf4":
        q = bnb.nn.Linear4bit(
            lin.in_features, lin.out_features, bias=has_bias, compute_dtype=compute_dtype, quant_type="nf4"
        )
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    elif kind == "int8":
        q = bnb.nn.Linear8bitLt(
            lin.in_features, lin.out_features, bias=has_bias, has_fp16_weights=False, threshold=0.0
        )
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        raise PetrecMethodError(f"quantize must be one of {QUANTIZE_KINDS}, got {kind!r}")
    if has_bias:
        q.bias = nn.Parameter(lin.bias.data.detach().float().cpu(), requires_grad=False)
    # Moving the module is what quantizes it (on CPU as well as on CUDA).
    q = q.to(device)
    guard_quantized(q)
    return q


def guard_quantized(model: nn.Module) -> None:
    """Install petrec's guards on every bitsandbytes layer of ``model`` (idempotent).

    8-bit layers stay frozen on the inference path (:func:`keep_int8_frozen`); 4-bit layers get the
    CPU-path routing of :func:`guard_4bit`.
    """
    keep_int8_frozen(model)
    guard_4bit(model)


def _is_bnb(module: nn.Module, name: str) -> bool:
    """A bitsandbytes layer of class ``name`` (peft's LoRA wrappers share the class names)."""
    return type(module).__name__ == name and type(module).__module__.startswith("bitsandbytes")


def keep_int8_frozen(model: nn.Module) -> None:
    """Keep every bitsandbytes 8-bit layer in ``model`` frozen: inference path, bias untouched.

    Only bitsandbytes' own layers are hooked: peft's LoRA wrapper has the same class name.
    """
    for module in model.modules():
        if _is_bnb(module, "Linear8bitLt") and not getattr(module, "_petrec_int8_hook", False):
            module.register_forward_pre_hook(_frozen_int8)
            module.register_forward_hook(_restore_int8_bias)
            module._petrec_int8_hook = True


def _frozen_int8(module: nn.Module, args: object) -> None:
    """Keep a frozen int8 layer on its inference path, also while the model trains.

    In training mode bitsandbytes 0.50.2 re-quantizes an int8 weight that has no gradient on
    every forward (meant for ``has_fp16_weights=True``); for our frozen, already-quantized weights
    that re-quantizes the int8 codes themselves and drifts the outputs (measured: 0.036 on
    MiniLM logits after 5 steps, so a saved adapter no longer reproduced them). The layer has no
    dropout, so its ``training`` flag has no other effect.

    The bias tensor is remembered here and put back by :func:`_restore_int8_bias`.
    """
    module.training = False
    module._petrec_bias_before = None if module.bias is None else module.bias.data


def _restore_int8_bias(module: nn.Module, args: object, output: object) -> None:
    """Undo bitsandbytes' in-place cast of the bias to the input's dtype.

    ``Linear8bitLt.forward`` does ``self.bias.data = self.bias.data.to(x.dtype)``. Under bf16
    autocast a layer fed by a matmul sees bf16 inputs, so one training step rounded the frozen
    fp32 bias to bf16 for good: the trained model then no longer matched the same adapter loaded
    onto a fresh base (0.015 on MiniLM outputs on an H200; reproduced on CPU with CPU autocast in
    tests/methods/test_quantization.py). Putting the original tensor back keeps the forward as
    bitsandbytes computes it and the stored bias exact.
    """
    before = getattr(module, "_petrec_bias_before", None)
    if before is not None and module.bias is not None and module.bias.data is not before:
        module.bias.data = before
    module._petrec_bias_before = None


#: Rows per tile of bitsandbytes' packed CPU layout (``block_n`` of
#: ``bitsandbytes.functional._convert_weight_packed_for_cpu``).
PACKED_BLOCK_N = 32


#: Environment variable choosing the CPU kernel of 4-bit inference: ``plain`` (default) or ``packed``.
CPU_4BIT_KERNEL_ENV = "PETREC_CPU_4BIT_KERNEL"


def packed_cpu_kernel_enabled() -> bool:
    """True where no-grad 4-bit CPU inference may use bitsandbytes' packed avx512_bf16 kernel.

    Off by default: the packed kernel computes in bf16 with bf16 block scales, so its outputs
    differ from the training forward's (tests/methods/test_quantization_cpu_paths.py bounds the
    MiniLM logit difference at 0.05) and from a machine without the instruction; the plain path
    gives the same numbers on every x86 CPU. Set ``PETREC_CPU_4BIT_KERNEL=packed`` for the
    kernel's inference speed (not recorded by a benchmark yet).

    Raises:
        PetrecMethodError: The variable holds something other than ``plain`` or ``packed``.
    """
    import os

    choice = os.environ.get(CPU_4BIT_KERNEL_ENV, "plain").strip().lower() or "plain"
    if choice not in ("plain", "packed"):
        raise PetrecMethodError(f"{CPU_4BIT_KERNEL_ENV} must be 'plain' or 'packed', got {choice!r}")
    if choice == "plain":
        return False
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def packable(layer: nn.Module) -> bool:
    """Whether the packed CPU kernel takes this 4-bit layer's shape.

    The repacking needs ``out_features`` in whole tiles of :data:`PACKED_BLOCK_N` rows and
    ``in_features`` in whole quantization blocks (each row's scales become one column).
    """
    qs = _plain(layer)[1]
    out_features, in_features = (int(d) for d in qs.shape)
    return out_features % PACKED_BLOCK_N == 0 and in_features % qs.blocksize == 0


def guard_4bit(model: nn.Module) -> None:
    """Route every bitsandbytes ``Linear4bit`` in ``model`` safely between its CPU paths.

    Installs a forward pre-hook (the routing of :func:`_route_4bit`) and a state-dict pre-hook
    that saves the exact plain-layout weights. Idempotent.
    """
    kernel = None
    for module in model.modules():
        if not _is_bnb(module, "Linear4bit") or getattr(module, "_petrec_4bit_hook", False):
            continue
        if kernel is None:
            kernel = packed_cpu_kernel_enabled()
        module._petrec_packed_ok = kernel and packable(module)
        module.support_avx512bf16_for_cpu = False
        module.register_forward_pre_hook(_route_4bit)
        module.register_state_dict_pre_hook(_unpack_before_save)
        module._petrec_4bit_hook = True


def cpu_4bit_paths(model: nn.Module) -> dict[str, int]:
    """How many guarded 4-bit layers may use the packed CPU kernel and how many always run plain.

    ``plain_by_shape`` counts layers the packed kernel cannot take where it is enabled; they stay
    4-bit and run bitsandbytes' plain (dequantize + matmul) path.
    """
    layers = [m for m in model.modules() if getattr(m, "_petrec_4bit_hook", False)]
    kernel = packed_cpu_kernel_enabled()
    packed = sum(1 for m in layers if m._petrec_packed_ok)
    return {"packed": packed, "plain_by_shape": (len(layers) - packed) if kernel else 0, "layers": len(layers)}


def _is_packed(module: nn.Module) -> bool:
    return bool(getattr(module.weight.quant_state, "packing_format_for_cpu", False))


def _plain(module: nn.Module) -> tuple[torch.Tensor, Any]:
    """The layer's exact plain-layout (weight codes, quant state), also while a packed copy serves."""
    if _is_packed(module):
        return module._petrec_plain
    return module.weight.data, module.weight.quant_state


def _route_4bit(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Choose the path of this forward: packed kernel only for no-grad CPU inference.

    bitsandbytes packs the weight itself when ``support_avx512bf16_for_cpu`` is set and the
    layer is in eval mode on a CPU input without grad; petrec sets the flag per call, remembers
    the plain layout before the first packing, and puts it back (exactly, not through
    bitsandbytes' lossy inverse) before any forward that the packed kernel must not serve.
    """
    x = args[0] if args else None
    use_packed = bool(
        module._petrec_packed_ok
        and isinstance(x, torch.Tensor)
        and x.device.type == "cpu"
        and not module.training
        and not torch.is_grad_enabled()
    )
    module.support_avx512bf16_for_cpu = use_packed
    if _is_packed(module):
        if not use_packed:
            _restore_plain(module)
    elif use_packed:
        # bitsandbytes mutates the QuantState object in place when it packs: keep a copy.
        module._petrec_plain = (module.weight.data, copy.copy(module.weight.quant_state))


def _restore_plain(module: nn.Module) -> None:
    data, state = module._petrec_plain
    module.weight.data = data
    module.weight.quant_state = state
    if getattr(module, "quant_state", None) is not None:
        module.quant_state = state
    module._petrec_plain = None


def _unpack_before_save(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    """Save the exact plain layout (bitsandbytes would save through its lossy inverse)."""
    if _is_packed(module):
        _restore_plain(module)


def quantize_model(model: nn.Module, kind: str, exclude: Sequence[str] = ()) -> list[str]:
    """Quantize every linear layer of ``model`` outside ``exclude`` in place.

    Args:
        model: Any model; embeddings, norms and the modules in ``exclude`` stay in full precision.
        kind: ``"nf4"`` or ``"int8"``.
        exclude: Module names (the task head) to keep unquantized.

    Returns:
        The names of the quantized layers.
    """
    if kind not in QUANTIZE_KINDS:
        raise PetrecMethodError(f"quantize must be one of {QUANTIZE_KINDS} or None, got {kind!r}")
    names = [n for n in linear_names(model, exclude=exclude) if not is_quantized(model.get_submodule(n))]
    for name in names:
        parent, child = get_submodule_parent(model, name)
        setattr(parent, child, quantize_linear(getattr(parent, child), kind))
    return names


def is_quantized(module: nn.Module) -> bool:
    """True for a bitsandbytes 4-bit or 8-bit linear layer."""
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def dequantize_linear(layer: nn.Module) -> nn.Linear:
    """A full-precision ``nn.Linear`` with the de-quantized weights of a bitsandbytes layer."""
    import bitsandbytes as bnb

    w = layer.weight
    if type(layer).__name__ == "Linear4bit":
        data, state = _plain(layer)
        weight = bnb.functional.dequantize_4bit(data, state).float()
    elif type(layer).__name__ == "Linear8bitLt":
        scb = w.SCB if getattr(w, "SCB", None) is not None else layer.state.SCB
        weight = bnb.functional.int8_vectorwise_dequant(w.data, scb).float()
    else:
        raise PetrecMethodError(f"{type(layer).__name__} is not a quantized layer")
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device=weight.device)
    lin.weight.data = weight
    if layer.bias is not None:
        lin.bias.data = layer.bias.data.float()
    return lin


def _tensor_bytes(t: torch.Tensor | None, seen: set[int]) -> int:
    if t is None or not isinstance(t, torch.Tensor) or t.data_ptr() in seen:
        return 0
    seen.add(t.data_ptr())
    return t.numel() * t.element_size()


def weight_memory(model: nn.Module) -> dict[str, int]:
    """Bytes held by the model's parameters, measured from the stored tensors.

    A 4-bit weight counts its packed bytes plus its quantization state (absmax, nested absmax,
    code tables, each distinct tensor once); an 8-bit weight its int8 bytes plus row scales.

    Returns:
        ``total`` (every parameter), ``quantized`` (stored bytes of the quantized weights) and
        ``quantized_fp32`` (what those same weights take in fp32).
    """
    seen: set[int] = set()
    total = quantized = quantized_fp32 = 0
    quant_params = set()
    for module in model.modules():
        four_bit = _is_bnb(module, "Linear4bit")
        if not (four_bit or _is_bnb(module, "Linear8bitLt")):
            continue  # peft's wrappers share these class names; their base layer is counted
        w = module.weight
        quant_params.add(id(w))
        data, qs = _plain(module) if four_bit else (w.data, None)
        nbytes = _tensor_bytes(data, seen)
        if qs is not None:
            shape = tuple(qs.shape)
            for t in (qs.absmax, qs.code, qs.offset):
                nbytes += _tensor_bytes(t, seen)
            if qs.state2 is not None:
                nbytes += _tensor_bytes(qs.state2.absmax, seen) + _tensor_bytes(qs.state2.code, seen)
        else:
            shape = tuple(w.shape)
            scb = w.SCB if getattr(w, "SCB", None) is not None else getattr(module.state, "SCB", None)
            nbytes += _tensor_bytes(scb, seen)
        quantized += nbytes
        quantized_fp32 += int(torch.Size(shape).numel()) * 4
    for p in model.parameters():
        if id(p) not in quant_params:
            total += _tensor_bytes(p.data, seen)
    return {"total": total + quantized, "quantized": quantized, "quantized_fp32": quantized_fp32}


def load_quantized(
    name_or_path: str,
    quantize: str,
    *,
    device_map: str | dict[str, Any] = "auto",
    model_class: Any = None,
    compute_dtype: torch.dtype = torch.bfloat16,
    **kwargs: Any,
) -> nn.Module:
    """Load a Hugging Face model with a 4-bit NF4 or 8-bit base on CUDA (``quantization_config``).

    Args:
        name_or_path: Local folder, hub id or petrec alias (``"minilm"``).
        quantize: ``"nf4"`` or ``"int8"``.
        device_map: Passed to ``from_pretrained`` (``"auto"`` puts it on the GPU).
        model_class: ``transformers`` auto class; default ``AutoModel`` (no LM head).
        compute_dtype: Matmul dtype of the 4-bit layers.
        **kwargs: Further ``from_pretrained`` arguments.

    Raises:
        PetrecMethodError: No CUDA device (on CPU use ``petrec.attach(..., quantize=...)``).
    """
    from transformers import AutoModel, BitsAndBytesConfig

    from petrec.paths import resolve_model

    if quantize not in QUANTIZE_KINDS:
        raise PetrecMethodError(f"quantize must be one of {QUANTIZE_KINDS}, got {quantize!r}")
    if not torch.cuda.is_available():
        raise PetrecMethodError(
            "load_quantized uses bitsandbytes' CUDA loading path and needs a GPU; on CPU load the "
            "fp32 model and call petrec.attach(model, method, quantize=...) instead"
        )
    if quantize == "nf4":
        qcfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
        )
    else:
        qcfg = BitsAndBytesConfig(load_in_8bit=True)
    cls = model_class or AutoModel
    return cls.from_pretrained(resolve_model(name_or_path), quantization_config=qcfg, device_map=device_map, **kwargs)
