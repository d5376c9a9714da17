"""The ``petrec`` command line: ``petrec data | methods | train | predict | evaluate | explain | bench | report``.

Each area of the package owns its sub-commands in a ``cli.py`` of its own that exposes
``register(subparsers)``; this module only wires them together, imported lazily so
``petrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute sub-commands, each with ``register(subparsers) -> None``.
#: A registered command sets ``func`` (``args -> int``) as its parser default.
COMMAND_MODULES: tuple[str, ...] = (
    "petrec.data.cli",
    "petrec.methods.cli",
    "petrec.train_cli",
    "petrec.bench.cli",
    "petrec.serve.cli",
    "petrec.deploy.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="petrec",
        description="Parameter-efficient fine-tuning of pretrained models for recommender systems.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area is not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    # Commands that take dotted config overrides (``--train.lr 3e-4``) set ``overrides``;
    # for every other command an unknown flag is an error, as usual.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
