"""The committed OpenAPI spec, ``petrec serve`` flags, and a real 2-worker uvicorn launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from petrec.cli import build_parser
from petrec.serve.cli import config_from_args
from petrec.serve.config import ServeConfig, ServeConfigError
from tests.serve.conftest import ADMIN, ADMIN_KEY, KEYS_JSON, TEAM_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_is_current() -> None:
    from petrec.serve.openapi import render

    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), "regenerate: python -m petrec.serve.openapi > docs/openapi.json"
    spec = json.loads(committed)
    assert {"/v1/predict", "/v1/recommend", "/v1/adapters", "/v1/adapters/{name}", "/healthz", "/readyz",
            "/metrics"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["PredictIn"]["properties"]["candidates"]["maxItems"] == 1000


def test_serve_flags_build_the_config() -> None:
    args = build_parser().parse_args(["serve", "--adapters", "/x", "--base", "b", "--load", "a,b",
                                      "--max-history", "7", "--max-batch-wait-ms", "0", "--workers", "2"])
    cfg = config_from_args(args)
    assert cfg == ServeConfig(base="b", adapters_dir="/x", load=["a", "b"], max_history=7, max_batch_wait_ms=0.0)
    assert ServeConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ServeConfigError, match="max_candidates"):
        ServeConfig(max_candidates=0)
    with pytest.raises(ServeConfigError, match="unknown key"):
        ServeConfig.from_json('{"max_hist": 3}')


def test_importing_petrec_needs_no_fastapi() -> None:
    code = ("import sys; sys.modules['fastapi'] = None; import petrec, petrec.serve, petrec.cli; "
            "petrec.cli.build_parser(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_petrec_serve_two_workers(tiny_bert: Path, exports: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(KEYS_JSON)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PETREC_API_KEYS", None)
    log = tmp_path / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "petrec", "serve", "--base", str(tiny_bert), "--adapters", str(exports),
             "--load", "ctr-a", "--port", str(port), "--workers", "2", "--api-keys", str(keys),
             "--log-level", "info"], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        else:
            pytest.fail("server not ready in 60 s:\n" + log.read_text()[-3000:])
        body = {"adapter": "ctr-a", "candidates": [{"item_id": "i0001"}, {"item_id": "i0002"}]}
        scores = {tuple(httpx.post(f"{url}/v1/predict", json=body, headers=ADMIN, timeout=30).json()["scores"])
                  for _ in range(6)}
        assert len(scores) == 1  # both workers answer the same
        assert httpx.post(f"{url}/v1/predict", json=body, timeout=30).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "POST /v1/predict" in text  # access log on, and no key in it
    assert ADMIN_KEY not in text and TEAM_KEY not in text
