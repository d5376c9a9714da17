"""The data bridge: leave-one-out sequences, padded tensors, and no leakage of valid/test targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from petrec.models.sequential import data as D


def _distinct_data(n_users: int = 40, seed: int = 0) -> D.SeqData:
    # Every user's items are distinct, so an item identifies its position in the sequence.
    rng = np.random.default_rng(seed)
    seqs = [rng.permutation(60)[: rng.integers(3, 25)].astype(np.int64) for _ in range(n_users)]
    return D.SeqData(seqs, np.arange(n_users), np.arange(60))


def _rows(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


def test_from_interactions_orders_by_time_then_file_order_and_filters_items() -> None:
    inter = pd.DataFrame({"user_id": ["b", "a", "a", "a", "b", "b", "a"],
                          "item_id": ["x", "y", "z", "x", "y", "z", "w"],
                          "timestamp": [2, 1, 0, 1, 0, 1, 5]})
    data = D.from_interactions(inter, min_item_interactions=2)  # w (1 interaction) is dropped
    assert list(data.user_ids) == ["a", "b"]
    assert list(data.item_ids) == ["x", "y", "z"]
    # a: z(t0), y(t1, file row 1), x(t1, file row 3); b: y(t0), z(t1), x(t2)
    assert [list(s) for s in data.sequences] == [[2, 1, 0], [1, 2, 0]]
    with pytest.raises(D.SeqDataError, match="user 'a' has 3 interaction"):
        D.from_interactions(inter, min_item_interactions=2, min_len=4)
    with pytest.raises(D.SeqDataError, match="lack column"):
        D.from_interactions(inter.drop(columns="timestamp"))


def test_no_training_dataset_reads_a_valid_or_test_position() -> None:
    data = _distinct_data()
    held_out = {u: {int(s[-1]) + 1, int(s[-2]) + 1} for u, s in enumerate(data.sequences)}
    prefix = {u: [int(i) + 1 for i in s[:-2]] for u, s in enumerate(data.sequences)}
    seen_labels: dict[int, list[int]] = {}
    for row in _rows(D.sequence_dataset(data, max_len=30)):
        u = int(row["user_index"])
        tokens = set(row["input_ids"].tolist()) | set(row["labels"].tolist())
        assert not tokens & held_out[u]
        # Exactly the training prefix: inputs t[:-1], labels t[1:], left padded.
        assert [t for t in row["input_ids"].tolist() if t] == prefix[u][:-1]
        assert [t for t in row["labels"].tolist() if t] == prefix[u][1:]
    for row in _rows(D.window_dataset(data, window=4)):
        u = int(row["user_index"])
        assert not (set(row["input_ids"].tolist()) | {int(row["labels"])}) & held_out[u]
        seen_labels.setdefault(u, []).append(int(row["labels"]))
    assert all(seen_labels.get(u, []) == prefix[u][1:] for u in prefix)
    pairs: dict[int, list[int]] = {}
    for row in _rows(D.pair_dataset(data)):
        pairs.setdefault(int(row["user_index"]), []).append(int(row["labels"]))
    assert pairs == {u: p for u, p in prefix.items() if p}
    counts = D.item_counts(data)
    assert counts.sum() == sum(len(p) for p in prefix.values())
    assert np.array_equal(counts, np.bincount([t - 1 for p in prefix.values() for t in p], minlength=60))

def test_eval_rows_predict_the_last_two_positions_from_what_precedes_them() -> None:
    data = _distinct_data()
    for split, back in (("valid", 2), ("test", 1)):
        for u, row in enumerate(_rows(D.eval_dataset(data, split, max_len=30))):
            s = data.sequences[u]
            assert int(row["target_index"]) == s[len(s) - back]
            assert [t - 1 for t in row["input_ids"].tolist() if t] == list(s[: len(s) - back])
            hist = sorted(i for i in row["history_index"].tolist() if i >= 0)
            assert hist == sorted(s[: len(s) - back].tolist())
    with pytest.raises(D.SeqDataError, match="'valid' or 'test'"):
        D.eval_dataset(data, "train", 5)


def test_left_padding_keeps_the_most_recent_items() -> None:
    data = D.SeqData([np.arange(10, dtype=np.int64)], np.array([0]), np.arange(10))
    row = D.eval_dataset(data, "test", max_len=4)[0]
    assert row["input_ids"].tolist() == [6, 7, 8, 9]  # codes 5..8 + 1
    short = D.eval_dataset(D.SeqData([np.array([3, 1, 2])], np.array([0]), np.arange(4)), "test", 4)[0]
    assert short["input_ids"].tolist() == [0, 0, 4, 2]
    assert isinstance(short["input_ids"], torch.Tensor)


@pytest.mark.data
def test_p3_and_p4_sequences_match_the_published_statistics_and_do_not_leak(shared_data_dir) -> None:
    ml = D.load("ml-1m", str(shared_data_dir))
    assert (ml.n_users, ml.n_items, ml.n_interactions) == (6040, 3416, 999_611)
    # ML-1M has no repeated (user, item): a held-out item must never appear in the user's training row.
    ds = D.sequence_dataset(ml, max_len=200)
    users = ds.columns["user_index"].numpy()
    held = np.stack([[ml.sequences[u][-1] + 1, ml.sequences[u][-2] + 1] for u in users])
    rows = torch.cat([ds.columns["input_ids"], ds.columns["labels"]], 1).numpy()
    assert not (rows[:, :, None] == held[:, None, :]).any()
    sci = D.load("scientific", str(shared_data_dir))
    assert (sci.n_users, sci.n_items, sci.n_interactions) == (8442, 4385, 59_427)
    # Scientific targets as given by UniSRec's own valid / test files.
    test = pd.read_csv(shared_data_dir / "amazon-scientific" / "Scientific.test.inter", sep="\t")
    user_pos = {str(u): i for i, u in enumerate(sci.user_ids)}
    item_code = {str(i): c for c, i in enumerate(sci.item_ids)}
    u2i = pd.read_csv(shared_data_dir / "amazon-scientific" / "Scientific.user2index", sep="\t", header=None)
    i2i = pd.read_csv(shared_data_dir / "amazon-scientific" / "Scientific.item2index", sep="\t", header=None)
    user_raw = dict(zip(u2i[1], u2i[0].astype(str), strict=True))
    item_raw = dict(zip(i2i[1], i2i[0].astype(str), strict=True))
    ev = D.eval_dataset(sci, "test", max_len=50)
    targets = ev.columns["target_index"].numpy()
    for uid, item in zip(test["user_id:token"], test["item_id:token"], strict=True):
        assert targets[user_pos[user_raw[uid]]] == item_code[item_raw[item]]
