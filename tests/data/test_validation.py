"""Bad input: each kind gives ONE clear petrec error naming file, line and column; 'filter' counts drops."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petrec.data import (
    DataConfig,
    DataConfigError,
    DataError,
    DataFileError,
    DataSchemaError,
    DataValueError,
    prepare,
)
from petrec.data.readers import read_delimited

COLS = {"user": "uid", "item": "sku", "time": "when", "rating": "stars"}
GOOD = "uid,sku,when,stars\nu1,a,1,4\nu1,b,2,2\nu1,c,3,5\nu2,a,1,3\nu2,b,2,1\nu2,c,3,4\n"


def _cfg(path: Path, **kw) -> DataConfig:
    base = {"dataset": "csv", "interactions_path": str(path), "columns": dict(COLS), "protocol": "loo",
            "rating_range": (1, 5)}
    return DataConfig(**{**base, **kw})


def _write(tmp_path: Path, text: str, name: str = "log.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _swap(line_no: int, new: str) -> str:
    lines = GOOD.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


# (case id, file text, extra config, error class, regex the message must match)
CASES = [
    ("wrong_separator", GOOD.replace(",", ";"), {}, DataFileError, r"log\.csv: wrong separator\? .*semicolon"),
    ("missing_column", GOOD.replace("when", "time"), {}, DataSchemaError,
     r"log\.csv: missing column 'when' \(mapped to time\)"),
    ("mistyped_rating", _swap(3, "u1,b,2,four"), {}, DataSchemaError,
     r"log\.csv, line 3, column 'stars': expected a number, found 'four'"),
    ("mistyped_time", _swap(4, "u1,c,someday,5"), {}, DataSchemaError,
     r"log\.csv, line 4, column 'when': expected a number or a date, found 'someday'"),
    ("empty_user_id", _swap(2, ",a,1,4"), {}, DataValueError,
     r"log\.csv, line 2, column 'uid': user id is NaN or empty.*1 such rows"),
    ("empty_item_id", _swap(5, "u2,,1,3"), {}, DataValueError,
     r"log\.csv, line 5, column 'sku': item id is NaN or empty"),
    ("rating_out_of_range", _swap(6, "u2,b,2,7"), {}, DataValueError,
     r"log\.csv, line 6, column 'stars': rating outside \[1, 5\] \(value 7\.0\)"),
    ("missing_rating", _swap(6, "u2,b,2,"), {"task": "rating"}, DataValueError,
     r"log\.csv, line 6, column 'stars': rating is missing"),
    ("duplicate_rows", GOOD + "u1,b,2,2\n", {}, DataValueError,
     r"log\.csv, line 8, column 'sku': duplicate \(user, item, timestamp\) row"),
    ("too_short_history", GOOD + "u3,a,9,4\n", {}, DataValueError,
     r"log\.csv, line 8, column 'uid': user 'u3' has only 1 interactions but protocol 'loo'.* at least 3"),
    ("bad_label", "uid,sku,when,clicked\nu1,a,1,1\nu1,b,2,2\nu1,c,3,0\n",
     {"columns": {"user": "uid", "item": "sku", "time": "when", "label": "clicked"}, "rating_range": None},
     DataValueError, r"log\.csv, line 3, column 'clicked': label is not 0 or 1"),
    ("empty_file", "", {}, DataFileError, r"log\.csv: file is empty"),
]


@pytest.mark.parametrize(("text", "extra", "err", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(tmp_path: Path, text: str, extra: dict, err: type, pattern: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(err) as info:
        prepare(_cfg(path, **extra))
    assert re.search(pattern, str(info.value)), str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)  # one line, no traceback pasted in
    assert info.value.__cause__ is None  # not a re-raised pandas error


def test_wrong_path(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    with pytest.raises(DataFileError, match=r"file not found: .*nope\.csv; .* holds \['log\.csv'\]"):
        prepare(_cfg(tmp_path / "nope.csv"))
    with pytest.raises(DataFileError, match=r"data folder .*missing.* does not exist"):
        prepare(DataConfig(dataset="ml-100k", data_dir=str(tmp_path / "missing")))
    with pytest.raises(DataFileError, match=r"dataset folder 'ml-100k' not found"):
        prepare(DataConfig(dataset="ml-100k", data_dir=str(tmp_path)))


def test_wrong_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("u1", "\xfc1"), encoding="latin-1")
    with pytest.raises(DataFileError, match=r"log\.csv: not valid utf-8 text \(byte 0xfc .*encoding='latin-1'"):
        prepare(_cfg(path))
    assert prepare(_cfg(path, encoding="latin-1")).splits["test"]["user_id"] == ["ü1", "u2"]


@pytest.mark.data
def test_wrong_encoding_and_separator_on_real_files(shared_data_dir: Path) -> None:
    item = shared_data_dir / "ml-100k" / "u.item"
    with pytest.raises(DataFileError, match="not valid utf-8"):
        read_delimited(item, sep="|", names=[str(i) for i in range(24)], encoding="utf-8")
    with pytest.raises(DataFileError, match="wrong separator"):
        read_delimited(shared_data_dir / "ml-100k" / "u.data", sep=",", names=["u", "i", "r", "t"])


def test_unknown_catalogue_item(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    items = _write(tmp_path, "item_id,title\na,A\nb,B\n", name="items.csv")
    with pytest.raises(DataValueError, match=r"line 4, column 'sku': item has no entry in the item catalogue.*2 such"):
        prepare(_cfg(path, items_path=str(items)))
    data = prepare(_cfg(path, items_path=str(items), policy="filter", protocol="temporal"))
    assert data.summary["interactions"]["dropped"] == {"unknown_item": 2}


def test_corrupt_parquet_and_duplicate_catalogue_ids(tmp_path: Path) -> None:
    bad = _write(tmp_path, "not parquet at all", name="log.parquet")
    with pytest.raises(DataFileError, match=r"log\.parquet: not a readable Parquet file"):
        prepare(_cfg(bad))
    path = _write(tmp_path, GOOD)
    items = _write(tmp_path, "item_id,title\na,A\nb,B\na,C\n", name="items.csv")
    with pytest.raises(DataValueError, match=r"items\.csv, line 4, column 'item_id': item id 'a' is empty or duplicated"):
        prepare(_cfg(path, items_path=str(items)))


@pytest.mark.parametrize(("field", "value", "pattern"), [
    ("task", "click", r"DataConfig\.task='click' is not accepted; expected one of ctr, rating, next_item"),
    ("protocol", "random", r"DataConfig\.protocol='random'.*tallrec, temporal, periods, loo, kfold"),
    ("history_len", 0, r"DataConfig\.history_len=0 .* integer >= 1"),
    ("kfold_fold", 7, r"DataConfig\.kfold_fold=7 .* kfold_k=5"),
    ("temporal_quantiles", (0.9, 0.8), r"DataConfig\.temporal_quantiles"),
    ("columns", {"usr": "x"}, r"DataConfig\.columns=.*keys among user, item, time, rating, label"),
    ("policy", "ignore", r"DataConfig\.policy='ignore'.*error, filter"),
])
def test_config_errors_name_field_and_accepted_values(field: str, value: object, pattern: str) -> None:
    with pytest.raises(DataConfigError, match=pattern):
        DataConfig(**{field: value})
    with pytest.raises(DataConfigError, match="tallrec is ctr/rating"):
        DataConfig(task="next_item", protocol="tallrec")


def test_filter_policy_drops_and_counts_per_reason(tmp_path: Path) -> None:
    text = GOOD + ",a,4,4\nu1,x,5,9\nu2,c,3,4\nu3,a,1,4\n"  # empty id, out of range, duplicate, short user
    path = _write(tmp_path, text)
    with pytest.raises(DataValueError):
        prepare(_cfg(path))
    data = prepare(_cfg(path, policy="filter"))
    assert data.summary["interactions"] == {
        "rows_read": 10, "rows_kept": 6,
        "dropped": {"duplicate": 1, "missing_user_id": 1, "rating_out_of_range": 1, "user_too_short": 1},
        "first_dropped": {"duplicate": ["line 10"], "missing_user_id": ["line 8"],
                          "rating_out_of_range": ["line 9"], "user_too_short": ["line 11"]}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_users=st.integers(1, 6), n_items=st.integers(4, 9), bad=st.lists(
    st.sampled_from(["missing_item_id", "rating_out_of_range", "duplicate"]), max_size=6), seed=st.integers(0, 99))
def test_property_filter_drops_exactly_the_injected_rows(tmp_path: Path, n_users: int, n_items: int,
                                                         bad: list[str], seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}", t, float(rng.integers(1, 6))) for u in range(n_users)
            for t, i in enumerate(rng.permutation(n_items)[:4])]
    clean = list(rows)
    for kind in bad:
        u, i, t, r = rows[int(rng.integers(len(clean)))]
        rows.append({"missing_item_id": (u, "", t + 100, r), "rating_out_of_range": (u, i, t + 200, 6.5),
                     "duplicate": (u, i, t, r)}[kind])
    path = tmp_path / f"log{seed}_{len(bad)}.csv"
    pd.DataFrame(rows, columns=["uid", "sku", "when", "stars"]).to_csv(path, index=False)
    if bad:
        with pytest.raises(DataValueError):
            prepare(_cfg(path, protocol="temporal"))
    data = prepare(_cfg(path, protocol="temporal", policy="filter"))
    expected = {k: bad.count(k) for k in set(bad)}
    assert data.summary["interactions"]["dropped"] == expected
    assert data.summary["interactions"]["rows_kept"] == len(clean)


# ----------------------------------------------------------------------------- unreadable rows
# Each case: (case id, the bad line, reason key, error class, regex). The log below has 32 rows
# of 4 users and a blank line after line 8, so a bad row's line number is not its row index + 2.


def _log_with(bad: dict[int, str]) -> str:
    rows = ["uid,sku,when,stars"] + [f"u{u},i{i},{10 * i + u},{1 + i % 5}" for u in range(4) for i in range(8)]
    for line, text in bad.items():
        rows[line - 2 if line > 9 else line - 1] = text  # line 9 is the blank line
    return "\n".join(rows[:8]) + "\n\n" + "\n".join(rows[8:]) + "\n"


UNREADABLE = [
    ("rating_five", 4, "u0,i2,20,five", "rating_not_a_number", DataSchemaError,
     r"log\.csv, line 4, column 'stars': expected a number, found 'five' \(1 such rows\)"),
    ("timestamp_yesterday", 12, "u1,i2,yesterday,3", "timestamp_unreadable", DataSchemaError,
     r"log\.csv, line 12, column 'when': expected a number or a date, found 'yesterday'"),
    ("timestamp_empty", 12, "u1,i2,,3", "timestamp_missing", DataValueError,
     r"log\.csv, line 12, column 'when': timestamp is missing"),
    ("short_row", 11, "u1,i1", "short_row", DataFileError,
     r"log\.csv, line 11: expected 4 fields, found 2 \(a short row\)"),
    ("long_row", 14, "u1,i4,41,3,extra", "long_row", DataFileError,
     r"log\.csv, line 14: expected 4 fields, found 5 \(a long row"),
]


@pytest.mark.parametrize(("line", "text", "reason", "err", "pattern"), [c[1:] for c in UNREADABLE],
                         ids=[c[0] for c in UNREADABLE])
def test_unreadable_row_is_one_error_or_dropped_and_counted(tmp_path: Path, line: int, text: str, reason: str,
                                                            err: type, pattern: str) -> None:
    path = _write(tmp_path, _log_with({line: text}))
    with pytest.raises(err) as info:
        prepare(_cfg(path, protocol="temporal"))
    message = str(info.value)
    assert re.search(pattern, message), message
    assert "--filter" in message and "\n" not in message and info.value.__cause__ is None
    data = prepare(_cfg(path, protocol="temporal", policy="filter"))
    assert data.summary["interactions"] == {"rows_read": 32, "rows_kept": 31, "dropped": {reason: 1},
                                            "first_dropped": {reason: [f"line {line}"]}}


def test_filter_counts_every_unreadable_row_per_reason_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, _log_with({c[1]: c[2] for c in UNREADABLE if c[0] != "timestamp_empty"}
                                      | {16: "u1,i6,61,5x", 20: "u2,i2", 22: "u2,i4"}))
    with pytest.raises(DataSchemaError, match=r"line 4, column 'stars'"):  # the first bad line
        prepare(_cfg(path, protocol="temporal"))
    summary = prepare(_cfg(path, protocol="temporal", policy="filter")).summary["interactions"]
    assert summary == {
        "rows_read": 32, "rows_kept": 25,
        "dropped": {"long_row": 1, "rating_not_a_number": 2, "short_row": 3, "timestamp_unreadable": 1},
        "first_dropped": {"long_row": ["line 14"], "rating_not_a_number": ["line 4", "line 16"],
                          "short_row": ["line 11", "line 20", "line 22"], "timestamp_unreadable": ["line 12"]}}


def test_cli_filter_prints_the_drops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from petrec.cli import main

    path = _write(tmp_path, _log_with({4: "u0,i2,20,five", 11: "u1,i1"}))
    args = ["data", "prepare", "--dataset", "csv", "--interactions", str(path), "--columns",
            "user=uid,item=sku,time=when,rating=stars", "--protocol", "temporal", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("petrec data prepare: error: ") and "line 4, column 'stars'" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--filter"]) == 0
    out, err = capsys.readouterr()
    assert "dropped 2 of 32 rows: 1 rating_not_a_number (line 4); 1 short_row (line 11)" in err
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved == json.loads(out)
    assert saved["interactions"]["dropped"] == {"rating_not_a_number": 1, "short_row": 1}


@pytest.mark.parametrize("bad_line", [2, 47, 401])
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_non_utf8_error_names_the_line_and_byte_offset(tmp_path: Path, bad_line: int, gz: bool) -> None:
    import gzip

    rows = ["uid,sku,when,stars"] + [f"u{i % 7},i{i},{i},4" for i in range(1, 600)]
    raw = bytearray(("\n".join(rows) + "\n").encode())
    offset = sum(len(r) + 1 for r in rows[:bad_line - 1]) + 1  # the second byte of that line
    raw[offset] = 0xFC
    name = "log.csv.gz" if gz else "log.csv"
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(DataFileError) as info:
        prepare(_cfg(path))
    assert f"(byte 0xfc at line {bad_line}, column 2, byte offset {offset}" in str(info.value)
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_blank_lines_are_not_rows_but_rows_of_empty_fields_are_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, _log_with({5: ",,,", 13: "   "}))  # line 9 is blank too
    with pytest.raises(DataValueError, match=r"log\.csv, line 5, column 'when': timestamp is missing"):
        prepare(_cfg(path, protocol="temporal"))
    summary = prepare(_cfg(path, protocol="temporal", policy="filter")).summary["interactions"]
    assert summary == {"rows_read": 31, "rows_kept": 30, "dropped": {"timestamp_missing": 1},
                       "first_dropped": {"timestamp_missing": ["line 5"]}}
