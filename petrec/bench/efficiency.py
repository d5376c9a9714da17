"""E1 efficiency measurement of one method on one model shape (one run = one process).

``python -m petrec.bench.efficiency --method lora --shape bert-large --batch_size 4 --seq_len 64``
builds the model (MiniLM with its real weights, or a BERT-base / BERT-large *shape* with
random weights), attaches the method with :func:`petrec.attach`, trains ``steps`` AdamW
steps (fp32 optimizer states) on random tokens and random click labels, times inference,
and writes ``output_dir/metrics.json`` in the recipe's format (no task metric: random
tokens measure memory and speed only).

Memory, measured like for like for every method:

* CPU: RSS before the model is built (interpreter + libraries), then — after building,
  quantizing and releasing freed memory to the OS — the peak RSS during training
  (``VmHWM`` reset through ``/proc/self/clear_refs``). ``train_rss_delta_mb`` is the
  difference: weights, gradients, optimizer states and activations.
* CUDA: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` over training,
  peaks reset after the model is on the device.

Written here rather than through the finetune recipe because E1 needs model shapes
with random weights and a fixed, data-independent batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from petrec.bench.system import dir_bytes, reset_peak_rss, rss_mb
from petrec.files import write_json_atomic

#: BERT shapes with random weights (transformers ``BertConfig`` fields).
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096},
    # ~1.2B parameters: a "larger shape" for the GPU suite (not a published checkpoint).
    "bert-1b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "intermediate_size": 8192},
}
#: Decoder shapes with random weights (transformers ``LlamaConfig`` fields): a 1B-class decoder
#: (Llama-3.2-1B's layout, SmolLM2's vocabulary), for memory and speed on a GPU.
DECODER_SHAPES: dict[str, dict[str, int]] = {
    "llama-1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 8192, "vocab_size": 49152},
}
Shape = Literal["minilm", "smollm2", "tiny", "bert-base", "bert-large", "bert-1b", "llama-1b"]


@dataclass
class EfficiencyConfig:
    """One E1 measurement."""

    method: str = "lora"
    """PEFT method name (``petrec.METHODS``)."""
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the method (``r``, ``alpha`` …)."""
    shape: Shape = "minilm"
    """minilm = all-MiniLM-L6-v2, smollm2 = SmolLM2-135M-Instruct (both real weights);
    llama-1b = a decoder shape, the others BERT shapes, with random weights."""
    batch_size: int = 8
    """Examples per step (training and inference)."""
    seq_len: int = 128
    """Tokens per example (no padding: every token is real)."""
    steps: int = 5
    """Timed training steps."""
    warmup_steps: int = 1
    """Untimed training steps first (allocator warm-up, lazy optimizer states)."""
    infer_steps: int = 5
    """Timed inference batches."""
    lr: float = 1e-4
    """AdamW learning rate (fp32 states for every method)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """bf16 autocast for forward/backward (weights and optimizer states stay fp32)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass."""
    num_threads: int | None = None
    """torch intra-op threads; None = torch's default."""
    seed: int = 1
    """Seed of the random weights, tokens and labels."""
    output_dir: str = "outputs/efficiency"
    """Where metrics.json (and, with keep_adapter, the adapter) go."""
    keep_adapter: bool = False
    """Keep the saved adapter; by default it is measured and deleted (full = a whole model)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "steps", "infer_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be ≥ 0, got {self.warmup_steps}")
        if self.seq_len > 512 and self.shape not in ("smollm2", *DECODER_SHAPES):
            raise ValueError(f"seq_len must be ≤ 512 (BERT position embeddings), got {self.seq_len}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc), so RSS reflects live tensors only."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _fixed_mmap_threshold() -> None:
    """Make glibc serve every allocation ≥ 64 KiB with mmap (returned to the OS on free).

    glibc otherwise raises its mmap threshold after large frees and keeps later blocks on the
    heap, which would charge a quantized model for the fp32 weights it was built from.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD


def build(cfg: EfficiencyConfig) -> tuple[Any, list[str]]:
    """The classification model of ``cfg.shape`` (one logit) and its labels for the report."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    from petrec.paths import minilm_path, resolve_model

    torch.manual_seed(cfg.seed)
    if cfg.shape == "minilm":
        model = BertForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=1)
        labels = ["all-MiniLM-L6-v2 real weights; random tokens (memory and speed only)"]
    elif cfg.shape == "smollm2":
        # The decoder scores from its last token; no padding in these batches, but the class
        # reads pad_token_id to find the last one.
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model("smollm2-135m"), num_labels=1)
        model.config.pad_token_id = model.config.eos_token_id
        labels = ["SmolLM2-135M-Instruct real weights; random tokens (memory and speed only)"]
    elif cfg.shape in DECODER_SHAPES:
        config = LlamaConfig(**DECODER_SHAPES[cfg.shape], num_labels=1, max_position_embeddings=4096,
                             pad_token_id=0, tie_word_embeddings=True)
        model = LlamaForSequenceClassification(config)
        labels = [f"{cfg.shape} decoder shape with RANDOM weights: memory and speed only"]
    else:
        config = BertConfig(**SHAPES[cfg.shape], num_labels=1, max_position_embeddings=512)
        model = BertForSequenceClassification(config)
        labels = [f"{cfg.shape} shape with RANDOM weights: memory and speed only"]
    if cfg.gradient_checkpointing:
        from petrec.models.build import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    return model, labels


def measure(cfg: EfficiencyConfig) -> dict[str, Any]:
    """Build, attach, train and time one configuration; return the metrics.json dict."""
    _fixed_mmap_threshold()
    import torch
    import transformers  # noqa: F401  (imported before the baseline RSS so it is not charged to the model)

    import petrec
    import petrec.methods  # peft and bitsandbytes, before the baseline RSS

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but CUDA is not available")
    device = torch.device("cuda" if cuda else "cpu")
    base_rss = rss_mb().get("rss_mb", math.nan)

    model, labels = build(cfg)
    petrec.attach(model, cfg.method, **cfg.method_kwargs)
    report = petrec.trainable_report(model)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError(f"method {cfg.method!r} left no trainable parameter")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)  # fp32 states (params are fp32)
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = model.config.vocab_size
    ids = torch.randint(1000, vocab, (cfg.batch_size, cfg.seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    target = torch.randint(0, 2, (cfg.batch_size,), generator=gen).float().to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    _release_freed_memory()
    build_rss = rss_mb().get("rss_mb", math.nan)
    reset_ok = reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    weights_cuda = torch.cuda.memory_allocated() / 2**20 if cuda else None

    model.train()
    losses = []
    tick = 0.0
    for step in range(cfg.warmup_steps + cfg.steps):
        if step == cfg.warmup_steps:
            sync()
            tick = time.perf_counter()
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        loss = loss_fn(logits.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    sync()
    train_s = time.perf_counter() - tick
    peak = {}
    if cuda:
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        peak["cuda_weights_mb"] = weights_cuda
    after = rss_mb()
    peak["cpu_base_rss_mb"] = base_rss
    peak["cpu_build_rss_mb"] = build_rss
    if reset_ok:
        peak["train_peak_rss_mb"] = after.get("peak_rss_mb", math.nan)
        peak["train_rss_delta_mb"] = after.get("peak_rss_mb", math.nan) - base_rss
    peak["cpu_peak_rss_mb"] = after.get("peak_rss_mb", math.nan)

    model.eval()
    with torch.no_grad(), autocast:
        model(input_ids=ids, attention_mask=mask)
        sync()
        t0 = time.perf_counter()
        for _ in range(cfg.infer_steps):
            model(input_ids=ids, attention_mask=mask)
        sync()
    infer_s = time.perf_counter() - t0

    out = Path(cfg.output_dir)
    adapter_dir = petrec.save_adapter(model, out / "adapter")
    adapter_bytes = dir_bytes(Path(adapter_dir))
    if not cfg.keep_adapter:
        shutil.rmtree(adapter_dir, ignore_errors=True)
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite training loss: {losses}")
    return {
        "valid": {}, "valid_best": {}, "test": {},
        "trainable_params": report.trainable, "total_params": report.total,
        "trainable_percent": report.percent, "weight_bytes": report.weight_bytes,
        "peak_memory": peak,
        "train_samples_per_s": cfg.batch_size * cfg.steps / train_s,
        "inference_samples_per_s": cfg.batch_size * cfg.infer_steps / infer_s,
        "steps": cfg.warmup_steps + cfg.steps, "stopped_early": False, "wall_seconds": train_s,
        "num_processes": 1, "adapter_bytes": adapter_bytes, "losses": losses, "labels": labels,
        "device": str(device) if not cuda else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--config FILE`` and/or dotted overrides; writes metrics.json."""
    import argparse

    from petrec.config import ConfigError, load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of EfficiencyConfig fields")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(EfficiencyConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    metrics = measure(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics, default=float)
    keys = ("trainable_params", "train_samples_per_s", "inference_samples_per_s")
    print(json.dumps({k: metrics[k] for k in keys} | {"peak_memory": metrics["peak_memory"]}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
