"""Occlusion rows and effect ranking (the model-based explanation tests are in tests/recipes)."""

from __future__ import annotations

import pytest

from petrec.explain import occlusion_rows, rank_by_magnitude


def test_occlusion_rows_drop_one_history_item_each() -> None:
    rows = occlusion_rows({"history_item_ids": ["a", "b", "c"], "history_labels": [1, 0, 1],
                           "item_id": "z", "label": 1})
    assert rows["history_item_ids"] == [["a", "b", "c"], ["b", "c"], ["a", "c"], ["a", "b"]]
    assert rows["history_labels"] == [[1, 0, 1], [0, 1], [1, 1], [1, 0]]
    assert rows["history_ratings"] == [[1.0, 0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]  # default: the labels
    assert rows["item_id"] == ["z"] * 4 and rows["label"] == [1] * 4
    empty = occlusion_rows({"history_item_ids": [], "item_id": "z"})
    assert empty["history_item_ids"] == [[]] and empty["item_id"] == ["z"]
    with pytest.raises(ValueError, match="example for item 'z': 2 history items, 1 history labels"):
        occlusion_rows({"history_item_ids": ["a", "b"], "history_labels": [1], "item_id": "z"})


def test_ranking_is_by_magnitude_then_recency() -> None:
    assert rank_by_magnitude([0.1, -0.5, 0.3, 0.5]) == [3, 1, 2, 0]
    assert rank_by_magnitude([]) == []
