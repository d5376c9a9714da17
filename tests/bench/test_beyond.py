"""The report's beyond-accuracy table: SNIPS and group columns, means over seeds, absent without data."""

from __future__ import annotations

from pathlib import Path

from petrec.bench.beyond import debiased_metric
from petrec.bench.report import build_report
from tests.bench.test_aggregate import record
from tests.bench.test_report import _write


def _with_groups(method: str, seed: int, auc: float, snips: float, head: float, tail: float) -> dict:
    rec = record(method, seed, auc)
    rec["metrics"]["test"].update({"snips_auc": snips, "head/auc": head, "head/n_examples": 120.0,
                                   "tail/auc": tail, "tail/n_examples": 300.0})
    return rec


def test_beyond_accuracy_table_has_snips_and_groups(tmp_path: Path) -> None:
    recs = [_with_groups("lora", 1, 0.70, 0.64, 0.75, 0.60), _with_groups("lora", 2, 0.72, 0.66, 0.77, 0.62),
            _with_groups("full", 1, 0.71, 0.69, 0.72, 0.68)]
    recs.append(record("history-share", 1, 0.726, kind="baseline", mem=None, sps=None, params=0))
    _write(tmp_path, recs)
    md = build_report(tmp_path)[0].read_text()
    block = md.split("### default, k=256: beyond accuracy")[1].split("\n\n", 3)
    assert "SNIPS" in block[1]
    lines = block[2].splitlines()
    assert lines[0] == "| method | test auc | snips_auc | head (n=120) | tail (n=300) |"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert rows["lora"] == "| lora | 0.7100 | 0.6500 | 0.7600 | 0.6100 |"  # means over the two seeds
    assert rows["full"] == "| full | 0.7100 | 0.6900 | 0.7200 | 0.6800 |"
    assert rows["history-share"] == "| history-share | 0.7260 | — | — | — |"  # a baseline without groups


def test_no_table_without_debiased_metrics(tmp_path: Path) -> None:
    _write(tmp_path, [record("lora", 1, 0.7), record("full", 1, 0.71)])
    assert "beyond accuracy" not in build_report(tmp_path)[0].read_text()


def test_debiased_metric_names() -> None:
    assert debiased_metric("auc") == "snips_auc"
    assert debiased_metric("ndcg@10") == "snips_ndcg@10" and debiased_metric("hr@50") == "snips_recall@50"
    assert debiased_metric("rmse") is None and debiased_metric("logloss") is None
