"""The next-item suite's tables: one row per run, and each seed group's mean and 95% interval."""

from __future__ import annotations

import json
import math
from pathlib import Path

from petrec.models.sequential.suite import seed_table


def _write(folder: Path, name: str, ndcg: float) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "test": {"hr@10": 2 * ndcg, "ndcg@10": ndcg}}))


def test_seed_groups_get_mean_and_student_t_interval(tmp_path: Path) -> None:
    for name, value in (("a", 0.05), ("a-s2", 0.06), ("a-s3", 0.07), ("b", 0.04)):
        _write(tmp_path, name, value)
    out = seed_table(tmp_path, (10,), {"a": "a", "a-s2": "a", "a-s3": "a", "b": "b", "b-s2": "b"})
    lines = out.splitlines()
    assert len(lines) == 3  # header, rule, group a; b has one recorded run and no interval
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) · std / √n
    assert lines[2] == (f"| a | a, a-s2, a-s3 | {0.12:.4f} [{0.12 - 2 * half:.4f}, {0.12 + 2 * half:.4f}] "
                        f"| {0.06:.4f} [{0.06 - half:.4f}, {0.06 + half:.4f}] |")
    assert seed_table(tmp_path, (10,), {"b": "b"}) == ""
