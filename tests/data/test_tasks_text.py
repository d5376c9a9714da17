"""Task examples against a plain-Python reference; negative sampling; prompt rendering agreement."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petrec.data import DataConfig, prepare, render_one, synthetic_world

COLS = {"user": "u", "item": "i", "time": "t", "rating": "r"}


def _reference(df: pd.DataFrame, history_len: int, min_history: int, threshold: float) -> collections.Counter:
    """Every (user, history, target, label) example, with a loop over users and positions."""
    out: collections.Counter = collections.Counter()
    for user in dict.fromkeys(df["u"]):
        recs = sorted(((t, k, i, r) for k, (u, i, t, r) in enumerate(df.itertuples(index=False)) if u == user))
        for p in range(min_history, len(recs)):
            hist = recs[max(0, p - history_len) : p]
            out[(str(user), tuple(str(h[2]) for h in hist), tuple(int(h[3] > threshold) for h in hist),
                 str(recs[p][2]), int(recs[p][3] > threshold))] += 1
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), history_len=st.integers(1, 5), protocol=st.sampled_from(["temporal", "loo", "kfold"]))
def test_examples_equal_a_python_loop(tmp_path: Path, data, history_len: int, protocol: str) -> None:
    n_users = data.draw(st.integers(2, 5))
    rows = []
    for u in range(n_users):
        n = data.draw(st.integers(3, 9))
        items = data.draw(st.permutations(list(range(12))))[:n]
        times = data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n, unique=True))
        rows += [(f"user{u}", it, t, data.draw(st.integers(1, 5))) for it, t in zip(items, times, strict=True)]
    df = pd.DataFrame(rows, columns=["u", "i", "t", "r"])
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    cfg = DataConfig(dataset="csv", interactions_path=str(path), columns=dict(COLS), protocol=protocol,
                     history_len=history_len, kfold_k=2)
    prepared = prepare(cfg)
    got: collections.Counter = collections.Counter()
    for split in prepared.splits.values():
        for r in split.to_list():
            got[(r["user_id"], tuple(r["history_item_ids"]), tuple(r["history_labels"]), r["item_id"], r["label"])] += 1
    assert got == _reference(df, history_len, 1, 3.0)


def test_implicit_ctr_negatives_are_unseen_and_share_the_history() -> None:
    data = prepare(DataConfig(task="ctr", protocol="loo", implicit=True, negatives=3, seed=5))
    world = synthetic_world()
    seen = set(zip(world.interactions["user_id"], world.interactions["item_id"], strict=True))
    for name, ds in data.splits.items():
        df = ds.to_pandas()
        assert (df["label"].to_numpy().reshape(-1, 4) == [1, 0, 0, 0]).all(), name
        neg = df[df["label"] == 0]
        assert not any((u, i) in seen for u, i in zip(neg["user_id"], neg["item_id"], strict=True))
        pos = df[df["label"] == 1]
        assert all((u, i) in seen for u, i in zip(pos["user_id"], pos["item_id"], strict=True))
        groups = df["history_item_ids"].map(tuple).to_numpy().reshape(-1, 4)
        assert (groups == groups[:, :1]).all()
        assert neg["rating"].isna().all()
    assert data.summary["implicit"] is True
    assert data.summary["splits"]["test"]["positive_rate"] == 0.25


def test_rating_and_next_item_columns() -> None:
    r = prepare(DataConfig(task="rating", protocol="loo")).splits["test"]
    assert r.column_names == ["user_id", "history_item_ids", "history_labels", "history_ratings", "item_id",
                              "label", "rating", "timestamp", "text"]
    log = synthetic_world().interactions.set_index(["user_id", "item_id"])["rating"]
    assert [log[(u, i)] for u, i in zip(r["user_id"], r["item_id"], strict=True)] == r["rating"]
    assert all(lab == int(x > 3) for lab, x in zip(r["label"], r["rating"], strict=True))
    n = prepare(DataConfig(task="next_item", protocol="loo")).splits["test"]
    assert n.column_names == ["user_id", "history_item_ids", "item_id", "timestamp", "text"]
    assert str(n.features["timestamp"].dtype) == "int64" and n.features["history_item_ids"].feature.dtype == "string"


@pytest.mark.parametrize("template", ["compact", "tallrec"])
@pytest.mark.parametrize("task", ["ctr", "rating", "next_item"])
def test_vectorised_rendering_equals_per_example_rendering(task: str, template: str) -> None:
    cfg = DataConfig(task=task, template=template, protocol="loo", min_history=0, history_len=4)
    data = prepare(cfg)
    names = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    noun = data.summary["render"]["noun"]
    n_checked = 0
    for ds in data.splits.values():
        for r in ds.select(range(min(150, ds.num_rows))).to_list():
            expected = render_one(task, template, [names[h] for h in r["history_item_ids"]],
                                  r.get("history_labels", []), r.get("history_ratings", []),
                                  None if task == "next_item" else names[r["item_id"]], noun)
            assert r["text"] == expected
            n_checked += 1
    assert n_checked >= 450
    empty = data.splits["train"].filter(lambda x: len(x["history_item_ids"]) == 0)
    assert empty.num_rows == 300  # min_history=0: every user's first interaction
    if template == "compact":
        assert empty[0]["text"].startswith("History: none")


def test_compact_and_tallrec_wording() -> None:
    assert render_one("ctr", "compact", ["A", "B"], [1, 0], [5.0, 1.0], "C") == \
        "History: A (liked); B (disliked) | Candidate: C"
    assert render_one("rating", "compact", ["A"], [1], [4.5], "C") == "History: A (rated 4.5) | Candidate: C"
    assert render_one("next_item", "compact", ["A", "B"], [], [], None) == "History: A; B"
    t = render_one("ctr", "tallrec", ["A", "B", "D"], [1, 0, 1], [5, 1, 4], "C", "movie")
    assert t.endswith('User Preference: "A", "D"\nUser Unpreference: "B"\n'
                      'Whether the user will like the target movie "C"?')


def test_synthetic_world_is_byte_identical_and_meaningful(tmp_path: Path) -> None:
    from petrec.data.synthetic import GENRE_WORDS

    blobs = []
    for k, seed in enumerate((7, 7, 8)):
        w = synthetic_world(seed=seed)
        w.interactions.to_parquet(tmp_path / f"i{k}.parquet")
        w.items.to_parquet(tmp_path / f"t{k}.parquet")
        blobs.append(((tmp_path / f"i{k}.parquet").read_bytes(), (tmp_path / f"t{k}.parquet").read_bytes()))
    assert blobs[0] == blobs[1] and blobs[0][0] != blobs[2][0]
    items = synthetic_world(seed=7).items
    main = items["genres"].str.split("|").str[0]
    first = items["title"].str.split(" ").str[0]
    assert all(w in GENRE_WORDS[g][0] for w, g in zip(first, main, strict=True))
    inter = synthetic_world(seed=7).interactions
    assert inter["user_id"].nunique() == 300 and inter["item_id"].nunique() > 250
    counts = inter["item_id"].value_counts()
    assert counts.iloc[0] > 5 * counts.median()  # popularity skew
    assert inter.groupby("user_id")["timestamp"].is_monotonic_increasing.all()


def test_synthetic_labels_are_predictable_from_genres() -> None:
    """A genre-matching rule (no training) beats chance clearly, so a text model has signal to learn."""
    from sklearn.metrics import roc_auc_score

    data = prepare(DataConfig(task="ctr", protocol="temporal"))
    genres = dict(zip(data.items["item_id"], (set(g.split("|")) for g in data.items["genres"]), strict=True))
    test = data.splits["test"].to_pandas()
    scores = []
    for hist, labs, cand in zip(test["history_item_ids"], test["history_labels"], test["item_id"], strict=True):
        same = [lab for h, lab in zip(hist, labs, strict=True) if genres[h] & genres[cand]]
        scores.append(np.mean(same) if same else 0.4)
    auc = roc_auc_score(test["label"], scores)
    assert auc > 0.65, auc
