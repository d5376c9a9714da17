"""Training throughput of petrec's Accelerate loop vs a bare PyTorch loop vs transformers.Trainer + peft.

Same model (MiniLM + LoRA r=8 on query/value + linear CTR head, built by petrec), same
pre-tokenised batches (fixed length, so padding is identical), same optimiser (AdamW,
linear schedule), same number of optimizer steps. Each loop runs ``--repeats`` times,
interleaved (bare, petrec, Trainer, bare, ...) so machine noise hits all three alike;
the report gives median samples/s and the ratios petrec/bare and petrec/Trainer.

    python benchmarks/train_throughput.py --steps 30 --repeats 3 --out benchmarks/results/train_throughput.md

Goal (issue 4): petrec ≥ 0.95× the bare loop and ≥ 1.0× Trainer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainingArguments, get_scheduler

from petrec.bench.system import describe_machine, git_state, machine
from petrec.models import ModelConfig, build_model
from petrec.train import TrainConfig, make_accelerator, train


class Batches(Dataset):
    """Fixed random token sequences with binary labels (same for every loop)."""

    def __init__(self, n: int, length: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1000, 20000, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g).float()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="minilm", method="lora", dropout=0.0))


def run_bare(data: Dataset, steps: int, bs: int, lr: float) -> float:
    model = fresh_model()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=steps)
    loader = DataLoader(data, batch_size=bs, shuffle=True)
    tick = time.perf_counter()
    done = 0
    while done < steps:
        for batch in loader:
            out = model(**batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            if done == steps:
                break
    return steps * bs / (time.perf_counter() - tick)


def run_petrec(data: Dataset, steps: int, bs: int, lr: float, out: Path) -> float:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=bs, lr=lr, warmup_ratio=0.0,
                      progress=False, trackers=[], mixed_precision="no", log_every_steps=10**6)
    model = fresh_model()
    loader = DataLoader(data, batch_size=bs, shuffle=True)
    tick = time.perf_counter()
    train(model, loader, None, cfg, evaluate_fn=lambda *a: {}, accelerator=make_accelerator(cfg))
    return steps * bs / (time.perf_counter() - tick)


def run_trainer(data: Dataset, steps: int, bs: int, lr: float, out: Path) -> float:
    model = fresh_model()
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=bs, max_steps=steps,
                             learning_rate=lr, warmup_steps=0, lr_scheduler_type="linear", weight_decay=0.01,
                             max_grad_norm=1.0, logging_steps=10**6, save_strategy="no", report_to=[],
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                             disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    tick = time.perf_counter()
    trainer.train()
    return steps * bs / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = parser.parse_args()
    data = Batches(args.steps * args.batch_size, args.seq_len)
    scratch = Path("/tmp/petrec-throughput")
    loops: dict[str, Callable[[], float]] = {
        "bare PyTorch": lambda: run_bare(data, args.steps, args.batch_size, 5e-4),
        "petrec.train (Accelerate)": lambda: run_petrec(data, args.steps, args.batch_size, 5e-4, scratch / "p"),
        "transformers.Trainer + peft": lambda: run_trainer(data, args.steps, args.batch_size, 5e-4, scratch / "t"),
    }
    results: dict[str, list[float]] = {k: [] for k in loops}
    run_bare(data, 3, args.batch_size, 5e-4)  # warm-up: allocator, kernels, file cache
    for rep in range(args.repeats):
        for name, fn in loops.items():
            results[name].append(fn())
            print(f"repeat {rep + 1} {name}: {results[name][-1]:.1f} samples/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    ours = med["petrec.train (Accelerate)"]
    lines = [
        "# Training-loop throughput (MiniLM + LoRA r=8, CTR head)",
        "",
        f"Command: `python benchmarks/train_throughput.py --steps {args.steps} --batch-size {args.batch_size} "
        f"--seq-len {args.seq_len} --repeats {args.repeats}`",
        f"Machine: {describe_machine(machine())}; torch {torch.__version__}; git {git_state().get('commit')}",
        "",
        "| loop | median samples/s | runs | petrec ÷ this |",
        "|---|---|---|---|",
    ]
    for name, values in results.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {med[name]:.1f} | {runs} | {ours / med[name]:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
