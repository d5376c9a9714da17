"""Exports of behaviour-prior and collaborative-token runs: the files they need, every variant, the
same scores as the run, and one clear error for a missing or damaged file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from petrec.data import prepare
from petrec.data.features import STATS_FILE
from petrec.deploy.export import export_run, item_names, load_export, read_catalogue, score_requests
from petrec.deploy.manifest import (
    COLLAB_WEIGHTS_FILE,
    PRIOR_FILE,
    ExportError,
    ManifestError,
    verify_export,
)
from petrec.models.collab import COLLAB_FILE
from petrec.runs import load_run, score_examples

#: (run fixture, manifest ``inputs`` key, file, weights file of a merged / quantized variant)
KINDS = {
    "prior": ("prior_run", "behaviour_stats", STATS_FILE, PRIOR_FILE),
    "collab": ("collab_run", "collab_tokens", COLLAB_FILE, COLLAB_WEIGHTS_FILE),
}
#: Scores of the run vs the export. Not exact: rows are padded in other batches than
#: ``score_examples``' (see tests/recipes/test_collab_tokens.py on this tiny model's float32 ties).
ATOL = 1e-5


@pytest.fixture(scope="module", params=sorted(KINDS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """``(kind, run folder, export folder)``: each kind exported with every variant."""
    kind = request.param
    run_dir = request.getfixturevalue(KINDS[kind][0])
    out = tmp_path_factory.mktemp(f"export-{kind}") / kind
    export_run(run_dir, out, merged=True, quantize=["int8", "nf4"], notice=None)
    return kind, run_dir, out


def _test_rows(run_dir: Path) -> tuple[list[dict], np.ndarray]:
    """48 test examples as request rows, and the run's own scores of them."""
    run = load_run(run_dir)
    data = prepare(run.data)
    examples = data.splits["test"].select(range(48))
    return examples.to_list(), score_examples(run, examples, items=data.items)


def test_the_export_lists_and_carries_the_file_for_every_variant(exported: tuple[str, Path, Path]) -> None:
    kind, run_dir, out = exported
    _, key, file, weights = KINDS[kind]
    manifest = verify_export(out)
    assert manifest.version == 2
    assert manifest.inputs == {key: {"file": file, "sha256": hashlib.sha256((out / file).read_bytes()).hexdigest()}}
    assert (out / file).read_bytes() == (run_dir / file).read_bytes()
    assert sorted(manifest.variant_folders) == ["adapter", "int8", "merged", "nf4"]
    for sub in ("merged", "quantized-int8", "quantized-nf4"):
        assert (out / sub / weights).is_file(), sub
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no work folder left


def test_every_variant_scores_like_the_run(exported: tuple[str, Path, Path]) -> None:
    kind, run_dir, out = exported
    rows, want = _test_rows(run_dir)
    names = item_names(read_catalogue(out))
    assert np.ptp(want) > 1e-5  # the rows differ: a lost input would show
    for variant, atol in (("adapter", ATOL), ("merged", ATOL), ("int8", 0.05), ("nf4", 0.05)):
        run = load_export(out, variant)
        assert (run.stats is not None) == (kind == "prior") and (run.collab is not None) == (kind == "collab")
        got = score_requests(run, rows, names)
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=variant)
        again = score_examples(run, prepare(run.data).splits["test"].select(range(48)), items=read_catalogue(out))
        np.testing.assert_allclose(again, want, atol=atol, rtol=0, err_msg=f"{variant} via score_examples")


def test_scoring_reads_the_loaded_file(exported: tuple[str, Path, Path]) -> None:
    """score_requests computes the inputs from the run's stats / spec: other ones, other scores."""
    kind, run_dir, out = exported
    rows, _ = _test_rows(run_dir)
    run = load_export(out)
    names = item_names(read_catalogue(out))
    before = score_requests(run, rows, names)
    if kind == "prior":  # every candidate unseen in training: its item features change
        run.stats = dataclasses.replace(run.stats, items={})
    else:  # the same vocabulary size, other ID tokens for every item
        run.collab = dataclasses.replace(run.collab, items=run.collab.items[::-1])
    assert np.abs(score_requests(run, rows, names) - before).max() > 1e-6


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _rehash(export: Path, key: str) -> None:
    data = json.loads((export / "manifest.json").read_text())
    entry = data["inputs"][key]
    entry["sha256"] = hashlib.sha256((export / entry["file"]).read_bytes()).hexdigest()
    (export / "manifest.json").write_text(json.dumps(data))


def _unlist(export: Path, key: str) -> None:
    data = json.loads((export / "manifest.json").read_text())
    data["inputs"].pop(key)
    (export / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("variant", ["adapter", "merged"])
@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        ("missing", ManifestError, r"inputs\.{key}\.file '{file}' is missing"),
        ("changed", ManifestError, r"inputs\.{key}\.sha256 mismatch for .*{file}"),
        ("garbage-rehashed", ExportError, r"{file}: not readable JSON"),
        ("other-document-rehashed", ExportError, r"{file}: .*(not a petrec-behaviour-stats|expected a 'petrec-collab)"),
        ("unlisted", ExportError, r"{file}: the config's model\.\w+ needs this file, .* inputs\.{key}"),
    ],
)
def test_a_missing_or_damaged_file_is_one_clear_error(exported: tuple[str, Path, Path], tmp_path: Path,
                                                      variant: str, damage: str, error: type, match: str) -> None:
    kind, _, out = exported
    _, key, file, _ = KINDS[kind]
    export = _copy(out, tmp_path)
    path = export / file
    if damage == "missing":
        path.unlink()
    elif damage == "changed":
        path.write_bytes(path.read_bytes()[:-20])
    elif damage == "garbage-rehashed":
        path.write_bytes(b"{cut")
        _rehash(export, key)
    elif damage == "other-document-rehashed":
        path.write_text(json.dumps({"format": "something-else"}))
        _rehash(export, key)
    else:
        _unlist(export, key)
    with pytest.raises(error, match=match.format(key=key, file=re.escape(file))) as info:
        load_export(export, variant)
    assert "\n" not in str(info.value)


def test_a_merged_variant_without_its_prior_or_collab_weights_is_refused(exported: tuple[str, Path, Path],
                                                                         tmp_path: Path) -> None:
    kind, _, out = exported
    weights = KINDS[kind][3]
    export = _copy(out, tmp_path)
    (export / "merged" / weights).unlink()
    with pytest.raises(ExportError, match=rf"merged: {re.escape(weights)} is missing"):
        load_export(export, "merged")
