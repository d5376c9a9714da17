"""Pooling against hand computations, for right and left padding."""

from __future__ import annotations

import pytest
import torch

from petrec.models import PetrecModelError, first_token_index, last_token_index, pool

HIDDEN = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
RIGHT = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
LEFT = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])


def test_indices_for_both_paddings() -> None:
    assert first_token_index(RIGHT).tolist() == [0, 0]
    assert last_token_index(RIGHT).tolist() == [2, 1]
    assert first_token_index(LEFT).tolist() == [1, 2]
    assert last_token_index(LEFT).tolist() == [3, 3]


def test_right_padding_by_hand() -> None:
    h = HIDDEN
    assert torch.equal(pool(h, RIGHT, "cls"), torch.stack([h[0, 0], h[1, 0]]))
    assert torch.equal(pool(h, RIGHT, "last"), torch.stack([h[0, 2], h[1, 1]]))
    mean = torch.stack([(h[0, 0] + h[0, 1] + h[0, 2]) / 3, (h[1, 0] + h[1, 1]) / 2])
    assert torch.allclose(pool(h, RIGHT, "mean"), mean)


def test_left_padding_by_hand() -> None:
    h = HIDDEN
    assert torch.equal(pool(h, LEFT, "cls"), torch.stack([h[0, 1], h[1, 2]]))
    assert torch.equal(pool(h, LEFT, "last"), torch.stack([h[0, 3], h[1, 3]]))
    mean = torch.stack([(h[0, 1] + h[0, 2] + h[0, 3]) / 3, (h[1, 2] + h[1, 3]) / 2])
    assert torch.allclose(pool(h, LEFT, "mean"), mean)


@pytest.mark.parametrize("mode", ["cls", "mean", "last"])
def test_non_finite_padding_states_do_not_leak(mode: str) -> None:
    h = HIDDEN.clone()
    h[RIGHT == 0] = float("nan")
    assert torch.isfinite(pool(h, RIGHT, mode)).all()
    assert torch.equal(pool(h, RIGHT, mode), pool(HIDDEN, RIGHT, mode))


def test_pooling_errors() -> None:
    with pytest.raises(PetrecModelError, match="row 1 of the batch has no real token"):
        pool(HIDDEN, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]), "mean")
    with pytest.raises(PetrecModelError, match="unknown mode 'max'"):
        pool(HIDDEN, RIGHT, "max")
    with pytest.raises(PetrecModelError, match=r"do not match"):
        pool(HIDDEN, RIGHT[:, :3], "cls")
