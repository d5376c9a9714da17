"""``petrec export`` / ``export_run`` / ``load_export`` on tiny random-BERT runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import datasets
import numpy as np
import pytest

from petrec.cli import main as petrec_main
from petrec.data import DataValueError, prepare
from petrec.deploy.export import (
    ExportError,
    export_run,
    item_names,
    load_export,
    read_catalogue,
    score_requests,
)
from petrec.deploy.manifest import base_fingerprint, read_manifest, verify_export
from petrec.runs import load_run, score_examples
from tests.deploy.conftest import FAST, train_run


def _train(finetune: ModuleType, tiny_bert: Path, out: Path, method: str) -> Path:
    return train_run(finetune, tiny_bert, out, method)


@pytest.fixture(scope="session")
def lora_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "lora"
    export_run(lora_run, out, merged=True, quantize=["int8", "nf4"])
    return out


@pytest.fixture(scope="session")
def test_examples(lora_run: Path):
    run = load_run(lora_run)
    return prepare(run.data).splits["test"].select(range(48))


def test_export_layout_and_manifest(lora_run: Path, lora_export: Path, tiny_bert: Path) -> None:
    manifest = verify_export(lora_export)
    assert manifest.name == "run" and manifest.method == "lora" and manifest.task == "ctr"
    assert manifest.base_model == str(tiny_bert)
    assert manifest.base_fingerprint == base_fingerprint(str(tiny_bert))
    assert manifest.variants == {
        "adapter": "adapter",
        "merged": "merged",
        "quantized": {"int8": "quantized-int8", "nf4": "quantized-nf4"},
    }
    assert manifest.metrics["test"] == json.loads((lora_run / "metrics.json").read_text())["test"]
    items = read_catalogue(lora_export)
    assert (
        list(items.columns[:2]) == ["item_id", "text"]
        and len(items) == manifest.catalogue["n_items"]
    )
    assert items["text"].tolist() == items["title"].tolist()  # ctr prompts name items by title
    # peft-native: save_adapter already wrote peft's own files; nothing is duplicated.
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (lora_export / "adapter").iterdir()
    }
    assert not list(lora_export.rglob("*.bin")) and not list(lora_export.rglob("*.pt"))
    assert (lora_export / "merged" / "model.safetensors").is_file()
    assert not [p for p in lora_export.parent.iterdir() if p.name.startswith(".")]


def test_variants_score_like_the_run(lora_run: Path, lora_export: Path, test_examples) -> None:
    run = load_run(lora_run)
    items = read_catalogue(lora_export)
    want = score_examples(run, test_examples, items=prepare(run.data).items)
    for variant, atol in (("adapter", 1e-4), ("merged", 1e-4), ("int8", 0.05), ("nf4", 0.05)):
        got = score_examples(load_export(lora_export, variant), test_examples, items=items)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=atol, err_msg=variant)


def test_score_requests_matches_score_examples(lora_export: Path, test_examples) -> None:
    run = load_export(lora_export, "merged")
    items = read_catalogue(lora_export)
    want = score_examples(run, test_examples, items=items)
    rows = test_examples.select_columns(["history_item_ids", "history_labels", "item_id"]).to_list()
    names = item_names(items)
    np.testing.assert_allclose(score_requests(run, rows, names), want, atol=1e-5)
    # 40-item histories do not fit max_length: the oldest items are dropped, as score_examples does.
    ids = items["item_id"].tolist()
    long = [
        {"history_item_ids": ids[i : i + 40], "history_labels": [i % 2] * 40, "item_id": ids[i]}
        for i in range(4)
    ]
    want_long = score_examples(run, datasets.Dataset.from_list(long), items=items)
    np.testing.assert_allclose(score_requests(run, long, names), want_long, atol=1e-5)
    np.testing.assert_allclose(score_requests(run, rows[:1], names), want[:1], atol=1e-5)
    assert score_requests(run, [], names).shape == (0,)
    with pytest.raises(DataValueError, match="'nope'"):
        score_requests(run, [{"history_item_ids": ["nope"], "item_id": rows[0]["item_id"]}], names)
    with pytest.raises(ExportError, match="lacks 'item_id'"):
        score_requests(run, [{"history_item_ids": []}], names)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quantized_reload_is_exact(lora_export: Path, test_examples, kind: str) -> None:
    from petrec.methods.quantization import quantize_model

    items = read_catalogue(lora_export)
    fresh = load_export(lora_export, "merged")
    quantize_model(fresh.model.backbone, kind)  # what export did before saving
    want = score_examples(fresh, test_examples, items=items)
    got = score_examples(load_export(lora_export, kind), test_examples, items=items)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_unknown_or_absent_variant(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter-only"
    export_run(lora_run, out)
    assert read_manifest(out).variant_folders == {"adapter": "adapter"}
    with pytest.raises(ExportError, match=r"has no 'merged' variant; it has \['adapter'\]"):
        load_export(out, "merged")
    with pytest.raises(ExportError, match="variant: got 'fp8'"):
        load_export(out, "fp8")
    with pytest.raises(ExportError, match="quantize: got 'int4'"):
        export_run(lora_run, tmp_path / "x", quantize="int4")


def test_merging_refused_for_prefix(finetune: ModuleType, tiny_bert: Path, tmp_path: Path) -> None:
    run = _train(finetune, tiny_bert, tmp_path / "prefix-run", "prefix")
    for kwargs in ({"merged": True}, {"quantize": "int8"}):
        with pytest.raises(ExportError, match="method 'prefix' cannot be merged"):
            export_run(run, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    export_run(run, tmp_path / "out")
    assert verify_export(tmp_path / "out").method == "prefix"


def test_cli_exists_and_force(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert petrec_main(["export", str(lora_run), str(out), "--name", "demo"]) == 0
    assert "exported 'demo'" in capsys.readouterr().out
    assert petrec_main(["export", str(lora_run), str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert petrec_main(["export", str(lora_run), str(out), "--force", "--merged"]) == 0
    assert read_manifest(out).variants["merged"] == "merged" and read_manifest(out).name == "run"
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]
    assert petrec_main(["export", str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
    assert "is not a petrec run folder" in capsys.readouterr().err


def test_no_half_written_folder(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import petrec.deploy.export as export_mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "_write_merged", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(lora_run, tmp_path / "out", merged=True)
    assert list(tmp_path.iterdir()) == []
    # With --force, a failed export leaves the previous one untouched.
    monkeypatch.undo()
    first = export_run(lora_run, tmp_path / "out")
    monkeypatch.setattr(export_mod, "_write_merged", boom)
    with pytest.raises(RuntimeError):
        export_run(lora_run, tmp_path / "out", merged=True, force=True)
    assert read_manifest(tmp_path / "out") == first and [p.name for p in tmp_path.iterdir()] == [
        "out"
    ]


@pytest.mark.parametrize("method", ["qlora", "ia3", "bitfit", "adapter"])
def test_other_methods(
    finetune: ModuleType, tiny_bert: Path, tmp_path: Path, test_examples, method: str
) -> None:
    run_dir = _train(finetune, tiny_bert, tmp_path / "run", method)
    mergeable = method != "adapter"
    export_run(run_dir, tmp_path / "out", merged=mergeable)
    run = load_run(run_dir)
    items = read_catalogue(tmp_path / "out")
    want = score_examples(run, test_examples, items=items)
    for variant in ("adapter", "merged") if mergeable else ("adapter",):
        got = score_examples(load_export(tmp_path / "out", variant), test_examples, items=items)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=variant)


def test_an_answer_scoring_decoder_exports_and_serves_as_trained(
    finetune: ModuleType, tiny_llama_lm: Path, tmp_path: Path
) -> None:
    """A LoRA run with answer-token scoring: the export (adapter and merged) and the serving path
    wrap prompts in the same frame and score what the run scores."""
    run_dir = tmp_path / "run"
    finetune.main(["--model.backbone", str(tiny_llama_lm), "--model.scoring", "answer", "--model.method", "lora",
                   "--train.output_dir", str(run_dir), *FAST])
    export_run(run_dir, tmp_path / "out", merged=True)
    run = load_run(run_dir)
    items = read_catalogue(tmp_path / "out")
    examples = prepare(run.data).splits["test"].select(range(24))
    want = score_examples(run, examples, items=items)
    for variant in ("adapter", "merged"):
        exported = load_export(tmp_path / "out", variant)
        got = score_examples(exported, examples, items=items)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=variant)
    rows = examples.select_columns(["history_item_ids", "history_labels", "item_id"]).to_list()
    np.testing.assert_allclose(score_requests(exported, rows, item_names(items)), want, atol=1e-4)
