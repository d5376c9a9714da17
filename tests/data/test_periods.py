"""The ``periods`` protocol (continual fine-tuning): disjoint ordered periods, full coverage, no leakage, replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petrec.data import DataConfig, DataError, prepare
from petrec.data import splits as S
from petrec.data.errors import DataConfigError

SPLITS = ("train", "valid", "test")


def _keys(split) -> set[tuple[str, str, int]]:
    """(user, target item, target time) of every example: the target interaction it predicts."""
    return set(zip(split["user_id"], split["item_id"], split["timestamp"], strict=True))


@pytest.fixture(scope="module")
def periods() -> list:
    """The synthetic world cut into 3 periods, every period prepared (no sampling)."""
    return [prepare(DataConfig(protocol="periods", n_periods=3, period=p)) for p in (1, 2, 3)]


@settings(max_examples=60, deadline=None)
@given(ts=st.lists(st.integers(0, 50), min_size=1, max_size=80), n=st.integers(2, 5))
def test_period_assign_is_ordered_disjoint_and_covers_every_row(ts: list[int], n: int) -> None:
    stamps = np.asarray(ts)
    period, split, cuts, inner = S.period_assign(stamps, n, (0.8, 0.9))
    assert len(period) == len(stamps) and period.min() >= 0 and period.max() < n and len(cuts) == n - 1
    for p in range(n - 1):  # every row of an earlier period is strictly earlier than every row of a later one
        earlier, later = stamps[period <= p], stamps[period > p]
        if len(earlier) and len(later):
            assert earlier.max() < later.min()
    for p in range(n):
        rows, kind = stamps[period == p], split[period == p]
        assert len(inner[p]) == (2 if len(rows) else 0)
        for a, b in ((S.TRAIN, S.VALID), (S.VALID, S.TEST), (S.TRAIN, S.TEST)):
            if (kind == a).any() and (kind == b).any():
                assert rows[kind == a].max() < rows[kind == b].min()


def test_every_example_lands_in_exactly_one_period_and_periods_are_ordered(periods: list) -> None:
    temporal = prepare(DataConfig(protocol="temporal"))
    everything = set().union(*(_keys(temporal.splits[n]) for n in SPLITS))
    per_period = [set().union(*(_keys(d.splits[n]) for n in SPLITS)) for d in periods]
    assert sum(len(k) for k in per_period) == len(everything)  # pairwise disjoint ...
    assert set().union(*per_period) == everything  # ... and together every example of the log
    assert [len(k) for k in per_period] == periods[0].summary["period_examples"]
    cuts = periods[0].summary["period_cuts"]
    for p, d in enumerate(periods):
        times = np.concatenate([np.asarray(d.splits[n]["timestamp"]) for n in SPLITS])
        low, high = ([-np.inf, *cuts][p], [*cuts, np.inf][p])
        assert low <= times.min() and times.max() < high
        tr, va, te = (np.asarray(d.splits[n]["timestamp"]) for n in SPLITS)
        assert tr.max() < va.min() and va.max() < te.min()  # within a period: train, valid, test by time


def test_no_valid_or_test_target_is_trained_on_in_any_period(periods: list) -> None:
    trained = set().union(*(_keys(d.splits["train"]) for d in periods))
    held_out = set().union(*(_keys(d.splits[n]) for d in periods for n in ("valid", "test")))
    assert trained and held_out and not trained & held_out
    # histories reach back into earlier periods (the user's past) and stay before their target
    from petrec.data import synthetic_world

    log = synthetic_world().interactions.set_index(["user_id", "item_id"])["timestamp"]
    first_cut = periods[0].summary["period_cuts"][0]
    rows = periods[1].splits["train"].select(range(50)).to_list()
    hist_ts = [[log[(r["user_id"], h)] for h in r["history_item_ids"]] for r in rows]
    assert all(max(h) < r["timestamp"] for h, r in zip(hist_ts, rows, strict=True) if h)
    assert any(min(h) < first_cut for h in hist_ts if h)


def test_replay_adds_earlier_training_examples_only(periods: list) -> None:
    cfg = {"protocol": "periods", "n_periods": 3, "max_train_examples": 200, "seed": 3}
    own = prepare(DataConfig(period=3, **cfg))
    mixed = prepare(DataConfig(period=3, period_replay=0.25, **cfg))
    seen_earlier = set().union(*(_keys(prepare(DataConfig(period=p, **cfg)).splits["train"]) for p in (1, 2)))
    extra = _keys(mixed.splits["train"]) - _keys(own.splits["train"])
    assert _keys(own.splits["train"]) <= _keys(mixed.splits["train"])
    assert len(mixed.splits["train"]) == 250 and mixed.summary["replay_examples"] == len(extra) == 50
    assert extra <= seen_earlier  # examples the earlier periods' runs trained on, never valid / test
    for n in ("valid", "test"):  # replay never touches the evaluation splits
        assert _keys(mixed.splits[n]) == _keys(own.splits[n])
    assert prepare(DataConfig(period=1, period_replay=0.25, **cfg)).summary["replay_examples"] == 0


@pytest.mark.parametrize(("fields", "message"), [
    ({"n_periods": 1}, r"DataConfig\.n_periods=1 .*an integer >= 2"),
    ({"n_periods": "3"}, r"DataConfig\.n_periods='3'"),
    ({"period": 0}, r"DataConfig\.period=0 .*an integer >= 1"),
    ({"period": 4}, r"DataConfig\.period=4 .*1 <= period <= n_periods=3"),
    ({"period_replay": -0.1}, r"DataConfig\.period_replay=-0\.1 .*a finite number >= 0"),
    ({"period_replay": float("nan")}, r"DataConfig\.period_replay=nan"),
    ({"period_replay": "lots"}, r"DataConfig\.period_replay='lots'"),
    ({"period_replay": 0.2, "protocol": "temporal"}, r"period_replay=0\.2 .*0 unless protocol='periods'"),
])
def test_bad_period_fields_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(DataConfigError, match=message):
        DataConfig(**{"protocol": "periods", **fields})


def test_a_period_without_examples_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"  # every interaction at one time: the quantile cuts collapse
    log.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},100\n" for u in range(3) for i in range(4)))
    cfg = DataConfig(dataset="csv", interactions_path=str(log), columns={"time": "timestamp"},
                     protocol="periods", n_periods=3)
    with pytest.raises(DataError, match=r"n_periods=3: period 1 holds no example .*lower n_periods"):
        prepare(cfg)


def test_cli_prepares_a_period(tmp_path: Path, capsys: pytest.CaptureFixture, periods: list) -> None:
    from petrec.cli import main

    out = tmp_path / "p2"
    assert main(["data", "prepare", "--protocol", "periods", "--n-periods", "3", "--period", "2",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["period"] == 2 and printed["config"]["n_periods"] == 3
    assert printed["splits"]["test"]["examples"] == len(periods[1].splits["test"])
    assert main(["data", "prepare", "--protocol", "periods", "--period", "5", "--out", str(tmp_path / "x")]) == 2
    assert "DataConfig.period=5" in capsys.readouterr().err and not (tmp_path / "x").exists()
