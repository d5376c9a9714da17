"""The evaluate modules load offline from petrec and agree with the functions / sklearn."""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import numpy as np
import pytest
from sklearn import metrics as skm

import petrec.metrics as M


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_every_registered_metric_loads_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in M.METRICS:
        module = M.load(name, cache_dir=tmp_path)
        assert isinstance(module, evaluate.EvaluationModule)
        assert module.name == name
    # only empty bookkeeping folders were created, inside the folder we gave
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_aliases_and_unknown_name() -> None:
    assert M.load("roc_auc").name == "auc"
    assert M.load("hr").name == "hit_rate"
    with pytest.raises(M.PetrecMetricError, match=r"unknown metric 'bleu'; accepted: \['accuracy'"):
        M.load("bleu")


def test_binary_modules_match_sklearn_with_batches(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, size=200)
    p = np.round(rng.random(200), 2)
    expected = {
        "auc": skm.roc_auc_score(y, p),
        "logloss": skm.log_loss(y, p),
        "accuracy": skm.accuracy_score(y, p >= 0.5),
        "f1": skm.f1_score(y, p >= 0.5),
    }
    for name, value in expected.items():
        module = M.load(name)
        for start in range(0, 200, 64):  # streamed in uneven batches
            module.add_batch(predictions=p[start : start + 64], references=y[start : start + 64])
        assert module.compute()[name] == pytest.approx(value, rel=1e-9)


def test_combine_and_single_class_auc() -> None:
    combined = evaluate.combine([M.load("auc"), M.load("logloss")])
    out = combined.compute(predictions=[0.2, 0.7, 0.6], references=[0, 1, 0])
    assert out["auc"] == 1.0  # the positive 0.7 beats both negatives 0.2 and 0.6
    assert out["logloss"] == pytest.approx(skm.log_loss([0, 1, 0], [0.2, 0.7, 0.6]))
    with pytest.warns(M.MetricWarning):
        assert math.isnan(M.load("auc").compute(predictions=[0.2, 0.3], references=[1, 1])["auc"])


def test_rating_modules_match_sklearn(rng: np.random.Generator) -> None:
    y = rng.integers(1, 6, size=100).astype(float)
    yhat = y + rng.normal(size=100)
    assert M.load("rmse").compute(predictions=yhat, references=y)["rmse"] == pytest.approx(
        math.sqrt(skm.mean_squared_error(y, yhat))
    )
    assert M.load("mae").compute(predictions=yhat, references=y)["mae"] == pytest.approx(
        skm.mean_absolute_error(y, yhat)
    )


def test_ranking_modules_equal_compute_ranking(rng: np.random.Generator) -> None:
    scores = np.round(rng.random((12, 9)), 1)
    targets = rng.integers(0, 9, size=12)
    history = [[int(i)] for i in rng.integers(0, 9, size=12)]
    expected = M.compute_ranking(scores, targets, ks=(1, 3, 20), exclude=history)
    for name, key in (("hit_rate", "hr"), ("ndcg", "ndcg"), ("mrr", "mrr")):
        module = M.load(name)
        module.add_batch(predictions=scores[:5], references=targets[:5])
        module.add_batch(predictions=scores[5:], references=targets[5:])
        out = module.compute(k=[1, 3, 20], exclude=history)
        assert out == {f"{key}@{k}": pytest.approx(expected[f"{key}@{k}"]) for k in (1, 3, 20)}
    # the hand case of test_functional through the module: pessimistic tie -> rank 3
    out = M.load("mrr").compute(predictions=[[0.9, 0.5, 0.5, 0.1]], references=[1], k=3)
    assert out == {"mrr@3": pytest.approx(1 / 3)}
