"""API keys: required on every route except health, enforced per adapter, never logged."""

from __future__ import annotations

import hashlib
import logging

import pytest
from fastapi.testclient import TestClient

from petrec.serve.auth import (
    AuthConfigError,
    KeyRing,
    Principal,
    load_keys,
    parse_keys,
    presented_key,
)
from tests.serve.conftest import ADMIN, ADMIN_KEY, TEAM, TEAM_KEY

PREDICT = {"adapter": "ctr-a", "candidates": [{"item_id": "i0001"}]}
ROUTES = [
    ("GET", "/metrics", None), ("GET", "/v1/adapters", None), ("POST", "/v1/predict", PREDICT),
    ("POST", "/v1/recommend", {"adapter": "next-a", "history": [{"item_id": "i0001"}]}),
    ("POST", "/v1/adapters/ctr-a", None), ("DELETE", "/v1/adapters/ctr-a", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ADMIN_KEY + "x"},
                                     {"Authorization": ADMIN_KEY}],
                         ids=["missing", "wrong-bearer", "wrong-header", "no-bearer-scheme"])
def test_every_route_needs_a_valid_key(client: TestClient, method: str, path: str, body: dict | None,
                                       headers: dict) -> None:
    r = client.request(method, path, headers=headers, json=body)
    assert r.status_code == 401, (path, r.text)
    assert r.json() == {"detail": "missing or invalid API key"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_auth_comes_before_body_validation(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"garbage": 1})
    assert r.status_code == 401 and r.json() == {"detail": "missing or invalid API key"}  # not a 422


def test_key_limited_to_its_adapters(client: TestClient) -> None:
    own = client.post("/v1/predict", headers=TEAM, json=PREDICT)
    assert own.status_code == 200, own.text
    # The team key gets exactly what the admin key gets for the same request.
    assert own.json() == client.post("/v1/predict", headers=ADMIN, json=PREDICT).json()
    assert own.json()["adapter"] == "ctr-a" and len(own.json()["scores"]) == 1
    r = client.post("/v1/predict", headers=TEAM, json={**PREDICT, "adapter": "ctr-b"})
    assert r.status_code == 403 and r.json() == {"detail": "this API key may not use adapter 'ctr-b'"}
    # Not allowed is answered before "does it exist" (no probing of adapter names).
    r = client.post("/v1/predict", headers=TEAM, json={**PREDICT, "adapter": "ghost"})
    assert r.status_code == 403 and r.json() == {"detail": "this API key may not use adapter 'ghost'"}
    r = client.post("/v1/recommend", headers=TEAM, json={"adapter": "next-a", "history": [{"item_id": "i0001"}]})
    assert r.status_code == 403 and r.json() == {"detail": "this API key may not use adapter 'next-a'"}
    assert [a["name"] for a in client.get("/v1/adapters", headers=TEAM).json()["loaded"]] == ["ctr-a"]
    assert len(client.get("/v1/adapters", headers=ADMIN).json()["loaded"]) == 3


def test_admin_routes_need_an_admin_key(client: TestClient) -> None:
    before = client.get("/v1/adapters", headers=ADMIN).json()["loaded"]
    for method in ("POST", "DELETE"):
        r = client.request(method, "/v1/adapters/ctr-a", headers=TEAM)
        assert r.status_code == 403 and r.json() == {"detail": "this route needs an admin API key"}
    # Nothing happened: ctr-a was neither reloaded (same loaded_at) nor removed.
    assert client.get("/v1/adapters", headers=ADMIN).json()["loaded"] == before
    assert [a["name"] for a in before] == ["ctr-a", "ctr-b", "next-a"]


def test_keys_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/predict", headers=ADMIN, json=PREDICT)
    client.post("/v1/predict", headers={"X-API-Key": "wrong-" + TEAM_KEY}, json=PREDICT)
    client.post("/v1/predict", headers=TEAM, json={**PREDICT, "adapter": "ctr-b"})
    client.post("/v1/adapters/ctr-b", headers=ADMIN)
    client.get("/metrics", headers=ADMIN)
    assert caplog.records  # something was logged (the reload), and no key in it
    for key in (ADMIN_KEY, TEAM_KEY):
        assert key not in caplog.text
    assert ADMIN_KEY not in client.get("/metrics", headers=ADMIN).text


def test_keyring_compares_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    ring = parse_keys('{"keys": [{"key": "a"}, {"key": "b", "adapters": ["x"]}, {"key": "c", "admin": true}]}', "t")
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    assert ring.check("a").adapters == ("*",)
    assert len(calls) == 3  # no early exit on the first match
    assert ring.check("b").allows("x") and not ring.check("b").allows("y")
    assert ring.check("c").admin and ring.check("zz") is None and ring.check(None) is None


def test_key_file_formats_and_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"k1").hexdigest()
    ring = parse_keys(f'{{"keys": [{{"name": "t", "key_sha256": "{digest}", "adapters": ["a", "b"]}}]}}', "f")
    assert ring.check("k1") == Principal("t", ("a", "b"), admin=False)
    assert ring.check(digest) is None and ring.check("k2") is None  # the digest itself is no key
    assert ring.entries == [(hashlib.sha256(b"k1").digest(), Principal("t", ("a", "b"), admin=False))]
    listed = parse_keys(" k1, k2 ,,", "env")  # plain list: every adapter, none admin, blanks skipped
    assert listed.check("k1") == Principal("key-0") and listed.check("k2") == Principal("key-1")
    assert len(listed.entries) == 2 and listed.check("k3") is None and listed.check(" k2") is None
    with pytest.raises(AuthConfigError, match=r"keys\[0\]\.key_sha256"):
        parse_keys('{"keys": [{"key_sha256": "abc"}]}', "f")
    with pytest.raises(AuthConfigError, match=r"unknown field") as err:
        parse_keys('{"keys": [{"key": "s3cr3t-value", "admn": true}]}', "f")
    assert "s3cr3t-value" not in str(err.value)
    monkeypatch.delenv("PETREC_API_KEYS", raising=False)
    with pytest.raises(AuthConfigError, match="no API keys configured"):
        load_keys(None)
    anonymous = load_keys(None, allow_anonymous=True)
    assert anonymous.anonymous and anonymous.check(None) == Principal("anonymous", ("*",), admin=True)
    monkeypatch.setenv("PETREC_API_KEYS", "envkey")
    from_env = load_keys(None)
    assert from_env.check("envkey") == Principal("key-0") and from_env.check("other") is None
    assert not from_env.anonymous and load_keys(None, allow_anonymous=True).check(None) is None  # keys win
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"key": "filekey", "admin": true}]}')
    from_file = load_keys(str(path))  # the file replaces the variable
    assert from_file.check("filekey") == Principal("key-0", ("*",), admin=True)
    assert from_file.check("envkey") is None
    with pytest.raises(AuthConfigError, match="not found"):
        load_keys(str(tmp_path / "absent.json"))
    # An empty ring refuses every key (it is not anonymous unless load_keys made it so).
    empty = KeyRing()
    assert not empty.anonymous and empty.check("filekey") is None and empty.check(None) is None


def test_presented_key() -> None:
    assert presented_key("Bearer abc", None) == "abc" and presented_key("bearer abc", None) == "abc"
    assert presented_key(None, "xyz") == "xyz" and presented_key("Basic abc", None) is None
