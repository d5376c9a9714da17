"""The export manifest: the contract between ``petrec export`` and the model server.

An export folder holds ``manifest.json``, ``config.yaml`` (the run's config), ``items.parquet``
(the item catalogue the model was trained with), the files the model computes its inputs from
at request time (``inputs``: ``behaviour_stats.json`` for a behaviour-prior model,
``collab_tokens.json`` for a collaborative-token model) and one folder per variant: ``adapter/``
(:func:`petrec.save_adapter` output), optionally ``merged/`` and ``quantized-int8/`` or
``quantized-nf4/``. :func:`read_manifest` parses and validates ``manifest.json``;
:func:`verify_export` also checks the variant folders and the hashes of the catalogue and inputs.

Version 2 added ``inputs``; a version-1 manifest (no ``inputs`` key: an export of a model that
needs none) is still read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from petrec.files import check_safetensors

__all__ = [
    "FORMAT",
    "INPUTS",
    "MANIFEST_FILE",
    "MODULE_FILES",
    "QUANTIZED",
    "TASKS",
    "VERSION",
    "Manifest",
    "ManifestError",
    "base_fingerprint",
    "file_sha256",
    "read_manifest",
    "verify_export",
]

FORMAT = "petrec-export"
VERSION = 2
#: Manifest versions this petrec reads (1: before ``inputs``).
READ_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
TASKS = ("ctr", "rating", "next_item")
QUANTIZED = ("int8", "nf4")
#: Variants ``petrec.deploy.load.load_export`` accepts, and the files of an export folder.
VARIANTS = ("adapter", "merged", *QUANTIZED)
CATALOGUE_FILE = "items.parquet"
HEAD_FILE = "head.safetensors"
WEIGHTS_FILE = "model.safetensors"
#: Weights of a merged / quantized variant's behaviour prior head and collaborative-token module
#: (``head.safetensors`` holds the language model's head; the adapter variant keeps all three in
#: its own files).
PRIOR_FILE = "prior.safetensors"
COLLAB_WEIGHTS_FILE = "collab.safetensors"
#: Behaviour-model attribute → the file a merged / quantized variant saves its weights in (``head``
#: always; ``prior`` / ``collab`` where the model has them).
MODULE_FILES = {"head": HEAD_FILE, "prior": PRIOR_FILE, "collab": COLLAB_WEIGHTS_FILE}
VARIANT_META = "petrec_variant.json"
#: ``inputs`` entries: what each names, and the ``model`` config flag that needs it.
INPUTS = {"behaviour_stats": "behaviour_prior", "collab_tokens": "collab_tokens"}
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """An export folder or its manifest is wrong; the message names the file and the key."""


class ExportError(ValueError):
    """An export cannot be written or read; the message names the path or option and what is
    expected."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _weight_signature(folder: Path) -> list[tuple[str, list[int], str]]:
    """Sorted ``(name, shape, dtype)`` of every tensor in the folder's safetensors files.

    Only the safetensors headers are read (no tensor data).
    """
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ManifestError(
            f"base model {str(folder)!r}: no *.safetensors weights to fingerprint "
            "(petrec never unpickles .bin files)"
        )
    out: list[tuple[str, list[int], str]] = []
    for path in files:
        check_safetensors(path, ManifestError)
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                sl = fh.get_slice(key)
                out.append((key, [int(d) for d in sl.get_shape()], str(sl.get_dtype())))
    return sorted(out)


def base_fingerprint(backbone_spec: str | os.PathLike[str]) -> str:
    """Identify a base model by sha256 over its ``config.json`` bytes and weight signature.

    The weight signature is the sorted list of ``(name, shape, dtype)`` of its safetensors
    tensors (JSON-encoded), so the same checkpoint gives the same hex digest wherever it lies.

    Args:
        backbone_spec: ``model.backbone`` of a run config: the alias ``minilm`` or a local
            model folder (a hub id is looked up in the local Hugging Face cache).

    Raises:
        ManifestError: The folder, its ``config.json`` or its safetensors weights are missing.
    """
    from petrec.paths import resolve_model

    resolved = resolve_model(str(backbone_spec))
    folder = Path(resolved)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(resolved, local_files_only=True))
        except Exception as exc:
            raise ManifestError(
                f"base model {str(backbone_spec)!r}: not a local folder and not in the Hugging "
                f"Face cache ({type(exc).__name__})"
            ) from None
    config = folder / "config.json"
    if not config.is_file():
        raise ManifestError(f"base model {str(folder)!r}: config.json is missing")
    digest = hashlib.sha256(config.read_bytes())
    digest.update(json.dumps(_weight_signature(folder)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What an export folder contains (``manifest.json``, format ``petrec-export`` v1).

    Attributes:
        name: Export name (default: the run folder's name).
        method: The petrec method the run trained.
        task: ``ctr``, ``rating`` or ``next_item``.
        base_model: ``model.backbone`` of the run config (``minilm`` or a path / hub id).
        base_fingerprint: :func:`base_fingerprint` of that base.
        max_length: Token budget of one example.
        template: Prompt template name (``data.template``).
        catalogue: ``{"file": "items.parquet", "sha256": ..., "n_items": ...}``.
        metrics: The run's ``metrics.json`` valid/test metrics (``{}`` if absent).
        variants: ``{"adapter": "adapter" | None, "merged": "merged" | None,
            "quantized": {"int8": "quantized-int8"} | {}}`` (folders relative to the export).
        petrec_version: ``petrec.__version__`` that exported.
        created_utc: ISO-8601 UTC time of the export.
        inputs: The files the model's request-time inputs are computed from, by
            :data:`INPUTS` name: ``{"behaviour_stats": {"file": "behaviour_stats.json",
            "sha256": ...}, "collab_tokens": {...}}`` (``{}`` for a model that needs none).
        format: Always ``petrec-export``.
        version: 2 (1: read from an export written before ``inputs``).
    """

    name: str
    method: str
    task: str
    base_model: str
    base_fingerprint: str
    max_length: int
    template: str
    catalogue: dict[str, Any]
    metrics: dict[str, Any]
    variants: dict[str, Any]
    petrec_version: str
    created_utc: str
    inputs: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION
    _where: str = field(default=MANIFEST_FILE, compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self, self._where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``format`` and ``version`` first)."""
        data = asdict(self)
        data.pop("_where")
        if self.version == 1:  # as it was read: version 1 had no inputs (validated empty)
            data.pop("inputs")
        return {"format": data.pop("format"), "version": data.pop("version"), **data}

    def to_json(self) -> str:
        """``manifest.json`` text (indented, keys in contract order)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str = MANIFEST_FILE) -> Manifest:
        """Parse and validate manifest text.

        Args:
            text: The JSON text.
            where: File name used in error messages.

        Raises:
            ManifestError: Not JSON, a missing / unknown key, or a wrong value.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ManifestError(
                f"{where}: key 'format' is {data.get('format')!r}, expected {FORMAT!r}"
            )
        version = data.get("version")
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise ManifestError(
                f"{where}: key 'version' is {version!r}, expected {VERSION} (this petrec reads "
                f"{', '.join(map(str, READ_VERSIONS))}; exported by another petrec version?)"
            )
        keys = [f for f in cls.__dataclass_fields__ if not f.startswith("_")]
        if version == 1:
            keys.remove("inputs")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ManifestError(f"{where}: key {missing[0]!r} is missing (required keys: {keys})")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ManifestError(f"{where}: unknown key {unknown[0]!r} (known keys: {keys})")
        return cls(**data, _where=where)

    @property
    def variant_folders(self) -> dict[str, str]:
        """Variant name (``adapter``, ``merged``, ``int8``, ``nf4``) → folder inside the export."""
        out = {k: self.variants[k] for k in ("adapter", "merged") if self.variants.get(k)}
        out.update(self.variants.get("quantized") or {})
        return out


def _fail(where: str, key: str, expected: str, got: Any) -> ManifestError:
    return ManifestError(f"{where}: key {key!r} is {got!r}; expected {expected}")


def _validate(m: Manifest, where: str) -> None:
    if m.format != FORMAT:
        raise _fail(where, "format", repr(FORMAT), m.format)
    if isinstance(m.version, bool) or m.version not in READ_VERSIONS:
        raise _fail(where, "version", f"one of {list(READ_VERSIONS)}", m.version)
    for key in (
        "name",
        "base_model",
        "base_fingerprint",
        "template",
        "petrec_version",
        "created_utc",
    ):
        value = getattr(m, key)
        if not isinstance(value, str) or not value:
            raise _fail(where, key, "a non-empty string", value)
    from petrec.methods.registry import METHODS  # lazy: this module's own imports stay light

    if m.method not in METHODS:
        raise _fail(where, "method", f"one of {list(METHODS)}", m.method)
    if m.task not in TASKS:
        raise _fail(where, "task", f"one of {list(TASKS)}", m.task)
    if isinstance(m.max_length, bool) or not isinstance(m.max_length, int) or m.max_length <= 0:
        raise _fail(where, "max_length", "a positive integer", m.max_length)
    cat = m.catalogue
    if not isinstance(cat, dict) or set(cat) != {"file", "sha256", "n_items"}:
        raise _fail(where, "catalogue", "an object with keys file, sha256, n_items", cat)
    if not _inside_name(cat["file"]):
        raise _fail(where, "catalogue.file", "a file name inside the export (no '..', not absolute)",
                    cat["file"])
    if not isinstance(cat["sha256"], str) or len(cat["sha256"]) != 64:
        raise _fail(where, "catalogue.sha256", "a 64-character hex sha256", cat["sha256"])
    if (
        isinstance(cat["n_items"], bool)
        or not isinstance(cat["n_items"], int)
        or cat["n_items"] < 0
    ):
        raise _fail(where, "catalogue.n_items", "an integer >= 0", cat["n_items"])
    if not isinstance(m.metrics, dict):
        raise _fail(where, "metrics", "an object", m.metrics)
    _validate_variants(m, where)
    _validate_inputs(m, where)


def _inside_name(value: object) -> bool:
    """A non-empty relative path that cannot leave the export folder (no ``..``, not absolute)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    path = Path(value)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in value


def _validate_variants(m: Manifest, where: str) -> None:
    var = m.variants
    if not isinstance(var, dict) or set(var) != {"adapter", "merged", "quantized"}:
        raise _fail(where, "variants", "an object with keys adapter, merged, quantized", var)
    for key in ("adapter", "merged"):
        if var[key] is not None and not _inside_name(var[key]):
            raise _fail(where, f"variants.{key}", "a folder name inside the export or null", var[key])
    quant = var["quantized"]
    if not isinstance(quant, dict) or any(
        k not in QUANTIZED or not _inside_name(v) for k, v in quant.items()
    ):
        raise _fail(
            where,
            "variants.quantized",
            f"an object mapping {list(QUANTIZED)} to folder names",
            quant,
        )
    if var["adapter"] is None and m.method != "full":
        raise _fail(
            where, "variants.adapter", f"a folder (method {m.method!r} needs its adapter)", None
        )
    if not m.variant_folders:
        raise _fail(where, "variants", "at least one variant folder", var)


def _validate_inputs(m: Manifest, where: str) -> None:
    inputs = m.inputs
    if not isinstance(inputs, dict):
        raise _fail(where, "inputs", f"an object mapping some of {list(INPUTS)} to files", inputs)
    if m.version == 1 and inputs:
        raise _fail(where, "inputs", "absent in a version 1 manifest (version 2 lists inputs)", inputs)
    for key, entry in inputs.items():
        if key not in INPUTS:
            raise _fail(where, "inputs", f"an object with keys among {list(INPUTS)}", inputs)
        if not isinstance(entry, dict) or set(entry) != {"file", "sha256"}:
            raise _fail(where, f"inputs.{key}", "an object with keys file, sha256", entry)
        if not _inside_name(entry["file"]):
            raise _fail(where, f"inputs.{key}.file", "a file name inside the export (no '..', not absolute)",
                        entry["file"])
        if not isinstance(entry["sha256"], str) or len(entry["sha256"]) != 64:
            raise _fail(where, f"inputs.{key}.sha256", "a 64-character hex sha256", entry["sha256"])


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``manifest.json``.

    Args:
        path: The manifest file or the export folder holding it.

    Raises:
        ManifestError: Missing file, not JSON, or a missing / wrong key (named in the message).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: not found (is {str(path.parent)!r} a petrec export folder?)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte offset {exc.start}); expected the export's "
                            "JSON manifest") from None
    return Manifest.from_json(text, where=str(path))


def verify_export(export_dir: str | os.PathLike[str]) -> Manifest:
    """Read the manifest, check every listed variant folder exists, re-hash the catalogue and inputs.

    Raises:
        ManifestError: A manifest problem, a missing variant folder, catalogue or input file, or a
            catalogue / input file whose sha256 differs from the manifest's (expected vs found).
    """
    folder = Path(export_dir)
    manifest = read_manifest(folder)
    where = str(folder / MANIFEST_FILE)
    # The names were checked lexically on read; a link inside the folder can still lead out.
    root = folder.resolve()
    entries = {f"variant {v!r}": sub for v, sub in manifest.variant_folders.items()}
    entries["catalogue.file"] = manifest.catalogue["file"]
    entries.update({f"inputs.{k}.file": v["file"] for k, v in manifest.inputs.items()})
    for what, sub in entries.items():
        if not (folder / sub).resolve().is_relative_to(root):
            raise ManifestError(f"{where}: {what} {sub!r} resolves outside the export folder {folder}")
    for variant, sub in manifest.variant_folders.items():
        if not (folder / sub).is_dir():
            raise ManifestError(
                f"{where}: variant {variant!r} lists folder {sub!r}, which is missing in {folder}"
            )
    files = {"catalogue": manifest.catalogue, **{f"inputs.{k}": v for k, v in manifest.inputs.items()}}
    for key, entry in files.items():
        path = folder / entry["file"]
        if not path.is_file():
            raise ManifestError(f"{where}: {key}.file {entry['file']!r} is missing in {folder}")
        found = file_sha256(path)
        if found != entry["sha256"]:
            raise ManifestError(
                f"{where}: {key}.sha256 mismatch for {path}: expected {entry['sha256']}, found "
                f"{found} (the file changed since export)"
            )
    return manifest
