"""Adapter admin: load / replace / delete from the adapters directory only, refusals, hot swap, sharing."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serve.conftest import ADMIN, make_client, serve_config

PREDICT = {"history": [{"item_id": "i0231", "label": 0}, {"item_id": "i0252"}],
           "candidates": [{"item_id": "i0262"}, {"item_id": "i0001"}, {"text": "Raw text film"}]}


@pytest.fixture
def admin_client(tiny_bert: Path, own_exports: Path):
    with make_client(serve_config(tiny_bert, own_exports, load=["ctr-a", "next-a"])) as c:
        yield c


def test_load_delete_and_list(admin_client: TestClient) -> None:
    listed = admin_client.get("/v1/adapters", headers=ADMIN).json()
    assert [a["name"] for a in listed["loaded"]] == ["ctr-a", "next-a"]
    assert listed["available"] == ["ctr-a", "ctr-b", "next-a"]
    r = admin_client.post("/v1/adapters/ctr-b", headers=ADMIN)
    assert r.status_code == 200 and r.json()["replaced"] is False and r.json()["loaded"] == "ctr-b"
    assert r.json()["adapter"] == admin_client.get("/v1/adapters", headers=ADMIN).json()["loaded"][1]
    assert {k: r.json()["adapter"][k] for k in ("name", "method", "task", "n_items")} == {
        "name": "ctr-b", "method": "lora", "task": "ctr", "n_items": 300}
    served = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-b", **PREDICT})
    assert served.status_code == 200, served.text
    # ctr-b is a copy of ctr-a's export: it serves the same scores under its own name.
    same = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).json()
    assert served.json() == {**same, "adapter": "ctr-b"} and len(same["scores"]) == 3
    assert admin_client.delete("/v1/adapters/ctr-b", headers=ADMIN).json() == {"removed": "ctr-b"}
    r = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-b", **PREDICT})
    assert r.status_code == 404 and "not loaded" in r.json()["detail"]
    r = admin_client.delete("/v1/adapters/ctr-b", headers=ADMIN)
    # The 404 names only the adapter asked for, never the others that are loaded.
    assert r.status_code == 404 and r.json() == {"detail": "adapter 'ctr-b' is not loaded"}
    r = admin_client.post("/v1/adapters/missing", headers=ADMIN)
    assert r.status_code == 404 and "missing" in r.json()["detail"]
    assert "petrec_adapters_loaded 2.0" in admin_client.get("/metrics", headers=ADMIN).text


def test_reload_serves_the_changed_export(admin_client: TestClient, own_exports: Path) -> None:
    """Replacing ctr-a's files and POSTing its name serves the new weights, exactly."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    before = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).json()["scores"]
    weights = own_exports / "ctr-a" / "adapter" / "adapter_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(weights))
    tensors["base_model.model.head.bias"] += 1.0  # every logit one higher
    save_file(tensors, str(weights), metadata=meta)
    # Files changed on disk are not served until the adapter is reloaded.
    unchanged = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).json()
    assert unchanged["scores"] == pytest.approx(before, abs=1e-6)
    r = admin_client.post("/v1/adapters/ctr-a", headers=ADMIN)
    assert r.status_code == 200 and r.json()["replaced"] is True, r.text
    after = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).json()["scores"]
    expected = [1 / (1 + math.exp(-(math.log(p / (1 - p)) + 1.0))) for p in before]
    assert after == pytest.approx(expected, abs=1e-5)
    assert all(a > b + 1e-3 for a, b in zip(after, before, strict=True))  # not within the tolerance


@pytest.mark.parametrize("name", ["%2E%2E", ".hidden", "a%20b", "a%5Cb", "x" * 65, "-lead", "a%00b"])
def test_bad_names_refused(admin_client: TestClient, name: str) -> None:
    r = admin_client.post(f"/v1/adapters/{name}", headers=ADMIN)
    assert r.status_code == 422 and "invalid adapter name" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/v1/adapters/..%2F..%2Fetc", "/v1/adapters/%2E%2E%2Fctr-a",
                                  "/v1/adapters/../../etc/passwd"])
def test_traversal_paths_never_reach_the_loader(admin_client: TestClient, path: str) -> None:
    r = admin_client.post(path, headers=ADMIN)
    assert r.status_code in (404, 405, 422) and r.headers["content-type"] == "application/json"
    assert len(admin_client.get("/v1/adapters", headers=ADMIN).json()["loaded"]) == 2


def test_symlink_out_of_the_directory_refused(admin_client: TestClient, own_exports: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(own_exports / "ctr-a", outside)
    (own_exports / "evil").symlink_to(outside, target_is_directory=True)
    r = admin_client.post("/v1/adapters/evil", headers=ADMIN)
    assert r.status_code == 422 and "outside the adapters directory" in r.json()["detail"]


def _corrupt(own_exports: Path, name: str, how: str) -> None:
    shutil.copytree(own_exports / "ctr-a", own_exports / name)
    manifest = own_exports / name / "manifest.json"
    if how == "base":
        data = json.loads(manifest.read_text())
        data["base_fingerprint"] = "0" * 64
        manifest.write_text(json.dumps(data))
    elif how == "catalogue":
        import pandas as pd

        items = pd.read_parquet(own_exports / name / "items.parquet")
        items.iloc[:-1].to_parquet(own_exports / name / "items.parquet", index=False)
    elif how == "escape":  # the catalogue moved out of the folder, the manifest pointing at it
        outside = own_exports.parent / "outside"
        outside.mkdir()
        shutil.move(own_exports / name / "items.parquet", outside / "items.parquet")
        data = json.loads(manifest.read_text())
        data["catalogue"]["file"] = "../../outside/items.parquet"
        manifest.write_text(json.dumps(data))
    else:
        manifest.write_text("{}")


@pytest.mark.parametrize(("how", "message"), [("base", "fingerprint"), ("catalogue", "sha256 mismatch"),
                                              ("manifest", "format"), ("escape", "inside the export")])
def test_bad_exports_refused_with_422(admin_client: TestClient, own_exports: Path, how: str, message: str) -> None:
    _corrupt(own_exports, f"bad-{how}", how)
    r = admin_client.post(f"/v1/adapters/bad-{how}", headers=ADMIN)
    assert r.status_code == 422 and message in r.json()["detail"], r.json()


def test_startup_skips_or_fails_on_refused(tiny_bert: Path, own_exports: Path) -> None:
    _corrupt(own_exports, "bad-base", "base")
    with make_client(serve_config(tiny_bert, own_exports)) as c:
        listed = c.get("/v1/adapters", headers=ADMIN).json()
        assert "bad-base" not in [a["name"] for a in listed["loaded"]]
        assert "fingerprint" in listed["refused"]["bad-base"]
        assert c.get("/readyz").json()["adapters"] == 3
    with pytest.raises(Exception, match="fingerprint"), make_client(serve_config(tiny_bert, own_exports, strict=True)):
        pass


def test_adapters_share_the_base_tensors(admin_client: TestClient) -> None:
    state = admin_client.app.state.petrec
    base = state.registry.base
    a, b = (state.registry.get(n) for n in ("ctr-a", "next-a"))
    base_ptrs = {p.data_ptr() for p in base.backbone.parameters()}
    for adapter in (a, b):
        assert adapter.shares_base
        frozen = [p for n, p in adapter.model.backbone.named_parameters() if "lora_" not in n]
        assert frozen and all(p.data_ptr() in base_ptrs for p in frozen)
        lora = [p for n, p in adapter.model.named_parameters() if "lora_" in n]
        assert lora and not any(p.data_ptr() in base_ptrs for p in lora)
        assert adapter.shared_bytes == base.bytes
        assert 0 < adapter.own_bytes < base.bytes / 10
    wa = a.model.backbone.embeddings.word_embeddings.weight
    wb = b.model.backbone.embeddings.word_embeddings.weight
    assert wa is wb and wa.data_ptr() == base.backbone.embeddings.word_embeddings.weight.data_ptr()
    assert a.tokenizer is b.tokenizer  # one tokenizer per padding side, not one per adapter


def test_hot_swap_while_requests_run(admin_client: TestClient) -> None:
    """Replace ctr-a (and add / drop ctr-b) while 4 threads keep predicting: no request fails."""
    expected = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT}).json()["scores"]
    failures: list[str] = []
    counts = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = admin_client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **PREDICT})
            counts[0] += 1
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
            elif r.json()["scores"] != pytest.approx(expected, abs=1e-5):
                failures.append(f"scores changed: {r.json()['scores']}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        before = admin_client.get("/v1/adapters", headers=ADMIN).json()["loaded"][0]["loaded_at"]
        for _ in range(3):
            assert admin_client.post("/v1/adapters/ctr-a", headers=ADMIN).json()["replaced"] is True
            assert admin_client.post("/v1/adapters/ctr-b", headers=ADMIN).status_code == 200
            assert admin_client.delete("/v1/adapters/ctr-b", headers=ADMIN).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = admin_client.get("/v1/adapters", headers=ADMIN).json()["loaded"][0]["loaded_at"]
    assert after > before and counts[0] >= 8
    assert failures == []
