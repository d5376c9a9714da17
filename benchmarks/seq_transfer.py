"""PeterRec-style transfer: plug adapters into an existing (non-Hugging-Face) SASRec.

Yuan et al., "Parameter-Efficient Transfer from Sequential Behaviors for User Modeling and
Recommendation", SIGIR 2020 (https://arxiv.org/abs/2001.04253).

1. Pre-train SASRec (CE over all items) on the ML-1M users at even positions of the sorted
   user ids (P3 preprocessing: items with < 5 interactions dropped).
2. Adapt it to the users at odd positions, leave-one-out, full ranking, history excluded:
   ``scratch`` (new model, all weights), ``full`` (pre-trained, all weights), ``lora``
   (``petrec.attach(sasrec, "lora", targets=[q, k, v, out, ffn.0, ffn.3])``), ``adapter``
   (``petrec.attach(sasrec, "adapter", targets=[attn.out, ffn.3])``, Houlsby placement) and
   ``zero-shot`` (pre-trained, no target training). Every run uses petrec.train's loop.

::

    python benchmarks/seq_transfer.py --out benchmarks/results/seq-transfer --work /tmp/petrec_runs/transfer

Writes ``<method>.json`` per run and ``REPORT.md`` (metric, trainable %, time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import petrec
from petrec.files import write_json_atomic
from petrec.models.sequential.run import (
    SeqDataConfig,
    SeqModelConfig,
    SeqRunConfig,
    build_model,
    fit,
    load_sequences,
    save_weights,
)
from petrec.models.sequential.suite import machine
from petrec.train import TrainConfig

LORA_TARGETS = r"blocks\.\d+\.(attn\.(q|k|v|out)|ffn\.(0|3))"
ADAPTER_TARGETS = r"blocks\.\d+\.(attn\.out|ffn\.3)"


def run_config(args: argparse.Namespace, users: str, out: Path, epochs: int, lr: float) -> SeqRunConfig:
    """The shared model shape and evaluation; only users, epochs and learning rate vary."""
    model = SeqModelConfig(name="sasrec", hidden=args.hidden, max_len=args.max_len, blocks=2, heads=1, dropout=0.2,
                           init=args.init)
    train = TrainConfig(output_dir=str(out), epochs=epochs, batch_size=args.batch_size, eval_batch_size=256, lr=lr,
                        warmup_ratio=0.02, weight_decay=0.0, progress=False, trackers=[], log_every_steps=6,
                        eval_every_steps=args.eval_every)
    return SeqRunConfig(data=SeqDataConfig(dataset="ml-1m", users=users), model=model, train=train,
                        exclude_history=True, ks=[10, 50], threads=args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/seq-transfer")
    parser.add_argument("--work", default="/tmp/petrec_runs/transfer")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--target-epochs", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=190)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default="torch", choices=["torch", "normal"],
                        help="SASRec init; the committed table used torch (petrec's default before 2026-11-28)")
    parser.add_argument("--methods", default="zero-shot,scratch,full,lora,adapter")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(sys.argv)

    # 1. Pre-train on the even users (once; reused when the weights exist).
    pre_cfg = run_config(args, "even", work / "pretrain", args.pretrain_epochs, 0.001)
    source = load_sequences(pre_cfg.data)
    weights = work / "pretrain" / "model.safetensors"
    if not weights.is_file():
        torch.manual_seed(0)
        model = build_model(pre_cfg.model, source.n_users, source.n_items)
        metrics = fit(pre_cfg, model, source)
        save_weights(model, weights)
        metrics.update(name="pretrain-even-users", command=command, machine=machine(),
                       config=dataclasses.asdict(pre_cfg))
        write_json_atomic(out / "pretrain.json", metrics, default=float)

    # 2. Adapt to the odd users.
    target_cfg = run_config(args, "odd", work / "target", args.target_epochs, 0.002)
    target = load_sequences(target_cfg.data)
    assert not set(source.user_ids.tolist()) & set(target.user_ids.tolist())
    lrs = {"scratch": 0.001, "full": 0.0005, "lora": 0.003, "adapter": 0.003}
    for method in args.methods.split(","):
        torch.manual_seed(0)
        epochs = 1 if method == "zero-shot" else args.target_epochs
        cfg = run_config(args, "odd", work / method, epochs, lrs.get(method, 0.002))
        if method == "popularity":  # reference: training-prefix counts of the odd users
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="popularity"))
        model = build_model(cfg.model, target.n_users, target.n_items)
        if method not in ("scratch", "popularity"):
            model.load_state_dict(load_file(str(weights)))
        if method == "lora":
            petrec.attach(model, "lora", targets=LORA_TARGETS, r=8, alpha=16)
        elif method == "adapter":
            petrec.attach(model, "adapter", targets=ADAPTER_TARGETS, reduction_factor=4)
        if method == "zero-shot":
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=1, lr=1e-12))
        tick = time.perf_counter()
        metrics = fit(cfg, model, target)
        metrics.update(name=method, command=command, machine=machine(), method_seconds=time.perf_counter() - tick,
                       config=dataclasses.asdict(cfg))
        if method == "zero-shot":
            metrics["note"] = "pre-trained weights; one optimizer step at lr 1e-12 (no effective training)"
            metrics.update(trainable_params=0, trainable_percent=0.0)
        write_json_atomic(out / f"{method}.json", metrics, default=float)
        print(method, json.dumps(metrics["test"]), flush=True)
    write_report(out, command, args)


def write_report(out: Path, command: str, args: argparse.Namespace) -> None:
    """REPORT.md from the JSON files in ``out``."""
    rows = []
    for name in ("popularity", "zero-shot", "scratch", "full", "lora", "adapter"):
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        m: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        t = m["test"]
        rows.append(f"| {name} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} | {t['hr@50']:.4f} | {t['ndcg@50']:.4f} | "
                    f"{m['trainable_params']:,} | {m['trainable_percent']:.2f} | {m['train_seconds']:.0f} | "
                    f"{m['steps']} |")
    pre = json.loads((out / "pretrain.json").read_text(encoding="utf-8")) if (out / "pretrain.json").is_file() else {}
    text = "\n".join([
        "# Transfer: SASRec pre-trained on ML-1M even users, adapted to odd users",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()} (shared with other jobs; times are wall-clock under contention).",
        "",
        f"Model: SASRec, CE over all 3,416 items, hidden {args.hidden}, max_len {args.max_len}, 2 blocks, 1 head, "
        f"batch {args.batch_size}. "
        f"Pre-training: {args.pretrain_epochs} epochs on "
        f"{pre.get('n_users', '?')} even users (test NDCG@10 on them "
        f"{pre.get('test', {}).get('ndcg@10', float('nan')):.4f}). Target: odd users, {args.target_epochs} epochs, "
        "leave-one-out, full ranking over all items with history items excluded; best validation NDCG@10 kept.",
        "",
        "| method | HR@10 | NDCG@10 | HR@50 | NDCG@50 | trainable params | trainable % | train s | steps |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    (out / "REPORT.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
