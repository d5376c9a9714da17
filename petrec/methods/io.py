"""Save only what was trained (safetensors + JSON) and load it back, refusing mismatches.

A saved folder holds ``adapter_model.safetensors`` (tensors), ``petrec_adapter.json`` (method,
options, targets, head, quantization, base fingerprint, tensor shapes) and, for peft-native
methods (lora, dora, ia3, qlora), peft's own ``adapter_config.json`` with peft's key layout, so
``peft.PeftModel.from_pretrained(base, folder)`` loads it too. Every file is written to a
temporary name in the folder and moved into place (``os.replace``); the petrec JSON goes last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petrec.files import atomic_path, check_safetensors, read_json_object, write_json_atomic
from petrec.methods.discovery import fingerprint
from petrec.methods.errors import AdapterLoadError, PetrecMethodError
from petrec.methods.registry import METHODS, get_method
from petrec.methods.state import AdapterRecord, get_state

TENSORS_FILE = "adapter_model.safetensors"
META_FILE = "petrec_adapter.json"
PEFT_CONFIG_FILE = "adapter_config.json"
FORMAT_VERSION = 1
PEFT_PREFIX = "base_model.model."


def _file_key(param_name: str, adapter: str) -> str:
    """Adapter-name-free key: ``head.modules_to_save.a.weight`` → ``head.weight`` (peft's style)."""
    return param_name.replace(f".modules_to_save.{adapter}.", ".").replace(
        f".adapters.{adapter}.", ".adapters."
    )


def _own_tensors(model: nn.Module, record: AdapterRecord, adapter: str) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {_file_key(n, adapter): params[n] for n in record.trainable}


def _peft_tensors(model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model, adapter_name=adapter)
    return {PEFT_PREFIX + k: v for k, v in sd.items()}


def save_adapter(model: nn.Module, out_dir: str | os.PathLike[str], adapter_name: str | None = None) -> Path:
    """Save the trained parameters of one adapter (default: the active one) and the head.

    Args:
        model: A model adapted with :func:`petrec.attach`.
        out_dir: Folder to write (created if needed; files in it are replaced atomically).
        adapter_name: Which adapter to save.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    state = get_state(model)
    name = adapter_name or state.active
    if name is None or name not in state.adapters:
        raise PetrecMethodError(f"no adapter {name!r} to save; attached: {list(state.adapters)}")
    record = state.adapters[name]
    spec = get_method(record.method)
    tensors = _peft_tensors(model, name) if spec.peft_native else _own_tensors(model, record, name)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "method": record.method,
        "adapter_name": name,
        "options": record.config,
        "targets": record.targets,
        "head": record.head,
        "quantize": record.quantize,
        "base_fingerprint": state.base_fingerprint,
        "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
    }
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TENSORS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if spec.peft_native:
        cfg = model.peft_config[name].to_dict()
        cfg["base_model_name_or_path"] = getattr(getattr(model, "config", None), "name_or_path", None)
        cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in cfg.items()}
        write_json_atomic(folder / PEFT_CONFIG_FILE, cfg, default=str)
    else:  # a peft config left from an earlier save would describe other tensors
        (folder / PEFT_CONFIG_FILE).unlink(missing_ok=True)
    write_json_atomic(folder / META_FILE, meta)
    return folder


def read_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``petrec_adapter.json`` of a saved adapter folder."""
    path = Path(folder)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise AdapterLoadError(f"{str(path)!r} is not a petrec adapter folder: {META_FILE} is missing")
    if not (path / TENSORS_FILE).is_file():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {pickled}: petrec never unpickles files)" if pickled else ""
        raise AdapterLoadError(f"{str(path)!r} has no {TENSORS_FILE}{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterLoadError(f"{meta_path}: not valid JSON ({exc})") from None
    for key in ("format_version", "method", "options", "targets", "head", "base_fingerprint", "tensors"):
        if key not in meta:
            raise AdapterLoadError(f"{meta_path}: key {key!r} is missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise AdapterLoadError(f"{meta_path}: format_version {meta['format_version']} (expected {FORMAT_VERSION})")
    if meta["method"] not in METHODS:
        raise AdapterLoadError(f"{meta_path}: unknown method {meta['method']!r}; known: {sorted(METHODS)}")
    return meta


def check_adapter_folder(folder: str | os.PathLike[str]) -> None:
    """Check a saved adapter folder's files (reading headers only) before anything loads them.

    ``petrec_adapter.json`` (and peft's ``adapter_config.json`` where present) must be JSON
    objects; ``adapter_model.safetensors`` must be complete (see :func:`petrec.files.check_safetensors`).

    Raises:
        AdapterLoadError: A missing, truncated or corrupt file (named, with what was expected).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterLoadError(f"{folder}: not a folder; expected a saved adapter folder")
    read_json_object(folder / META_FILE, AdapterLoadError,
                     f"the JSON object petrec.save_adapter writes ({folder} is not a complete adapter folder?)")
    if (folder / PEFT_CONFIG_FILE).exists():
        read_json_object(folder / PEFT_CONFIG_FILE, AdapterLoadError, "peft's adapter config (a JSON object)")
    read_meta(folder)  # required keys; a missing tensors file (or a pickle in its place)
    check_safetensors(folder / TENSORS_FILE, AdapterLoadError)


def _check_base(meta: dict[str, Any], have: dict[str, Any], where: str) -> None:
    """Refuse a base whose fingerprint differs from the one the adapter was trained on."""
    want = meta["base_fingerprint"]
    diff = {k: (want.get(k), have.get(k)) for k in want if want.get(k) != have.get(k)}
    if diff:
        detail = ", ".join(f"{k}: saved {a!r} vs given {b!r}" for k, (a, b) in diff.items())
        raise AdapterLoadError(f"{where}: base model does not match the one the adapter was trained on ({detail})")


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a saved meta."""
    return json.loads(json.dumps(value, default=str))


def _load_tensors(model: nn.Module, folder: Path, meta: dict[str, Any], name: str) -> None:
    """Copy the saved tensors into adapter ``name`` of ``model``; names and shapes must match exactly."""
    from safetensors.torch import load_file

    record = get_state(model).adapters[name]
    spec = get_method(meta["method"])
    expected = _peft_tensors(model, name) if spec.peft_native else _own_tensors(model, record, name)
    loaded = load_file(str(folder / TENSORS_FILE))
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    bad = sorted(k for k in expected.keys() & loaded.keys() if tuple(expected[k].shape) != tuple(loaded[k].shape))
    if missing or extra or bad:
        raise AdapterLoadError(
            f"{folder / TENSORS_FILE}: tensors do not fit: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"wrong shape {[(k, list(loaded[k].shape), list(expected[k].shape)) for k in bad[:5]]}"
        )
    if spec.peft_native:
        from peft import set_peft_model_state_dict

        sd = {k[len(PEFT_PREFIX):]: v for k, v in loaded.items()}
        result = set_peft_model_state_dict(model, sd, adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if name in k or "lora" in k]
        if unexpected:
            raise AdapterLoadError(f"{folder / TENSORS_FILE}: peft did not place {unexpected[:5]}")
    else:
        with torch.no_grad():
            for key, tensor in expected.items():
                tensor.copy_(loaded[key].to(tensor.device, tensor.dtype))


def load_adapter(
    base_model: nn.Module,
    out_dir: str | os.PathLike[str],
    adapter_name: str | None = None,
    *,
    method: str | None = None,
) -> nn.Module:
    """Attach a saved adapter to ``base_model`` and load its tensors (safetensors only).

    ``base_model`` is the plain base (as before ``attach``), or a model that already carries
    petrec adapters, in which case the loaded one is added under ``adapter_name``.

    Args:
        base_model: The model the adapter was trained on (same architecture and sizes).
        out_dir: Folder written by :func:`save_adapter`.
        adapter_name: Name for the loaded adapter (default: the saved name).
        method: If given, the method the caller expects; a file of another method is refused.

    Raises:
        AdapterLoadError: Another method, a base of other shapes, other targets, or tensors
            missing / of the wrong shape.
    """
    from petrec.methods.api import attach

    folder = Path(out_dir)
    meta = read_meta(folder)
    where = str(folder / META_FILE)
    if method is not None and method != meta["method"]:
        raise AdapterLoadError(f"{where}: adapter method is {meta['method']!r}, expected {method!r}")
    state = get_state(base_model, required=False)
    _check_base(meta, state.base_fingerprint if state is not None else fingerprint(base_model), where)
    name = adapter_name or meta.get("adapter_name") or "default"
    targets = meta["targets"] if get_method(meta["method"]).takes_targets else None
    try:
        attach(base_model, meta["method"], targets=targets, head=meta["head"] or [],
               quantize=meta.get("quantize"), adapter_name=name, **meta["options"])
    except PetrecMethodError as exc:
        raise AdapterLoadError(f"{where}: cannot re-create the adapter on this base: {exc}") from None
    record = get_state(base_model).adapters[name]
    if record.targets != meta["targets"]:
        missing = sorted(set(meta["targets"]) - set(record.targets))
        extra = sorted(set(record.targets) - set(meta["targets"]))
        raise AdapterLoadError(f"{where}: target modules differ: missing in base {missing}, unexpected {extra}")
    _load_tensors(base_model, folder, meta, name)
    return base_model


def load_adapter_weights(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    adapter_name: str | None = None,
) -> nn.Module:
    """Load a saved adapter's tensors into the same adapter already attached to ``model``.

    The warm start of continual fine-tuning: ``model`` was built and adapted as the saved run
    was (``petrec.attach`` with the same method and options), and the saved tensors (adapter and
    head) replace the fresh ones in place, so training continues from them. Unlike
    :func:`load_adapter` nothing is attached: the adapter's method, options, targets, head,
    quantization and base fingerprint must all equal the model's, and every tensor must be
    there with its saved shape.

    Args:
        model: A model adapted with :func:`petrec.attach`.
        out_dir: Folder written by :func:`save_adapter`.
        adapter_name: The model's adapter to load into (default: the active one).

    Raises:
        AdapterLoadError: Any of the above differs (the message names the file and the difference).
    """
    folder = Path(out_dir)
    meta = read_meta(folder)
    where = str(folder / META_FILE)
    state = get_state(model, required=False)
    name = adapter_name or (state.active if state is not None else None)
    if state is None or name not in state.adapters:
        raise AdapterLoadError(f"{where}: the model has no attached adapter {name!r} to load into; "
                               "expected a model built with petrec.attach")
    record = state.adapters[name]
    if meta["method"] != record.method:
        raise AdapterLoadError(f"{where}: adapter method is {meta['method']!r}, the model's is {record.method!r}")
    _check_base(meta, state.base_fingerprint, where)
    saved_options, options = meta["options"], _plain(record.config)
    differ = sorted(k for k in set(saved_options) | set(options) if saved_options.get(k) != options.get(k))
    if differ:
        detail = ", ".join(f"{k}: saved {saved_options.get(k)!r} vs model {options.get(k)!r}" for k in differ)
        raise AdapterLoadError(f"{where}: {record.method} options differ ({detail})")
    for key, have in (("targets", record.targets), ("head", record.head), ("quantize", record.quantize)):
        if meta.get(key) != _plain(have):
            raise AdapterLoadError(f"{where}: {key} differ: saved {meta.get(key)!r} vs model {_plain(have)!r}")
    _load_tensors(model, folder, meta, name)
    return model
