"""``export_run``: a training run → a self-describing export folder (:mod:`petrec.deploy.load` reads it).

Layout (see :mod:`petrec.deploy.manifest` for ``manifest.json``)::

    OUT/
      manifest.json          written last
      config.yaml            the run's config (data / model / max_length)
      items.parquet          the catalogue the model was trained with (item_id, text, ...)
      adapter/               petrec.save_adapter output (peft-native methods: also peft's own
                             adapter_config.json + adapter_model.safetensors, nothing to add)
      merged/                optional: adapter folded into the weights; transformers
                             save_pretrained (safetensors) + tokenizer + head.safetensors
      quantized-int8/        optional: the merged backbone with bitsandbytes int8 / nf4 linear
      quantized-nf4/         layers (safetensors state dict) + config.json + tokenizer + head

Everything is written into a temporary sibling folder that is renamed to ``OUT`` at the end,
so a failed export leaves nothing behind (and ``force=True`` replaces ``OUT`` only then).

Why the quantized copies are bitsandbytes layers saved as a plain state dict: with
bitsandbytes 0.50.2 + transformers 5 on CPU, ``from_pretrained(quantization_config=
BitsAndBytesConfig(...))`` loads but its forward fails (see :mod:`petrec.methods.quantization`),
so the usual ``save_pretrained`` / ``from_pretrained`` round trip of a quantized model is not
usable here. bitsandbytes' own layers do run on CPU, and their state dict (int8 codes + row
scales; packed nf4 + absmax / quant map / quant-state blob) is made of plain tensors that
safetensors stores as they are. Loading rebuilds the same layers (:func:`quantize_model` on a
skeleton) and restores those tensors, so the outputs equal the exported model's exactly.
``torch.ao.quantization.quantize_dynamic`` (int8 only) was the alternative: its packed weights
are opaque ``torch.classes`` objects that safetensors cannot store without our own packing code.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import petrec
from petrec.config import read_yaml
from petrec.data import DataConfig
from petrec.deploy.load import (  # re-exported: export.py was one module before
    item_names,
    load_export,
    read_catalogue,
    read_export_config,
    score_requests,
)
from petrec.deploy.manifest import (
    CATALOGUE_FILE,
    HEAD_FILE,
    MANIFEST_FILE,
    QUANTIZED,
    VARIANT_META,
    VARIANTS,
    WEIGHTS_FILE,
    ExportError,
    Manifest,
    base_fingerprint,
    file_sha256,
)
from petrec.methods.registry import get_method
from petrec.models import BehaviourModel, ModelConfig

__all__ = [
    "VARIANTS",
    "ExportError",
    "build_catalogue",
    "export_run",
    "item_names",
    "load_export",
    "read_catalogue",
    "read_export_config",
    "score_requests",
]



# ----------------------------------------------------------------------------- catalogue


def build_catalogue(data_cfg: DataConfig, task: str) -> pd.DataFrame:
    """The item catalogue of a run's data config, with ``text`` = the item text the model saw.

    ``petrec.data`` renders an item in prompts by its ``title`` (or ``text`` when there is no
    title); for ``ctr`` / ``rating`` that is what ``text`` holds here, and the catalogue's longer
    description, if any, moves to ``description``. ``next_item`` models also encode items from
    ``text`` itself, so there ``text`` stays as it is.

    Raises:
        ExportError: The config anonymises ids with a random salt (the ids cannot be rebuilt).
    """
    if data_cfg.anonymize and not data_cfg.anonymize_salt:
        raise ExportError(
            "config.yaml: data.anonymize is on with a random salt (never saved), so the item ids "
            "the model saw cannot be rebuilt; re-train with data.anonymize_salt set"
        )
    items = petrec.data.prepare(data_cfg).items.to_pandas()
    items["item_id"] = items["item_id"].astype(str)
    if task != "next_item" and "title" in items.columns:
        if "text" in items.columns and "description" not in items.columns:
            items["description"] = items["text"]
        items["text"] = items["title"].fillna("").astype(str)
    elif "text" not in items.columns:
        items["text"] = items["item_id"]
    items["text"] = items["text"].fillna("").astype(str)
    front = ["item_id", "text"]
    return items[front + [c for c in items.columns if c not in front]].reset_index(drop=True)


# ----------------------------------------------------------------------------- writing


def _save_head(model: BehaviourModel, folder: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(tensors, str(folder / HEAD_FILE), metadata={"format": "pt"})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_merged(model: BehaviourModel, tokenizer: Any, folder: Path) -> None:
    """Merged backbone (``save_pretrained``, safetensors) + tokenizer + head."""
    folder.mkdir()
    model.backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    _save_head(model, folder)
    _write_json(folder / VARIANT_META, {"variant": "merged", "is_decoder": model.is_decoder})


def _write_quantized(model: BehaviourModel, tokenizer: Any, kind: str, folder: Path) -> None:
    """Quantize the merged backbone's linear layers in place and save their state dict."""
    import bitsandbytes as bnb
    from safetensors.torch import save_file

    from petrec.methods.quantization import quantize_model

    folder.mkdir()
    layers = quantize_model(model.backbone, kind)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    model.backbone.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _save_head(model, folder)
    _write_json(
        folder / VARIANT_META,
        {
            "variant": kind,
            "is_decoder": model.is_decoder,
            "library": "bitsandbytes",
            "bitsandbytes_version": bnb.__version__,
            "quantized_layers": layers,
        },
    )


def _quantize_kinds(quantize: str | Sequence[str] | None) -> list[str]:
    kinds = [quantize] if isinstance(quantize, str) else list(quantize or [])
    bad = [k for k in kinds if k not in QUANTIZED]
    if bad:
        raise ExportError(f"quantize: got {bad[0]!r}; accepted values: {list(QUANTIZED)}")
    return list(dict.fromkeys(kinds))


def _check_mergeable(method: str, run_dir: Path, what: str) -> None:
    if not get_method(method).mergeable:
        raise ExportError(
            f"{run_dir}: cannot write {what}: method {method!r} cannot be merged into the base "
            "weights (it adds tokens or layers no weight matrix expresses); export the adapter only"
        )


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    return {k: raw[k] for k in ("valid", "test") if isinstance(raw.get(k), dict)}


def _normalise_modes(root: Path) -> None:
    """Give the export ordinary permissions (mkdtemp / mkstemp create owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished ``tmp`` folder to ``out`` (replacing it when ``force``)."""
    _normalise_modes(tmp)
    if not out.exists():
        os.rename(tmp, out)
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force (force=True) to replace it")
    backup = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup, out)
        raise
    if backup.is_dir():
        shutil.rmtree(backup)
    else:
        backup.unlink()


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    merged: bool = False,
    quantize: str | Sequence[str] | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> Manifest:
    """Export a finished training run for serving.

    Args:
        run_dir: A run folder written by ``recipes/finetune.py`` (config.yaml, adapter/,
            metrics.json).
        out_dir: The export folder to create (written via a temporary sibling, then renamed).
        name: Export name for the manifest (default: the run folder's name).
        merged: Also write ``merged/`` (mergeable methods only).
        quantize: ``"int8"``, ``"nf4"`` or both: also write ``quantized-KIND/`` from the merged
            model (mergeable methods only).
        data_dir: Override of ``data.data_dir`` to rebuild the catalogue.
        force: Replace an existing ``out_dir``.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        ExportError: ``out_dir`` exists without ``force``, a method that cannot be merged with
            ``merged`` / ``quantize``, an unknown quantization kind.
        ConfigError: ``run_dir`` is not a run folder.
    """
    from petrec.runs import load_run

    run_path, out = Path(run_dir), Path(out_dir)
    kinds = _quantize_kinds(quantize)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force (force=True) to replace it")
    if (merged or kinds) and (
        run_path / "config.yaml"
    ).is_file():  # refuse before loading the model
        raw_model = read_yaml(run_path / "config.yaml").get("model") or {}
        _check_mergeable(
            str(raw_model.get("method", ModelConfig.method)),
            run_path,
            "merged/" if merged else f"quantized-{kinds[0]}/",
        )
    run = load_run(run_path, data_dir=data_dir)
    if run.model_cfg.behaviour_prior:
        # The manifest and the server do not carry behaviour_stats.json and request-time
        # features yet: an export would serve a model without the prior it was trained with.
        raise ExportError(f"{run_path}: runs trained with model.behaviour_prior cannot be exported yet")
    method = run.model_cfg.method
    fingerprint = base_fingerprint(run.model_cfg.backbone)
    items = build_catalogue(run.data, run.model_cfg.task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copy2(run_path / "config.yaml", tmp / "config.yaml")
        items.to_parquet(tmp / CATALOGUE_FILE, index=False)
        shutil.copytree(run_path / "adapter", tmp / "adapter")
        variants: dict[str, Any] = {"adapter": "adapter", "merged": None, "quantized": {}}
        if merged or kinds:
            with (
                warnings.catch_warnings()
            ):  # qlora: "merging into a de-quantized fp32 copy" is the plan
                warnings.simplefilter("ignore", UserWarning)
                model = petrec.merge(run.model)
            if merged:
                _write_merged(model, run.tokenizer, tmp / "merged")
                variants["merged"] = "merged"
            for kind in kinds:  # each from a fresh fp32 copy of the merged model
                _write_quantized(_copy_model(model), run.tokenizer, kind, tmp / f"quantized-{kind}")
                variants["quantized"][kind] = f"quantized-{kind}"
        manifest = Manifest(
            name=name or run_path.resolve().name,
            method=method,
            task=run.model_cfg.task,
            base_model=run.model_cfg.backbone,
            base_fingerprint=fingerprint,
            max_length=run.max_length,
            template=run.data.template,
            catalogue={
                "file": CATALOGUE_FILE,
                "sha256": file_sha256(tmp / CATALOGUE_FILE),
                "n_items": len(items),
            },
            metrics=_run_metrics(run_path),
            variants=variants,
            petrec_version=petrec.__version__,
            created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _copy_model(model: BehaviourModel) -> BehaviourModel:
    import copy

    return copy.deepcopy(model)
