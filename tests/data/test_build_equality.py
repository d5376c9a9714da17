"""The vectorised example builder equals a per-row Python builder, column by column and row by row.

:func:`_reference_examples` is the plain per-row implementation (a loop over users and their
interactions, one prompt at a time with :func:`petrec.data.render_one`); it is kept here, not in
the package, as the specification the vectorised ``prepare`` must reproduce exactly: the same
columns, types, values and row order, for every task, protocol and template.
"""

from __future__ import annotations

import collections
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from petrec.data import DataConfig, load_tables, prepare, render_one
from petrec.data.prepare import table_fingerprint
from petrec.data.splits import SPLIT_NAMES, history_windows, kfold_user_folds, positions
from petrec.data.tasks import item_codes
from petrec.data.text import render_column


def _chronological(inter: pd.DataFrame) -> list[tuple]:
    """Rows as (user, item, time, rating, label), users by first appearance, then time, then file order."""
    rows = list(inter[["user_id", "item_id", "timestamp", "rating", "label"]].itertuples(index=False, name=None))
    first: dict[str, int] = {}
    for row in rows:
        first.setdefault(row[0], len(first))
    return [rows[k] for k in sorted(range(len(rows)), key=lambda k: (first[rows[k][0]], rows[k][2], k))]


def _labels(rows: list[tuple], cfg: DataConfig, implicit: bool) -> list[int]:
    if implicit:
        return [1] * len(rows)
    if rows and all(not math.isnan(r[4]) for r in rows):
        return [int(r[4]) for r in rows]
    return [int(r[3] > cfg.rating_threshold) for r in rows]


def _row_splits(rows: list[tuple], pos: list[int], cfg: DataConfig) -> list[int]:
    """Split (0 train, 1 valid, 2 test) of every row for the loo, temporal and kfold protocols."""
    users = list(dict.fromkeys(r[0] for r in rows))
    length = collections.Counter(r[0] for r in rows)
    if cfg.protocol == "loo":
        return [{0: 2, 1: 1}.get(length[r[0]] - 1 - p, 0) for r, p in zip(rows, pos, strict=True)]
    if cfg.protocol == "temporal":
        low, high = np.quantile([r[2] for r in rows], cfg.temporal_quantiles)
        return [2 if r[2] >= high else 1 if r[2] >= low else 0 for r in rows]
    folds = dict(zip(users, kfold_user_folds(len(users), cfg.kfold_k, cfg.seed), strict=True))
    return [2 if folds[r[0]] == cfg.kfold_fold else 1 if folds[r[0]] == (cfg.kfold_fold + 1) % cfg.kfold_k
            else 0 for r in rows]


def _target_splits(rows: list[tuple], pos: list[int], cfg: DataConfig) -> list[tuple[int, int]]:
    """(row, split) of every example target in output order; TALLRec keeps the last ``tallrec_keep`` 80/10/10."""
    targets = [k for k, p in enumerate(pos) if p >= cfg.effective_min_history]
    if cfg.protocol != "tallrec":
        split = _row_splits(rows, pos, cfg)
        return [(k, split[k]) for k in targets]
    kept = targets[len(targets) - min(cfg.tallrec_keep, len(targets)):]
    n_train, n_valid = int(len(kept) * 0.8), int(len(kept) * 0.9)
    return [(k, 0 if j < n_train else 1 if j < n_valid else 2) for j, k in enumerate(kept)]


def _reference_examples(inter: pd.DataFrame, names: dict[str, str], cfg: DataConfig, *, implicit: bool,
                        noun: str, built: dict[str, pa.Table]) -> dict[str, dict[str, list]]:
    """Every split's columns, built one example at a time (the per-row builder petrec replaced).

    Implicit-feedback ctr takes its sampled negative items from ``built`` (the sampler is shared);
    everything else, the negatives' history, labels, ratings and prompts included, is recomputed.
    """
    rows = _chronological(inter)
    labels = _labels(rows, cfg, implicit)
    pos, seen = [], collections.Counter()
    for row in rows:
        pos.append(seen[row[0]])
        seen[row[0]] += 1
    out = {name: {c: [] for c in built[name].column_names} for name in SPLIT_NAMES}
    drawn = {name: iter(built[name]["item_id"].to_pylist()) for name in SPLIT_NAMES}
    reps = cfg.negatives + 1 if implicit and cfg.task == "ctr" else 1
    for k, code in _target_splits(rows, pos, cfg):
        name = SPLIT_NAMES[code]
        hist = list(range(k - min(pos[k], cfg.history_len), k))
        for rep in range(reps):
            negative = next(drawn[name]) if reps > 1 else None
            _append(out[name], rows, labels, hist, k, negative if rep else rows[k][1], rep, cfg, names, noun)
    return out


def _append(cols: dict[str, list], rows: list[tuple], labels: list[int], hist: list[int], k: int, cand: str,
            rep: int, cfg: DataConfig, names: dict[str, str], noun: str) -> None:
    """One example's values appended to ``cols`` (``rep`` > 0: a sampled negative candidate)."""
    h_names = [names[rows[j][1]] for j in hist]
    h_labels, h_ratings = [labels[j] for j in hist], [rows[j][3] for j in hist]
    values: dict[str, Any] = {
        "user_id": rows[k][0], "history_item_ids": [rows[j][1] for j in hist], "history_labels": h_labels,
        "history_ratings": h_ratings, "item_id": cand, "label": 0 if rep else labels[k],
        "rating": float("nan") if rep else rows[k][3], "timestamp": rows[k][2],
        "text": render_one(cfg.task, cfg.template, h_names, h_labels, h_ratings,
                           None if cfg.task == "next_item" else names[cand], noun),
    }
    for col, col_values in cols.items():
        col_values.append(values[col])


def _assert_same(got: pa.Table, ref: dict[str, list], where: str) -> None:
    """Exact equality of every column, NaN equal to NaN (the ratings of negatives)."""
    assert got.column_names == list(ref), where
    for name in got.column_names:
        values = got[name].to_pylist()
        assert len(values) == len(ref[name]), (where, name)
        for row, (a, b) in enumerate(zip(values, ref[name], strict=True)):
            same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
            assert same, f"{where}: column {name}, row {row}: {a!r} != {b!r}"


def _check_prepare(cfg: DataConfig) -> int:
    """``prepare(cfg)`` against the per-row reference on the same interactions; returns the examples checked."""
    data = prepare(cfg)
    inter = load_tables(cfg).interactions
    name_col = "title" if "title" in data.items.column_names else "text"
    names = dict(zip(data.items["item_id"], data.items[name_col], strict=True))
    built = {name: data.splits[name].data.table for name in SPLIT_NAMES}
    ref = _reference_examples(inter, names, cfg, implicit=data.summary["implicit"],
                              noun=data.summary["render"]["noun"], built=built)
    for name in SPLIT_NAMES:
        _assert_same(built[name], ref[name], f"{cfg.dataset} {cfg.task}/{cfg.protocol}/{cfg.template} {name}")
    return sum(t.num_rows for t in built.values())


GRID = [(task, protocol, template)
        for task, protocol, template in itertools.product(("ctr", "rating", "next_item"),
                                                          ("tallrec", "temporal", "loo", "kfold"),
                                                          ("compact", "tallrec"))
        if not (protocol == "tallrec" and task == "next_item")]


@pytest.mark.parametrize(("task", "protocol", "template"), GRID)
def test_synthetic_examples_equal_the_per_row_builder(task: str, protocol: str, template: str) -> None:
    cfg = DataConfig(task=task, protocol=protocol, template=template, history_len=5, tallrec_keep=2000)
    assert _check_prepare(cfg) > 1000


@pytest.mark.parametrize("overrides", [
    {"task": "ctr", "protocol": "loo", "implicit": True, "negatives": 3, "seed": 5},
    {"task": "ctr", "protocol": "loo", "implicit": True, "negatives": 1, "template": "tallrec"},
    {"task": "ctr", "protocol": "loo", "min_history": 0, "history_len": 4},
    {"task": "rating", "protocol": "temporal", "min_history": 0, "history_len": 3},
    {"task": "next_item", "protocol": "kfold", "min_history": 0, "kfold_k": 3, "kfold_fold": 2},
])
def test_synthetic_variants_equal_the_per_row_builder(overrides: dict[str, Any]) -> None:
    assert _check_prepare(DataConfig(**overrides)) > 1000


@pytest.mark.parametrize(("task", "protocol", "template"), [
    ("ctr", "loo", "compact"), ("ctr", "tallrec", "tallrec"), ("rating", "kfold", "tallrec"),
    ("next_item", "temporal", "compact"),
])
def test_ml100k_examples_equal_the_per_row_builder(shared_data_dir: Path, task: str, protocol: str,
                                                   template: str) -> None:
    cfg = DataConfig(dataset="ml-100k", data_dir=str(shared_data_dir), task=task, protocol=protocol,
                     template=template)
    assert _check_prepare(cfg) >= 10_000


def test_history_windows_equal_a_loop() -> None:
    users = np.repeat(np.arange(5), [1, 4, 12, 2, 7])
    pos, _start, _length = positions(users)
    targets = np.flatnonzero(pos >= 1)
    flat, counts = history_windows(targets, pos, 3)
    expected = [j for t in targets for j in range(t - min(pos[t], 3), t)]
    assert flat.tolist() == expected
    assert counts.tolist() == [min(p, 3) for p in pos[targets]]
    assert history_windows(np.array([], dtype=np.int64), pos, 3)[0].size == 0


def test_rendering_keeps_null_names_null_and_renders_empty_splits() -> None:
    names = np.array(["A", None, "C"], dtype=object)
    text = render_column("ctr", "compact", names, np.array([0, 1, 2]), np.array([2, 1, 0]), np.array([1, 0, 1]),
                         np.array([5.0, 1.0, 4.0]), np.array([2, 0, 1]))
    assert text.to_pylist() == [None, "History: C (liked) | Candidate: A", None]
    tallrec = render_column("ctr", "tallrec", names, np.array([0, 1, 2]), np.array([2, 1, 0]),
                            np.array([1, 0, 1]), np.array([5.0, 1.0, 4.0]), np.array([2, 0, 1])).to_pylist()
    assert tallrec[0] is None and tallrec[2] is None
    assert tallrec[1].endswith('User Preference: "C"\nUser Unpreference: \nWhether the user will like the target item "A"?')
    assert render_column("ctr", "tallrec", names, np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                         np.array([]), np.array([]), np.array([], dtype=np.int64)).to_pylist() == []


def test_item_codes_match_pandas_and_refuse_duplicate_ids() -> None:
    col = pd.Series(["b", "z", "a", "b"], dtype="string[pyarrow]")
    assert item_codes(col, np.array(["a", "b"], dtype=object)).tolist() == [1, -1, 0, 1]
    assert item_codes(pd.Series([2, 1]), np.array([1, 2])).tolist() == [1, 0]
    with pytest.raises(Exception, match="duplicate"):
        item_codes(col, np.array(["a", "a"], dtype=object))


def test_table_fingerprint_follows_the_content() -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert table_fingerprint(table) == table_fingerprint(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}))
    assert table_fingerprint(table.slice(1)) == table_fingerprint(pa.table({"a": [2, 3], "b": ["y", "z"]}))
    assert table_fingerprint(table) != table_fingerprint(pa.table({"a": [1, 2, 3], "b": ["x", "y", "w"]}))
    assert table_fingerprint(table) != table_fingerprint(table.rename_columns(["a", "c"]))
    data = prepare(DataConfig(task="ctr", protocol="loo"))
    built = data.splits["train"].data.table.replace_schema_metadata(None)  # datasets adds its features
    assert data.splits["train"]._fingerprint == table_fingerprint(built)
