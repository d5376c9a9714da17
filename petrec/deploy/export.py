"""``export_run``: a training run → a self-describing export folder (:mod:`petrec.deploy.load` reads it).

Layout (see :mod:`petrec.deploy.manifest` for ``manifest.json``)::

    OUT/
      manifest.json          written last
      config.yaml            the run's config (data / model / max_length)
      items.parquet          the catalogue the model was trained with (item_id, text, ...)
      behaviour_stats.json   model.behaviour_prior only: the statistics its features come from
      collab_tokens.json     model.collab_tokens only: the ID vocabulary of its ID tokens
      adapter/               petrec.save_adapter output (peft-native methods: also peft's own
                             adapter_config.json + adapter_model.safetensors, nothing to add)
      merged/                optional: adapter folded into the weights; transformers
                             save_pretrained (safetensors) + tokenizer + head.safetensors
                             (+ prior.safetensors / collab.safetensors: the prior head and the
                             collaborative-token module, when the model has them)
      quantized-int8/        optional: the merged backbone with bitsandbytes int8 / nf4 linear
      quantized-nf4/         layers (safetensors state dict) + config.json + tokenizer + head
                             (+ prior / collab weights, not quantized)

The two JSON files (the manifest's ``inputs``, hashed like the catalogue) serve every variant:
the server and :func:`petrec.deploy.load.score_requests` compute a request's features and ID
tokens from them (:mod:`petrec.deploy.inputs`).

Everything is written into a temporary sibling folder that is renamed to ``OUT`` at the end,
so a failed export leaves nothing behind (and ``force=True`` replaces ``OUT`` only then).
A process killed mid-way cannot clean up: its ``.OUT.tmp-PID-HOST-RANDOM`` folder (and, killed
while replacing, the previous export moved aside as ``.OUT.old-PID-HOST-RANDOM``) stays. ``OUT``
itself is then absent or complete, never half-written. The next export into the same parent
folder removes such folders whose writer (the PID, on this HOST) is no longer alive, and says so
(:func:`remove_stale`). For fault-injection tests, ``PETREC_EXPORT_PAUSE_AT=STAGE`` makes the
export stop at one of :data:`STAGES` until it is killed (``PETREC_EXPORT_PAUSE_SECONDS``, default
60, then it carries on).

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

import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import petrec
from petrec.data import DataConfig
from petrec.data.tokenize import name_column
from petrec.deploy.inputs import needed_files
from petrec.deploy.load import (  # re-exported: export.py was one module before
    item_names,
    load_export,
    module_files,
    read_catalogue,
    score_requests,
)
from petrec.deploy.manifest import (
    CATALOGUE_FILE,
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
from petrec.files import read_json_object, write_json_atomic
from petrec.methods.registry import get_method
from petrec.models import BehaviourModel

__all__ = [
    "STAGES",
    "VARIANTS",
    "ExportError",
    "build_catalogue",
    "export_run",
    "item_names",
    "load_export",
    "read_catalogue",
    "remove_stale",
    "score_requests",
]

#: Points of :func:`export_run` where ``PETREC_EXPORT_PAUSE_AT`` can stop it (fault injection):
#: the temporary folder was created / holds the catalogue / the adapter / merged weights / the
#: manifest; ``replaced``: (``force``) the old export was moved aside, the new one not yet in
#: place; ``published``: the new export is in place, the old one not yet removed.
STAGES = ("started", "catalogue", "adapter", "merged", "manifest", "replaced", "published")
PAUSE_ENV = "PETREC_EXPORT_PAUSE_AT"
PAUSE_SECONDS_ENV = "PETREC_EXPORT_PAUSE_SECONDS"
#: This machine, in the names of an export's work folders (a PID means nothing on another host).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_WORK = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]+$")
#: Work folders of petrec versions that did not record their writer (``mkdtemp``'s suffix).
_LEGACY = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-[A-Za-z0-9_]{8}$")



# ----------------------------------------------------------------------------- catalogue


def build_catalogue(data_cfg: DataConfig, task: str) -> pd.DataFrame:
    """The item catalogue of a run's data config, with ``text`` = the item text the model saw.

    ``petrec.data`` renders an item in prompts by its name (:func:`petrec.data.tokenize.name_column`:
    ``name`` under ``data.item_name: text``, else ``title``, else ``text``); for ``ctr`` / ``rating``
    that is what ``text`` holds here, and the catalogue's longer
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
    name = name_column(items.columns)
    if task != "next_item" and name != "text":
        if "text" in items.columns and "description" not in items.columns:
            items["description"] = items["text"]
        items["text"] = items[name].fillna("").astype(str)
    elif "text" not in items.columns:
        items["text"] = items["item_id"]
    items["text"] = items["text"].fillna("").astype(str)
    front = ["item_id", "text"]
    return items[front + [c for c in items.columns if c not in front]].reset_index(drop=True)


# ----------------------------------------------------------------------------- writing


def _save_head(model: BehaviourModel, folder: Path) -> None:
    """``head.safetensors``, and the prior head's / collaborative-token module's weights if any."""
    from safetensors.torch import save_file

    for attr, file in module_files(model).items():
        module = getattr(model, attr)
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})


def _write_merged(model: BehaviourModel, tokenizer: Any, folder: Path) -> None:
    """Merged backbone (``save_pretrained``, safetensors) + tokenizer + head."""
    folder.mkdir()
    model.backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    _save_head(model, folder)
    write_json_atomic(folder / VARIANT_META, {"variant": "merged", "is_decoder": model.is_decoder})


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
    write_json_atomic(
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
    if not path.exists():
        return {}
    raw = read_json_object(path, ExportError, "the run's metrics (a JSON object with valid / test)")
    return {k: raw[k] for k in ("valid", "test") if isinstance(raw.get(k), dict)}


# ----------------------------------------------------------------------------- work folders


def _work_folder(out: Path, kind: str) -> Path:
    """``.OUT.KIND-PID-HOST-RANDOM`` beside ``out``: who writes it is in its name from the start."""
    return out.with_name(f".{out.name}.{kind}-{os.getpid()}-{_HOST}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists
        return True
    return True


def remove_stale(parent: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Remove export work folders in ``parent`` left by processes that are no longer alive.

    A work folder is ``.OUT.tmp-PID-HOST-RANDOM`` (an export being written) or
    ``.OUT.old-PID-HOST-RANDOM`` (the export it replaces, moved aside). One is removed only when
    it was made on this machine and its PID is not alive; a live writer's folder (any PID on
    another machine counts as live) is never touched.

    Returns:
        ``(removed, unknown)``: the folders removed, and work folders of older petrec versions
        that recorded no writer (left alone: they may belong to a running export).
    """
    parent = Path(parent)
    removed: list[Path] = []
    unknown: list[Path] = []
    if not parent.is_dir():
        return removed, unknown
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith("."):
            continue
        match = _WORK.match(entry.name)
        if match is None:
            if _LEGACY.match(entry.name) and entry.is_dir():
                unknown.append(entry)
            continue
        pid = int(match["pid"])
        if match["host"] != _HOST or pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry)
    return removed, unknown


def _report_stale(parent: Path, notice: Callable[[str], None]) -> None:
    """:func:`remove_stale` on ``parent``; one ``notice`` line for what it removed (and left)."""
    removed, unknown = remove_stale(parent)
    if removed:
        notice(f"removed {len(removed)} stale export work folder(s) in {parent} left by stopped "
               f"processes: {', '.join(p.name for p in removed)}")
    if unknown:
        notice(f"left {len(unknown)} work folder(s) in {parent} that record no writer (an older "
               f"petrec; remove them if no export is running): {', '.join(p.name for p in unknown)}")


def _stage(name: str) -> None:
    """Fault injection: stop here while ``$PETREC_EXPORT_PAUSE_AT`` names this stage."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"petrec export: paused at stage {name!r} ({PAUSE_ENV}), pid {os.getpid()}",
          file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))


def _notice(message: str) -> None:
    """The default ``notice`` of :func:`export_run`: one line on stderr."""
    print(f"petrec export: {message}", file=sys.stderr, flush=True)


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
    backup = _work_folder(out, "old")
    os.rename(out, backup)
    try:
        _stage("replaced")
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup, out)
        raise
    _stage("published")
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
    notice: Callable[[str], None] | None = _notice,
) -> Manifest:
    """Export a finished training run for serving.

    Args:
        run_dir: A run folder written by :mod:`petrec.recipes.finetune` (config.yaml, adapter/,
            metrics.json).
        out_dir: The export folder to create (written via a temporary sibling, then renamed).
        name: Export name for the manifest (default: the run folder's name).
        merged: Also write ``merged/`` (mergeable methods only).
        quantize: ``"int8"``, ``"nf4"`` or both: also write ``quantized-KIND/`` from the merged
            model (mergeable methods only).
        data_dir: Override of ``data.data_dir`` to rebuild the catalogue.
        force: Replace an existing ``out_dir``.
        notice: Called with one line when stale work folders of killed exports are removed from
            ``out_dir``'s parent (:func:`remove_stale`); default: printed to stderr.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        ExportError: ``out_dir`` exists without ``force``, a method that cannot be merged with
            ``merged`` / ``quantize``, an unknown quantization kind.
        ConfigError: ``run_dir`` is not a run folder, or its config is empty / wrong.
        AdapterLoadError: A missing, truncated or corrupt file in the run's ``adapter/``.
        DataError: A behaviour-prior / collaborative-token run whose ``behaviour_stats.json`` /
            ``collab_tokens.json`` is missing or unreadable (named).
    """
    from petrec.runs import load_run, read_run_config

    run_path, out = Path(run_dir), Path(out_dir)
    kinds = _quantize_kinds(quantize)
    if out.parent.is_dir():
        _report_stale(out.parent, notice or (lambda _message: None))
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force (force=True) to replace it")
    if (merged or kinds) and (
        run_path / "config.yaml"
    ).is_file():  # refuse before loading the model
        _check_mergeable(
            read_run_config(run_path, data_dir).model.method,
            run_path,
            "merged/" if merged else f"quantized-{kinds[0]}/",
        )
    metrics = _run_metrics(run_path)  # a broken metrics.json fails before the model loads
    run = load_run(run_path, data_dir=data_dir)
    inputs = needed_files(run.model_cfg)  # load_run read (and checked) each of them
    method = run.model_cfg.method
    fingerprint = base_fingerprint(run.model_cfg.backbone)
    items = build_catalogue(run.data, run.model_cfg.task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _work_folder(out, "tmp")
    tmp.mkdir(mode=0o700)
    try:
        _stage("started")
        shutil.copy2(run_path / "config.yaml", tmp / "config.yaml")
        items.to_parquet(tmp / CATALOGUE_FILE, index=False)
        for file in inputs.values():
            shutil.copy2(run_path / file, tmp / file)
        _stage("catalogue")
        shutil.copytree(run_path / "adapter", tmp / "adapter")
        _stage("adapter")
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
                _stage("merged")
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
            metrics=metrics,
            variants=variants,
            inputs={key: {"file": file, "sha256": file_sha256(tmp / file)} for key, file in inputs.items()},
            petrec_version=petrec.__version__,
            created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        _stage("manifest")
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _copy_model(model: BehaviourModel) -> BehaviourModel:
    import copy

    return copy.deepcopy(model)
