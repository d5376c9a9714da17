"""Splits: leave-one-out, temporal, user k-fold, TALLRec; no leakage; determinism; few-shot."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petrec.data import DataConfig, prepare
from petrec.data import splits as S


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=12))
def test_positions_match_a_loop(sizes: list[int]) -> None:
    codes = np.repeat(np.arange(len(sizes)), sizes)
    pos, start, length = S.positions(codes)
    exp_pos, exp_start, exp_len, offset = [], [], [], 0
    for n in sizes:
        exp_pos += list(range(n))
        exp_start += [offset] * n
        exp_len += [n] * n
        offset += n
    assert pos.tolist() == exp_pos and start.tolist() == exp_start and length.tolist() == exp_len
    assign = S.loo_assign(pos, length)
    for u, n in enumerate(sizes):
        a = assign[codes == u].tolist()
        assert a == ([0] * (n - 2) + [1, 2] if n >= 2 else [2])


def test_chronological_order_users_by_first_appearance_ties_in_file_order() -> None:
    users = pd.Series(["b", "a", "b", "a", "b"])
    ts = np.array([5, 3, 5, 1, 2])
    assert S.chronological_order(users, ts).tolist() == [4, 0, 2, 3, 1]


@settings(max_examples=40, deadline=None)
@given(n_users=st.integers(2, 60), k=st.integers(2, 7), seed=st.integers(0, 1000))
def test_kfold_folds_are_disjoint_and_cover_all_users(n_users: int, k: int, seed: int) -> None:
    folds = S.kfold_user_folds(n_users, k, seed)
    assert sorted(np.bincount(folds, minlength=k).tolist())[-1] - min(np.bincount(folds, minlength=k)) <= 1
    codes = np.arange(n_users)
    tests = [set(codes[S.kfold_assign(codes, n_users, k, f, seed) == S.TEST]) for f in range(k)]
    assert set().union(*tests) == set(codes)
    assert sum(len(t) for t in tests) == n_users  # pairwise disjoint
    assert (S.kfold_user_folds(n_users, k, seed) == folds).all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 30_000), keep=st.integers(10, 12_000))
def test_tallrec_assign_keeps_the_last_block(n: int, keep: int) -> None:
    a = S.tallrec_assign(n, keep)
    kept = min(n, keep)
    assert (a[: n - kept] == -1).all()
    counts = np.bincount(a[n - kept :], minlength=3)
    assert counts.tolist() == [int(kept * 0.8), int(kept * 0.9) - int(kept * 0.8), kept - int(kept * 0.9)]
    assert (np.diff(a[n - kept :]) >= 0).all()


def _triples(ds) -> set[tuple[str, str, int]]:
    return set(zip(ds["user_id"], ds["item_id"], ds["timestamp"], strict=True))


@pytest.mark.parametrize("task", ["ctr", "next_item"])
def test_loo_one_valid_and_test_per_user_and_no_leakage(task: str) -> None:
    data = prepare(DataConfig(task=task, protocol="loo"))
    tr, va, te = (data.splits[n] for n in ("train", "valid", "test"))
    assert va.num_rows == te.num_rows == 300 == len(set(te["user_id"])) == len(set(va["user_id"]))
    assert not (_triples(te) & _triples(tr)) and not (_triples(va) & _triples(tr))
    last_train = tr.to_pandas().groupby("user_id")["timestamp"].max()
    v = va.to_pandas().set_index("user_id")["timestamp"]
    t = te.to_pandas().set_index("user_id")["timestamp"]
    assert (last_train < v.reindex(last_train.index)).all() and (v < t.reindex(v.index)).all()


def test_temporal_split_orders_time_and_history_is_past_only() -> None:
    data = prepare(DataConfig(task="ctr", protocol="temporal"))
    tr, va, te = (data.splits[n].to_pandas() for n in ("train", "valid", "test"))
    cut1, cut2 = data.summary["temporal_cuts"]
    assert tr["timestamp"].max() < cut1 <= va["timestamp"].min() and va["timestamp"].max() < cut2 <= te["timestamp"].min()
    assert not (_triples(data.splits["test"]) & _triples(data.splits["train"]))
    # a history item happened before its target: look its time up in the raw log
    from petrec.data import synthetic_world

    log = synthetic_world().interactions.set_index(["user_id", "item_id"])["timestamp"]
    row = te.iloc[0]
    hist_ts = [log[(row["user_id"], h)] for h in row["history_item_ids"]]
    assert hist_ts == sorted(hist_ts) and max(hist_ts) < row["timestamp"]


def test_kfold_protocol_users_disjoint_across_splits_and_folds_cover() -> None:
    tests = []
    for fold in range(3):
        d = prepare(DataConfig(task="ctr", protocol="kfold", kfold_k=3, kfold_fold=fold))
        users = [set(d.splits[n]["user_id"]) for n in ("train", "valid", "test")]
        assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
        tests.append(users[2])
    assert sum(len(t) for t in tests) == len(set().union(*tests)) == 300


def test_determinism_and_seeded_subsampling() -> None:
    a = prepare(DataConfig(task="ctr", implicit=True, negatives=2, max_train_examples=500, seed=3))
    b = prepare(DataConfig(task="ctr", implicit=True, negatives=2, max_train_examples=500, seed=3))
    for n in ("train", "valid", "test"):
        assert json.dumps(a.splits[n].to_list()) == json.dumps(b.splits[n].to_list())  # NaN-safe
    assert a.splits["train"].num_rows == 500
    assert a.summary == b.summary
    c = prepare(DataConfig(task="ctr", few_shot_k=16, seed=4))
    assert c.splits["train"].num_rows == 16


def test_max_eval_examples_subsamples_valid_and_test_rows_unchanged_and_in_order() -> None:
    full = prepare(DataConfig(task="ctr", protocol="temporal", seed=5))
    cut = prepare(DataConfig(task="ctr", protocol="temporal", seed=5, max_eval_examples=40))
    assert cut.splits["train"].to_list() == full.splits["train"].to_list()  # training is untouched
    for name in ("valid", "test"):
        rows = [json.dumps(r) for r in full.splits[name].to_list()]  # NaN-safe comparison
        kept = [json.dumps(r) for r in cut.splits[name].to_list()]
        assert len(rows) > 40 and len(kept) == 40
        assert cut.summary["eval_examples_before_sampling"][name] == len(rows)
        # Every kept row is a row of the full split, in the split's own order (no duplicates).
        positions = [rows.index(r) for r in kept]
        assert positions == sorted(set(positions))
    small = prepare(DataConfig(task="ctr", protocol="temporal", seed=5, max_eval_examples=10**9))
    assert small.splits["test"].num_rows == full.splits["test"].num_rows
    with pytest.raises(ValueError, match="max_eval_examples"):
        DataConfig(task="ctr", max_eval_examples=0)
