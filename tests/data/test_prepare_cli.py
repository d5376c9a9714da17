"""prepare → save (atomic) → load_prepared round trip, anonymisation, summary and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from petrec.cli import main
from petrec.data import DataConfig, load_prepared, prepare


@pytest.fixture(scope="module")
def small():
    return prepare(DataConfig(task="ctr", protocol="loo", synthetic_users=50))


def test_save_and_load_round_trip(small, tmp_path: Path) -> None:
    out = small.save(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["items.parquet", "summary.json", "test", "train", "valid"]
    back = load_prepared(out)
    for n in ("train", "valid", "test"):
        assert back.splits[n].to_pandas().equals(small.splits[n].to_pandas())
    assert back.items.to_list() == small.items.to_list()
    assert back.summary == small.summary == json.loads((out / "summary.json").read_text())


def test_save_is_atomic(small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = small.save(tmp_path / "out")
    before = (out / "summary.json").read_text()

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(small.items), "to_parquet", boom)
    other = prepare(DataConfig(task="next_item", protocol="loo", synthetic_users=50))
    with pytest.raises(RuntimeError, match="disk full"):
        other.save(tmp_path / "out")
    assert (out / "summary.json").read_text() == before  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left behind


def test_summary_counts_are_consistent(small) -> None:
    s = small.summary
    assert s["interactions"]["rows_read"] == s["interactions"]["rows_kept"]
    assert s["users"] == 50
    for n in ("train", "valid", "test"):
        split = s["splits"][n]
        assert split["examples"] == small.splits[n].num_rows
        assert sum(split["history_length_histogram"].values()) == split["examples"]
        assert split["positives"] == sum(small.splits[n]["label"])
    # every interaction except each user's first is a target exactly once under leave-one-out
    assert sum(s["splits"][n]["examples"] for n in ("train", "valid", "test")) == s["interactions"]["rows_kept"] - 50


def test_anonymize_hashes_users_and_never_writes_the_salt(tmp_path: Path) -> None:
    cfg = dict(task="ctr", protocol="loo", synthetic_users=20, anonymize=True, anonymize_salt="s3cret-salt")
    a = prepare(DataConfig(**cfg))
    b = prepare(DataConfig(**cfg))
    c = prepare(DataConfig(**{**cfg, "anonymize_salt": None}))
    plain = prepare(DataConfig(task="ctr", protocol="loo", synthetic_users=20))
    ids = set(a.splits["test"]["user_id"])
    assert len(ids) == 20 and all(len(u) == 16 and int(u, 16) >= 0 for u in ids)
    assert not ids & set(plain.splits["test"]["user_id"])
    assert a.splits["test"]["user_id"] == b.splits["test"]["user_id"] != c.splits["test"]["user_id"]
    assert set(a.splits["valid"]["user_id"]) == ids  # the same user keeps one hash across splits
    out = a.save(tmp_path / "anon")
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"s3cret-salt" not in blob and b"u0000" not in blob
    assert "anonymize_salt" not in a.summary["config"]


def test_cli_prepare_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    rc = main(["data", "prepare", "--dataset", "synthetic", "--task", "next_item", "--protocol", "loo",
               "--out", str(out), "--seed", "2"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "summary.json").read_text())
    assert printed["splits"]["test"]["examples"] == 300 and printed["config"]["seed"] == 2
    assert main(["data", "stats", "--from", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id;item\n1;2\n")
    assert main(["data", "prepare", "--dataset", "csv", "--interactions", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "wrong separator" in err and "Traceback" not in err and not (tmp_path / "x").exists()


@pytest.mark.data
def test_cli_p1_reads_petrec_data_dir(shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PETREC_DATA_DIR", str(shared_data_dir))
    rc = main(["data", "prepare", "--dataset", "ml-100k", "--task", "ctr", "--protocol", "tallrec",
               "--template", "tallrec", "--out", str(tmp_path / "p1")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [summary["splits"][n]["examples"] for n in ("train", "valid", "test")] == [8000, 1000, 1000]
    test = load_prepared(tmp_path / "p1").splits["test"]
    assert {"user_id", "history_item_ids", "history_labels", "item_id", "label", "timestamp", "text"} <= set(
        test.column_names)
