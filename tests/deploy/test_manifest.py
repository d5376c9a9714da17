"""The export manifest contract: round trip, validation errors, verify_export, fingerprints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from petrec.deploy.manifest import (
    Manifest,
    ManifestError,
    base_fingerprint,
    file_sha256,
    read_manifest,
    verify_export,
)


def _export(tmp_path: Path, **changes) -> tuple[Path, Manifest]:
    folder = tmp_path / "exp"
    (folder / "adapter").mkdir(parents=True)
    pd.DataFrame({"item_id": ["a", "b"], "text": ["A", "B"]}).to_parquet(folder / "items.parquet")
    fields = dict(
        name="run",
        method="lora",
        task="ctr",
        base_model="minilm",
        base_fingerprint="f" * 64,
        max_length=128,
        template="default",
        catalogue={
            "file": "items.parquet",
            "sha256": file_sha256(folder / "items.parquet"),
            "n_items": 2,
        },
        metrics={"test": {"auc": 0.6}},
        variants={"adapter": "adapter", "merged": None, "quantized": {}},
        petrec_version="0.1.0",
        created_utc="2026-01-01T00:00:00Z",
    )
    fields.update(changes)
    manifest = Manifest(**fields)
    (folder / "manifest.json").write_text(manifest.to_json())
    return folder, manifest


def _rewrite(folder: Path, edit) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_round_trip(tmp_path: Path) -> None:
    folder, manifest = _export(tmp_path)
    text = manifest.to_json()
    assert list(json.loads(text))[:2] == ["format", "version"]
    assert json.loads(text)["format"] == "petrec-export"
    assert Manifest.from_json(text) == manifest
    assert read_manifest(folder) == manifest
    assert read_manifest(folder / "manifest.json") == manifest
    assert verify_export(folder) == manifest
    assert manifest.variant_folders == {"adapter": "adapter"}


def test_frozen(tmp_path: Path) -> None:
    _, manifest = _export(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("key", ["task", "catalogue", "variants", "base_fingerprint"])
def test_missing_key(tmp_path: Path, key: str) -> None:
    folder, _ = _export(tmp_path)
    _rewrite(folder, lambda d: d.pop(key))
    with pytest.raises(ManifestError, match=rf"manifest\.json: key '{key}' is missing"):
        read_manifest(folder)


def test_wrong_version_and_format(tmp_path: Path) -> None:
    folder, _ = _export(tmp_path)
    _rewrite(folder, lambda d: d.update(version=3))
    with pytest.raises(ManifestError, match=r"manifest\.json: key 'version' is 3, expected 2 \(this petrec reads 1, 2"):
        read_manifest(folder)
    _rewrite(folder, lambda d: d.update(version=2, format="other"))
    with pytest.raises(ManifestError, match="key 'format'"):
        read_manifest(folder)


def test_a_version_1_manifest_without_inputs_is_still_read(tmp_path: Path) -> None:
    folder, manifest = _export(tmp_path)
    assert manifest.version == 2 and json.loads(manifest.to_json())["inputs"] == {}
    _rewrite(folder, lambda d: (d.update(version=1), d.pop("inputs")))
    old = verify_export(folder)
    assert old.version == 1 and old.inputs == {}
    assert "inputs" not in old.to_dict() and Manifest.from_json(old.to_json()) == old
    _rewrite(folder, lambda d: d.update(inputs={}))  # version 1 had no such key
    with pytest.raises(ManifestError, match="unknown key 'inputs'"):
        read_manifest(folder)
    _rewrite(folder, lambda d: (d.pop("inputs"), d.update(version=2)))  # version 2 needs it
    with pytest.raises(ManifestError, match="key 'inputs' is missing"):
        read_manifest(folder)


def test_inputs_are_listed_hashed_and_verified(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "behaviour_stats.json").write_text('{"format": "petrec-behaviour-stats"}')
    entry = {"file": "behaviour_stats.json", "sha256": file_sha256(folder / "behaviour_stats.json")}
    folder, manifest = _export(tmp_path, inputs={"behaviour_stats": entry})
    assert read_manifest(folder).inputs == {"behaviour_stats": entry}
    assert verify_export(folder) == manifest
    (folder / "behaviour_stats.json").write_text("{}")
    with pytest.raises(ManifestError, match=r"inputs\.behaviour_stats\.sha256 mismatch for .*behaviour_stats\.json: "
                                            f"expected {entry['sha256']}, found"):
        verify_export(folder)
    (folder / "behaviour_stats.json").unlink()
    with pytest.raises(ManifestError, match=r"inputs\.behaviour_stats\.file 'behaviour_stats\.json' is missing"):
        verify_export(folder)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(inputs=[]), "key 'inputs' is"),
        (lambda d: d.update(inputs={"weights": {"file": "w.json", "sha256": "f" * 64}}), "key 'inputs' is"),
        (lambda d: d.update(inputs={"collab_tokens": {"file": "c.json"}}), "key 'inputs.collab_tokens' is"),
        (lambda d: d.update(inputs={"collab_tokens": {"file": "c.json", "sha256": "x"}}),
         "key 'inputs.collab_tokens.sha256'"),
        (lambda d: d.update(version=1, inputs={"collab_tokens": {"file": "c.json", "sha256": "f" * 64}}),
         "unknown key 'inputs'"),
        (lambda d: d.update(task="ranking"), "key 'task' is 'ranking'; expected one of"),
        (lambda d: d.update(method="magic"), "key 'method'"),
        (lambda d: d.update(max_length=0), "key 'max_length'"),
        (lambda d: d["catalogue"].update(sha256="xyz"), "key 'catalogue.sha256'"),
        (lambda d: d["variants"].update(quantized={"int4": "q"}), "key 'variants.quantized'"),
        (lambda d: d["variants"].update(adapter=None), "key 'variants.adapter'"),
        (lambda d: d.update(extra=1), "unknown key 'extra'"),
    ],
)
def test_bad_values(tmp_path: Path, edit, match: str) -> None:
    folder, _ = _export(tmp_path)
    _rewrite(folder, edit)
    with pytest.raises(ManifestError, match=match):
        read_manifest(folder)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    folder, _ = _export(tmp_path)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(folder)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nowhere")


def test_bad_catalogue_hash(tmp_path: Path) -> None:
    folder, manifest = _export(tmp_path)
    pd.DataFrame({"item_id": ["a"], "text": ["changed"]}).to_parquet(folder / "items.parquet")
    with pytest.raises(ManifestError, match=f"expected {manifest.catalogue['sha256']}, found"):
        verify_export(folder)


def test_missing_variant_folder(tmp_path: Path) -> None:
    folder, _ = _export(
        tmp_path,
        variants={
            "adapter": "adapter",
            "merged": "merged",
            "quantized": {"int8": "quantized-int8"},
        },
    )
    (folder / "merged").mkdir()
    with pytest.raises(
        ManifestError, match="variant 'int8' lists folder 'quantized-int8', which is missing"
    ):
        verify_export(folder)


def test_base_fingerprint(tiny_bert: Path, tmp_path: Path) -> None:
    fp = base_fingerprint(str(tiny_bert))
    assert len(fp) == 64 and fp == base_fingerprint(tiny_bert)
    assert fp != base_fingerprint("minilm")
    with pytest.raises(ManifestError, match="not a local folder"):
        base_fingerprint(str(tmp_path / "missing-model"))


@pytest.mark.parametrize(("key", "value"), [
    ("catalogue.file", "../outside.parquet"),
    ("catalogue.file", "/etc/passwd"),
    ("catalogue.file", "sub/../../x.parquet"),
    ("variants.adapter", "../other-export/adapter"),
    ("variants.merged", "/abs/merged"),
    ("variants.quantized", {"int8": "../q"}),
    ("inputs.behaviour_stats", {"file": "../behaviour_stats.json", "sha256": "f" * 64}),
    ("inputs.collab_tokens", {"file": "/etc/collab_tokens.json", "sha256": "f" * 64}),
])
def test_paths_that_leave_the_export_are_refused(tmp_path: Path, key: str, value: object) -> None:
    folder, _ = _export(tmp_path)
    outer, inner = key.split(".")
    _rewrite(folder, lambda d: d[outer].__setitem__(inner, value))
    with pytest.raises(ManifestError, match=key.replace(".", r"\.")):
        read_manifest(folder)
