"""Readers: MovieLens formats on the shared data and tiny generic files written in tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from petrec.data import (
    DataConfig,
    prepare,
    read_catalogue,
    read_log,
    read_ml1m,
    read_ml100k,
    read_ml_latest_small,
)

LOG = [("u1", "a", 10, 4.0), ("u1", "b", 20, 2.0), ("u1", "c", 30, 5.0),
       ("u2", "a", 15, 3.0), ("u2", "c", 25, 4.5), ("u2", "b", 35, 1.0)]


@pytest.mark.data
def test_ml100k_reader(shared_data_dir: Path) -> None:
    t = read_ml100k(shared_data_dir / "ml-100k")
    inter, items = t.interactions, t.items
    assert len(inter) == 100_000 and inter["user_id"].nunique() == 943 and inter["item_id"].nunique() == 1_682
    assert inter["rating"].value_counts().sort_index().tolist() == [6110, 11370, 27145, 34174, 21201]
    assert (inter["timestamp"].min(), inter["timestamp"].max()) == (874724710, 893286638)
    assert inter.iloc[0][["user_id", "item_id", "timestamp", "rating"]].tolist() == ["196", "242", 881250949, 3.0]
    assert len(items) == 1_682
    toy = items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)" and toy["genres"] == "Animation|Children's|Comedy"
    assert toy["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    # latin-1 titles decoded, not mangled: 9 titles are non-ASCII
    assert items["title"].map(lambda s: not s.isascii()).sum() == 9


@pytest.mark.data
def test_ml_latest_small_reader_crlf(shared_data_dir: Path) -> None:
    t = read_ml_latest_small(shared_data_dir / "ml-latest-small")
    inter = t.interactions
    assert len(inter) == 100_836 and inter["user_id"].nunique() == 610 and inter["item_id"].nunique() == 9_724
    assert sorted(inter["rating"].unique()) == [x / 2 for x in range(1, 11)]
    assert inter["timestamp"].max() == 1537799250  # no stray '\r' from CRLF line ends
    assert len(t.items) == 9_742 and not t.items["genres"].str.contains("\r").any()
    assert t.rating_range == (0.5, 5.0)


def test_ml1m_raw_dat_format(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978300761\n2::10::4::978300000\n")
    (tmp_path / "movies.dat").write_bytes("10::Am\xe9lie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n"
                                          .encode("latin-1"))
    t = read_ml1m(tmp_path)
    assert t.interactions[["user_id", "item_id", "timestamp", "rating"]].values.tolist() == [
        ["1", "10", 978300760, 5.0], ["1", "20", 978300761, 3.0], ["2", "10", 978300000, 4.0]]
    assert t.items.set_index("item_id").loc["10", "text"] == "Amélie (2001). Genres: Comedy, Romance."
    assert t.items.set_index("item_id").loc["10", "year"] == "2001" and t.has_time


def _frame() -> pd.DataFrame:
    return pd.DataFrame(LOG, columns=["uid", "sku", "when", "stars"])


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "jsonl", "csv.gz", "crlf", "latin1"])
def test_generic_log_formats_with_column_mapping(tmp_path: Path, kind: str) -> None:
    df = _frame()
    enc = "utf-8"
    if kind == "csv":
        path = tmp_path / "log.csv"
        df.to_csv(path, index=False)
    elif kind == "tsv":
        path = tmp_path / "log.tsv"
        df.to_csv(path, sep="\t", index=False)
    elif kind == "parquet":
        path = tmp_path / "log.parquet"
        df.to_parquet(path)
    elif kind == "jsonl":
        path = tmp_path / "log.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    elif kind == "csv.gz":
        path = tmp_path / "log.csv.gz"
        with gzip.open(path, "wt") as fh:
            df.to_csv(fh, index=False)
    elif kind == "crlf":
        path = tmp_path / "log.csv"
        path.write_bytes(df.to_csv(index=False).replace("\n", "\r\n").encode())
    else:
        df = df.assign(uid=df["uid"].str.replace("u", "\xfc"))  # 'ü1', 'ü2' in latin-1
        path = tmp_path / "log.csv"
        path.write_bytes(df.to_csv(index=False).encode("latin-1"))
        enc = "latin-1"
    t = read_log(path, {"user": "uid", "item": "sku", "time": "when", "rating": "stars"}, encoding=enc)
    got = t.interactions
    users = ["ü1", "ü2"] if kind == "latin1" else ["u1", "u2"]
    assert got["user_id"].tolist() == [users[0]] * 3 + [users[1]] * 3
    assert got["item_id"].tolist() == ["a", "b", "c", "a", "c", "b"]
    assert got["timestamp"].tolist() == [10, 20, 30, 15, 25, 35]
    assert got["rating"].tolist() == [4.0, 2.0, 5.0, 3.0, 4.5, 1.0]
    assert str(got["timestamp"].dtype) == "int64"


def test_generic_log_without_time_uses_file_order_and_dates_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("user,item,day\n7,100,2024-01-02\n7,101,2024-01-01\n8,100,2024-01-03\n")
    t = read_log(path, {"user": "user", "item": "item"})
    assert t.interactions["timestamp"].tolist() == [0, 1, 0] and not t.has_time
    t = read_log(path, {"user": "user", "item": "item", "time": "day"})
    assert t.interactions["timestamp"].tolist() == [1704153600, 1704067200, 1704240000]
    assert t.interactions["user_id"].tolist() == ["7", "7", "8"]  # ints become strings


def test_catalogue_and_csv_dataset_end_to_end(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "items.csv").write_text("sku,name,cat\na,Red Lamp,Lighting\nb,Blue Chair,Furniture\nc,Desk,\n")
    items = read_catalogue(tmp_path / "items.csv", {"item": "sku", "title": "name", "category": "cat"})
    assert items["text"].tolist() == ["Red Lamp. Category: Lighting.", "Blue Chair. Category: Furniture.", "Desk."]
    cfg = DataConfig(dataset="csv", interactions_path=str(tmp_path / "log.csv"),
                     items_path=str(tmp_path / "items.csv"),
                     columns={"user": "uid", "item": "sku", "time": "when", "rating": "stars"},
                     item_columns={"item": "sku", "title": "name", "category": "cat"},
                     protocol="loo", task="rating", rating_range=(1, 5))
    data = prepare(cfg)
    test = data.splits["test"].to_list()
    assert [(r["user_id"], r["item_id"], r["rating"], r["history_item_ids"]) for r in test] == [
        ("u1", "c", 5.0, ["a", "b"]), ("u2", "b", 1.0, ["a", "c"])]
    assert test[0]["text"] == "History: Red Lamp (rated 4); Blue Chair (rated 2) | Candidate: Desk"
    assert data.splits["train"].num_rows == 0 and data.splits["valid"].num_rows == 2
