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
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petrec.serve.config import ServeConfig

log = logging.getLogger("petrec.serve")

#: What an adapter (export folder) name may look like.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Methods that change base tensors in place: never share the base with them.
_PRIVATE_BASE = ("full", "bitfit")


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
    loaded_at: float = field(default_factory=time.time)
    batcher: Any = None

    def describe(self) -> dict[str, Any]:
        """The ``GET /v1/adapters`` entry."""
        m = self.manifest
        return {"name": self.name, "method": m.method, "task": self.task, "template": self.template,
                "max_length": self.max_length, "n_items": len(self.item_ids), "shares_base": self.shares_base,
                "own_bytes": self.own_bytes, "shared_bytes": self.shared_bytes,
                "export_name": m.name, "created_utc": m.created_utc, "loaded_at": self.loaded_at}


def _read_config(folder: Path) -> tuple[Any, int]:
    from petrec.config import ConfigError, from_dict, read_yaml
    from petrec.models import ModelConfig

    try:
        raw = read_yaml(folder / "config.yaml")
        cfg = from_dict(ModelConfig, raw.get("model") or {}, prefix="model.")
    except (ConfigError, ValueError, OSError) as exc:
        raise AdapterRefusedError(f"{folder.name}/config.yaml: {exc}") from None
    return cfg, int(raw.get("item_max_length", 32))


@torch.inference_mode()
def _embed_catalogue(model: nn.Module, tokenizer: Any, items: Any, max_length: int) -> torch.Tensor:
    from petrec.collate import ItemCollator
    from petrec.data import tokenize_items

    toks = tokenize_items(items, tokenizer, max_length=max_length)["input_ids"]
    collate = ItemCollator(tokenizer.pad_token_id, tokenizer.padding_side)
    return model.embed_items(collate(toks[i:i + 256]) for i in range(0, len(toks), 256))


def build_adapter(base: Base, root: Path, name: str) -> LoadedAdapter:
    """Verify an export folder against the served base and build its model (slow: seconds).

    Raises:
        AdapterNotFoundError: No such folder.
        AdapterRefusedError: Invalid manifest, other base, catalogue hash mismatch, no adapter variant,
            or the adapter does not load onto the base.
    """
    import pandas as pd

    import petrec
    from petrec.data import catalogue_names
    from petrec.deploy.manifest import ManifestError, verify_export
    from petrec.methods.errors import PetrecMethodError
    from petrec.methods.io import read_meta
    from petrec.models import BehaviourModel

    folder = resolve_export(root, name)
    try:
        manifest = verify_export(folder)
    except ManifestError as exc:
        raise AdapterRefusedError(f"adapter {name!r} refused: {exc}") from None
    if manifest.base_fingerprint != base.fingerprint:
        raise AdapterRefusedError(
            f"adapter {name!r} refused: trained on base {manifest.base_model!r} (fingerprint "
            f"{manifest.base_fingerprint[:12]}…), the server's base is {base.spec!r} ({base.fingerprint[:12]}…)"
        )
    if not manifest.variants.get("adapter"):
        raise AdapterRefusedError(f"adapter {name!r} refused: the export has no adapter variant (method "
                             f"{manifest.method!r}); the server serves adapters on its shared base only")
    # verify_export has checked that both lie inside the folder (links resolved).
    adapter_dir = folder / manifest.variants["adapter"]
    catalogue = folder / manifest.catalogue["file"]
    model_cfg, item_max_length = _read_config(folder)
    try:
        meta = read_meta(adapter_dir)
        share = meta["method"] not in _PRIVATE_BASE and not meta.get("quantize")
        model = BehaviourModel(base.tree(share), model_cfg, is_decoder=base.is_decoder)
        model = petrec.load_adapter(model, adapter_dir).eval()
    except (PetrecMethodError, ValueError, OSError) as exc:
        raise AdapterRefusedError(f"adapter {name!r} refused: {exc}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = base.tokenizer(model_cfg)
    items = pd.read_parquet(catalogue)
    items["item_id"] = items["item_id"].astype(str)
    names = catalogue_names(items)
    ids = list(items["item_id"])
    embeddings = None
    if manifest.task == "next_item":
        embeddings = _embed_catalogue(model, base.fresh_tokenizer(model_cfg), items[["item_id", "text"]],
                                      item_max_length)
    base_ptrs = tensor_ptrs(base.backbone)
    mine = tensor_ptrs(model)
    own = sum(b for p, b in mine.items() if p not in base_ptrs)
    if embeddings is not None:
        own += embeddings.numel() * embeddings.element_size()
    return LoadedAdapter(
        name=name, folder=folder, manifest=manifest, model=model, tokenizer=tokenizer, task=manifest.task,
        template=manifest.template, max_length=manifest.max_length, item_ids=ids, names=names,
        index={i: n for n, i in enumerate(ids)}, item_embeddings=embeddings, shares_base=share, own_bytes=own,
        shared_bytes=sum(b for p, b in mine.items() if p in base_ptrs),
    )


class Registry:
    """Loaded adapters by name. Reads are lock-free (the dict is replaced, never mutated)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.adapters_dir).resolve()
        self.base: Base | None = None
        self._adapters: dict[str, LoadedAdapter] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}

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
            AdapterNotFoundError: Not loaded.
        """
        found = self._adapters.get(check_name(name))
        if found is None:
            raise AdapterNotFoundError(f"adapter {name!r} is not loaded; loaded: {sorted(self._adapters)}")
        return found

    def snapshot(self) -> dict[str, LoadedAdapter]:
        """The current name → adapter mapping (do not mutate)."""
        return self._adapters

    def build(self, name: str) -> LoadedAdapter:
        """Build ``name`` from the adapters directory (not installed yet)."""
        if self.base is None:
            raise AdapterRefusedError("the base model is not loaded yet")
        return build_adapter(self.base, self.root, name)

    def install(self, adapter: LoadedAdapter) -> LoadedAdapter | None:
        """Make ``adapter`` the one served under its name; returns the one it replaced."""
        with self._lock:
            old = self._adapters.get(adapter.name)
            self._adapters = {**self._adapters, adapter.name: adapter}
        return old

    def remove(self, name: str) -> LoadedAdapter:
        """Stop serving ``name``; returns it.

        Raises:
            AdapterNotFoundError: Not loaded.
        """
        with self._lock:
            old = self._adapters.get(check_name(name))
            if old is None:
                raise AdapterNotFoundError(f"adapter {name!r} is not loaded; loaded: {sorted(self._adapters)}")
            self._adapters = {k: v for k, v in self._adapters.items() if k != name}
        return old

    def startup(self) -> None:
        """Load the base, then every configured adapter (refusals logged, or raised if strict)."""
        self.base = Base.load(self.cfg.base)
        if not self.root.is_dir():
            log.warning("adapters directory %s does not exist; serving no adapters", self.root)
        log.info("base %s loaded (%.1f MiB)", self.cfg.base, self.base.bytes / 2**20)
        for name in self.cfg.load if self.cfg.load is not None else self.available():
            try:
                adapter = self.build(name)
            except AdapterError as exc:
                self.errors[name] = str(exc)
                if self.cfg.strict:
                    raise
                log.warning("skipping adapter: %s", exc)
                continue
            self.install(adapter)
            log.info("adapter %s loaded (%s, %s, own %.2f MiB)", name, adapter.manifest.method,
                     adapter.task, adapter.own_bytes / 2**20)
