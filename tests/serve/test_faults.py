"""Fault injection on the server side: damaged export files and concurrent admin operations.

Every file kind the server reads (safetensors, parquet, manifest JSON, config YAML, the
adapter's JSON) is truncated, corrupted or linked out of the adapters directory; each case
must end in a clear JSON error that names the file, with the server still serving the
others, and the damaged adapter marked unavailable with the reason. Concurrent admin
operations on one name must leave the state of the last request.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serve.conftest import ADMIN, make_client, serve_config

PREDICT = {"candidates": [{"item_id": "i0262"}, {"item_id": "i0001"}],
           "history": [{"item_id": "i0231", "label": 0}]}
SAFETENSORS = "adapter/adapter_model.safetensors"


def _rehash(export: Path) -> None:
    """Make the manifest's catalogue sha256 match the (damaged) catalogue again."""
    manifest = export / "manifest.json"
    data = json.loads(manifest.read_text())
    data["catalogue"]["sha256"] = hashlib.sha256((export / "items.parquet").read_bytes()).hexdigest()
    manifest.write_text(json.dumps(data))


def _truncate(rel: str, size: int | None = None, *, keep_hash: bool = False) -> Callable[[Path], None]:
    def do(export: Path) -> None:
        path = export / rel
        n = path.stat().st_size // 2 if size is None else (size if size >= 0 else path.stat().st_size + size)
        os.truncate(path, n)
        if keep_hash:
            _rehash(export)
    return do


def _write(rel: str, data: bytes | str, *, keep_hash: bool = False) -> Callable[[Path], None]:
    def do(export: Path) -> None:
        path = export / rel
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        if keep_hash:
            _rehash(export)
    return do


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda export: (export / rel).unlink()


def _edit_manifest(**changes: object) -> Callable[[Path], None]:
    def do(export: Path) -> None:
        data = json.loads((export / "manifest.json").read_text())
        data.update(changes)
        (export / "manifest.json").write_text(json.dumps(data))
    return do


def _catalogue(transform: Callable[[object], object]) -> Callable[[Path], None]:
    """A valid parquet file with the wrong content, its hash written to the manifest."""
    def do(export: Path) -> None:
        import pandas as pd

        items = pd.read_parquet(export / "items.parquet")
        transform(items).to_parquet(export / "items.parquet", index=False)  # type: ignore[attr-defined]
        _rehash(export)
    return do


def _link_out(rel: str) -> Callable[[Path], None]:
    """Replace one file by a symlink to a copy of it outside the adapters directory."""
    def do(export: Path) -> None:
        outside = export.parent.parent / "outside" / export.name
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / Path(rel).name
        shutil.copy2(export / rel, target)
        (export / rel).unlink()
        (export / rel).symlink_to(target)
    return do


GARBAGE = bytes(range(256)) * 8  # not UTF-8, not JSON, not parquet, not safetensors

# (id, mutation, expected text(s) in the error: the file is always named)
FAULTS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("safetensors-truncated-to-100-bytes", _truncate(SAFETENSORS, 100),
     (SAFETENSORS, "truncated", "expected a complete safetensors file")),
    ("safetensors-tensor-bytes-cut", _truncate(SAFETENSORS, -1000), (SAFETENSORS, "truncated: its tensors need")),
    ("safetensors-empty", _truncate(SAFETENSORS, 0), (SAFETENSORS, "truncated: 0 bytes")),
    ("safetensors-garbage", _write(SAFETENSORS, GARBAGE), (SAFETENSORS, "truncated or corrupt")),
    ("safetensors-header-not-json", _write(SAFETENSORS, (16).to_bytes(8, "little") + b"{not json!!!!!!!" + b"\0" * 64),
     (SAFETENSORS, "corrupt header, not JSON")),
    ("safetensors-missing", _remove(SAFETENSORS), ("adapter_model.safetensors",)),
    ("adapter-meta-truncated", _truncate("adapter/petrec_adapter.json"), ("petrec_adapter.json",)),
    ("adapter-meta-garbage", _write("adapter/petrec_adapter.json", GARBAGE), ("petrec_adapter.json",)),
    ("parquet-garbage-hash-matches", _write("items.parquet", GARBAGE, keep_hash=True),
     ("items.parquet", "not a readable parquet")),
    ("parquet-truncated-hash-matches", _truncate("items.parquet", keep_hash=True),
     ("items.parquet", "not a readable parquet")),
    ("parquet-no-item-id-column", _catalogue(lambda d: d.drop(columns=["item_id"])), ("items.parquet", "item_id")),
    ("parquet-rows-differ-from-manifest", _catalogue(lambda d: d.iloc[:-3]), ("items.parquet", "n_items")),
    ("manifest-truncated", _truncate("manifest.json"), ("manifest.json", "not valid JSON")),
    ("manifest-garbage", _write("manifest.json", GARBAGE), ("manifest.json", "UTF-8")),
    ("manifest-empty", _write("manifest.json", ""), ("manifest.json",)),
    ("manifest-json-array", _write("manifest.json", "[1, 2]"), ("manifest.json", "JSON object")),
    ("manifest-max-length-string", _edit_manifest(max_length="64"), ("manifest.json", "max_length")),
    ("manifest-missing", _remove("manifest.json"), ("manifest.json",)),
    ("config-invalid-yaml", _write("config.yaml", "model: [unclosed\n  backbone: x"), ("config.yaml", "YAML")),
    ("config-garbage", _write("config.yaml", GARBAGE), ("config.yaml",)),
    ("config-not-a-mapping", _write("config.yaml", "- a\n- b\n"), ("config.yaml",)),
    ("config-model-not-a-mapping", _write("config.yaml", "model: 5\n"), ("config.yaml", "model")),
    ("config-unknown-model-key", _write("config.yaml", "model:\n  bogus: 1\n"), ("config.yaml", "bogus")),
    ("config-missing", _remove("config.yaml"), ("config.yaml",)),
    ("symlink-out-safetensors", _link_out(SAFETENSORS), (SAFETENSORS, "outside the adapters directory")),
    ("symlink-out-adapter-meta", _link_out("adapter/petrec_adapter.json"),
     ("petrec_adapter.json", "outside the adapters directory")),
    ("symlink-out-parquet", _link_out("items.parquet"), ("items.parquet", "outside")),
    ("symlink-out-manifest", _link_out("manifest.json"), ("manifest.json", "outside the adapters directory")),
    ("symlink-out-config", _link_out("config.yaml"), ("config.yaml", "outside the adapters directory")),
]


@pytest.fixture(scope="module")
def fault_dir(exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private adapters directory (ctr-a, ctr-b, next-a) for this module's damaged copies."""
    root = tmp_path_factory.mktemp("faults") / "adapters"
    shutil.copytree(exports, root)
    return root


@pytest.fixture(scope="module")
def fault_client(tiny_bert: Path, fault_dir: Path) -> Iterator[TestClient]:
    with make_client(serve_config(tiny_bert, fault_dir, load=["ctr-a"])) as c:
        yield c


def _damaged(root: Path, name: str, mutate: Callable[[Path], None], source: str = "ctr-a") -> None:
    shutil.rmtree(root / name, ignore_errors=True)
    shutil.copytree(root / source, root / name)
    mutate(root / name)


def _status(client: TestClient, name: str) -> dict:
    listed = client.get("/v1/adapters", headers=ADMIN).json()
    return next(s for s in listed["status"] if s["name"] == name)


@pytest.mark.parametrize(("case", "mutate", "expected"), FAULTS, ids=[c for c, _, _ in FAULTS])
def test_damaged_file_is_a_clear_error_and_the_server_keeps_serving(
        fault_client: TestClient, fault_dir: Path, case: str, mutate: Callable[[Path], None],
        expected: tuple[str, ...]) -> None:
    name = f"bad-{case}"[:64]
    _damaged(fault_dir, name, mutate)
    r = fault_client.post(f"/v1/adapters/{name}", headers=ADMIN)
    assert r.status_code == 422 and r.headers["content-type"] == "application/json", (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and name in detail, detail
    for text in expected:
        assert text in detail, (text, detail)
    assert "Traceback" not in detail and "internal error" not in detail
    status = _status(fault_client, name)
    assert status == {"name": name, "status": "unavailable", "reason": detail}
    # The other adapters are untouched and still serve.
    ok = fault_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT})
    assert ok.status_code == 200 and len(ok.json()["scores"]) == 2
    assert fault_client.post("/v1/predict", headers=ADMIN, json={"adapter": name, **PREDICT}).status_code == 404


def test_a_link_to_a_file_inside_the_adapters_directory_is_fine(fault_client: TestClient, fault_dir: Path) -> None:
    def share(export: Path) -> None:  # deduplicated weights: a link to ctr-b's file
        (export / SAFETENSORS).unlink()
        (export / SAFETENSORS).symlink_to(fault_dir / "ctr-b" / SAFETENSORS)

    _damaged(fault_dir, "linked-inside", share)
    r = fault_client.post("/v1/adapters/linked-inside", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert fault_client.delete("/v1/adapters/linked-inside", headers=ADMIN).status_code == 200


def test_next_item_catalogue_fault(fault_client: TestClient, fault_dir: Path) -> None:
    """A next_item export embeds its catalogue at load: an empty text column is still a clear 422."""
    _damaged(fault_dir, "bad-next-texts", _catalogue(lambda d: d.drop(columns=["text"])), source="next-a")
    r = fault_client.post("/v1/adapters/bad-next-texts", headers=ADMIN)
    assert r.status_code == 422 and "items.parquet" in r.json()["detail"], r.text


def test_a_failed_reload_keeps_the_old_adapter_serving(fault_client: TestClient, fault_dir: Path) -> None:
    _damaged(fault_dir, "reload-me", lambda export: None)
    assert fault_client.post("/v1/adapters/reload-me", headers=ADMIN).status_code == 200
    before = fault_client.post("/v1/predict", headers=ADMIN, json={"adapter": "reload-me", **PREDICT}).json()
    _truncate(SAFETENSORS, 100)(fault_dir / "reload-me")
    r = fault_client.post("/v1/adapters/reload-me", headers=ADMIN)
    assert r.status_code == 422 and SAFETENSORS in r.json()["detail"]
    after = fault_client.post("/v1/predict", headers=ADMIN, json={"adapter": "reload-me", **PREDICT})
    assert after.status_code == 200 and after.json() == before
    assert _status(fault_client, "reload-me") == {"name": "reload-me", "status": "loaded",
                                                  "reason": r.json()["detail"]}
    assert fault_client.delete("/v1/adapters/reload-me", headers=ADMIN).status_code == 200


STARTUP_FAULTS = ["safetensors-truncated-to-100-bytes", "parquet-garbage-hash-matches", "manifest-truncated",
                  "config-invalid-yaml", "symlink-out-safetensors"]


def test_startup_isolates_bad_adapters_and_strict_fails_fast(tiny_bert: Path, exports: Path, tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    shutil.copytree(exports, root)
    by_id = {c: m for c, m, _ in FAULTS}
    for case in STARTUP_FAULTS:
        _damaged(root, f"x-{case}", by_id[case])
    with make_client(serve_config(tiny_bert, root)) as c:  # not strict: starts, serves the good ones
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "adapters": 3, "unavailable": len(STARTUP_FAULTS)}
        detail = c.get("/readyz", headers=ADMIN).json()["unavailable_adapters"]
        assert sorted(detail) == sorted(f"x-{case}" for case in STARTUP_FAULTS)
        assert SAFETENSORS in detail["x-safetensors-truncated-to-100-bytes"]
        assert "items.parquet" in detail["x-parquet-garbage-hash-matches"]
        listed = c.get("/v1/adapters", headers=ADMIN).json()
        assert [a["name"] for a in listed["loaded"]] == ["ctr-a", "ctr-b", "next-a"]
        assert {s["name"]: s["status"] for s in listed["status"]} == {
            "ctr-a": "loaded", "ctr-b": "loaded", "next-a": "loaded",
            **{f"x-{case}": "unavailable" for case in STARTUP_FAULTS}}
        assert c.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).status_code == 200
        # Loading it again fails again, and each failure is counted.
        assert c.post("/v1/adapters/x-manifest-truncated", headers=ADMIN).status_code == 422
        metrics = c.get("/metrics", headers=ADMIN).text
        assert 'petrec_adapter_load_failures_total{adapter="x-manifest-truncated"} 2.0' in metrics
        assert 'petrec_adapter_load_failures_total{adapter="x-config-invalid-yaml"} 1.0' in metrics
        assert "petrec_adapters_unavailable 5.0" in metrics
    with pytest.raises(Exception, match="x-"), make_client(serve_config(tiny_bert, root, strict=True)):
        pass


# ----------------------------------------------------------------------------- concurrent admin operations


@pytest.fixture
def slow_client(tiny_bert: Path, own_exports: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """ctr-a served; building an adapter takes 0.4 s longer than it does (a deliberately slow load)."""
    with make_client(serve_config(tiny_bert, own_exports, load=["ctr-a"])) as c:
        registry = c.app.state.petrec.registry
        real = registry.build

        def slow(name: str) -> object:
            time.sleep(0.4)
            return real(name)

        monkeypatch.setattr(registry, "build", slow)
        yield c


def _in_order(client: TestClient, calls: list[tuple[str, str]], gap: float = 0.1) -> list[int]:
    """Send the calls from threads, ``gap`` seconds apart (each arrives while the last one runs)."""
    codes: list[int] = [0] * len(calls)

    def one(i: int, method: str, path: str) -> None:
        codes[i] = client.request(method, path, headers=ADMIN).status_code

    threads = []
    for i, (method, path) in enumerate(calls):
        t = threading.Thread(target=one, args=(i, method, path))
        t.start()
        threads.append(t)
        time.sleep(gap)
    for t in threads:
        t.join(30)
    return codes


def _loaded(client: TestClient) -> list[str]:
    return [a["name"] for a in client.get("/v1/adapters", headers=ADMIN).json()["loaded"]]


CONCURRENT = [
    ("load-then-delete", [("POST", "ctr-b"), ("DELETE", "ctr-b")], [200, 200], ["ctr-a"]),
    ("delete-then-load", [("DELETE", "ctr-a"), ("POST", "ctr-a")], [200, 200], ["ctr-a"]),
    ("load-delete-load", [("POST", "ctr-b"), ("DELETE", "ctr-b"), ("POST", "ctr-b")], [200, 200, 200],
     ["ctr-a", "ctr-b"]),
    ("two-loads", [("POST", "ctr-b"), ("POST", "ctr-b")], [200, 200], ["ctr-a", "ctr-b"]),
    ("replace-then-delete", [("POST", "ctr-a"), ("DELETE", "ctr-a")], [200, 200], []),
    ("delete-twice-then-load", [("DELETE", "ctr-a"), ("DELETE", "ctr-a"), ("POST", "ctr-a")], [200, 404, 200],
     ["ctr-a"]),
]


@pytest.mark.parametrize(("case", "calls", "codes", "final"), CONCURRENT, ids=[c[0] for c in CONCURRENT])
def test_concurrent_admin_operations_end_in_the_last_requests_state(
        slow_client: TestClient, case: str, calls: list[tuple[str, str]], codes: list[int], final: list[str]) -> None:
    got = _in_order(slow_client, [(m, f"/v1/adapters/{n}") for m, n in calls])
    assert got == codes, case
    assert _loaded(slow_client) == final
    state = slow_client.app.state.petrec
    assert state._admin_locks == {}  # no lock left behind
    # Exactly one open lane per served adapter: nothing replaced is left running.
    lanes = [ln for ln in state.scheduler._lanes if not ln.closed]
    assert sorted(ln.name for ln in lanes) == final
    for name in final:
        assert slow_client.post("/v1/predict", headers=ADMIN, json={"adapter": name, **PREDICT}).status_code == 200


def test_a_bad_load_racing_a_delete(slow_client: TestClient, own_exports: Path) -> None:
    """Load a damaged export, then delete it: a 422 naming the file, then a 404; nothing served."""
    _damaged(own_exports, "bad-race", _truncate(SAFETENSORS, 100))
    got = _in_order(slow_client, [("POST", "/v1/adapters/bad-race"), ("DELETE", "/v1/adapters/bad-race")])
    assert got == [422, 404]
    assert _loaded(slow_client) == ["ctr-a"] and _status(slow_client, "bad-race")["status"] == "unavailable"
