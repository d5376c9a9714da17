"""How long a small request waits behind a large one (loopback only, bounded): a measuring script.

Starts ``petrec serve`` on 127.0.0.1 with two adapters of the same export folder, sends one
large ``/v1/predict`` to the first (``--history`` × ``--candidates``), and ``--delay`` seconds
later one small request (1 history item, 1 candidate) to the second; prints both latencies
as JSON. Every wait is bounded (start-up, each request, the whole run)::

    python benchmarks/serve_wait_probe.py --base minilm --adapters DIR --names ctr-a,ctr-b
    python benchmarks/serve_wait_probe.py --base minilm --adapters DIR --names ctr-a,ctr-b \\
        --serve-flag=--max-request-tokens=100000000        # let the large request in

``--pythonpath`` runs another checkout's server (e.g. the code before a change). Not a test
(pytest does not collect it); docs/SERVING.md quotes its numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

KEY = "probe-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(adapter: str, n_history: int, n_candidates: int, ids: list[str]) -> dict[str, Any]:
    return {"adapter": adapter,
            "history": [{"item_id": ids[i % len(ids)], "label": i % 2} for i in range(n_history)],
            "candidates": [{"item_id": ids[(i * 7) % len(ids)]} for i in range(n_candidates)]}


def _timed(url: str, body: dict[str, Any], timeout: float, out: dict[str, Any]) -> None:
    start = time.perf_counter()
    try:
        r = httpx.post(url, json=body, headers={"X-API-Key": KEY}, timeout=timeout)
        out["status"] = r.status_code
        if r.status_code != 200:
            out["detail"] = r.json().get("detail")
    except httpx.HTTPError as exc:
        out["status"] = f"client error: {type(exc).__name__}"
    out["seconds"] = round(time.perf_counter() - start, 3)


def main(argv: list[str] | None = None) -> int:
    """Run the probe; print ``{"large": {...}, "small": {...}}``.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 when the server answered both requests, 1 otherwise.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="minilm")
    p.add_argument("--adapters", required=True)
    p.add_argument("--names", default="ctr-a,ctr-b", help="large-request adapter,small-request adapter")
    p.add_argument("--history", type=int, default=200)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--delay", type=float, default=0.5, help="seconds between the large and the small request")
    p.add_argument("--timeout", type=float, default=60.0, help="limit of each request, in seconds")
    p.add_argument("--pythonpath", default=None, help="PYTHONPATH of the server (another checkout)")
    p.add_argument("--serve-flag", action="append", default=[], help="extra `petrec serve` flag (repeatable)")
    args = p.parse_args(argv)
    large_name, small_name = args.names.split(",")
    import pandas as pd

    ids = list(pd.read_parquet(Path(args.adapters) / large_name / "items.parquet")["item_id"].astype(str))
    port = _free_port()
    env = {**os.environ, "PETREC_API_KEYS": json.dumps({"keys": [{"key": KEY, "admin": True}]})}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "petrec", "serve", "--base", args.base, "--adapters", args.adapters,
             "--load", args.names, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             *args.serve_flag], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            else:
                log.seek(0)
                print(f"server not ready:\n{log.read()[-3000:]}", file=sys.stderr)
                return 1
            warm: dict[str, Any] = {}
            _timed(f"{url}/v1/predict", _body(small_name, 1, 1, ids), args.timeout, warm)
            large: dict[str, Any] = {}
            small: dict[str, Any] = {}
            t = threading.Thread(target=_timed, args=(f"{url}/v1/predict",
                                                      _body(large_name, args.history, args.candidates, ids),
                                                      args.timeout, large))
            t.start()
            time.sleep(args.delay)
            _timed(f"{url}/v1/predict", _body(small_name, 1, 1, ids), args.timeout, small)
            t.join(args.timeout + 5)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps({"large": {"history": args.history, "candidates": args.candidates, **large},
                      "small_alone": warm, "small_behind_large": small}))
    return 0 if small.get("status") == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
