"""Padding and per-task batch contents of the collators."""

from __future__ import annotations

import datasets
import pytest
import torch

from petrec.collate import BehaviourCollator, ItemCollator, longest_first, pad_sequences


def test_pad_sequences_right_and_left() -> None:
    assert pad_sequences([[1, 2, 3], [4]], 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad_sequences([[1, 2, 3], [4]], 0, "left").tolist() == [[1, 2, 3], [0, 0, 4]]


def test_longest_first_orders_by_length_keeping_ties_and_rows_together() -> None:
    split = datasets.Dataset.from_dict({"input_ids": [[1], [1, 2, 3], [1, 2], [4, 5, 6], []],
                                        "label": [0, 1, 0, 1, 1]})
    ordered = longest_first(split)
    assert ordered["input_ids"] == [[1, 2, 3], [4, 5, 6], [1, 2], [1], []]
    assert ordered["label"] == [1, 1, 0, 0, 1]  # each label stays with its tokens
    # Batches of two: the padded width per batch falls from 3 + 3 + 0 to 3 + 2 + 0 tokens wide.
    widths = [max(len(r) for r in ordered["input_ids"][i:i + 2]) for i in range(0, 5, 2)]
    assert widths == [3, 2, 0]


def test_ctr_and_rating_batches_carry_their_labels() -> None:
    rows = [{"input_ids": [5, 6, 7], "label": 1, "rating": 4.0}, {"input_ids": [8], "label": 0, "rating": 2.0}]
    ctr = BehaviourCollator("ctr", pad_token_id=0)(rows)
    assert ctr["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ctr["labels"].tolist() == [1.0, 0.0] and ctr["labels"].dtype == torch.float32
    rating = BehaviourCollator("rating", pad_token_id=0, padding_side="left")(rows)
    assert rating["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert rating["labels"].tolist() == [4.0, 2.0]


def test_next_item_batches_carry_target_tokens_and_history_indices() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    tokens = [[11], [12, 13], [14, 15, 16]]
    collate = BehaviourCollator("next_item", pad_token_id=0, item_index=index, item_tokens=tokens)
    batch = collate([
        {"input_ids": [1, 2], "item_id": "c", "history_item_ids": ["a", "b"]},
        {"input_ids": [3], "item_id": "a", "history_item_ids": ["b"]},
    ])
    assert batch["target_index"].tolist() == [2, 0]
    assert batch["item_input_ids"].tolist() == [[14, 15, 16], [11, 0, 0]]
    assert batch["history_index"].tolist() == [[0, 1], [1, -1]]
    with pytest.raises(KeyError, match="target item 'zz' is not in the item catalogue"):
        collate([{"input_ids": [1], "item_id": "zz", "history_item_ids": []}])
    assert ItemCollator(0)([[1, 2], [3]])["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'click'"):
        BehaviourCollator("click", pad_token_id=0)
