"""``petrec bench`` and ``petrec report`` through the top-level command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from petrec.cli import main
from tests.bench.conftest import calls, fake_suite_dict


def test_bench_runs_selected_runs_and_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "fake.yaml"
    suite.write_text(yaml.safe_dump(fake_suite_dict(tmp_path, fail_methods=["head"])))
    res = tmp_path / "res"
    assert main(["bench", "--suite", str(suite), "--results", str(res), "--dry-run", "--methods", "lora"]) == 0
    assert capsys.readouterr().out.split() == ["E__default__lora__kfull__s1", "E__default__lora__kfull__s2"]
    assert calls(tmp_path) == []
    assert main(["bench", "--suite", str(suite), "--results", str(res), "--only", "*__s1"]) == 0
    out = capsys.readouterr()
    assert sorted(calls(tmp_path)) == ["full 1", "head 1", "lora 1"]
    assert "report: " in out.out and (res / "REPORT.md").is_file()
    assert "1 of 3 runs failed" in out.err
    md = (res / "REPORT.md").read_text()
    assert ("- E: 3 of 6 planned runs recorded; missing — full: default/k=full/s2; head: default/k=full/s2; "
            "lora: default/k=full/s2") in md
    assert main(["report", str(res), "--no-plots"]) == 0
    assert "E: fake experiment" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no runs/ folder" in capsys.readouterr().err
    assert main(["bench", "--suite", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
