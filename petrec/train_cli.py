"""``petrec train | evaluate | predict``: the training recipe and what a finished run can do."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petrec.files import atomic_path, write_text_atomic


def _train(args: argparse.Namespace) -> int:
    from petrec.recipes import finetune

    try:
        finetune.main([*(["--config", args.config] if args.config else []), *args.overrides])
    except finetune.RECIPE_ERRORS as exc:  # one line, no traceback
        print(f"petrec train: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def _load(args: argparse.Namespace) -> Any:
    from petrec.runs import load_run

    return load_run(args.run, data_dir=args.data_dir, data_overrides=args.data_override)


def _one_line_errors(name: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``func``; a bad run folder or input file prints ``petrec NAME: <message>`` and returns 2.

    Every petrec error names the file and what was expected (:data:`petrec.runs.RUN_ERRORS`); an
    ``OSError`` (unreadable file, full disk) names its path too. No traceback for bad input.
    """

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from petrec.runs import RUN_ERRORS

        try:
            return func(args)
        except (*RUN_ERRORS, OSError) as exc:
            print(f"petrec {name}: {exc}", file=sys.stderr)
            return 2

    return run


def _evaluate(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from petrec.collate import BehaviourCollator, longest_first
    from petrec.data import prepare, tokenize_examples
    from petrec.data.exposure import annotate_splits
    from petrec.debias import DEBIAS_COLUMNS
    from petrec.evaluation import evaluator_for

    run = _load(args)
    if run.model_cfg.task == "next_item":
        print("petrec evaluate: next_item runs are evaluated by the recipe (test metrics in metrics.json)",
              file=sys.stderr)
        return 2
    data = prepare(run.data)
    split = tokenize_examples(data.splits[args.split], run.tokenizer, max_length=run.max_length,
                              items=data.items, template=run.data.template, task=run.model_cfg.task)
    # the run's debiased metrics and groups too (valid / test, as in its metrics.json)
    split = annotate_splits({args.split: split}, data, run.data, run.debias)[args.split]
    collate = BehaviourCollator(run.model_cfg.task, run.tokenizer.pad_token_id, run.tokenizer.padding_side)
    cols = [c for c in ("input_ids", "label", "rating", *DEBIAS_COLUMNS) if c in split.column_names]
    accelerator = Accelerator()
    # longest first: less padding per batch; the metrics do not depend on the order
    loader = accelerator.prepare(DataLoader(longest_first(split.select_columns(cols)), batch_size=args.batch_size,
                                            collate_fn=collate))
    model = accelerator.prepare(run.model)
    metrics = evaluator_for(run.model_cfg.task)(model, loader, accelerator)
    result = {"split": args.split, "examples": len(split), **metrics}
    if args.data_override:
        result["data_overrides"] = list(args.data_override)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import datasets

    from petrec.data import prepare
    from petrec.runs import read_candidates_csv, score_examples

    run = _load(args)
    data = prepare(run.data)
    if args.csv:
        frame = read_candidates_csv(args.csv)
        examples = datasets.Dataset.from_pandas(frame, preserve_index=False)
    else:
        examples = data.splits[args.split]
        frame = examples.select_columns([c for c in ("user_id", "item_id", "label", "rating")
                                         if c in examples.column_names]).to_pandas()
    column = "probability" if run.model_cfg.task == "ctr" else "predicted_rating"
    frame = frame.drop(columns=[c for c in ("history_item_ids", "history_labels", "history_ratings", "timestamp")
                                if c in frame.columns])
    frame[column] = score_examples(run, examples, items=data.items, batch_size=args.batch_size)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    print(f"wrote {len(frame)} predictions to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``predict`` and ``explain`` to the ``petrec`` command."""
    p = subparsers.add_parser(
        "train", help="fine-tune a behaviour model (runs petrec.recipes.finetune in this process)",
        description="Same as `accelerate launch -m petrec.recipes.finetune`; extra --a.b VALUE flags override the config.",
    )
    p.add_argument("--config", help="YAML config (default: the quick-start)")
    p.set_defaults(func=_train, overrides=[])

    for name, func, helptext in (
        ("evaluate", _evaluate, "evaluate a finished run on a split of its data"),
        ("predict", _predict, "write scores for a split or a CSV of (history, candidate) rows"),
    ):
        q = subparsers.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--run", required=True, help="run folder written by the recipe (config.yaml + adapter/)")
        q.add_argument("--split", default="test", choices=["train", "valid", "test"])
        q.add_argument("--data-dir", help="data folder if it moved since training (else the run's / $PETREC_DATA_DIR)")
        q.add_argument("--batch-size", type=int, default=64)
        q.add_argument("--data-override", action="append", default=[], metavar="KEY=VALUE",
                       help="change a field of the run's data config for this command (repeatable; values "
                            "read as YAML), e.g. --data-override period=1 scores a continual-fine-tuning run "
                            "on an earlier period's split")
        if name == "predict":
            q.add_argument("--csv", help="CSV with user_id, history_item_ids, [history_labels], item_id")
            q.add_argument("--out", required=True, help="output CSV (written atomically)")
        else:
            q.add_argument("--out", help="also write the metrics JSON to this file (atomically)")
        q.set_defaults(func=_one_line_errors(name, func))
    register_explain(subparsers)


def _explain(args: argparse.Namespace) -> int:
    import datasets

    from petrec.data import prepare
    from petrec.runs import load_run, read_candidates_csv

    run = load_run(args.run, data_dir=args.data_dir)
    if run.model_cfg.task not in ("ctr", "rating"):
        print(f"petrec explain: {args.run} is a {run.model_cfg.task} run; explanations are for ctr and rating runs",
              file=sys.stderr)
        return 2
    data = prepare(run.data)
    if args.csv:
        examples = datasets.Dataset.from_pandas(read_candidates_csv(args.csv), preserve_index=False)
    else:
        split = data.splits[args.split]
        bad = [r for r in args.rows if not 0 <= r < len(split)]
        if bad:
            print(f"petrec explain: --rows {bad[0]} is outside the {args.split} split's {len(split)} examples",
                  file=sys.stderr)
            return 2
        examples = split.select(args.rows)
    from petrec.explain import explain_examples

    found = explain_examples(run, examples, items=data.items, batch_size=args.batch_size)
    text = json.dumps([e.to_dict() for e in found], indent=2)
    if args.out:
        write_text_atomic(args.out, text + "\n")
        print(f"wrote {len(found)} explanations to {args.out}")
    else:
        print(text)
    return 0


def register_explain(subparsers: argparse._SubParsersAction) -> None:
    """Add ``petrec explain`` (:mod:`petrec.explain`)."""
    helptext = "explain a ctr / rating run's scores: each history item's occlusion effect (+ the prior's share)"
    q = subparsers.add_parser("explain", help=helptext, description=(
        f"{helptext}. effect = score with the full history - score without that item (probability for "
        "ctr, rating for rating); items are ranked by |effect|. Prints a JSON list, one entry per example."))
    q.add_argument("--run", required=True, help="run folder written by the recipe (config.yaml + adapter/)")
    q.add_argument("--split", default="test", choices=["train", "valid", "test"])
    q.add_argument("--rows", type=int, nargs="+", default=[0], help="example positions in the split (default 0)")
    q.add_argument("--csv", help="explain these rows instead: CSV with user_id, history_item_ids, "
                                 "[history_labels], item_id (as petrec predict --csv)")
    q.add_argument("--data-dir", help="data folder if it moved since training (else the run's / $PETREC_DATA_DIR)")
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--out", help="write the JSON here instead of printing it")
    q.set_defaults(func=_one_line_errors("explain", _explain))
