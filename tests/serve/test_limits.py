"""Admission control and fairness: strict request types, the cost bound (413), the deadline
(504, work abandoned) and round-robin micro-batches across adapters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from petrec.serve.config import ServeConfig, ServeConfigError
from tests.serve.conftest import ADMIN, make_client, serve_config

HIST = [{"item_id": "i0231", "label": 0}, {"item_id": "i0252"}]
CANDS = [{"item_id": f"i{n:04d}"} for n in range(20)]


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("predict", {"history": [{"item_id": "i0001", "label": True}]}, "label"),
        ("predict", {"history": [{"item_id": "i0001", "label": "1"}]}, "label"),
        ("predict", {"history": [{"item_id": "i0001", "label": 1.0}]}, "label"),
        ("predict", {"history": [{"item_id": "i0001", "rating": "4"}]}, "rating"),
        ("predict", {"history": [{"item_id": "i0001", "rating": True}]}, "rating"),
        ("predict", {"candidates": [{"item_id": 1}]}, "item_id"),
        ("recommend", {"k": "5"}, "k"),
        ("recommend", {"k": 5.0}, "k"),
        ("recommend", {"k": True}, "k"),
        ("recommend", {"exclude_seen": "yes"}, "exclude_seen"),
        ("recommend", {"exclude_seen": 1}, "exclude_seen"),
        ("recommend", {"exclude_seen": "true"}, "exclude_seen"),
    ],
    ids=["label-true", "label-string", "label-float", "rating-string", "rating-bool", "item-id-int",
         "k-string", "k-float", "k-bool", "exclude-seen-yes", "exclude-seen-int", "exclude-seen-string"],
)
def test_types_are_strict(client: TestClient, route: str, body: dict, field: str) -> None:
    base = ({"adapter": "ctr-a", "candidates": [{"item_id": "i0002"}]} if route == "predict"
            else {"adapter": "next-a", "history": [{"item_id": "i0001"}]})
    r = client.post(f"/v1/{route}", headers=ADMIN, json={**base, **body})
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == field or field in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()


def test_exact_types_still_pass(client: TestClient) -> None:
    r = client.post("/v1/predict", headers=ADMIN, json={
        "adapter": "ctr-a", "candidates": [{"item_id": "i0002"}],
        "history": [{"item_id": "i0001", "label": 0, "rating": 4}, {"text": "A film", "label": 1, "rating": 2.5}]})
    assert r.status_code == 200, r.text  # an integer is a valid JSON number for a rating
    r = client.post("/v1/recommend", headers=ADMIN,
                    json={"adapter": "next-a", "history": [{"item_id": "i0001"}], "k": 5, "exclude_seen": False})
    assert r.status_code == 200 and len(r.json()["items"]) == 5


def test_limits_are_checked_settings() -> None:
    for bad in ({"max_request_tokens": 0}, {"request_timeout_s": 0}, {"request_timeout_s": "5"},
                {"max_request_tokens": True}):
        with pytest.raises(ServeConfigError, match=next(iter(bad))):
            ServeConfig(**bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def limited(tiny_bert: Path, exports: Path) -> Iterator[TestClient]:
    """ctr-a, ctr-b, next-a with a cost bound of 5 rows x max_length 64, micro-batches of 2 rows."""
    with make_client(serve_config(tiny_bert, exports, max_request_tokens=5 * 64, max_batch_size=2,
                                  request_timeout_s=0.6)) as c:
        yield c


def test_cost_bound_is_413_naming_the_limit(limited: TestClient) -> None:
    body = {"adapter": "ctr-a", "history": HIST}
    ok = limited.post("/v1/predict", headers=ADMIN, json={**body, "candidates": CANDS[:5]})
    assert ok.status_code == 200, ok.text
    r = limited.post("/v1/predict", headers=ADMIN, json={**body, "candidates": CANDS[:6]})
    assert r.status_code == 413
    assert r.json() == {"detail": "request too costly: 6 rows x max_length 64 of adapter 'ctr-a' = 384 tokens, "
                                  "above the server's limit max_request_tokens=320; send at most 5 candidates "
                                  "per request"}


class _SlowForward:
    """Wraps ``engine._forward``: sleeps ``delay`` s per micro-batch; records (adapter, rows, end time)."""

    def __init__(self, real: object, delay: float) -> None:
        self.real, self.delay = real, delay
        self.calls: list[tuple[str, int, float]] = []

    def __call__(self, adapter: object, seqs: list, max_rows: int, **inputs: object) -> object:
        time.sleep(self.delay)
        out = self.real(adapter, seqs, max_rows, **inputs)  # type: ignore[operator]
        self.calls.append((adapter.name, len(seqs), time.perf_counter()))  # type: ignore[attr-defined]
        return out


def test_deadline_is_504_and_the_rest_of_the_work_is_dropped(limited: TestClient,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import petrec.serve.engine as engine

    slow = _SlowForward(engine._forward, 0.4)  # 3 micro-batches of 0.4 s against a deadline of 0.6 s
    monkeypatch.setattr(engine, "_forward", slow)
    start = time.perf_counter()
    r = limited.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST, "candidates": CANDS[:5]})
    took = time.perf_counter() - start
    assert r.status_code == 504 and "request_timeout_s=0.6" in r.json()["detail"], r.text
    assert took < 2.0
    time.sleep(0.8)  # the micro-batch running at the deadline finishes; the third never starts
    assert 1 <= len(slow.calls) <= 2, slow.calls
    ran = len(slow.calls)
    monkeypatch.setattr(engine, "_forward", slow.real)
    ok = limited.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST, "candidates": CANDS[:1]})
    assert ok.status_code == 200 and len(slow.calls) == ran
    assert 'petrec_request_deadline_exceeded_total{adapter="ctr-a"} 1.0' in limited.get("/metrics", headers=ADMIN).text


def test_a_large_request_does_not_hold_other_adapters(limited: TestClient, client: TestClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ctr-a gets 5 rows (3 micro-batches of <= 2), then ctr-b 1 row: ctr-b's answer comes after one
    ctr-a micro-batch, not after the whole request; the split request's scores are unchanged."""
    import petrec.serve.engine as engine

    expected = client.post("/v1/predict", headers=ADMIN,
                           json={"adapter": "ctr-a", "history": HIST, "candidates": CANDS[:5]}).json()["scores"]
    slow = _SlowForward(engine._forward, 0.1)
    monkeypatch.setattr(engine, "_forward", slow)
    done: dict[str, float] = {}
    answers: dict[str, dict] = {}

    def ask(adapter: str, cands: list[dict]) -> None:
        r = limited.post("/v1/predict", headers=ADMIN, json={"adapter": adapter, "history": HIST, "candidates": cands})
        done[adapter] = time.perf_counter()
        answers[adapter] = {"status": r.status_code, **r.json()}

    big = threading.Thread(target=ask, args=("ctr-a", CANDS[:5]))
    big.start()
    time.sleep(0.05)  # the first ctr-a micro-batch is running
    ask("ctr-b", CANDS[:1])
    big.join(10)
    assert answers["ctr-a"]["status"] == answers["ctr-b"]["status"] == 200, answers
    order = [name for name, _, _ in slow.calls]
    assert order.index("ctr-b") < len(order) - 1 and order.count("ctr-a") == 3, order
    assert done["ctr-b"] < done["ctr-a"]
    assert answers["ctr-a"]["scores"] == pytest.approx(expected, abs=1e-6)  # split and reassembled in order
