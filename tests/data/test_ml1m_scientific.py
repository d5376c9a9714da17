"""BENCHMARKS P3 (ml-1m) and P4 (Amazon Scientific) preprocessing on the shared data."""

from __future__ import annotations

import collections
import gzip
from pathlib import Path

import numpy as np
import pytest

from petrec.data import DataConfig, prepare, read_ml1m, read_unisrec

pytestmark = pytest.mark.data


def test_p3_counts_match_sasrec_and_a_plain_recount(p3, shared_data_dir: Path) -> None:
    assert p3.summary["interactions"]["rows_read"] == 1_000_209
    assert p3.summary["interactions"]["rows_kept"] == 999_611
    assert p3.summary["users"] == 6_040
    assert p3.summary["items"] == 3_416
    assert p3.summary["interactions"]["dropped"] == {"item_min_interactions": 598, "user_min_interactions": 0}
    # independent recount with the standard library
    with gzip.open(shared_data_dir / "ml-1m" / "ratings_chrono.tsv.gz", "rt") as fh:
        next(fh)
        rows = [line.split("\t", 2)[:2] for line in fh]
    item_count = collections.Counter(r[1] for r in rows)
    kept = [r for r in rows if item_count[r[1]] >= 5]
    assert len(kept) == 999_611
    assert len({r[0] for r in kept}) == 6_040 and len({r[1] for r in kept}) == 3_416


def test_p3_leave_one_out_one_valid_and_test_target_per_user(p3) -> None:
    valid, test, train = p3.splits["valid"], p3.splits["test"], p3.splits["train"]
    assert valid.num_rows == test.num_rows == 6_040
    assert len(set(valid["user_id"])) == len(set(test["user_id"])) == 6_040
    # every interaction is a target exactly once, except each user's first (it has no history)
    assert train.num_rows + 2 * 6_040 == 999_611 - 6_040
    # the test target is the user's last item and its history ends with the valid target
    v = valid.select_columns(["user_id", "item_id", "timestamp"]).to_pandas().set_index("user_id")
    t = test.select_columns(["user_id", "history_item_ids", "timestamp"]).to_pandas().set_index("user_id")
    assert (t.loc[v.index, "history_item_ids"].map(lambda h: h[-1]) == v["item_id"]).all()
    assert (t.loc[v.index, "timestamp"] > v["timestamp"]).all()
    # no leakage: no (user, position) of valid/test is a training target; training targets come earlier
    tr = train.select_columns(["user_id", "timestamp"]).to_pandas()
    last_train = tr.groupby("user_id")["timestamp"].max()
    assert (last_train.reindex(v.index) < v["timestamp"]).all()


def test_ml1m_reader_spot_checks(shared_data_dir: Path) -> None:
    tables = read_ml1m(shared_data_dir / "ml-1m")
    inter = tables.interactions
    u1 = inter[inter["user_id"] == "1"].sort_values("timestamp")
    assert len(u1) == 53
    assert dict(zip(u1["item_id"], u1["rating"], strict=True))["1193"] == 5.0
    assert u1["item_id"].iloc[0] == "3186"
    assert inter["item_id"].value_counts().head(3).to_dict() == {"2858": 3428, "260": 2991, "1196": 2990}
    assert len(tables.items) == 3_883 and tables.items["text"].str.len().min() > 0
    assert (tables.items["item_id"] == "1").sum() == 1


def test_scientific_loads_with_text_for_every_item(shared_data_dir: Path) -> None:
    tables = read_unisrec(shared_data_dir / "amazon-scientific", "Scientific")
    inter = tables.interactions
    assert len(inter) == 59_427
    assert inter["user_id"].nunique() == 8_442
    assert inter["item_id"].nunique() == 4_385
    assert len(tables.items) == 4_385
    assert (tables.items["text"].str.len() > 0).all()
    assert set(tables.items["item_id"]) == set(inter["item_id"])


def test_p4_loo_reproduces_the_given_split_files(shared_data_dir: Path) -> None:
    folder = shared_data_dir / "amazon-scientific"
    data = prepare(DataConfig.preset("P4", data_dir=str(shared_data_dir), history_len=50))
    idx2item = dict(line.split("\t")[::-1] for line in (folder / "Scientific.item2index").read_text().splitlines())
    idx2user = dict(line.split("\t")[::-1] for line in (folder / "Scientific.user2index").read_text().splitlines())
    for split in ("valid", "test", "train"):
        with open(folder / f"Scientific.{split}.inter") as fh:
            next(fh)
            given = sorted(
                (idx2user[u], tuple(idx2item[x] for x in h.split(" ")), idx2item[i.strip()])
                for u, h, i in (line.rstrip("\n").split("\t") for line in fh))
        ds = data.splits[split]
        ours = sorted(zip(ds["user_id"], map(tuple, ds["history_item_ids"]), ds["item_id"], strict=True))
        assert ours == given, split
    assert data.summary["splits"]["test"]["examples"] == 8_442
    lengths = np.array([len(h) for h in data.splits["test"]["history_item_ids"]])
    assert lengths.max() == 50 and lengths.min() >= 3
