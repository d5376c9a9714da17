"""Padding that evaluation batches carry, in the split's order and longest first (issue 16).

Dynamic padding pads every batch to its longest prompt, so a batch holding one long prompt and
many short ones spends most of its compute on padding. ``train.eval_sort_by_length`` (default on)
scores validation and test longest first (:func:`petrec.collate.longest_first`). This script counts,
for P1's validation and test prompts (ML-100K, TALLRec split and template) under each backbone's
tokenizer, the token positions the batches hold in both orders: the prompts' own tokens, and the
padded total. Token counts depend on the data and the tokenizer only, not on the machine; the
forward passes' time follows them roughly (more for attention at long lengths), which this script
does not time.

Usage:
    PETREC_DATA_DIR=../shared/data python benchmarks/eval_padding.py \
        [--backbones minilm,smollm2-135m] [--batch-sizes 32,64] [--out benchmarks/results/throughput/eval_padding.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict

from petrec.bench.system import git_state, machine, versions, write_record
from petrec.collate import longest_first
from petrec.data import DataConfig, prepare, tokenize_examples
from petrec.models import ModelConfig, load_tokenizer

#: The prompt lengths of the P1 suites (ml100k-ctr-cpu / smollm2-ctr-cpu).
MAX_LENGTH = {"minilm": 256, "smollm2-135m": 320}
SCORING = {"minilm": "head", "smollm2-135m": "answer"}


def padded_positions(lengths: np.ndarray, batch_size: int) -> int:
    """Token positions a run of batches holds when each batch pads to its longest prompt."""
    batches = (lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size))
    return int(sum(batch.max() * len(batch) for batch in batches))


def measure(backbone: str, batch_sizes: list[int], data_dir: str | None) -> list[dict[str, Any]]:
    """One row per (split, batch size): own tokens, padded positions in split order and longest first."""
    cfg = DataConfig(dataset="ml-100k", task="ctr", protocol="tallrec", template="tallrec", history_len=10,
                     **({"data_dir": data_dir} if data_dir else {}))
    data = prepare(cfg)
    tokenizer = load_tokenizer(ModelConfig(backbone=backbone, task="ctr", scoring=SCORING[backbone]))
    evaluated = DatasetDict({split: data.splits[split] for split in ("valid", "test")})  # not the 8,000 training rows
    splits = tokenize_examples(evaluated, tokenizer, max_length=MAX_LENGTH[backbone], items=data.items,
                               template="tallrec", task="ctr")
    rows = []
    for split in ("valid", "test"):
        plain = np.array([len(ids) for ids in splits[split]["input_ids"]])
        ordered = np.array([len(ids) for ids in longest_first(splits[split])["input_ids"]])
        for bs in batch_sizes:
            before, after = padded_positions(plain, bs), padded_positions(ordered, bs)
            rows.append({"backbone": backbone, "split": split, "examples": len(plain), "batch_size": bs,
                         "prompt_tokens": int(plain.sum()), "min_length": int(plain.min()),
                         "max_length": int(plain.max()), "positions_split_order": before,
                         "positions_longest_first": after, "ratio_longest_first": after / before,
                         "padding_share_split_order": 1 - plain.sum() / before,
                         "padding_share_longest_first": 1 - plain.sum() / after})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="minilm,smollm2-135m")
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/throughput/eval_padding.json")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = [row for b in args.backbones.split(",") for row in measure(b, sizes, args.data_dir)]
    record = {"benchmark": "eval_padding", "command": "python benchmarks/eval_padding.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "started_at": started, "machine": machine(), "git": git_state(), "versions": versions(),
              "note": "token positions only (data and tokenizer): no time is measured", "rows": rows}
    write_record(Path(args.out), record)
    for r in rows:
        print(f"{r['backbone']:>13} {r['split']:>5} bs={r['batch_size']:>3}: {r['prompt_tokens']:>7} prompt tokens; "
              f"padded {r['positions_split_order']:>7} in split order, {r['positions_longest_first']:>7} longest first "
              f"(× {r['ratio_longest_first']:.3f}; padding {r['padding_share_split_order']:.1%} → "
              f"{r['padding_share_longest_first']:.1%})")
    print(json.dumps({"out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
