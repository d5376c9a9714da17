"""Export a trained run for serving: manifest, catalogue, adapter, merged and quantized copies.

``petrec.deploy.manifest`` is the contract the server reads (light imports only);
``petrec.deploy.export`` writes export folders (:func:`export_run`) and
``petrec.deploy.load`` reads them back (:func:`load_export`, :func:`score_requests`).
"""

from __future__ import annotations

from petrec.deploy.manifest import (
    ExportError,
    Manifest,
    ManifestError,
    base_fingerprint,
    file_sha256,
    read_manifest,
    verify_export,
)

__all__ = [
    "ExportError",
    "Manifest",
    "ManifestError",
    "base_fingerprint",
    "export_run",
    "file_sha256",
    "item_names",
    "load_export",
    "read_catalogue",
    "read_manifest",
    "score_requests",
    "verify_export",
]

_LAZY = {"export_run": "export", "item_names": "load", "load_export": "load",
         "read_catalogue": "load", "score_requests": "load"}


def __getattr__(name: str):  # lazy: export / load pull in torch / transformers / petrec.data
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"petrec.deploy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'petrec.deploy' has no attribute {name!r}")
