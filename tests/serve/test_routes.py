"""Inference routes, schema limits, errors as JSON, health and metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.serve.conftest import ADMIN

HIST = [{"item_id": "i0231", "label": 0}, {"item_id": "i0252"}, {"item_id": "i0073", "label": 1}]


def _predict(client: TestClient, **body: object):
    return client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST, **body})


def test_health_and_ready_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "adapters": 3}


def test_predict_scores_ids_and_raw_text(client: TestClient) -> None:
    r = _predict(client, candidates=[{"item_id": "i0262"}, {"text": "A brand new film (2031)"}, {"item_id": "i0001"}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "ctr-a" and body["task"] == "ctr" and len(body["scores"]) == 3
    assert all(0.0 < s < 1.0 for s in body["scores"])
    # The same candidate scores the same alone and among others (no cross-talk within a batch).
    alone = _predict(client, candidates=[{"item_id": "i0001"}]).json()["scores"][0]
    assert alone == pytest.approx(body["scores"][2], abs=1e-5)


def test_predict_empty_history_and_raw_text_history(client: TestClient) -> None:
    r = client.post("/v1/predict", headers=ADMIN, json={
        "adapter": "ctr-a", "history": [{"text": "Some film I liked", "label": 1}],
        "candidates": [{"item_id": "i0262"}]})
    assert r.status_code == 200, r.text
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "candidates": [{"item_id": "i0262"}]})
    assert r.status_code == 200, r.text


def test_unknown_item_is_404_naming_it(client: TestClient) -> None:
    r = _predict(client, candidates=[{"item_id": "i0262"}, {"item_id": "no-such-item"}])
    assert r.status_code == 404 and "no-such-item" in r.json()["detail"]
    r = client.post("/v1/recommend", headers=ADMIN, json={"adapter": "next-a", "history": [{"item_id": "zzz"}]})
    assert r.status_code == 404 and "zzz" in r.json()["detail"]


def test_unknown_adapter_is_404(client: TestClient) -> None:
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "nope", "candidates": [{"item_id": "i0001"}]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_wrong_task_route_is_422(client: TestClient) -> None:
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "next-a", "candidates": [{"item_id": "i0001"}]})
    assert r.status_code == 422 and "/v1/recommend" in r.json()["detail"]
    r = client.post("/v1/recommend", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST})
    assert r.status_code == 422 and "/v1/predict" in r.json()["detail"]


def test_recommend_top_k_and_exclude_seen(client: TestClient) -> None:
    hist = [{"item_id": "i0231"}, {"item_id": "i0252"}]
    r = client.post("/v1/recommend", headers=ADMIN, json={"adapter": "next-a", "history": hist, "k": 300})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    ids = [i["item_id"] for i in items]
    assert len(ids) == 298 and not {"i0231", "i0252"} & set(ids)  # 300 items, 2 seen
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    kept = client.post("/v1/recommend", headers=ADMIN,
                       json={"adapter": "next-a", "history": hist, "k": 300, "exclude_seen": False}).json()
    assert len(kept["items"]) == 300 and {"i0231", "i0252"} <= {i["item_id"] for i in kept["items"]}
    top5 = client.post("/v1/recommend", headers=ADMIN, json={"adapter": "next-a", "history": hist, "k": 5})
    # A random tiny model has near-ties, so compare the scores (the ranking's values), not the ids.
    got = [i["score"] for i in top5.json()["items"]]
    assert got == pytest.approx([i["score"] for i in items[:5]], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"history": [{"item_id": "i0001"}] * 41, "candidates": [{"item_id": "i0002"}]}, "history"),
        ({"candidates": [{"item_id": "i0002"}] * 21}, "candidates"),
        ({"candidates": []}, "candidates"),
        ({"candidates": [{"item_id": "i0002", "text": "both"}]}, "candidates"),
        ({"candidates": [{}]}, "candidates"),
        ({"candidates": [{"text": "x" * 2001}]}, "candidates"),
        ({"candidates": [{"item_id": "i0002"}], "history": [{"item_id": "i0001", "label": 3}]}, "history"),
        ({"candidates": [{"item_id": "i0002"}], "extra": 1}, "extra"),
        ({"candidates": [{"item_id": "i0002"}], "adapter": "../ctr-a"}, "adapter"),
    ],
    ids=["history-too-long", "too-many-candidates", "no-candidates", "id-and-text", "neither", "text-too-long",
         "bad-label", "unknown-field", "traversal-name"],
)
def test_schema_limits_are_422_with_location(client: TestClient, body: dict, where: str) -> None:
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", **body})
    assert r.status_code == 422, r.text
    assert any(where in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()


def test_recommend_k_limit(client: TestClient) -> None:
    r = client.post("/v1/recommend", headers=ADMIN, json={"adapter": "next-a", "history": HIST, "k": 401})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "k"


def test_body_limit_413_by_length_and_by_stream(client: TestClient) -> None:
    big = b'{"adapter": "ctr-a", "candidates": [' + b" " * (70 * 1024) + b"]}"
    r = client.post("/v1/predict", headers={**ADMIN, "Content-Type": "application/json"}, content=big)
    assert r.status_code == 413 and "bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed size is checked
        for _ in range(80):
            yield b" " * 1024

    r = client.post("/v1/predict", headers={**ADMIN, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413


def test_malformed_json_is_422_not_500(client: TestClient) -> None:
    r = client.post("/v1/predict", headers={**ADMIN, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 422


def test_internal_error_is_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import petrec.serve.engine as engine

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "_forward", boom)
    with TestClient(client.app, raise_server_exceptions=False) as raw:  # same app, no re-raise
        r = raw.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "candidates": [{"item_id": "i0001"}]})
    assert r.status_code == 500 and "RuntimeError" in r.json()["detail"]


def test_metrics_count_routes_batches_adapters_memory(client: TestClient) -> None:
    _predict(client, candidates=[{"item_id": "i0262"}])
    client.post("/v1/predict", headers=ADMIN, json={"adapter": "nope", "candidates": [{"item_id": "i0001"}]})
    text = client.get("/metrics", headers=ADMIN).text
    assert 'petrec_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'petrec_requests_total{method="POST",route="/v1/predict",status="404"}' in text
    assert 'petrec_request_seconds_bucket{le="0.005",route="/v1/predict"}' in text
    assert 'petrec_batch_rows_count{adapter="ctr-a"}' in text
    assert "petrec_adapters_loaded 3.0" in text
    assert 'petrec_adapter_own_bytes{adapter="ctr-a",method="lora",task="ctr"}' in text
    assert "petrec_base_model_bytes" in text and "process_resident_memory_bytes" in text
