"""Serving behaviour-prior and collaborative-token exports: the server computes each row's features
and ID tokens (``/v1/explain``: each occluded row's own) and scores what the run scores."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from petrec.data import prepare
from petrec.data.features import STATS_FILE
from petrec.explain import explain_examples
from petrec.models.collab import COLLAB_FILE
from petrec.runs import load_run, score_examples
from tests.deploy.conftest import collab_run, prior_run  # noqa: F401  (fixtures)
from tests.serve.conftest import ADMIN, make_client, serve_config

#: adapter name → (run fixture, the file its inputs come from)
ADAPTERS = {"prior-a": ("prior_run", STATS_FILE), "collab-a": ("collab_run", COLLAB_FILE)}


@pytest.fixture(scope="module")
def runs(prior_run: Path, collab_run: Path) -> dict[str, Path]:  # noqa: F811
    return {"prior-a": prior_run, "collab-a": collab_run}


@pytest.fixture(scope="module")
def input_exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from petrec.deploy.export import export_run

    root = tmp_path_factory.mktemp("input-adapters")
    for name, run_dir in runs.items():
        export_run(run_dir, root / name, notice=None)
    return root


@pytest.fixture(scope="module")
def input_client(tiny_bert: Path, input_exports: Path) -> Iterator[TestClient]:
    with make_client(serve_config(tiny_bert, input_exports)) as c:
        yield c


def _history(row: dict) -> list[dict]:
    return [{"item_id": h, "label": int(lab)} for h, lab in zip(row["history_item_ids"], row["history_labels"],
                                                                strict=True)]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_predict_scores_like_the_run(input_client: TestClient, runs: dict[str, Path], name: str) -> None:
    run = load_run(runs[name])
    data = prepare(run.data)
    examples = data.splits["test"].select(range(16))
    want = score_examples(run, examples, items=data.items)
    served = []
    for row in examples.to_list():
        r = input_client.post("/v1/predict", headers=ADMIN, json={
            "adapter": name, "history": _history(row), "candidates": [{"item_id": row["item_id"]}]})
        assert r.status_code == 200, r.text
        served.append(r.json()["scores"][0])
    np.testing.assert_allclose(served, want, atol=1e-5, rtol=0)
    assert np.ptp(want) > 1e-5
    # One request, many candidates: each row gets its own candidate's features / ID token.
    row = examples[0]
    same = examples.map(lambda _: {"history_item_ids": row["history_item_ids"],
                                   "history_labels": row["history_labels"]})
    many = input_client.post("/v1/predict", headers=ADMIN, json={
        "adapter": name, "history": _history(row), "candidates": [{"item_id": i} for i in same["item_id"]]})
    np.testing.assert_allclose(many.json()["scores"], score_examples(run, same, items=data.items), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_explain_recomputes_the_inputs_of_each_occluded_row(input_client: TestClient, runs: dict[str, Path],
                                                           name: str) -> None:
    run = load_run(runs[name])
    data = prepare(run.data)
    row = next(r for r in data.splits["test"].to_list() if len(r["history_item_ids"]) >= 3)
    r = input_client.post("/v1/explain", headers=ADMIN, json={
        "adapter": name, "history": _history(row), "candidate": {"item_id": row["item_id"]}})
    assert r.status_code == 200, r.text
    got = r.json()
    # explain_examples scores each occluded row through score_examples: features / tokens per row.
    offline = explain_examples(run, [row], items=data.items)[0]
    assert got["score"] == pytest.approx(offline.score, abs=1e-5)
    assert [e["effect"] for e in got["effects"]] == pytest.approx(offline.effects, abs=1e-5)
    assert max(abs(e) for e in offline.effects) > 1e-5  # the history matters: a wrong row would show
    # the prior's share, as `petrec explain` reports it (behaviour-prior adapters only)
    for key in ("prior", "lm", "prior_share"):
        if offline.prior is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(getattr(offline, key), abs=1e-4)
    assert (offline.prior is not None) == (name == "prior-a")


def _rehash(export: Path, key: str) -> None:
    data = json.loads((export / "manifest.json").read_text())
    entry = data["inputs"][key]
    entry["sha256"] = hashlib.sha256((export / entry["file"]).read_bytes()).hexdigest()
    (export / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("source", sorted(ADAPTERS))
@pytest.mark.parametrize(("damage", "expected"), [
    ("missing", "is missing"),
    ("garbage-rehashed", "not readable JSON"),
    ("symlink-out", "outside"),
])
def test_a_missing_or_damaged_input_file_is_a_clear_refusal(input_client: TestClient, input_exports: Path,
                                                            source: str, damage: str, expected: str) -> None:
    file = ADAPTERS[source][1]
    name = f"bad-{source}-{damage}"
    export = input_exports / name
    shutil.copytree(input_exports / source, export)
    if damage == "missing":
        (export / file).unlink()
    elif damage == "garbage-rehashed":
        (export / file).write_bytes(b"{cut")
        _rehash(export, "behaviour_stats" if file == STATS_FILE else "collab_tokens")
    else:
        outside = input_exports.parent / f"outside-{source}"
        outside.mkdir(exist_ok=True)
        shutil.move(export / file, outside / file)
        (export / file).symlink_to(outside / file)
    r = input_client.post(f"/v1/adapters/{name}", headers=ADMIN)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert name in detail and file in detail and expected in detail, detail
    ok = input_client.post("/v1/predict", headers=ADMIN, json={
        "adapter": source, "history": [], "candidates": [{"item_id": "i0001"}]})
    assert ok.status_code == 200, ok.text
