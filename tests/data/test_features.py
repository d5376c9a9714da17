"""Behaviour features of the prior path: exact statistics, no label leakage, JSON round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from petrec.data import DataConfig, DataError, prepare
from petrec.data.features import FEATURE_NAMES, BehaviourStats
from petrec.models import ModelConfig, PetrecModelError
from petrec.models.behaviour import PriorHead
from petrec.train import is_head_param

TRAIN = {
    "user_id": ["u1", "u1", "u2", "u3"],
    "item_id": ["a", "b", "a", "a"],
    "label": [1, 0, 1, 0],
    "history_labels": [[1, 1], [1, 0, 0], [], [0]],
}


def test_statistics_and_features_are_exact() -> None:
    stats = BehaviourStats.fit(TRAIN, "ctr", prior_strength=2.0)
    assert stats.global_mean == 0.5 and stats.fitted_on == 4
    assert stats.items == {"a": (3, 2.0), "b": (1, 0.0)}
    raw = stats.raw_features({"user_id": ["u1", "new"], "item_id": ["a", "zzz"], "history_labels": [[1, 0, 1], []]})
    assert raw.shape == (2, len(FEATURE_NAMES))
    # history mean, log(1 + len), item (2 + 2*0.5) / (3 + 2), log(1 + 3)
    np.testing.assert_allclose(raw[0], [2 / 3, math.log(4), 3 / 5, math.log(4)])
    # unseen item: the global mean, zero count; empty history: the global mean
    np.testing.assert_allclose(raw[1], [0.5, 0.0, 0.5, 0.0])
    scaled = stats.features(TRAIN, leave_one_out=True)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-6)  # standardised on the training rows


def test_training_rows_leave_their_own_label_out() -> None:
    stats = BehaviourStats.fit(TRAIN, "ctr", prior_strength=2.0)
    loo = stats.raw_features(TRAIN, leave_one_out=True)
    # row 0 (item a, label 1): a's other two examples hold 1 like -> (1 + 1) / (2 + 2), count 2
    np.testing.assert_allclose(loo[0, 2:], [2 / 4, math.log(3)])
    # row 1 (item b, label 0): no other example of b -> the global mean, count 0
    np.testing.assert_allclose(loo[1, 2:], [0.5, 0.0])
    # a training row's features do not depend on its own label: flip it (and row 1's, on
    # another item, so the global mean stays 0.5), refit: row 0's features are unchanged
    flipped = dict(TRAIN, label=[0, 1, 1, 0])
    again = BehaviourStats.fit(flipped, "ctr", prior_strength=2.0).raw_features(flipped, leave_one_out=True)
    np.testing.assert_array_equal(again[0], loo[0])


def test_rating_task_counts_ratings() -> None:
    rows = {"item_id": ["a", "a"], "rating": [5.0, 3.0], "history_ratings": [[4.0], [2.0, 2.0]]}
    stats = BehaviourStats.fit(rows, "rating", prior_strength=1.0)
    assert stats.global_mean == 4.0 and stats.items["a"] == (2, 8.0)
    np.testing.assert_allclose(stats.raw_features(rows)[:, 0], [4.0, 2.0])


def test_no_valid_or_test_label_reaches_the_features() -> None:
    data = prepare(DataConfig(history_len=5, max_train_examples=400))
    stats = BehaviourStats.fit(data.splits["train"], "ctr")
    for name in ("valid", "test"):
        split = data.splits[name]
        flipped = split.map(lambda r: {"label": 1 - r["label"], "rating": 6.0 - r["rating"]})
        assert flipped["label"] != split["label"]
        np.testing.assert_array_equal(stats.features(split), stats.features(flipped))
    # and the statistics themselves read only the training split's targets
    train = data.splits["train"]
    other = train.map(lambda r: {"label": 1 - r["label"]})
    assert BehaviourStats.fit(other, "ctr").items != stats.items


def test_json_round_trip_and_clear_errors(tmp_path) -> None:
    stats = BehaviourStats.fit(TRAIN, "ctr")
    stats.save(tmp_path)
    again = BehaviourStats.load(tmp_path)
    assert again.to_json() == stats.to_json()
    np.testing.assert_array_equal(again.features(TRAIN), stats.features(TRAIN))
    (tmp_path / "behaviour_stats.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match=r"behaviour_stats\.json: not a petrec-behaviour-stats document"):
        BehaviourStats.load(tmp_path)
    with pytest.raises(DataError, match="missing"):
        BehaviourStats.load(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"lack column\(s\) \['item_id'\]"):
        BehaviourStats.fit({k: v for k, v in TRAIN.items() if k != "item_id"}, "ctr")
    with pytest.raises(DataError, match="tasks"):
        BehaviourStats.fit(TRAIN, "next_item")


def test_prior_head_starts_linear_and_is_a_head() -> None:
    torch.manual_seed(0)
    head = PriorHead(len(FEATURE_NAMES), 8)
    x = torch.randn(5, len(FEATURE_NAMES))
    torch.testing.assert_close(head(x), head.linear(x).squeeze(-1))  # the MLP branch starts at zero
    assert is_head_param("prior.linear.weight") and is_head_param("head.weight")
    assert not is_head_param("backbone.prior_layer.weight")
    with pytest.raises(PetrecModelError, match="next_item"):
        ModelConfig(task="next_item", behaviour_prior=True)
