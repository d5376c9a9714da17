"""The committed OpenAPI spec, ``petrec serve`` flags, and a real 2-worker uvicorn launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def _answers_from_two_workers(url: str, body: dict, rounds: int = 20) -> dict[int, set[tuple[float, ...]]]:
    """Scores per answering worker pid (``X-Petrec-Worker``), from rounds of 8 concurrent requests.

    Each request opens its own connection, so the kernel hands it to whichever worker accepts
    first; concurrent requests keep one worker busy while the other accepts. Stops once two
    workers have answered, or after ``rounds`` rounds (a worker may still be loading at first).
    """
    answers: dict[int, set[tuple[float, ...]]] = {}

    def ask(_: int) -> tuple[int, tuple[float, ...]]:
        r = httpx.post(url, json=body, headers=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        return int(r.headers["X-Petrec-Worker"]), tuple(r.json()["scores"])

    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            for pid, scores in pool.map(ask, range(8)):
                answers.setdefault(pid, set()).add(scores)
            if len(answers) >= 2:
                break
            time.sleep(0.2)
    return answers


def _parent_pid(pid: int) -> int:
    """The parent of process ``pid`` (Linux ``/proc``); the command name may hold spaces."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


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
        answers = _answers_from_two_workers(f"{url}/v1/predict", body)
        assert len(answers) == 2 and proc.pid not in answers, answers  # two worker processes answered
        if Path("/proc").is_dir():  # ... and they are the server's own worker processes
            assert {_parent_pid(pid) for pid in answers} == {proc.pid}
        # Both workers answer the same. Concurrent requests share micro-batches, whose size and
        # padding move the last float bits (measured 6e-8): the 1e-6 of test_parity applies.
        first, *rest = [s for seen in answers.values() for s in seen]
        assert len(first) == 2 and all(0.0 < s < 1.0 for s in first)
        for other in rest:
            assert other == pytest.approx(first, abs=1e-6, rel=0), answers
        refused = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
        assert refused.status_code == 401 and refused.json() == {"detail": "missing or invalid API key"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "POST /v1/predict" in text  # access log on, and no key in it
    assert ADMIN_KEY not in text and TEAM_KEY not in text
