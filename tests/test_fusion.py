"""Stacked fusion's fit (petrec.fusion) and its use in the ctr / rating evaluators."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from sklearn.metrics import roc_auc_score
from torch import nn

from petrec.evaluation import evaluate_ctr, evaluate_rating
from petrec.fusion import fit_fusion


def _planted(n: int, weight: float, bias: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lm, prior = rng.normal(size=n), rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(prior + weight * lm + bias)))).astype(float)
    return lm, prior, labels


def test_ctr_fit_recovers_the_planted_mix() -> None:
    lm, prior, labels = _planted(40_000, 0.7, -0.3)
    weight, bias = fit_fusion(lm, prior, labels, "ctr")
    assert weight == pytest.approx(0.7, abs=0.05) and bias == pytest.approx(-0.3, abs=0.05)


def test_ctr_fit_gives_no_weight_to_noise() -> None:
    rng = np.random.default_rng(1)
    _, prior, labels = _planted(40_000, 0.0, 0.0)
    weight, _ = fit_fusion(rng.normal(size=40_000), prior, labels, "ctr")
    assert abs(weight) < 0.05


def test_ctr_fit_stays_finite_when_the_lm_separates_the_classes() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    weight, bias = fit_fusion(labels * 4 - 2, np.zeros(6), labels, "ctr")
    assert np.isfinite([weight, bias]).all() and weight > 1


def test_rating_fit_is_least_squares_on_the_residual() -> None:
    rng = np.random.default_rng(2)
    lm, prior = rng.normal(size=50), rng.normal(size=50)
    weight, bias = fit_fusion(lm, prior, prior + 0.4 * lm + 3.0, "rating")
    assert weight == pytest.approx(0.4) and bias == pytest.approx(3.0)


@pytest.mark.parametrize(("lm", "labels"), [
    (np.array([0.1, 0.5, 0.9]), np.array([1.0, 1.0, 1.0])),  # one class
    (np.array([0.3, 0.3, 0.3]), np.array([0.0, 1.0, 1.0])),  # constant language-model score
    (np.array([0.3]), np.array([1.0])),  # one example
])
def test_degenerate_splits_keep_the_prior_alone(lm: np.ndarray, labels: np.ndarray) -> None:
    assert fit_fusion(lm, np.zeros_like(lm), labels, "ctr") == (0.0, 0.0)


def test_bad_inputs_are_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        fit_fusion(np.zeros(3), np.zeros(2), np.zeros(3), "ctr")
    with pytest.raises(ValueError, match="non-finite"):
        fit_fusion(np.array([0.0, np.nan]), np.zeros(2), np.array([0.0, 1.0]), "ctr")
    with pytest.raises(ValueError, match="unknown task 'next_item'"):
        fit_fusion(np.zeros(2), np.zeros(2), np.zeros(2), "next_item")


class _Stacked(nn.Module):
    """A stand-in stacked-fusion model: each batch carries its lm / prior scores as inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.prior = SimpleNamespace(weight=0.0, bias=0.0)
        self.prior.set_fusion = self._set

    def _set(self, weight: float, bias: float) -> None:
        self.prior.weight, self.prior.bias = weight, bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor
                ) -> SimpleNamespace:
        lm, prior = features[:, 0], features[:, 1]
        return SimpleNamespace(logits=prior + self.prior.weight * lm + self.prior.bias,
                               lm_logits=lm, prior_logits=prior)


def _batches(lm: np.ndarray, prior: np.ndarray, labels: np.ndarray, size: int = 500) -> list[dict]:
    feats = torch.tensor(np.stack([lm, prior], 1), dtype=torch.float32)
    ids = torch.zeros(len(lm), 1, dtype=torch.long)
    return [{"input_ids": ids[i:i + size], "attention_mask": ids[i:i + size], "features": feats[i:i + size],
             "labels": torch.tensor(labels[i:i + size], dtype=torch.float32)} for i in range(0, len(lm), size)]


def test_calibrating_evaluator_fits_on_its_split_and_scores_the_mix() -> None:
    lm, prior, labels = _planted(4_000, 1.0, 0.0)
    model, accelerator = _Stacked(), Accelerator(cpu=True)
    plain = evaluate_ctr(model, _batches(lm, prior, labels), accelerator)
    assert "fusion_weight" not in plain and model.prior.weight == 0.0  # no calibrate: nothing is fitted
    assert plain["auc"] == pytest.approx(roc_auc_score(labels, prior))
    fused = evaluate_ctr(model, _batches(lm, prior, labels), accelerator, calibrate=True)
    assert model.prior.weight == pytest.approx(fused["fusion_weight"]) and 0.8 < model.prior.weight < 1.2
    assert fused["lm_auc"] == pytest.approx(roc_auc_score(labels, lm))
    assert fused["auc"] > max(plain["auc"], fused["lm_auc"]) + 0.03


def test_calibrating_rating_evaluator_reports_the_lm_alone() -> None:
    rng = np.random.default_rng(3)
    lm, prior = rng.normal(size=600), rng.normal(size=600)
    targets = prior + 0.5 * lm + 3 + rng.normal(scale=0.1, size=600)
    model = _Stacked()
    out = evaluate_rating(model, _batches(lm, prior, targets), Accelerator(cpu=True), calibrate=True)
    assert out["fusion_weight"] == pytest.approx(0.5, abs=0.05) and out["rmse"] < 0.15 < out["lm_rmse"]


def test_two_part_fit_recovers_both_weights_and_one_part_matches_fit_fusion() -> None:
    from petrec.fusion import fit_fusion_weights

    rng = np.random.default_rng(3)
    n = 40_000
    lm, collab, prior = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(prior + 0.5 * lm + 1.2 * collab - 0.2)))).astype(float)
    weights, bias = fit_fusion_weights(np.stack([lm, collab], axis=1), prior, labels, "ctr")
    assert weights == pytest.approx([0.5, 1.2], abs=0.06) and bias == pytest.approx(-0.2, abs=0.05)
    one, b1 = fit_fusion_weights(lm[:, None], prior, labels, "ctr")
    assert (float(one[0]), b1) == fit_fusion(lm, prior, labels, "ctr")
    # a constant part gets no weight, the other is still fitted
    weights, _ = fit_fusion_weights(np.stack([np.full(n, 0.3), collab], axis=1), prior, labels, "ctr")
    assert weights[0] == 0.0 and weights[1] > 0.8
