"""The served base model and the adapters loaded on it.

One frozen backbone is loaded once. Each adapter gets its own module tree built with
``copy.deepcopy(base, memo={id(t): t for t in base tensors})``: the module objects are new,
every base weight and buffer is the *same* tensor (shared by reference), and only what
:func:`petrec.load_adapter` attaches (LoRA matrices, head ...) is new memory. Adapter trees
share no mutable state, so two adapters can run at the same time and replacing one never
touches another. Adapters with the same padding side also share one tokenizer instance (used
only in the worker's single inference thread). Methods that write base weights in place (``full``, ``bitfit``) or quantize
the base get a private copy instead (reported in ``own_bytes``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petrec.serve.config import ServeConfig

log = logging.getLogger("petrec.serve")

#: What an adapter (export folder) name may look like.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AdapterError(Exception):
    """An adapter cannot be served; ``status`` is the HTTP status to answer with."""

    status = 422


class AdapterNotFoundError(AdapterError):
    """No export folder / no loaded adapter of that name."""

    status = 404


class AdapterRefusedError(AdapterError):
    """The export folder exists but cannot be served (manifest, base, catalogue ...)."""

    status = 422


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name.

    Raises:
        AdapterRefusedError: It is not (slashes, leading dots, too long ...).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise AdapterRefusedError(
            f"invalid adapter name {name[:80]!r}: expected 1-64 characters [A-Za-z0-9_.-] starting with "
            "a letter or digit" if isinstance(name, str) else "invalid adapter name"
        )
    return name


def resolve_export(root: Path, name: str) -> Path:
    """The export folder of ``name`` inside ``root``; never anything outside it.

    Raises:
        AdapterRefusedError: Invalid name, or the folder resolves outside ``root`` (symlink).
        AdapterNotFoundError: No such folder.
    """
    check_name(name)
    root = root.resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise AdapterRefusedError(f"adapter {name!r} resolves outside the adapters directory; refused")
    if not folder.is_dir():
        raise AdapterNotFoundError(f"no export folder named {name!r} in the adapters directory")
    return folder


def tensor_ptrs(module: nn.Module) -> dict[int, int]:
    """``data_ptr → bytes`` of every parameter and buffer (shared storage counted once)."""
    out: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        if t.numel():
            out[t.data_ptr()] = t.numel() * t.element_size()
    return out


@dataclass
class Base:
    """The frozen backbone every adapter shares."""

    spec: str
    backbone: nn.Module
    is_decoder: bool
    fingerprint: str
    bytes: int
    _tokenizers: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tokenizer(self, model_cfg: Any) -> Any:
        """The base's tokenizer for a padding side, one instance shared by all adapters (~10 MiB each).

        Shared instances are only used in the worker's single inference thread; work outside it
        (embedding a catalogue while loading) takes a private one from :meth:`fresh_tokenizer`.
        """
        with self._lock:
            side = model_cfg.padding_side
            if side not in self._tokenizers:
                self._tokenizers[side] = self.fresh_tokenizer(model_cfg)
            return self._tokenizers[side]

    def fresh_tokenizer(self, model_cfg: Any) -> Any:
        """A new tokenizer instance of the base (``model_cfg`` gives the padding side)."""
        from petrec.models import load_tokenizer

        return load_tokenizer(dataclasses.replace(model_cfg, backbone=self.spec))

    @classmethod
    def load(cls, spec: str) -> Base:
        """Load the backbone (offline) and fingerprint it like ``petrec export`` does."""
        from petrec.deploy.manifest import base_fingerprint
        from petrec.models import ModelConfig
        from petrec.models.build import load_backbone

        backbone, is_decoder = load_backbone(ModelConfig(backbone=spec))
        backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(False)
        return cls(spec, backbone, is_decoder, base_fingerprint(spec), sum(tensor_ptrs(backbone).values()))

    def tree(self, share: bool) -> nn.Module:
        """A new module tree of the backbone: tensors shared by reference (or copied)."""
        if not share:
            return copy.deepcopy(self.backbone)
        memo: dict[int, Any] = {id(t): t for t in [*self.backbone.parameters(), *self.backbone.buffers()]}
        return copy.deepcopy(self.backbone, memo)


@dataclass
class LoadedAdapter:
    """One servable adapter: its model tree, tokenizer, catalogue and what it costs."""

    name: str
    folder: Path
    manifest: Any
    model: nn.Module
    tokenizer: Any
    task: str
    template: str
    max_length: int
    item_ids: list[str]
    names: dict[str, str]
    index: dict[str, int]
    item_embeddings: torch.Tensor | None
    shares_base: bool
    own_bytes: int
    shared_bytes: int
    stats: Any = None
    """The behaviour statistics of a behaviour-prior model (``behaviour_stats.json``), else None."""
    collab: Any = None
    """The collaborative-token spec of a model with ``collab_tokens`` (``collab_tokens.json``), else None."""
    loaded_at: float = field(default_factory=time.time)
    batcher: Any = None

    def describe(self) -> dict[str, Any]:
        """The ``GET /v1/adapters`` entry."""
        m = self.manifest
        return {"name": self.name, "method": m.method, "task": self.task, "template": self.template,
                "max_length": self.max_length, "n_items": len(self.item_ids), "shares_base": self.shares_base,
                "own_bytes": self.own_bytes, "shared_bytes": self.shared_bytes,
                "export_name": m.name, "created_utc": m.created_utc, "loaded_at": self.loaded_at}


def _read_config(folder: Path, name: str) -> tuple[Any, int]:
    """The export's model config and item token budget (:func:`petrec.runs.read_run_config`)."""
    from petrec.runs import read_run_config

    where = f"{name}/config.yaml"
    try:
        cfg = read_run_config(folder)
    except Exception as exc:  # ConfigError names the file; others get it here
        text = _reason(exc)
        raise AdapterRefusedError(f"adapter {name!r} refused: "
                                  f"{text if 'config.yaml' in text else f'{where}: {text}'}") from None
    return cfg.model, cfg.item_max_length


def _reason(exc: BaseException) -> str:
    """The first line of an exception for an error message, with its type unless it is one of
    petrec's own errors (whose messages already name the file and what was expected)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if text and type(exc).__module__.startswith("petrec."):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_inside(root: Path, path: Path, name: str) -> None:
    """Refuse a file or folder of an export that resolves (through symlinks) outside ``root``.

    Raises:
        AdapterRefusedError: ``path`` resolves outside the adapters directory.
    """
    if not path.resolve().is_relative_to(root):
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        raise AdapterRefusedError(
            f"adapter {name!r} refused: {rel} is a symlink that resolves outside the adapters directory")


def check_safetensors(path: Path, label: str) -> None:
    """Check that a safetensors file is complete: a JSON header and every tensor's bytes present.

    Only the header is read. (Without this, a truncated file fails inside safetensors with a
    message that does not name the file.)

    Raises:
        AdapterRefusedError: Unreadable, truncated or corrupt; the message starts with ``label``.
    """
    def bad(why: str) -> AdapterRefusedError:
        return AdapterRefusedError(f"{label}: {why}; expected a complete safetensors file (re-export it)")

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little")
            raw = fh.read(n) if len(head) == 8 and n <= size - 8 and n <= 100 << 20 else b""
    except OSError as exc:
        raise AdapterRefusedError(f"{label}: cannot be read ({_reason(exc)})") from None
    if len(head) < 8:
        raise bad(f"truncated: {size} bytes, shorter than the 8-byte header length")
    if not raw:
        raise bad(f"truncated or corrupt: the header length field says {n} bytes, the file has {size}")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise bad(f"corrupt header, not JSON ({_reason(exc)})") from None
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"], default=0)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        raise bad("corrupt header (a tensor entry without data_offsets)") from None
    if 8 + n + end > size:
        raise bad(f"truncated: its tensors need {8 + n + end} bytes, the file has {size}")


def _check_json_object(path: Path, label: str) -> None:
    """Check that a JSON file of an adapter folder is UTF-8 JSON holding an object.

    Raises:
        AdapterRefusedError: Unreadable, not UTF-8, not JSON (truncated?) or not an object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AdapterRefusedError(f"{label}: not UTF-8 text (byte {exc.start}); expected a JSON object") from None
    except json.JSONDecodeError as exc:
        raise AdapterRefusedError(f"{label}: not valid JSON ({exc}; truncated?)") from None
    except OSError as exc:
        raise AdapterRefusedError(f"{label}: cannot be read ({_reason(exc)})") from None
    if not isinstance(data, dict):
        raise AdapterRefusedError(f"{label}: holds a JSON {type(data).__name__}; expected a JSON object")


def _read_inputs(root: Path, folder: Path, manifest: Any, model_cfg: Any, name: str) -> tuple[Any, Any]:
    """The behaviour stats / collaborative-token spec the config needs (:mod:`petrec.deploy.inputs`).

    Raises:
        AdapterRefusedError: A needed file outside the adapters directory, not in the manifest's
            ``inputs``, or unreadable (the message names it).
    """
    from petrec.deploy.inputs import needed_files, read_inputs
    from petrec.deploy.manifest import ExportError

    for file in needed_files(model_cfg).values():
        check_inside(root, folder / file, name)
    try:
        return read_inputs(folder, model_cfg, ExportError, listed=manifest.inputs)
    except ExportError as exc:
        raise AdapterRefusedError(f"adapter {name!r} refused: {_reason(exc)}") from None


def _read_catalogue(path: Path, manifest: Any, name: str) -> Any:
    """The export's catalogue as a DataFrame, checked (columns, row count); errors name the file."""
    import pandas as pd

    where = f"{name}/{manifest.catalogue['file']}"
    try:
        items = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own error types on a corrupt file
        raise AdapterRefusedError(f"adapter {name!r} refused: {where}: not a readable parquet file "
                                  f"({_reason(exc)})") from None
    missing = [c for c in ("item_id", "text") if c not in items.columns]
    if missing:
        raise AdapterRefusedError(f"adapter {name!r} refused: {where}: column(s) {missing} missing; "
                                  f"expected item_id, text (and title), found {list(items.columns)[:10]}")
    if len(items) != manifest.catalogue["n_items"]:
        raise AdapterRefusedError(f"adapter {name!r} refused: {where}: {len(items)} rows, the manifest's "
                                  f"catalogue.n_items is {manifest.catalogue['n_items']}")
    items["item_id"] = items["item_id"].astype(str)
    return items


@torch.inference_mode()
def _embed_catalogue(model: nn.Module, tokenizer: Any, items: Any, max_length: int) -> torch.Tensor:
    from petrec.collate import ItemCollator
    from petrec.data import tokenize_items

    toks = tokenize_items(items, tokenizer, max_length=max_length)["input_ids"]
    collate = ItemCollator(tokenizer.pad_token_id, tokenizer.padding_side)
    return model.embed_items(collate(toks[i:i + 256]) for i in range(0, len(toks), 256))


def build_adapter(base: Base, root: Path, name: str) -> LoadedAdapter:
    """Verify an export folder against the served base and build its model (slow: seconds).

    Every file the server reads (``manifest.json``, ``config.yaml``, the catalogue, the adapter
    folder's files) must resolve inside the adapters directory; safetensors files are checked
    for completeness before they are loaded. Any failure is an :class:`AdapterError` whose
    message names the file, never an unexpected exception.

    Raises:
        AdapterNotFoundError: No such folder.
        AdapterRefusedError: Invalid or unreadable manifest / config / catalogue / adapter files,
            a symlink out of the adapters directory, other base, catalogue hash mismatch, no
            adapter variant, or the adapter does not load onto the base.
    """
    root = root.resolve()
    folder = resolve_export(root, name)
    try:
        return _build(base, root, folder, name)
    except AdapterError:
        raise
    except Exception as exc:  # a bug or an error type nobody foresaw: still a refusal, never a 500
        log.exception("adapter %s: unexpected error while loading", name)
        raise AdapterRefusedError(f"adapter {name!r} refused: unexpected error while loading {name}/: "
                                  f"{_reason(exc)}") from None


def _build(base: Base, root: Path, folder: Path, name: str) -> LoadedAdapter:
    """:func:`build_adapter`'s work, once ``folder`` is known to be ``root/name``."""
    import petrec
    from petrec.data import catalogue_names
    from petrec.deploy.manifest import MANIFEST_FILE, verify_export
    from petrec.methods import get_method
    from petrec.methods.io import TENSORS_FILE, read_meta
    from petrec.models import BehaviourModel

    for fixed in (MANIFEST_FILE, "config.yaml"):
        check_inside(root, folder / fixed, name)
    try:
        manifest = verify_export(folder)
    except UnicodeDecodeError:
        raise AdapterRefusedError(f"adapter {name!r} refused: {name}/{MANIFEST_FILE}: not UTF-8 text "
                                  "(corrupt file?)") from None
    except (ValueError, OSError, TypeError, KeyError, AttributeError) as exc:  # ManifestError is a ValueError
        raise AdapterRefusedError(f"adapter {name!r} refused: {_reason(exc)}") from None
    if manifest.base_fingerprint != base.fingerprint:
        raise AdapterRefusedError(
            f"adapter {name!r} refused: trained on base {manifest.base_model!r} (fingerprint "
            f"{manifest.base_fingerprint[:12]}…), the server's base is {base.spec!r} ({base.fingerprint[:12]}…)"
        )
    if not manifest.variants.get("adapter"):
        raise AdapterRefusedError(f"adapter {name!r} refused: the export has no adapter variant (method "
                                  f"{manifest.method!r}); the server serves adapters on its shared base only")
    adapter_dir = folder / manifest.variants["adapter"]
    catalogue = folder / manifest.catalogue["file"]
    # verify_export checked the folders; a single file inside them may still be a link out.
    check_inside(root, catalogue, name)
    for path in sorted(adapter_dir.rglob("*")):
        check_inside(root, path, name)
    rel_dir = f"{name}/{manifest.variants['adapter']}"
    model_cfg, item_max_length = _read_config(folder, name)
    stats, collab = _read_inputs(root, folder, manifest, model_cfg, name)
    for path in sorted(adapter_dir.glob("*.safetensors")):
        check_safetensors(path, f"adapter {name!r} refused: {rel_dir}/{path.name}")
    for path in sorted(adapter_dir.glob("*.json")):
        _check_json_object(path, f"adapter {name!r} refused: {rel_dir}/{path.name}")
    try:
        meta = read_meta(adapter_dir)
        # A method that writes base tensors in place, or a quantized base, gets its own copy.
        share = not get_method(meta["method"]).writes_base and not meta.get("quantize")
        model = BehaviourModel(base.tree(share), model_cfg, is_decoder=base.is_decoder, collab=collab)
        model = petrec.load_adapter(model, adapter_dir).eval()
    except UnicodeDecodeError:
        raise AdapterRefusedError(f"adapter {name!r} refused: {rel_dir}/: a JSON file is not UTF-8 text") from None
    except Exception as exc:  # PetrecMethodError names its file; others get the folder and the files read
        text = _reason(exc)
        where = "" if rel_dir.split("/", 1)[-1] in text or TENSORS_FILE in text else (
            f"{rel_dir}/ ({TENSORS_FILE}, petrec_adapter.json): ")
        raise AdapterRefusedError(f"adapter {name!r} refused: {where}{text}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = base.tokenizer(model_cfg)
    items = _read_catalogue(catalogue, manifest, name)
    try:
        names = catalogue_names(items)
    except Exception as exc:
        raise AdapterRefusedError(f"adapter {name!r} refused: {name}/{manifest.catalogue['file']}: "
                                  f"unusable item names ({_reason(exc)})") from None
    ids = list(items["item_id"])
    embeddings = None
    if manifest.task == "next_item":
        try:
            embeddings = _embed_catalogue(model, base.fresh_tokenizer(model_cfg), items[["item_id", "text"]],
                                          item_max_length)
        except Exception as exc:
            raise AdapterRefusedError(f"adapter {name!r} refused: {name}/{manifest.catalogue['file']}: cannot "
                                      f"embed the catalogue ({_reason(exc)})") from None
    base_ptrs = tensor_ptrs(base.backbone)
    mine = tensor_ptrs(model)
    own = sum(b for p, b in mine.items() if p not in base_ptrs)
    if embeddings is not None:
        own += embeddings.numel() * embeddings.element_size()
    return LoadedAdapter(
        name=name, folder=folder, manifest=manifest, model=model, tokenizer=tokenizer, task=manifest.task,
        template=manifest.template, max_length=manifest.max_length, item_ids=ids, names=names,
        index={i: n for n, i in enumerate(ids)}, item_embeddings=embeddings, shares_base=share, own_bytes=own,
        shared_bytes=sum(b for p, b in mine.items() if p in base_ptrs), stats=stats, collab=collab,
    )


class Registry:
    """Loaded adapters by name, and why the others are unavailable.

    Reads are lock-free (the dict is replaced, never mutated). ``errors`` maps a name to the
    reason its last load failed (cleared by a successful load); a name in ``errors`` and not
    loaded is *unavailable*.

    Args:
        cfg: The server config.
        on_failure: Called with ``(name, reason)`` for every failed load (metrics).
    """

    def __init__(self, cfg: ServeConfig, on_failure: Callable[[str, str], None] | None = None) -> None:
        self.cfg = cfg
        self.root = Path(cfg.adapters_dir).resolve()
        self.base: Base | None = None
        self._adapters: dict[str, LoadedAdapter] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        self._on_failure = on_failure

    def available(self) -> list[str]:
        """Names of the export folders in the adapters directory."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if NAME_RE.fullmatch(p.name) and (p / "manifest.json").is_file())

    def get(self, name: str) -> LoadedAdapter:
        """The loaded adapter ``name``.

        Raises:
            AdapterRefusedError: Invalid name.
            AdapterNotFoundError: Not loaded (the message names only ``name``).
        """
        found = self._adapters.get(check_name(name))
        if found is None:
            raise AdapterNotFoundError(f"adapter {name!r} is not loaded")
        return found

    def snapshot(self) -> dict[str, LoadedAdapter]:
        """The current name → adapter mapping (do not mutate)."""
        return self._adapters

    def unavailable(self) -> dict[str, str]:
        """Name → reason of the adapters whose last load failed and that are not served."""
        return {n: r for n, r in sorted(self.errors.items()) if n not in self._adapters}

    def record_failure(self, name: str, reason: str) -> None:
        """Remember why loading ``name`` failed (and tell ``on_failure``)."""
        self.errors[name] = reason
        if self._on_failure is not None:
            self._on_failure(name, reason)

    def build(self, name: str) -> LoadedAdapter:
        """Build ``name`` from the adapters directory (not installed yet).

        Raises:
            AdapterError: See :func:`build_adapter`; a refusal is recorded in ``errors``.
        """
        if self.base is None:
            raise AdapterRefusedError("the base model is not loaded yet")
        try:
            return build_adapter(self.base, self.root, name)
        except AdapterRefusedError as exc:
            self.record_failure(name, str(exc))
            raise

    def install(self, adapter: LoadedAdapter) -> LoadedAdapter | None:
        """Make ``adapter`` the one served under its name; returns the one it replaced."""
        with self._lock:
            old = self._adapters.get(adapter.name)
            self._adapters = {**self._adapters, adapter.name: adapter}
            self.errors.pop(adapter.name, None)
        return old

    def remove(self, name: str) -> LoadedAdapter:
        """Stop serving ``name``; returns it.

        Raises:
            AdapterNotFoundError: Not loaded (the message names only ``name``).
        """
        with self._lock:
            old = self._adapters.get(check_name(name))
            if old is None:
                raise AdapterNotFoundError(f"adapter {name!r} is not loaded")
            self._adapters = {k: v for k, v in self._adapters.items() if k != name}
        return old

    def startup(self) -> None:
        """Load the base, then every configured adapter.

        A refused adapter is logged, recorded as unavailable and skipped: one bad export never
        stops the others from being served. With ``cfg.strict`` the first refusal is raised.

        Raises:
            AdapterError: ``cfg.strict`` and an adapter was refused (or not found).
        """
        self.base = Base.load(self.cfg.base)
        if not self.root.is_dir():
            log.warning("adapters directory %s does not exist; serving no adapters", self.root)
        log.info("base %s loaded (%.1f MiB)", self.cfg.base, self.base.bytes / 2**20)
        for name in self.cfg.load if self.cfg.load is not None else self.available():
            try:
                adapter = self.build(name)
            except AdapterError as exc:
                if not isinstance(exc, AdapterRefusedError):  # not found / invalid name
                    self.record_failure(name, str(exc))
                if self.cfg.strict:
                    raise
                log.warning("adapter %s unavailable: %s", name, exc)
                continue
            self.install(adapter)
            log.info("adapter %s loaded (%s, %s, own %.2f MiB)", name, adapter.manifest.method,
                     adapter.task, adapter.own_bytes / 2**20)
