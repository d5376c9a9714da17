"""``petrec train | evaluate | predict``: the training recipe and what a finished run can do."""

from __future__ import annotations

import argparse
import functools
import json
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import petrec

RECIPE_ENV = "PETREC_RECIPES"


def recipe_path(name: str = "finetune.py") -> Path:
    """Locate a recipe: ``$PETREC_RECIPES`` or the ``recipes/`` folder of this checkout."""
    folder = Path(os.environ.get(RECIPE_ENV) or Path(petrec.__file__).resolve().parents[1] / "recipes")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe {name} not found in {folder}: run from a petrec checkout (pip install -e .) "
            f"or set {RECIPE_ENV} to the recipes folder"
        )
    return path


def _train(args: argparse.Namespace) -> int:
    path = recipe_path()
    argv = [str(path), *(["--config", args.config] if args.config else []), *args.overrides]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:  # the recipe exits with a message on config errors
        if exc.code not in (None, 0):
            print(exc.code if isinstance(exc.code, str) else f"exit {exc.code}", file=sys.stderr)
            return 2
    finally:
        sys.argv = old
    return 0


def _load(args: argparse.Namespace) -> Any:
    from petrec.runs import load_run

    return load_run(args.run, data_dir=args.data_dir)


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

    from petrec.collate import BehaviourCollator
    from petrec.data import prepare, tokenize_examples
    from petrec.debias import DEBIAS_COLUMNS, annotate_splits, run_debias_config
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
    split = annotate_splits({args.split: split}, data, run.data, run_debias_config(run.folder))[args.split]
    collate = BehaviourCollator(run.model_cfg.task, run.tokenizer.pad_token_id, run.tokenizer.padding_side)
    cols = [c for c in ("input_ids", "label", "rating", *DEBIAS_COLUMNS) if c in split.column_names]
    accelerator = Accelerator()
    loader = accelerator.prepare(DataLoader(split.select_columns(cols), batch_size=args.batch_size,
                                            collate_fn=collate))
    model = accelerator.prepare(run.model)
    metrics = evaluator_for(run.model_cfg.task)(model, loader, accelerator)
    print(json.dumps({"split": args.split, "examples": len(split), **metrics}, indent=2))
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"wrote {len(frame)} predictions to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``predict`` to the ``petrec`` command."""
    p = subparsers.add_parser(
        "train", help="fine-tune a behaviour model (runs recipes/finetune.py in this process)",
        description="Same as `accelerate launch recipes/finetune.py`; extra --a.b VALUE flags override the config.",
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
        if name == "predict":
            q.add_argument("--csv", help="CSV with user_id, history_item_ids, [history_labels], item_id")
            q.add_argument("--out", required=True, help="output CSV (written atomically)")
        q.set_defaults(func=_one_line_errors(name, func))
