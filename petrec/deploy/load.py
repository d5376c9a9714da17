"""Read export folders back: ``load_export`` (any variant → a ``TrainedRun``) and fast scoring.

Written by :mod:`petrec.deploy.export`; the layout and the manifest are in
:mod:`petrec.deploy.manifest`. ``score_requests`` is the fast offline path: the same prompts,
history truncation, behaviour features / collaborative tokens (:mod:`petrec.deploy.inputs`) and
scores as :func:`petrec.runs.score_examples`, without ``datasets``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from petrec.deploy.inputs import read_inputs, row_inputs
from petrec.deploy.manifest import (
    HEAD_FILE,
    MANIFEST_FILE,
    MODULE_FILES,
    VARIANTS,
    WEIGHTS_FILE,
    ExportError,
    base_fingerprint,
    verify_export,
)
from petrec.files import check_safetensors, read_json_object
from petrec.models import BehaviourModel, is_decoder_config, load_tokenizer
from petrec.models.build import drop_pooler
from petrec.runs import (
    TrainedRun,
    check_adapter_folder,
    load_adapter_checked,
    load_base,
    read_run_config,
    score_token_ids,
)

__all__ = ["item_names", "load_export", "module_files", "read_catalogue", "score_requests"]


# ----------------------------------------------------------------------------- loading


def module_files(model: BehaviourModel) -> dict[str, str]:
    """The model's modules a merged / quantized variant saves beside its backbone → their file."""
    return {attr: file for attr, file in MODULE_FILES.items() if getattr(model, attr, None) is not None}


def _load_head(model: BehaviourModel, folder: Path) -> None:
    """Load ``head.safetensors`` (and the prior / collaborative-token weights the model has)."""
    from safetensors.torch import load_file

    for attr, file in module_files(model).items():
        path = folder / file
        if not path.is_file():
            raise ExportError(f"{folder}: {file} is missing")
        check_safetensors(path, ExportError)
        try:
            getattr(model, attr).load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise ExportError(
                f"{path}: {attr} weights do not fit the model config ({str(exc).splitlines()[0]})"
            ) from None


def _no_init_weights() -> Any:
    """transformers' ``no_init_weights`` context (a no-op context where this version lacks it)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - other transformers versions
        import contextlib

        return contextlib.nullcontext()
    return no_init_weights()


def _no_pooler(config: Any) -> dict[str, Any]:
    """``add_pooling_layer=False`` where the model class takes it (BERT family): petrec removes the
    pooler (see :func:`petrec.models.build.load_backbone`), so the export has no pooler weights."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        return {}
    return (
        {"add_pooling_layer": False}
        if "add_pooling_layer" in inspect.signature(cls.__init__).parameters
        else {}
    )


def _load_nf4_weights(backbone: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Install pre-quantized nf4 weights (packed data + quant state) into ``Linear4bit`` layers."""
    import bitsandbytes as bnb

    for lname, module in backbone.named_modules():
        if type(module).__name__ != "Linear4bit":
            continue
        prefix = f"{lname}.weight."
        keys = [k for k in tensors if k.startswith(prefix)]
        stats = {k[len(prefix) :]: tensors.pop(k) for k in keys}
        module.weight = bnb.nn.Params4bit.from_prequantized(
            tensors.pop(f"{lname}.weight"), stats, requires_grad=False, device="cpu"
        )


class _DropCastNotice(logging.Filter):
    """Drops bitsandbytes' "MatMul8bitLt: inputs will be cast ..." notice, logged by every int8
    layer on every forward (36 lines per MiniLM request); everything else it logs passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _quiet_int8_notice() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastNotice) for f in logger.filters):
        logger.addFilter(_DropCastNotice())


def _check_variant_files(folder: Path, variant: str) -> None:
    """Check a merged / quantized folder's files (headers only) before transformers opens them.

    ``config.json`` and the tokenizer's JSON files must parse, every weights file must be a whole
    safetensors file, and a merged folder must hold safetensors weights: transformers would fall
    back to a ``.bin`` pickle, which petrec never opens.

    Raises:
        ExportError: A missing, truncated or corrupt file (named, with what was expected).
    """
    read_json_object(folder / "config.json", ExportError, "the model's transformers config (a JSON object)")
    for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (folder / name).exists():
            read_json_object(folder / name, ExportError, "a tokenizer file (a JSON object)")
    if variant == "merged":
        index = folder / "model.safetensors.index.json"
        if index.exists():
            read_json_object(index, ExportError, "the safetensors shard index (a JSON object)")
        own = set(MODULE_FILES.values())
        weights = sorted(p for p in folder.glob("*.safetensors") if p.name not in own)
        if not weights:
            pickled = sorted(p.name for p in folder.glob("*.bin"))
            hint = f"; found {pickled}, which petrec never unpickles: re-export" if pickled else ""
            raise ExportError(f"{folder}: no *.safetensors weights for the merged model{hint}")
    else:
        weights = [folder / WEIGHTS_FILE]
    for path in weights:
        check_safetensors(path, ExportError)
    for name in MODULE_FILES.values():
        if name == HEAD_FILE or (folder / name).exists():  # the model says which it needs (_load_head)
            check_safetensors(folder / name, ExportError)


def _load_quantized_backbone(folder: Path, kind: str) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from petrec.methods.quantization import quantize_model

    config = AutoConfig.from_pretrained(folder)
    # A skeleton: every weight is replaced below, so skip the random initialisation.
    with _no_init_weights():
        backbone = AutoModel.from_config(config, **_no_pooler(config))
    drop_pooler(backbone)
    quantize_model(backbone, kind)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    if kind == "int8":
        _quiet_int8_notice()
    if kind == "nf4":
        _load_nf4_weights(backbone, tensors)
    result = backbone.load_state_dict(tensors, strict=False)
    # nf4 weights were installed above and are not in ``tensors`` any more.
    missing = [k for k in result.missing_keys if not (kind == "nf4" and k.endswith(".weight"))]
    if missing or result.unexpected_keys:
        raise ExportError(
            f"{folder / WEIGHTS_FILE}: tensors do not fit the config: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return backbone


def load_export(
    export_dir: str | os.PathLike[str],
    variant: str = "adapter",
    *,
    data_dir: str | None = None,
    device: str | torch.device | None = None,
) -> TrainedRun:
    """Load one variant of an export as a :class:`petrec.runs.TrainedRun` (evaluation mode).

    The result works with :func:`petrec.runs.score_examples` (pass ``items`` = the export's
    ``items.parquet``), so every variant's scores can be compared.

    Args:
        export_dir: Folder written by :func:`export_run` (verified with :func:`verify_export`).
        variant: ``adapter`` (base model + saved adapter; the base is checked against the
            manifest's fingerprint), ``merged``, ``int8`` or ``nf4``.
        data_dir: Override of ``data.data_dir`` in the returned data config.
        device: Move the model there (default: stay on CPU).

    Raises:
        ExportError: Unknown variant, a variant not in this export, a base model that differs
            from the one exported, or a missing / truncated / corrupt file of the variant (named;
            a merged folder with only a ``.bin`` pickle is refused), or a ``behaviour_stats.json``
            / ``collab_tokens.json`` the config needs that the manifest does not list or that
            does not read (named).
        AdapterLoadError: The same for the adapter variant's files.
        ManifestError: The export folder is not valid (a listed input file missing or changed
            since export included).
    """
    folder = Path(export_dir)
    if variant not in VARIANTS:
        raise ExportError(f"variant: got {variant!r}; accepted values: {list(VARIANTS)}")
    manifest = verify_export(folder)
    present = manifest.variant_folders
    if variant not in present:
        raise ExportError(
            f"{folder / MANIFEST_FILE}: this export has no {variant!r} variant; "
            f"it has {sorted(present)}"
        )
    sub = folder / present[variant]
    cfg = read_run_config(folder, data_dir)  # the run's config.yaml, copied into the export
    model_cfg = cfg.model
    stats, collab = read_inputs(folder, model_cfg, ExportError, listed=manifest.inputs)
    if variant == "adapter":
        check_adapter_folder(sub)  # before the base model loads
        found = base_fingerprint(manifest.base_model)
        if found != manifest.base_fingerprint:
            raise ExportError(
                f"{folder / MANIFEST_FILE}: base model {manifest.base_model!r} has fingerprint "
                f"{found}, expected {manifest.base_fingerprint} (another checkpoint?)"
            )
        backbone, is_decoder = load_base(model_cfg, folder / "config.yaml")
        model = load_adapter_checked(
            BehaviourModel(backbone, model_cfg, is_decoder=is_decoder, collab=collab), sub)
        tokenizer = load_tokenizer(model_cfg)
    else:
        from safetensors import SafetensorError

        _check_variant_files(sub, variant)
        try:
            if variant == "merged":
                from transformers import AutoConfig, AutoModel

                # use_safetensors: never fall back to a pickled pytorch_model.bin.
                backbone = AutoModel.from_pretrained(
                    sub, dtype="auto", use_safetensors=True, **_no_pooler(AutoConfig.from_pretrained(sub))
                )
                drop_pooler(backbone)
            else:
                backbone = _load_quantized_backbone(sub, variant)
            model = BehaviourModel(backbone, model_cfg, is_decoder=is_decoder_config(backbone.config),
                                   collab=collab)
            _load_head(model, sub)
            tokenizer = load_tokenizer(dataclasses.replace(model_cfg, backbone=str(sub)))
        except (OSError, SafetensorError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ExportError(f"{sub}: the {variant!r} variant does not load ({type(exc).__name__}: "
                              f"{first})") from None
    model.eval()
    if device is not None:
        model.to(device)
    return TrainedRun(folder, cfg.data, model_cfg, model, tokenizer, cfg.max_length, stats=stats, collab=collab)


def read_catalogue(export_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The export's ``items.parquet`` as a DataFrame (pass it as ``items=`` when scoring)."""
    manifest = verify_export(export_dir)
    return pd.read_parquet(Path(export_dir) / manifest.catalogue["file"])


# ----------------------------------------------------------------------------- fast scoring


def item_names(items: pd.DataFrame) -> dict[str, str]:
    """``item_id`` → the name prompts use for it (``name``, else ``title``, else ``text``).

    Build it once and pass it to :func:`score_requests` (same as
    :func:`petrec.data.catalogue_names`).
    """
    from petrec.data import catalogue_names

    return catalogue_names(items)


@torch.no_grad()
def score_requests(
    run: TrainedRun, rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]
) -> np.ndarray:
    """Score (history, candidate) rows in one forward pass, without ``datasets`` (a server's path).

    Same prompts, history truncation and scores as :func:`petrec.runs.score_examples` (which goes
    through ``datasets.map`` and costs ~60 ms more per call on a 2-core CPU). A behaviour-prior
    model's features and a collaborative-token model's ID tokens are computed from the rows
    (:func:`petrec.deploy.inputs.row_inputs`), as ``score_examples`` computes them from examples.

    Args:
        run: From :func:`load_export` (any variant) or :func:`petrec.runs.load_run`; ctr / rating.
        rows: Dicts with ``history_item_ids`` (oldest first), ``item_id`` (the candidate) and
            optionally ``history_labels`` (0/1, default all 1) and ``history_ratings``.
        names: :func:`item_names` of the catalogue (build it once).

    Returns:
        Click probabilities (ctr) or predicted ratings, one per row.

    Raises:
        ExportError: A next_item model, a row without ``history_item_ids`` / ``item_id``, or a
            rating model with a behaviour prior and a row without ``history_ratings`` (its
            features read them).
        DataValueError: An item id that is not in ``names``.
        DataError: A history whose labels are not 0/1 or whose lists differ in length, for a
            model whose features or ID tokens read them.
    """
    from petrec.data import tokenize_rows

    task = run.model_cfg.task
    if task not in ("ctr", "rating"):
        raise ExportError(f"score_requests needs a ctr or rating model, this one is {task!r}")
    if not rows:
        return np.zeros(0, dtype=np.float32)
    try:
        hist = [[str(x) for x in r["history_item_ids"]] for r in rows]
        batch: dict[str, list] = {
            "history_item_ids": hist,
            "item_id": [str(r["item_id"]) for r in rows],
        }
    except KeyError as exc:
        raise ExportError(
            f"score_requests: a row lacks {exc.args[0]!r} (needs history_item_ids, item_id)"
        ) from None
    batch["history_labels"] = [
        list(r.get("history_labels") or [1] * len(h)) for r, h in zip(rows, hist, strict=True)
    ]
    batch["history_ratings"] = [
        list(r.get("history_ratings") or [float("nan")] * len(h))
        for r, h in zip(rows, hist, strict=True)
    ]
    if task == "rating" and run.stats is not None and not all(r.get("history_ratings") is not None for r in rows):
        raise ExportError("score_requests: a rating model with a behaviour prior needs history_ratings in "
                          "every row (its features read the history's ratings)")
    tokens = tokenize_rows(batch, run.tokenizer, max_length=run.max_length, names=dict(names),
                           task=task, template=run.data.template)
    seqs = tokens["input_ids"]
    features, collab = row_inputs(run.stats, run.collab, batch)
    return score_token_ids(run.model, task, seqs, run.tokenizer, batch_size=len(seqs), features=features,
                           collab=collab).cpu().numpy()
