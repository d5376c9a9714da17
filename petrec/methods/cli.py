"""``petrec methods``: print the PEFT method registry as a table."""

from __future__ import annotations

import argparse
import dataclasses


def _table() -> str:
    from petrec.methods.registry import METHODS

    rows = [("name", "mergeable", "peft-native", "multi", "options", "summary")]
    for spec in METHODS.values():
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(spec.options)) or "-"
        rows.append((spec.name, "yes" if spec.mergeable else "no", "yes" if spec.peft_native else "no",
                     "yes" if spec.multi_adapter else "no", opts, spec.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the registry; returns the exit code."""
    print(_table())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``petrec methods`` to the top-level parser."""
    parser = subparsers.add_parser("methods", help="list the PEFT methods petrec can attach")
    parser.set_defaults(func=run)
