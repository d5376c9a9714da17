"""petrec.metrics.functional (CTR, rating) against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from petrec.metrics import (
    MetricWarning,
    PetrecMetricError,
    accuracy,
    compute_ctr,
    compute_rating,
    f1,
    log_loss,
    roc_auc,
)

# ----------------------------------------------------------------------------- CTR


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal -> many ties
def test_auc_matches_sklearn_with_and_without_ties(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=500)
    s = rng.random(500)
    if decimals is not None:
        s = np.round(s, decimals)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_case_with_tie() -> None:
    # pairs (pos, neg): (0.8,0.2)=1, (0.8,0.4)=1, (0.4,0.2)=1, (0.4,0.4)=0.5 -> 3.5/4
    assert roc_auc([0, 1, 1, 0], [0.2, 0.8, 0.4, 0.4]) == 0.875


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_auc_single_class_is_nan_with_warning(labels: list[int]) -> None:
    with pytest.warns(MetricWarning, match="single class"):
        value = roc_auc(labels, [0.3] * len(labels))
    assert math.isnan(value)
    with pytest.warns(MetricWarning):
        assert math.isnan(compute_ctr(labels, [0.3] * len(labels))["auc"])


def test_logloss_matches_sklearn_and_logits_are_exact() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=300)
    z = rng.normal(scale=3.0, size=300)
    p = 1.0 / (1.0 + np.exp(-z))
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert log_loss(y, z, from_logits=True) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    # huge logits: exact softplus, no clipping, no overflow
    assert log_loss([1, 0], [1000.0, -1000.0], from_logits=True) == 0.0
    assert log_loss([0], [1000.0], from_logits=True) == pytest.approx(1000.0)
    # probabilities of exactly 0 / 1 are clipped to machine epsilon like sklearn
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(skm.log_loss([1, 0], [0.0, 1.0]))


def test_accuracy_and_f1_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=400)
    p = rng.random(400)
    pred = (p >= 0.5).astype(int)
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred))
    assert f1(y, p) == pytest.approx(skm.f1_score(y, pred))
    pred3 = (p >= 0.3).astype(int)
    assert f1(y, p, threshold=0.3) == pytest.approx(skm.f1_score(y, pred3))
    # logits: z >= 0 <=> p >= 0.5
    z = np.log(p / (1 - p))
    assert accuracy(y, z, from_logits=True) == pytest.approx(skm.accuracy_score(y, pred))


def test_f1_without_any_positive_is_zero() -> None:
    assert f1([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0
    assert f1([1, 0], [0.1, 0.2]) == 0.0


def test_compute_ctr_keys_and_torch_input() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.tensor([-1.0, 2.0, 0.5, 0.5])
    out = compute_ctr(labels, logits, from_logits=True)
    assert set(out) == {"auc", "logloss", "accuracy", "f1"}
    assert out["auc"] == 0.875
    assert out["accuracy"] == 0.75  # predictions 0,1,1,1
    assert out["f1"] == pytest.approx(0.8)  # tp=2 fp=1 fn=0


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], r"labels: expected 0/1 values, got 2.0 at position 1"),
        ([0, 1], [0.1, 0.2, 0.3], r"labels has 2 values but scores has 3"),
        ([0, 1], [0.1, float("nan")], r"scores: non-finite value nan at position 1"),
        ([0, 1], [0.1, 1.5], r"expected probabilities in \[0, 1\], got 1.5 at position 1"),
        ([], [], r"labels: is empty"),
    ],
)
def test_ctr_bad_inputs_raise_one_clear_error(labels: list, scores: list, match: str) -> None:
    with pytest.raises(PetrecMetricError, match=match):
        compute_ctr(labels, scores)


# ----------------------------------------------------------------------------- rating


def test_rating_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(1, 6, size=200).astype(float)
    yhat = y + rng.normal(size=200)
    out = compute_rating(y, yhat)
    assert out["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, yhat)))
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert compute_rating([1, 2, 3], [2, 2, 5]) == {"rmse": math.sqrt(5 / 3), "mae": 1.0}


def test_rating_length_mismatch() -> None:
    with pytest.raises(PetrecMetricError, match="y has 2 values but yhat has 1"):
        compute_rating([1, 2], [1])
