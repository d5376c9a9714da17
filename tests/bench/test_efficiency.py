"""E1 entry point: exact parameter counts, memory keys, adapter measured then deleted, bad config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from petrec.bench.efficiency import EfficiencyConfig, build, main, measure


@pytest.mark.parametrize("method", ["full", "lora"])
def test_measure_tiny_shape(method: str, tmp_path: Path) -> None:
    import petrec

    cfg = EfficiencyConfig(method=method, shape="tiny", batch_size=2, seq_len=8, steps=2, infer_steps=1,
                           device="cpu", output_dir=str(tmp_path), method_kwargs={"r": 4} if method == "lora" else {})
    out = measure(cfg)
    model, labels = build(cfg)
    expected_total = sum(p.numel() for p in model.parameters())
    petrec.attach(model, method, **cfg.method_kwargs)
    expected_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert out["trainable_params"] == expected_trainable
    if method == "full":
        assert out["trainable_params"] == expected_total
    else:
        assert 0 < out["trainable_params"] < expected_total / 10
    assert labels == ["tiny shape with RANDOM weights: memory and speed only"] == out["labels"]
    assert len(out["losses"]) == 3 and out["steps"] == 3
    assert out["train_samples_per_s"] > 0 and out["inference_samples_per_s"] > 0
    peak = out["peak_memory"]
    assert peak["train_peak_rss_mb"] >= peak["cpu_build_rss_mb"] * 0.5 > 0
    assert peak["train_rss_delta_mb"] == pytest.approx(peak["train_peak_rss_mb"] - peak["cpu_base_rss_mb"])
    assert out["adapter_bytes"] > 4 * expected_trainable * 0.9  # fp32 tensors of what trained
    assert not (tmp_path / "adapter").exists()  # measured, then deleted (keep_adapter=False)


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt"])
def test_measure_with_activation_checkpointing(method: str, tmp_path: Path) -> None:
    """The efficiency suites' ``gradient_checkpointing: true`` variants: the model recomputes its
    layers, and every method trains through it (prefix tuning failed the recomputation before)."""
    cfg = EfficiencyConfig(method=method, shape="tiny", batch_size=2, seq_len=8, steps=2, infer_steps=1,
                           device="cpu", output_dir=str(tmp_path), gradient_checkpointing=True)
    model, _ = build(cfg)
    assert model.is_activation_checkpointing and not model.config.use_cache
    out = measure(cfg)
    assert len(out["losses"]) == 3 and all(math.isfinite(v) for v in out["losses"])


def test_main_writes_metrics_and_rejects_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--shape", "tiny", "--method", "head", "--steps", "1", "--batch_size", "2", "--seq_len", "8",
               "--infer_steps", "1", "--device", "cpu", "--output_dir", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["test"] == {} and data["trainable_params"] == 33  # tiny head: 32 weights + 1 bias
    assert main(["--shape", "huge"]) == 2
    assert "shape" in capsys.readouterr().err


def test_decoder_shapes_take_long_prompts_and_the_1b_shape_is_1b_class() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from petrec.bench.efficiency import DECODER_SHAPES, EfficiencyConfig

    assert EfficiencyConfig(shape="smollm2", seq_len=1024).seq_len == 1024
    assert EfficiencyConfig(shape="llama-1b", seq_len=1024).seq_len == 1024
    with pytest.raises(ValueError, match="BERT position embeddings"):
        EfficiencyConfig(shape="bert-base", seq_len=1024)
    with torch.device("meta"):  # counted without allocating 5 GB
        model = LlamaForSequenceClassification(LlamaConfig(**DECODER_SHAPES["llama-1b"], num_labels=1,
                                                           tie_word_embeddings=True))
    assert 1.0e9 < sum(p.numel() for p in model.parameters()) < 1.4e9
