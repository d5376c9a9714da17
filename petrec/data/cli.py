"""``petrec data prepare`` and ``petrec data stats``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from petrec.data.config import DATASETS, PRESETS, PROTOCOLS, TASKS, TEMPLATES, DataConfig
from petrec.data.errors import DataError
from petrec.data.validate import describe_drops


def _mapping(text: str) -> dict[str, str]:
    """``user=uid,item=sku`` → {"user": "uid", "item": "sku"}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"expected key=column pairs separated by commas, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), help="a BENCHMARKS.md protocol (P1..P4); flags override it")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--data-dir", help="folder holding the datasets (default: $PETREC_DATA_DIR)")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--protocol", choices=PROTOCOLS)
    p.add_argument("--history-len", type=int)
    p.add_argument("--min-history", type=int)
    p.add_argument("--rating-threshold", type=float)
    p.add_argument("--few-shot-k", type=int)
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--max-eval-examples", type=int, help="seeded subsample of valid and of test (each)")
    p.add_argument("--seed", type=int)
    p.add_argument("--template", choices=TEMPLATES)
    p.add_argument("--negatives", type=int, help="implicit ctr: negatives per positive")
    p.add_argument("--implicit", action="store_true", default=None, help="treat every interaction as positive")
    p.add_argument("--anonymize", action="store_true", default=None, help="hash user ids with a secret salt")
    p.add_argument("--filter", dest="policy", action="store_const", const="filter",
                   help="drop bad rows and report counts instead of stopping at the first")
    p.add_argument("--min-user-interactions", type=int)
    p.add_argument("--min-item-interactions", type=int)
    p.add_argument("--interactions", dest="interactions_path", help="csv dataset: the interaction log")
    p.add_argument("--items", dest="items_path", help="csv dataset: the item catalogue")
    p.add_argument("--columns", type=_mapping, help="csv: user=COL,item=COL,time=COL,rating=COL,label=COL")
    p.add_argument("--item-columns", type=_mapping, help="csv: item=COL,title=COL,genres=COL,...")
    p.add_argument("--sep", help="csv: field separator (default from the file extension)")
    p.add_argument("--encoding", help="csv: text encoding (default utf-8)")
    p.add_argument("--kfold-k", type=int)
    p.add_argument("--kfold-fold", type=int)
    p.add_argument("--n-periods", type=int, help="periods protocol: number of time periods")
    p.add_argument("--period", type=int, help="periods protocol: which period (1 = earliest)")
    p.add_argument("--period-replay", type=float, help="periods protocol: replayed earlier training examples, "
                                                        "as a share of the period's own")


_FIELDS = ("dataset", "data_dir", "task", "protocol", "history_len", "min_history", "rating_threshold",
           "few_shot_k", "max_train_examples", "max_eval_examples", "seed", "template", "negatives", "implicit", "anonymize",
           "policy", "min_user_interactions", "min_item_interactions", "interactions_path", "items_path",
           "columns", "item_columns", "sep", "encoding", "kfold_k", "kfold_fold", "n_periods", "period",
           "period_replay")


def config_from_args(args: argparse.Namespace) -> DataConfig:
    """Build the DataConfig: preset (if any), then every flag that was given."""
    given: dict[str, Any] = {f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None}
    if args.preset:
        return DataConfig.preset(args.preset, **given)
    return DataConfig(**given)


def _prepare(args: argparse.Namespace) -> int:
    from petrec.data.prepare import prepare

    try:
        data = prepare(config_from_args(args))
        out = data.save(args.out)
    except DataError as exc:
        print(f"petrec data prepare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(data.summary, indent=2, sort_keys=True))
    drops = describe_drops(data.summary.get("interactions") or {})
    if drops:
        print(f"petrec data prepare: {drops} (summary.json: interactions.dropped / first_dropped)",
              file=sys.stderr)
    print(f"wrote {out}/train, {out}/valid, {out}/test, {out}/items.parquet, {out}/summary.json", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from petrec.data.prepare import load_prepared, prepare

    try:
        summary = load_prepared(args.source).summary if args.source else prepare(config_from_args(args)).summary
    except DataError as exc:
        print(f"petrec data stats: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``petrec data prepare|stats``."""
    data = subparsers.add_parser("data", help="read, validate, split and render behaviour data")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    prep = sub.add_parser("prepare", help="write OUT/{train,valid,test}, items.parquet and summary.json")
    _add_common(prep)
    prep.add_argument("--out", required=True, help="output folder (replaced atomically)")
    prep.set_defaults(func=_prepare)
    stats = sub.add_parser("stats", help="print the summary (of a prepared folder, or computed afresh)")
    _add_common(stats)
    stats.add_argument("--from", dest="source", help="a folder written by `petrec data prepare`")
    stats.set_defaults(func=_stats)
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])
