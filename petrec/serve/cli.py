"""``petrec serve``: run the HTTP model server with uvicorn (1 or N worker processes)."""

from __future__ import annotations

import argparse
import os
import sys

from petrec.serve.config import CONFIG_ENV, ServeConfig


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The :class:`ServeConfig` the flags describe."""
    return ServeConfig(
        base=args.base, adapters_dir=args.adapters, load=args.load.split(",") if args.load else None,
        strict=args.strict, api_keys_file=args.api_keys, allow_anonymous=args.allow_anonymous,
        max_history=args.max_history, max_candidates=args.max_candidates, max_k=args.max_k,
        max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
        max_batch_size=args.max_batch_size, max_batch_wait_ms=args.max_batch_wait_ms,
        torch_threads=args.torch_threads, max_request_tokens=args.max_request_tokens,
        request_timeout_s=args.request_timeout_s,
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from petrec.serve.auth import AuthConfigError, load_keys
    except ModuleNotFoundError as exc:
        print(f"petrec serve needs the serve extra (pip install -e '.[serve]'): {exc}", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    try:  # fail fast, in this process, on a key problem (workers would each fail the same way)
        load_keys(cfg.api_keys_file, allow_anonymous=cfg.allow_anonymous)
    except AuthConfigError as exc:
        print(f"petrec serve: {exc}", file=sys.stderr)
        return 2
    os.environ[CONFIG_ENV] = cfg.to_json()
    uvicorn.run("petrec.serve.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_keep_alive=30)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``petrec`` command."""
    d = ServeConfig()
    p = subparsers.add_parser(
        "serve", help="HTTP server: scores / recommendations from exported adapters on one shared base",
        description="Serve the export folders in --adapters on one frozen --base (FastAPI + uvicorn). "
                    "API keys: --api-keys FILE or $PETREC_API_KEYS (see docs/SERVING.md).",
    )
    p.add_argument("--base", default=d.base, help="base model: 'minilm', a folder or a cached hub id")
    p.add_argument("--adapters", required=True, help="folder of export folders (petrec export output)")
    p.add_argument("--load", help="comma-separated adapter names to load at start (default: all)")
    p.add_argument("--strict", action="store_true", help="fail at start when an adapter is refused")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads everything)")
    p.add_argument("--api-keys", help="JSON key file (else $PETREC_API_KEYS)")
    p.add_argument("--allow-anonymous", action="store_true", help="serve without API keys (every route open)")
    p.add_argument("--max-history", type=int, default=d.max_history)
    p.add_argument("--max-candidates", type=int, default=d.max_candidates)
    p.add_argument("--max-k", type=int, default=d.max_k)
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars)
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="examples per forward pass")
    p.add_argument("--max-batch-wait-ms", type=float, default=d.max_batch_wait_ms,
                   help="how long a micro-batch waits for more requests")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads, help="torch threads per worker")
    p.add_argument("--max-request-tokens", type=int, default=d.max_request_tokens,
                   help="cost bound of one request: rows x the adapter's max_length (413 above)")
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s,
                   help="deadline of one inference request, queueing included (504 after)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_serve)
