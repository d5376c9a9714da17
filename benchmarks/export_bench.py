"""Benchmark the variants of a serving export: size, load time, latency, throughput, test AUC.

Exports a trained ctr/rating run (``petrec.deploy.export_run`` with merged + int8 + nf4), then,
one variant at a time, in one torch thread:

  size       bytes on disk of what the variant loads (the base model's weights + config for
             ``base`` and ``adapter``; the variant folder otherwise, tokenizer included)
  load       seconds to a ready model, median of ``--load-repeats`` fresh loads (page cache warm;
             ``load_export`` verifies the manifest and re-hashes the catalogue each time)
  batch 1    p50 / p99 latency of one forward pass per request over ``--requests`` test examples
             (pre-tokenized, no padding: model time only), and the samples/s that gives
  batch N    samples/s over the whole test split in batches of ``--batch-size`` (padded per batch)
  test AUC   of the batch-N scores against the test labels (ctr) / RMSE (rating)

Variants: ``base`` = the pretrained backbone with a freshly initialised head (seed 0) and no
adapter (what serving without the export would give), ``adapter`` = base + adapter (unmerged),
``merged``, ``int8`` and ``nf4`` (bitsandbytes layers; see ``petrec.deploy.export``).

Usage:
    python benchmarks/export_bench.py --run /tmp/exp_run --export /tmp/exp_export \
        [--out benchmarks/results/serve/export.json]

Runs on CUDA when available (device = cuda), else CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petrec.collate import BehaviourCollator
from petrec.data import prepare, tokenize_examples
from petrec.deploy.export import export_run, load_export, read_catalogue
from petrec.files import write_json_atomic
from petrec.models import BehaviourModel, load_tokenizer
from petrec.models.build import load_backbone
from petrec.paths import resolve_model
from petrec.runs import TrainedRun, read_run_config

VARIANTS = ("base", "adapter", "merged", "int8", "nf4")


def machine() -> dict[str, Any]:
    """CPU model, core count, GPU, library versions."""
    cpu = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    import bitsandbytes
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def folder_bytes(path: Path, patterns: tuple[str, ...] = ("*",)) -> int:
    """Total size of the files under ``path`` matching any pattern."""
    files = {p for pat in patterns for p in path.rglob(pat) if p.is_file()}
    return sum(p.stat().st_size for p in files)


def load_base(export: Path) -> TrainedRun:
    """The backbone the run started from + a fresh head (seed 0), no adapter."""
    cfg = read_run_config(export)
    torch.manual_seed(0)
    backbone, is_decoder = load_backbone(cfg.model)
    model = BehaviourModel(backbone, cfg.model, is_decoder=is_decoder).eval()
    return TrainedRun(export, cfg.data, cfg.model, model, load_tokenizer(cfg.model), cfg.max_length)


def load_variant(export: Path, variant: str, device: torch.device) -> TrainedRun:
    run = load_base(export) if variant == "base" else load_export(export, variant)
    run.model.to(device)
    return run


def variant_size(export: Path, variant: str, base_model: str) -> int:
    base = Path(resolve_model(base_model))
    base_bytes = folder_bytes(base, ("*.safetensors", "config.json"))
    if variant == "base":
        return base_bytes
    if variant == "adapter":
        return base_bytes + folder_bytes(export / "adapter")
    sub = "merged" if variant == "merged" else f"quantized-{variant}"
    return folder_bytes(export / sub)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def measure(
    run: TrainedRun,
    tokens: Any,
    labels: np.ndarray,
    device: torch.device,
    requests: int,
    batch_size: int,
) -> dict[str, float]:
    """Batch-1 latency over ``requests`` examples, batched throughput and test metric."""
    model = run.model
    ids = tokens["input_ids"]
    one = [torch.tensor([x], device=device) for x in ids[:requests]]
    for x in one[:5]:  # warm-up
        model(input_ids=x, attention_mask=torch.ones_like(x))
    lat = []
    for x in one:
        sync(device)
        t = time.perf_counter()
        model(input_ids=x, attention_mask=torch.ones_like(x))
        sync(device)
        lat.append(time.perf_counter() - t)
    collate = BehaviourCollator(
        run.model_cfg.task, run.tokenizer.pad_token_id, run.tokenizer.padding_side
    )
    label_col = "label" if run.model_cfg.task == "ctr" else "rating"
    batches = [
        collate([{"input_ids": x, label_col: 0} for x in ids[i : i + batch_size]])
        for i in range(0, len(ids), batch_size)
    ]
    batches = [
        {k: v.to(device) for k, v in b.items() if k in ("input_ids", "attention_mask")}
        for b in batches
    ]
    model(**batches[0])  # warm-up
    sync(device)
    t = time.perf_counter()
    logits = [model(**b).logits.reshape(-1).float() for b in batches]
    sync(device)
    elapsed = time.perf_counter() - t
    out = torch.cat(logits)
    lat_ms = np.array(lat) * 1e3
    result = {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "batch1_samples_per_s": float(len(lat) / sum(lat)),
        f"batch{batch_size}_samples_per_s": float(len(ids) / elapsed),
    }
    if run.model_cfg.task == "ctr":
        from sklearn.metrics import roc_auc_score

        result["test_auc"] = float(roc_auc_score(labels, torch.sigmoid(out).cpu().numpy()))
    else:
        result["test_rmse"] = float(np.sqrt(np.mean((out.cpu().numpy() - labels) ** 2)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", required=True, help="trained run folder (recipes/finetune.py output)"
    )
    parser.add_argument("--export", required=True, help="export folder to (re)write")
    parser.add_argument("--out", default="benchmarks/results/serve/export.json")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    export = Path(args.export)

    load_start = os.getloadavg()
    t = time.perf_counter()
    manifest = export_run(args.run, export, merged=True, quantize=["int8", "nf4"], force=True)
    export_s = time.perf_counter() - t
    print(f"exported in {export_s:.1f} s: {manifest.variant_folders}", flush=True)
    if manifest.task not in ("ctr", "rating"):
        print("export_bench measures ctr / rating models", file=sys.stderr)
        return 2

    ref = load_export(export, "merged")
    test = prepare(ref.data).splits["test"]
    tokens = tokenize_examples(
        test,
        ref.tokenizer,
        max_length=ref.max_length,
        items=read_catalogue(export),
        template=ref.data.template,
        task=ref.model_cfg.task,
    )
    labels = np.asarray(test["label" if ref.model_cfg.task == "ctr" else "rating"], dtype=float)
    tokens = {"input_ids": tokens["input_ids"]}
    del ref

    # Loads first (one variant at a time, fresh each time), then the timing passes in
    # ``--rounds`` round-robin rounds over the loaded variants: the machine is shared, so
    # interleaving spreads any outside load over all variants; each figure is the median.
    runs: dict[str, TrainedRun] = {}
    results: dict[str, Any] = {}
    for variant in args.variants:
        loads = []
        for _ in range(args.load_repeats):
            runs.pop(variant, None)
            gc.collect()
            t = time.perf_counter()
            runs[variant] = load_variant(export, variant, device)
            sync(device)
            loads.append(time.perf_counter() - t)
        results[variant] = {
            "size_mb": variant_size(export, variant, manifest.base_model) / 1e6,
            "load_s": statistics.median(loads),
            "load_s_all": loads,
        }
    rounds: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for variant in args.variants:
            rounds[variant].append(
                measure(runs[variant], tokens, labels, device, args.requests, args.batch_size)
            )
            print(f"round {r + 1} {variant}: {json.dumps(rounds[variant][-1])}", flush=True)
    for variant, rows in rounds.items():
        for key in rows[0]:
            results[variant][key] = statistics.median(row[key] for row in rows)
        print(
            variant,
            json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in results[variant].items()}
            ),
            flush=True,
        )

    report = {
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "device": str(device),
        "run": str(args.run),
        "run_metrics": manifest.metrics,
        "export_s": export_s,
        "test_examples": len(labels),
        "requests": args.requests,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "load_repeats": args.load_repeats,
        "loadavg_1_5_15min_start": load_start,
        "loadavg_1_5_15min_end": os.getloadavg(),
        "variants": results,
    }
    out = Path(args.out)
    write_json_atomic(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
