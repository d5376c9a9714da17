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
"""

from __future__ import annotations

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
    if kind == "int8":
        keep_int8_frozen(q)
    return q


def keep_int8_frozen(model: nn.Module) -> None:
    """Keep every bitsandbytes 8-bit layer in ``model`` frozen: inference path, bias untouched.

    Only bitsandbytes' own layers are hooked: peft's LoRA wrapper has the same class name.
    """
    for module in model.modules():
        if (
            type(module).__name__ == "Linear8bitLt"
            and type(module).__module__.startswith("bitsandbytes")
            and not getattr(module, "_petrec_int8_hook", False)
        ):
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
        weight = bnb.functional.dequantize_4bit(w.data, w.quant_state).float()
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
        if not is_quantized(module):
            continue
        w = module.weight
        quant_params.add(id(w))
        nbytes = _tensor_bytes(w.data, seen)
        qs = getattr(w, "quant_state", None)
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
