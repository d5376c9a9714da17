"""Training throughput of petrec's Accelerate loop vs a bare PyTorch loop vs transformers.Trainer + peft.

Same model (MiniLM + LoRA r=8 on query/value + linear CTR head, built by petrec), same
pre-tokenised batches (fixed length, so padding is identical), same optimiser (AdamW,
linear schedule), same number of optimizer steps. Each loop runs ``--repeats`` times,
interleaved (bare, petrec, Trainer, bare, ...) so machine noise hits all three alike;
each repeat gives paired ratios petrec/bare and petrec/Trainer, and the record their medians.
Run it alone on the machine; the record says how much CPU other processes took per repeat.

    python benchmarks/train_throughput.py --steps 30 --repeats 5 --out benchmarks/results/throughput/loop.json

Goals (issue 20): median paired ratio >= 0.97 vs the bare loop and >= 1.1 vs Trainer + peft.
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

from petrec.bench.system import (
    CpuSharingMeter,
    describe_machine,
    git_state,
    machine,
    versions,
    write_record,
)
from petrec.files import write_text_atomic
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


#: Goals (issue 20): petrec's loop >= this x the bare loop and >= this x Trainer + peft,
#: each the median over repeats of the ratio paired within one repeat.
GOAL_VS_BARE = 0.97
GOAL_VS_TRAINER = 1.1
BARE, PETREC, TRAINER = "bare PyTorch", "petrec.train (Accelerate)", "transformers.Trainer + peft"


def paired_summary(results: dict[str, list[float]]) -> dict[str, object]:
    """Per-repeat ratios of petrec's samples/s to each other loop, their medians and the goals.

    A ratio is taken within one repeat (the three loops ran back to back, so they saw the same
    machine), then the median over repeats: noise between repeats does not enter a ratio.
    """
    ours = results[PETREC]
    vs_bare = [p / b for p, b in zip(ours, results[BARE], strict=True)]
    vs_trainer = [p / t for p, t in zip(ours, results[TRAINER], strict=True)]
    med_bare, med_trainer = statistics.median(vs_bare), statistics.median(vs_trainer)
    return {
        "paired_ratio_vs_bare": [round(r, 4) for r in vs_bare],
        "paired_ratio_vs_trainer": [round(r, 4) for r in vs_trainer],
        "median_paired_ratio_vs_bare": round(med_bare, 4),
        "median_paired_ratio_vs_trainer": round(med_trainer, 4),
        "goal_vs_bare": GOAL_VS_BARE,
        "goal_vs_trainer": GOAL_VS_TRAINER,
        "goal_vs_bare_met": med_bare >= GOAL_VS_BARE,
        "goal_vs_trainer_met": med_trainer >= GOAL_VS_TRAINER,
    }


def markdown(record: dict[str, object]) -> str:
    """The human-readable page, rendered from the JSON record only."""
    results: dict[str, list[float]] = record["samples_per_s"]  # type: ignore[assignment]
    summary: dict[str, object] = record["summary"]  # type: ignore[assignment]
    sharing = record["cpu_sharing"]
    lines = [
        "# Training-loop throughput (MiniLM + LoRA r=8, CTR head)",
        "",
        f"Record: `{record['record']}` (this page is rendered from it). Command: `{record['command']}`",
        f"Machine: {record['machine_text']}; git {record['git'].get('commit')}"
        + (" (with uncommitted changes)" if record["git"].get("dirty") else ""),
        "",
        "| repeat | bare samples/s | petrec samples/s | Trainer samples/s | petrec ÷ bare | petrec ÷ Trainer | other processes' CPU share |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in range(len(results[PETREC])):
        share = sharing[i]["other_share"] if sharing[i] else "not measured"
        lines.append(
            f"| {i + 1} | {results[BARE][i]:.2f} | {results[PETREC][i]:.2f} | {results[TRAINER][i]:.2f} | "
            f"{summary['paired_ratio_vs_bare'][i]:.3f} | {summary['paired_ratio_vs_trainer'][i]:.3f} | {share} |"
        )
    for key, goal, name in (("bare", "goal_vs_bare", "bare loop"), ("trainer", "goal_vs_trainer", "Trainer + peft")):
        met = summary[f"goal_vs_{key}_met"]
        lines.append("")
        lines.append(
            f"Median paired ratio vs the {name}: {summary[f'median_paired_ratio_vs_{key}']:.3f} "
            f"(goal >= {summary[goal]}): {'met' if met else 'NOT met'}."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON record to write (a Markdown page of the same name beside it)")
    args = parser.parse_args()
    data = Batches(args.steps * args.batch_size, args.seq_len)
    scratch = Path("/tmp/petrec-throughput")
    loops: dict[str, Callable[[], float]] = {
        BARE: lambda: run_bare(data, args.steps, args.batch_size, 5e-4),
        PETREC: lambda: run_petrec(data, args.steps, args.batch_size, 5e-4, scratch / "p"),
        TRAINER: lambda: run_trainer(data, args.steps, args.batch_size, 5e-4, scratch / "t"),
    }
    results: dict[str, list[float]] = {k: [] for k in loops}
    sharing: list[dict[str, object] | None] = []
    state = git_state()  # read before anything is written
    run_bare(data, 3, args.batch_size, 5e-4)  # warm-up: allocator, kernels, file cache
    for rep in range(args.repeats):
        meter = CpuSharingMeter()
        meter.start()
        for name, fn in loops.items():
            results[name].append(fn())
            print(f"repeat {rep + 1} {name}: {results[name][-1]:.2f} samples/s", flush=True)
        sharing.append(meter.stop())
        print(f"repeat {rep + 1} other processes' CPU share: {sharing[-1]}", flush=True)
    info = machine()
    record: dict[str, object] = {
        "record": str(args.out) if args.out else None,
        "command": "python benchmarks/train_throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "setup": {"model": "minilm + lora r=8 (query, value) + ctr head", "steps": args.steps,
                  "batch_size": args.batch_size, "seq_len": args.seq_len, "repeats": args.repeats,
                  "threads": torch.get_num_threads(),
                  "what": "optimizer steps x batch / wall time of the whole call (setup included)"},
        "machine": info, "machine_text": describe_machine(info), "versions": versions(), "git": state,
        "samples_per_s": {k: [round(v, 3) for v in vals] for k, vals in results.items()},
        "cpu_sharing": sharing,
        "summary": paired_summary(results),
    }
    text = markdown(record)
    print(text)
    if args.out:
        write_record(args.out, record)
        write_text_atomic(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
