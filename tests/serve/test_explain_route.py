"""POST /v1/explain: the occlusion effects the library computes offline, behind predict's auth."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from petrec.explain import explain_examples
from petrec.runs import TrainedRun
from tests.serve.conftest import ADMIN, TEAM
from tests.serve.test_routes import catalogue, ctr_run  # noqa: F401  (fixtures)

HIST = [{"item_id": "i0231", "label": 0}, {"item_id": "i0252"}, {"item_id": "i0073", "label": 1}]


def test_explain_matches_the_offline_explanation(client: TestClient, ctr_run: TrainedRun,  # noqa: F811
                                                 catalogue: pd.DataFrame) -> None:  # noqa: F811
    body = {"adapter": "ctr-a", "history": HIST, "candidate": {"item_id": "i0262"}}
    r = client.post("/v1/explain", headers=ADMIN, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["adapter"] == "ctr-a" and got["task"] == "ctr" and got["method"] == "occlusion"
    assert [e["position"] for e in got["effects"]] == [0, 1, 2]
    assert [e["item_id"] for e in got["effects"]] == ["i0231", "i0252", "i0073"]
    # The score is /v1/predict's, and the effects are the library's on the run the export came from.
    predicted = client.post("/v1/predict", headers=ADMIN, json={"adapter": "ctr-a", "history": HIST,
                                                               "candidates": [{"item_id": "i0262"}]}).json()
    assert got["score"] == pytest.approx(predicted["scores"][0], abs=1e-6)
    offline = explain_examples(ctr_run, [{"history_item_ids": [h["item_id"] for h in HIST],
                                          "history_labels": [h.get("label", 1) for h in HIST],
                                          "item_id": "i0262", "label": 0}], items=catalogue)[0]
    assert [e["effect"] for e in got["effects"]] == pytest.approx(offline.effects, abs=1e-5)
    assert got["ranking"] == offline.ranking
    # A raw-text history item is explained too (no catalogue id).
    raw = client.post("/v1/explain", headers=ADMIN, json={**body, "history": [*HIST, {"text": "A film I loved"}]})
    assert raw.status_code == 200 and raw.json()["effects"][3]["item_id"] is None


def test_explain_has_predicts_auth_and_refusals(client: TestClient) -> None:
    body = {"adapter": "ctr-a", "history": HIST, "candidate": {"item_id": "i0262"}}
    assert client.post("/v1/explain", json=body).status_code == 401
    assert client.post("/v1/explain", headers=TEAM, json=body).status_code == 200  # team-a may use ctr-a ...
    denied = client.post("/v1/explain", headers=TEAM, json={**body, "adapter": "ctr-b"})  # ... not ctr-b
    assert denied.status_code == 403 and "may not use adapter 'ctr-b'" in denied.json()["detail"]
    wrong = client.post("/v1/explain", headers=ADMIN, json={**body, "adapter": "next-a"})
    assert wrong.status_code == 422 and "next_item model" in wrong.json()["detail"]
    assert client.post("/v1/explain", headers=ADMIN, json={**body, "history": []}).status_code == 422
    missing = client.post("/v1/explain", headers=ADMIN, json={**body, "candidate": {"item_id": "nope"}})
    assert missing.status_code == 404 and "unknown item_id 'nope'" in missing.json()["detail"]
