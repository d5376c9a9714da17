"""petrec.metrics.ranking against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from petrec.metrics import PetrecMetricError, compute_ranking, ranking_per_user, target_ranks


def _reference_rank(row: np.ndarray, target: int, excluded: set[int]) -> int:
    """Independent brute force: sort candidates by score desc, the target LAST among ties."""
    cands = [i for i in range(len(row)) if i == target or i not in excluded]
    order = sorted(cands, key=lambda i: (-row[i], i == target))
    return order.index(target) + 1


def test_ranking_hand_case_ties_are_pessimistic() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    # target 1 ties with item 2 -> counts against it: rank 3
    assert target_ranks(scores, [1]).tolist() == [3]
    out = compute_ranking(scores, [1], ks=(2, 3))
    assert out == {
        "hr@2": 0.0, "ndcg@2": 0.0, "mrr@2": 0.0,
        "hr@3": 1.0, "ndcg@3": 0.5, "mrr@3": pytest.approx(1 / 3),
    }  # fmt: skip


def test_constant_scores_give_worst_rank() -> None:
    scores = np.zeros((3, 7))
    assert target_ranks(scores, [0, 3, 6]).tolist() == [7, 7, 7]


def test_exclusion_and_target_in_history() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    targets = [2, 2]
    # user 0: item 0 excluded -> rank 2; user 1: history contains the target itself and
    # item 1 -> the target stays a candidate, item 1 is removed -> rank 2
    history = [[0], [2, 1]]
    assert target_ranks(scores, targets, history).tolist() == [2, 2]
    mask = np.zeros((2, 4), dtype=bool)
    mask[0, 0] = True
    mask[1, [1, 2]] = True
    assert target_ranks(scores, targets, mask).tolist() == [2, 2]
    out = compute_ranking(scores, targets, ks=(1, 2), exclude=history)
    assert out["hr@1"] == 0.0
    assert out["hr@2"] == 1.0
    assert out["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert out["mrr@2"] == 0.5


def test_k_larger_than_item_count() -> None:
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    out = compute_ranking(scores, [0, 0], ks=(100,))
    # ranks 3 and 1: everything is inside the top 100
    assert out["hr@100"] == 1.0
    assert out["ndcg@100"] == pytest.approx((1 / math.log2(4) + 1.0) / 2)
    assert out["mrr@100"] == pytest.approx((1 / 3 + 1.0) / 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_ranking_matches_brute_force_with_ties_and_history(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 30
    scores = np.round(rng.random((n_users, n_items)), 1)  # many ties
    targets = rng.integers(0, n_items, size=n_users)
    history = [
        list(rng.choice(n_items, size=rng.integers(0, 8), replace=False)) for _ in range(n_users)
    ]
    ranks = target_ranks(scores, targets, history).tolist()
    expected = [
        _reference_rank(scores[u], int(targets[u]), set(history[u])) for u in range(n_users)
    ]
    assert ranks == expected
    out = compute_ranking(scores, targets, ks=(5, 10), exclude=history)
    r = np.array(expected, dtype=float)
    assert out["hr@5"] == pytest.approx(np.mean(r <= 5))
    assert out["ndcg@10"] == pytest.approx(np.mean(np.where(r <= 10, 1 / np.log2(r + 1), 0)))
    assert out["mrr@10"] == pytest.approx(np.mean(np.where(r <= 10, 1 / r, 0)))


def test_ranking_torch_and_numpy_agree_and_chunking() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 20, generator=g)
    targets = torch.randint(0, 20, (50,), generator=g)
    a = compute_ranking(scores, targets, ks=(1, 5))
    b = compute_ranking(scores.numpy(), targets.numpy(), ks=(1, 5))
    assert a == b
    assert torch.equal(target_ranks(scores, targets, chunk_size=7), target_ranks(scores, targets))


@pytest.mark.parametrize(
    ("scores", "targets", "kwargs", "match"),
    [
        (np.zeros(4), [0], {}, r"expected shape \(n_users, n_items\)"),
        (np.zeros((2, 3)), [0], {}, r"targets: expected shape \(2,\)"),
        (np.zeros((1, 3)), [3], {}, r"item id 3 for user 0 is outside \[0, 3\)"),
        (np.zeros((1, 3)), [0.5], {}, r"expected integer item ids"),
        (np.array([[0.1, np.nan]]), [0], {}, r"nan at \(user, item\) = \(0, 1\)"),
        (np.zeros((1, 3)), [0], {"ks": (0,)}, r"ks: expected positive integers"),
        (np.zeros((1, 3)), [0], {"exclude": [[5]]}, r"exclude\[0\]: item id 5 is outside"),
        (np.zeros((2, 3)), [0, 1], {"exclude": [[1]]}, r"one list of item ids per user \(2\)"),
        (
            [[0.1, 0.2], [0.3]],
            [0, 0],
            {},
            r"scores: expected a \(n_users, n_items\) array, got list",
        ),
        ([["a", "b"]], [0], {}, r"scores: expected an array"),
    ],
)
def test_ranking_bad_inputs(scores: np.ndarray, targets: list, kwargs: dict, match: str) -> None:
    with pytest.raises(PetrecMetricError, match=match):
        compute_ranking(scores, targets, **kwargs)


def test_padded_index_exclusion_equals_lists_and_mask() -> None:
    # the collator's history_index form: item indices padded with -1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    targets = torch.tensor([2, 2, 0])
    padded = torch.tensor([[0, -1], [2, 1], [-1, -1]])
    lists = [[0], [2, 1], []]
    assert target_ranks(scores, targets, padded).tolist() == [2, 2, 4]
    assert target_ranks(scores, targets, lists).tolist() == [2, 2, 4]
    assert compute_ranking(scores, targets, (1, 2), padded) == compute_ranking(
        scores, targets, (1, 2), lists
    )
    with pytest.raises(PetrecMetricError, match=r"exclude\[1\]: item id 4 is outside \[0, 4\)"):
        target_ranks(scores, targets, torch.tensor([[0], [4], [-1]]))


def test_ranking_per_user_averages_to_compute_ranking() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(30, 12, generator=g).round(decimals=1)
    targets = torch.randint(0, 12, (30,), generator=g)
    history = torch.randint(-1, 12, (30, 3), generator=g)
    per_user = ranking_per_user(scores, targets, ks=(3, 12), exclude=history)
    means = compute_ranking(scores, targets, ks=(3, 12), exclude=history)
    assert set(per_user) == set(means)
    for name, values in per_user.items():
        assert values.shape == (30,)
        assert float(values.double().mean()) == pytest.approx(means[name], abs=1e-6)
    ranks = target_ranks(scores, targets, history).double()
    assert torch.equal(per_user["hr@3"], (ranks <= 3).float())
    assert torch.allclose(per_user["mrr@12"], (1 / ranks).float())  # every rank <= 12 items


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_users=st.integers(1, 6),
    n_items=st.integers(1, 9),
)
def test_property_ranks_equal_brute_force(data: st.DataObject, n_users: int, n_items: int) -> None:
    # scores from a tiny set of values -> ties are the common case
    scores = np.array(
        data.draw(
            st.lists(
                st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n_items, max_size=n_items),
                min_size=n_users,
                max_size=n_users,
            )
        )
    )
    targets = data.draw(st.lists(st.integers(0, n_items - 1), min_size=n_users, max_size=n_users))
    history = data.draw(
        st.lists(
            st.lists(st.integers(0, n_items - 1), max_size=4), min_size=n_users, max_size=n_users
        )
    )
    got = target_ranks(scores, targets, history).tolist()
    assert got == [_reference_rank(scores[u], targets[u], set(history[u])) for u in range(n_users)]
    k = data.draw(st.integers(1, 12))
    hr = compute_ranking(scores, targets, ks=(k,), exclude=history)[f"hr@{k}"]
    assert hr == pytest.approx(np.mean([r <= k for r in got]))
