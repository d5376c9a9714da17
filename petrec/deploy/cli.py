"""``petrec export``: write a serving export (manifest, catalogue, adapter, merged, quantized)."""

from __future__ import annotations

import argparse
import sys


def _export(args: argparse.Namespace) -> int:
    from petrec.deploy.export import export_run

    try:
        manifest = export_run(
            args.run_dir,
            args.out_dir,
            name=args.name,
            merged=args.merged,
            quantize=args.quantize,
            data_dir=args.data_dir,
            force=args.force,
        )
    except (ValueError, OSError) as exc:  # every petrec error is a ValueError naming the file / option
        print(f"petrec export: {exc}", file=sys.stderr)
        return 2
    variants = ", ".join(f"{k}={v}" for k, v in manifest.variant_folders.items())
    print(
        f"exported {manifest.name!r} ({manifest.method}, {manifest.task}, "
        f"{manifest.catalogue['n_items']} items) to {args.out_dir}: {variants}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``petrec`` command."""
    helptext = (
        "export a trained run for serving (manifest + catalogue + adapter [+ merged, quantized])"
    )
    p = subparsers.add_parser("export", help=helptext, description=helptext)
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="run folder written by the recipe (config.yaml + adapter/)",
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", help="export folder to create (written atomically)"
    )
    p.add_argument("--name", help="export name in the manifest (default: the run folder's name)")
    p.add_argument(
        "--merged",
        action="store_true",
        help="also write merged/: the adapter folded into the weights (lora, dora, ia3, qlora, "
        "bitfit, head, full)",
    )
    p.add_argument(
        "--quantize",
        action="append",
        choices=["int8", "nf4"],
        help="also write quantized-KIND/ from the merged model (bitsandbytes; repeatable)",
    )
    p.add_argument(
        "--data-dir", help="data folder if it moved since training (to rebuild the catalogue)"
    )
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=_export)
