"""Continual fine-tuning: ``init_adapter`` warm-starts the recipe from an earlier run's adapter.

Tiny random BERT + LoRA on the synthetic world; run A trains a few steps, later runs start from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from safetensors.torch import load_file

from petrec.cli import main as petrec_main
from petrec.config import ConfigError, read_yaml

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256",
        "--data.max_train_examples", "64", "--train.mixed_precision", "no"]


def _run(finetune: ModuleType, tiny_bert: Path, out: Path, *extra: str) -> dict:
    return finetune.main(["--model.backbone", str(tiny_bert), "--train.output_dir", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def run_a(finetune: ModuleType, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An earlier LoRA run: 4 steps, adapter saved in RUN_A/adapter."""
    out = tmp_path_factory.mktemp("continual") / "run_a"
    _run(finetune, tiny_bert, out, "--train.max_steps", "4", "--train.epochs", "1")
    return out


def _no_model(*args: object, **kwargs: object) -> None:
    raise AssertionError("a model was loaded before init_adapter was checked")


@pytest.mark.parametrize("given", ["run", "adapter"])
def test_zero_epochs_from_an_earlier_adapter_scores_what_that_run_scored(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path, given: str
) -> None:
    before = json.loads((run_a / "metrics.json").read_text())
    start = run_a if given == "run" else run_a / "adapter"
    out = tmp_path / "b"
    metrics = _run(finetune, tiny_bert, out, "--train.epochs", "0", "--init_adapter", str(start))
    assert metrics["steps"] == 0
    assert metrics["test"]["logloss"] == pytest.approx(before["test"]["logloss"], abs=1e-6)
    assert metrics["test"]["auc"] == pytest.approx(before["test"]["auc"], abs=1e-6)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["init_adapter"] == str((run_a / "adapter").resolve())
    assert before["init_adapter"] is None  # a run from fresh weights says so
    assert read_yaml(out / "config.yaml")["init_adapter"] == str(start)
    # The adapter it saves is the one it started from.
    a, b = load_file(run_a / "adapter" / "adapter_model.safetensors"), load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_warm_start_then_two_steps_differs_from_two_steps_from_scratch(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path
) -> None:
    steps = ["--train.max_steps", "2", "--train.epochs", "1"]
    warm = _run(finetune, tiny_bert, tmp_path / "warm", *steps, "--init_adapter", str(run_a))
    cold = _run(finetune, tiny_bert, tmp_path / "cold", *steps)
    assert warm["steps"] == cold["steps"] == 2
    assert warm["test"]["logloss"] != pytest.approx(cold["test"]["logloss"], abs=1e-6)
    w = load_file(tmp_path / "warm" / "adapter" / "adapter_model.safetensors")
    c = load_file(tmp_path / "cold" / "adapter" / "adapter_model.safetensors")
    assert any(not w[k].equal(c[k]) for k in w)


def test_another_method_is_refused_in_one_line_naming_the_file(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--model.backbone", str(tiny_bert), "--model.method", "ia3", "--init_adapter", str(run_a),
            "--train.output_dir", str(tmp_path / "b"), *FAST]
    monkeypatch.setattr(finetune, "build_model", _no_model)
    monkeypatch.setattr(finetune, "load_tokenizer", _no_model)
    with pytest.raises(ConfigError) as info:
        finetune.main(args)
    message = str(info.value)
    assert "\n" not in message
    assert str(run_a / "adapter" / "petrec_adapter.json") in message
    assert "adapter method is 'lora'" in message and "'ia3'" in message
    # The command line prints it as one line (exit 2), no traceback.
    assert petrec_main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("petrec train: ConfigError: init_adapter: ") and "\n" not in err
    assert not (tmp_path / "b" / "metrics.json").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "own_output_dir"])
def test_a_folder_without_an_earlier_adapter_is_refused_before_any_model_loads(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(finetune, "build_model", _no_model)
    monkeypatch.setattr(finetune, "load_tokenizer", _no_model)
    folder, out = tmp_path / "nowhere", tmp_path / "b"
    expected = r"does not exist; expected a run folder \(with adapter/\) or a saved adapter folder"
    if case == "empty":
        folder.mkdir()
        expected = r"holds no adapter \(neither adapter/ nor petrec_adapter\.json\)"
    elif case == "own_output_dir":
        folder = out = run_a
        expected = r"is this run's own train\.output_dir"
    config_before = (run_a / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=expected) as info:
        _run(finetune, tiny_bert, out, "--init_adapter", str(folder))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"init_adapter: '{folder}'")
    assert (run_a / "config.yaml").read_bytes() == config_before  # the earlier run is untouched


def test_other_method_options_are_refused_naming_the_file(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"petrec_adapter\.json: lora options differ \(r: saved 8 vs model 4") as info:
        _run(finetune, tiny_bert, tmp_path / "b", "--model.method_kwargs", "{r: 4}", "--init_adapter", str(run_a))
    assert "\n" not in str(info.value)


def test_another_task_or_backbone_is_refused(
    finetune: ModuleType, tiny_bert: Path, run_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finetune, "build_model", _no_model)
    monkeypatch.setattr(finetune, "load_tokenizer", _no_model)
    copy = tmp_path / "a"
    (copy / "adapter").mkdir(parents=True)
    for f in (run_a / "adapter").iterdir():
        (copy / "adapter" / f.name).write_bytes(f.read_bytes())
    config = (run_a / "config.yaml").read_text()
    (copy / "config.yaml").write_text(config.replace("task: ctr", "task: rating"))
    with pytest.raises(ConfigError, match=r"config\.yaml: the adapter was trained for model\.task 'rating', "
                                          r"expected this run's 'ctr'"):
        _run(finetune, tiny_bert, tmp_path / "b", "--init_adapter", str(copy))
    (copy / "config.yaml").write_text(config.replace(str(tiny_bert), str(tmp_path / "other-bert")))
    with pytest.raises(ConfigError, match=r"config\.yaml: the adapter was trained on model\.backbone '.*other-bert'"):
        _run(finetune, tiny_bert, tmp_path / "b", "--init_adapter", str(copy))
