"""benchmarks/explain_examples.py: which rows it picks, and a report written from a record alone."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


def test_pick_rows_takes_the_first_of_each_class_liked_first(explain_examples: ModuleType) -> None:
    assert explain_examples.pick_rows([0, 1, 1, 0, 1, 0], 2) == [1, 2, 0, 3]


def test_pick_rows_names_a_short_class(explain_examples: ModuleType) -> None:
    with pytest.raises(ValueError, match="1 examples with label 0; --per-class asks 2"):
        explain_examples.pick_rows([1, 1, 0], 2)
    with pytest.raises(ValueError, match="at least 1"):
        explain_examples.pick_rows([1, 0], 0)


def test_report_is_written_from_the_record(explain_examples: ModuleType, tmp_path: Path) -> None:
    example = {"row": 4, "label": 1, "score": 0.62, "candidate_title": "Heat (1995)", "item_id": "9",
               "history_item_ids": ["1", "2"], "history_titles": ["Up (2009)", "Alien (1979)"],
               "history_labels": [1, 0], "effects": [0.01, -0.2], "ranking": [1, 0],
               "prior": 0.5, "lm": -0.1, "prior_share": 0.83}
    record = {"command": "python benchmarks/explain_examples.py --run R", "machine_summary": "a CPU",
              "git": {"commit": "abc"}, "started": "t0", "finished": "t1",
              "runs": [{"run": "R", "backbone": "minilm", "method": "lora", "scoring": "head",
                        "behaviour_prior": True, "prior_fusion": "stacked", "split": "test",
                        "examples": [example]}]}
    text = explain_examples.write_report(record, tmp_path).read_text()
    assert "| 1 | Alien (1979) | no | -0.2000 |" in text and "| 2 | Up (2009) | yes | +0.0100 |" in text
    assert "prior share 0.83" in text and "behaviour prior (stacked)" in text
    assert (tmp_path / "plots" / "run0_row4.png").stat().st_size > 1000
