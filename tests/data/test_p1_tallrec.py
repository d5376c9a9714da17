"""BENCHMARKS P1 (TALLRec protocol) on ml-100k, checked against a plain-Python recomputation."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.data


def _tallrec_by_hand(folder: Path) -> list[tuple[str, list[str], list[int], str, int, int]]:
    """Recompute P1 from raw u.data with nothing but the standard library."""
    users: dict[str, list[tuple[int, int, str, int]]] = {}
    with open(folder / "u.data", encoding="ascii") as fh:
        for row, line in enumerate(fh):
            user, item, rating, ts = line.rstrip("\n").split("\t")
            users.setdefault(user, []).append((int(ts), row, item, 1 if int(rating) > 3 else 0))
    examples = []
    for user, recs in users.items():  # dict keeps first-appearance order
        recs.sort(key=lambda r: (r[0], r[1]))  # by time, ties in file order
        for i in range(10, len(recs)):
            hist = recs[i - 10 : i]
            examples.append((user, [h[2] for h in hist], [h[3] for h in hist], recs[i][2], recs[i][3], recs[i][0]))
    return examples[-10_000:]


def _titles(folder: Path) -> dict[str, str]:
    with open(folder / "u.item", encoding="latin-1") as fh:
        return {f[0]: f[1] for f in (line.split("|") for line in fh)}


def test_p1_sizes_and_positive_rate(p1) -> None:
    assert {k: v.num_rows for k, v in p1.splits.items()} == {"train": 8000, "valid": 1000, "test": 1000}
    test_labels = p1.splits["test"]["label"]
    assert round(sum(test_labels) / len(test_labels), 3) == 0.528
    assert p1.summary["splits"]["test"]["positive_rate"] == 0.528
    assert p1.summary["splits"]["train"]["users"] == 80
    assert p1.summary["splits"]["test"]["users"] == 16
    assert set(p1.summary["splits"]["train"]["history_length_histogram"]) == {"10"}


def test_p1_every_split_equals_hand_computation(p1, shared_data_dir: Path) -> None:
    expected = _tallrec_by_hand(shared_data_dir / "ml-100k")
    blocks = {"train": expected[:8000], "valid": expected[8000:9000], "test": expected[9000:]}
    for name, exp in blocks.items():
        ds = p1.splits[name]
        got = list(zip(ds["user_id"], ds["history_item_ids"], ds["history_labels"], ds["item_id"],
                       ds["label"], ds["timestamp"], strict=True))
        assert got == [tuple(e) for e in exp], name


def test_p1_first_and_last_test_example(p1, shared_data_dir: Path) -> None:
    folder = shared_data_dir / "ml-100k"
    expected = _tallrec_by_hand(folder)
    titles = _titles(folder)
    test = p1.splits["test"]
    for got, exp in ((test[0], expected[9000]), (test[len(test) - 1], expected[-1])):
        user, hist, labels, item, label, ts = exp
        assert got["user_id"] == user
        assert got["history_item_ids"] == hist
        assert got["history_labels"] == labels
        assert got["item_id"] == item
        assert got["label"] == label
        assert got["timestamp"] == ts
        liked = ", ".join(f'"{titles[h]}"' for h, lab in zip(hist, labels, strict=True) if lab)
        disliked = ", ".join(f'"{titles[h]}"' for h, lab in zip(hist, labels, strict=True) if not lab)
        assert f"User Preference: {liked}\nUser Unpreference: {disliked}\n" in got["text"]
        assert got["text"].endswith(f'Whether the user will like the target movie "{titles[item]}"?')
    # the hand computation pins the concrete example too (so a shared bug cannot hide)
    assert (test[0]["user_id"], test[0]["item_id"], test[0]["label"]) == ("934", "786", 0)


def test_p1_few_shot_is_seeded_subset(shared_data_dir: Path, p1) -> None:
    from petrec.data import DataConfig, prepare

    a = prepare(DataConfig.preset("P1", data_dir=str(shared_data_dir), few_shot_k=64, seed=1))
    b = prepare(DataConfig.preset("P1", data_dir=str(shared_data_dir), few_shot_k=64, seed=1))
    c = prepare(DataConfig.preset("P1", data_dir=str(shared_data_dir), few_shot_k=64, seed=2))
    assert a.splits["train"].num_rows == 64
    assert a.splits["train"].to_list() == b.splits["train"].to_list()
    assert a.splits["train"]["text"] != c.splits["train"]["text"]
    full = set(zip(p1.splits["train"]["user_id"], p1.splits["train"]["item_id"], strict=True))
    assert set(zip(a.splits["train"]["user_id"], a.splits["train"]["item_id"], strict=True)) <= full
    assert a.splits["test"].to_list() == p1.splits["test"].to_list()
    assert a.summary["train_examples_before_sampling"] == 8000


def test_p2_temporal_on_ml100k(shared_data_dir: Path) -> None:
    from petrec.data import DataConfig, prepare

    data = prepare(DataConfig.preset("P2", data_dir=str(shared_data_dir)))
    sizes = {n: data.splits[n].num_rows for n in ("train", "valid", "test")}
    assert sum(sizes.values()) == 100_000 - 943  # every rating but each user's first is a target
    assert 9_000 < sizes["test"] < 11_000
    cut1, cut2 = data.summary["temporal_cuts"]
    assert max(data.splits["train"]["timestamp"]) < cut1 <= min(data.splits["valid"]["timestamp"])
    assert max(data.splits["valid"]["timestamp"]) < cut2 <= min(data.splits["test"]["timestamp"])
    assert set(data.splits["test"]["user_id"]) & set(data.splits["train"]["user_id"])  # users seen in training
