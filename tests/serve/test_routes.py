"""Inference routes, schema limits, errors as JSON, health and metrics."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from petrec.runs import TrainedRun, load_run, score_examples
from tests.serve.conftest import ADMIN

HIST = [{"item_id": "i0231", "label": 0}, {"item_id": "i0252"}, {"item_id": "i0073", "label": 1}]
_EXAMPLE_FEATURES = datasets.Features({
    "history_item_ids": datasets.Sequence(datasets.Value("string")),
    "history_labels": datasets.Sequence(datasets.Value("int64")),
    "history_ratings": datasets.Sequence(datasets.Value("float64")),
    "item_id": datasets.Value("string"), "label": datasets.Value("int64"),
})


@pytest.fixture(scope="module")
def ctr_run(serve_runs: dict[str, Path]) -> TrainedRun:
    """The ctr run ``ctr-a`` was exported from, loaded on its own (not through the server)."""
    return load_run(serve_runs["ctr"])


@pytest.fixture(scope="module")
def catalogue(exports: Path) -> pd.DataFrame:
    """The catalogue the ``ctr-a`` export serves."""
    return pd.read_parquet(exports / "ctr-a" / "items.parquet")


def _offline(run: TrainedRun, catalogue: pd.DataFrame, history: list[dict], candidates: list[dict]) -> list[float]:
    """A predict request scored without the server: the run's own model via ``score_examples``.

    Raw texts join the catalogue under ids of their own (the text is the title prompts show);
    a history item's label defaults to 1, as in the API.
    """
    texts = list(dict.fromkeys(x["text"] for x in [*history, *candidates] if "text" in x))
    raw = {t: f"raw-{i}" for i, t in enumerate(texts)}
    items = pd.concat([catalogue[["item_id", "title"]],
                       pd.DataFrame({"item_id": list(raw.values()), "title": texts})], ignore_index=True)

    def ref(x: dict) -> str:
        return x["item_id"] if "item_id" in x else raw[x["text"]]

    hist, labels = [ref(h) for h in history], [int(h.get("label", 1)) for h in history]
    n = len(candidates)
    examples = datasets.Dataset.from_dict({
        "history_item_ids": [hist] * n, "history_labels": [labels] * n,
        "history_ratings": [[float(x) for x in labels]] * n, "item_id": [ref(c) for c in candidates],
        "label": [0] * n}, features=_EXAMPLE_FEATURES)
    return score_examples(run, examples, items=items).tolist()


def _predict(client: TestClient, **body: object):
    return client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST, **body})


def test_health_and_ready_need_no_key(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "adapters": 3}
    # Every answer names the worker process that gave it (errors too, the body limit's included).
    refused = client.get("/metrics")
    too_big = client.post("/v1/predict", headers=ADMIN, content=b" " * (70 * 1024))
    assert (refused.status_code, too_big.status_code) == (401, 413)
    for r in (health, ready, refused, too_big):
        assert r.headers["X-Petrec-Worker"] == str(os.getpid())  # the test client runs the app in-process


def test_predict_scores_ids_and_raw_text(client: TestClient, ctr_run: TrainedRun, catalogue: pd.DataFrame) -> None:
    title = str(catalogue.set_index("item_id").loc["i0001", "title"])
    cands = [{"item_id": "i0262"}, {"text": "A brand new film (2031)"}, {"item_id": "i0001"}, {"text": title}]
    r = _predict(client, candidates=cands)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "ctr-a" and body["task"] == "ctr" and len(body["scores"]) == 4
    assert all(0.0 < s < 1.0 for s in body["scores"])
    # One probability per candidate, in order: what the run's own model gives for the same input.
    assert body["scores"] == pytest.approx(_offline(ctr_run, catalogue, HIST, cands), abs=1e-6)
    # A raw text equal to a catalogue item's title is rendered as that item.
    assert body["scores"][3] == pytest.approx(body["scores"][2], abs=1e-6)
    # The same candidate scores the same alone and among others (no cross-talk within a batch).
    alone = _predict(client, candidates=[{"item_id": "i0001"}]).json()["scores"][0]
    assert alone == pytest.approx(body["scores"][2], abs=1e-5)


def test_predict_empty_history_and_raw_text_history(client: TestClient, ctr_run: TrainedRun,
                                                     catalogue: pd.DataFrame) -> None:
    cands = [{"item_id": "i0262"}, {"item_id": "i0001"}]
    raw_hist = [{"text": "Some film I liked", "label": 1}]
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": raw_hist, "candidates": cands})
    assert r.status_code == 200, r.text
    with_text = r.json()["scores"]
    assert with_text == pytest.approx(_offline(ctr_run, catalogue, raw_hist, cands), abs=1e-6)
    r = client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "candidates": cands})
    assert r.status_code == 200, r.text
    empty = r.json()["scores"]
    assert empty == pytest.approx(_offline(ctr_run, catalogue, [], cands), abs=1e-6)
    assert all(0.0 < s < 1.0 for s in [*with_text, *empty])


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
    assert r.status_code == 413 and r.json() == {"detail": "request body larger than 65536 bytes"}

    def chunks():  # no Content-Length: the streamed size is checked
        for _ in range(80):
            yield b" " * 1024

    r = client.post("/v1/predict", headers={**ADMIN, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413 and r.json() == {"detail": "request body larger than 65536 bytes"}
    assert "content-length" not in {k.lower() for k in r.request.headers}  # it was really streamed


def test_malformed_json_is_422_not_500(client: TestClient) -> None:
    r = client.post("/v1/predict", headers={**ADMIN, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body", error


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
