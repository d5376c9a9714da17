"""Who may see and do what: admin rights per adapter, keyed docs, no adapter names leaked."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from petrec.serve.app import create_app
from petrec.serve.auth import parse_keys
from tests.serve.conftest import ADMIN, ADMIN_KEY, TEAM, TEAM_KEY, serve_config

SCOPED_KEY = "scoped-admin-5e6f7a8b9c0d1e2f3a4b5c6d"
SCOPED = {"X-API-Key": SCOPED_KEY}  # admin, but only for ctr-a
KEYS = json.dumps({"keys": [
    {"name": "ops", "key": ADMIN_KEY, "admin": True},  # no list: every adapter
    {"name": "team-a", "key": TEAM_KEY, "adapters": ["ctr-a"]},
    {"name": "ctr-a-ops", "key": SCOPED_KEY, "adapters": ["ctr-a"], "admin": True},
]})
PREDICT = {"candidates": [{"item_id": "i0001"}]}


@pytest.fixture(scope="module")
def access_client(tiny_bert: Path, exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """ctr-a and ctr-b served; next-a available; ``bad-x`` (a broken manifest) unavailable."""
    root = tmp_path_factory.mktemp("access") / "adapters"
    shutil.copytree(exports, root)
    shutil.copytree(root / "ctr-a", root / "bad-x")
    (root / "bad-x" / "manifest.json").write_text("{")
    cfg = serve_config(tiny_bert, root, load=["ctr-a", "ctr-b", "bad-x"])
    with TestClient(create_app(cfg, keys=parse_keys(KEYS, "test keys"))) as c:
        yield c


def _loaded_at(client: TestClient) -> dict[str, float]:
    return {a["name"]: a["loaded_at"] for a in client.get("/v1/adapters", headers=ADMIN).json()["loaded"]}


def test_admin_rights_cover_only_the_keys_adapters(access_client: TestClient) -> None:
    before = _loaded_at(access_client)
    for method in ("POST", "DELETE"):
        r = access_client.request(method, "/v1/adapters/ctr-b", headers=SCOPED)
        assert r.status_code == 403 and r.json() == {"detail": "this admin API key may not manage adapter 'ctr-b'"}
        r = access_client.request(method, "/v1/adapters/next-a", headers=SCOPED)
        assert r.status_code == 403
    assert _loaded_at(access_client) == before  # nothing was reloaded or removed
    r = access_client.post("/v1/adapters/ctr-a", headers=SCOPED)  # its own adapter: allowed
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert access_client.post("/v1/predict", headers=SCOPED, json={"adapter": "ctr-b", **PREDICT}).status_code == 403
    # It sees only its own adapter, in every part of the listing.
    listed = access_client.get("/v1/adapters", headers=SCOPED).json()
    assert [a["name"] for a in listed["loaded"]] == ["ctr-a"]
    assert listed["available"] == ["ctr-a"] and listed["refused"] == {}
    assert listed["status"] == [{"name": "ctr-a", "status": "loaded", "reason": None}]
    # A key without a list manages everything.
    full = access_client.get("/v1/adapters", headers=ADMIN).json()
    assert {s["name"]: s["status"] for s in full["status"]} == {
        "bad-x": "unavailable", "ctr-a": "loaded", "ctr-b": "loaded", "next-a": "available"}
    assert "manifest.json" in full["refused"]["bad-x"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_and_spec_need_a_key(access_client: TestClient, path: str) -> None:
    r = access_client.get(path)
    assert r.status_code == 401 and r.json() == {"detail": "missing or invalid API key"}
    assert access_client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = access_client.get(path, headers=TEAM)  # any valid key
    assert ok.status_code == 200
    if path == "/openapi.json":
        assert "/v1/predict" in ok.json()["paths"]
    else:
        assert "/openapi.json" in ok.text


def test_not_found_names_only_the_adapter_asked_for(access_client: TestClient) -> None:
    r = access_client.post("/v1/predict", headers=ADMIN, json={"adapter": "nope", **PREDICT})
    assert r.status_code == 404 and r.json() == {"detail": "adapter 'nope' is not loaded"}
    r = access_client.delete("/v1/adapters/nope", headers=ADMIN)
    assert r.status_code == 404 and r.json() == {"detail": "adapter 'nope' is not loaded"}
    r = access_client.post("/v1/adapters/nope", headers=ADMIN)
    assert r.status_code == 404 and "ctr-" not in r.json()["detail"]


@pytest.mark.parametrize(("headers", "code"), [(TEAM, 403), (SCOPED, 403), (ADMIN, 200)],
                         ids=["adapter-key", "admin-of-one-adapter", "admin-of-all"])
def test_metrics_need_an_admin_key_for_all_adapters(access_client: TestClient, headers: dict, code: int) -> None:
    r = access_client.get("/metrics", headers=headers)
    assert r.status_code == code
    if code == 403:
        assert "ctr-b" not in r.text and "admin" in r.json()["detail"]
    else:
        assert 'adapter="ctr-b"' in r.text


def test_readyz_names_unavailable_adapters_only_to_their_admins(access_client: TestClient) -> None:
    anonymous = access_client.get("/readyz").json()
    assert anonymous == {"status": "ready", "adapters": 2, "unavailable": 1}  # a count, no names
    assert access_client.get("/readyz", headers=TEAM).json() == anonymous
    assert access_client.get("/readyz", headers=SCOPED).json() == {**anonymous, "unavailable_adapters": {}}
    detail = access_client.get("/readyz", headers=ADMIN).json()["unavailable_adapters"]
    assert list(detail) == ["bad-x"] and "manifest.json" in detail["bad-x"]
