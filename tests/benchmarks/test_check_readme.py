"""benchmarks/check_readme.py: every headline number of README.md is backed by a record."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SOURCES = ROOT / "benchmarks" / "readme_sources.json"


def _tampered_readme(tmp_path: Path, old: str, new: str) -> Path:
    text = README.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in README.md"
    path = tmp_path / "README.md"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_readme_headline_numbers_are_backed_by_records(check_readme: ModuleType) -> None:
    report = check_readme.check()
    assert report.ok, "\n".join(report.problems)
    assert report.counts["record"] >= 30
    assert check_readme.main([]) == 0


def test_tampered_number_is_caught(check_readme: ModuleType, tmp_path: Path, capsys) -> None:
    readme = _tampered_readme(tmp_path, "full 0.7294,", "full 0.7295,")
    report = check_readme.check(readme=readme)
    assert len(report.problems) == 1
    assert "0.7295" in report.problems[0] and "P1 (ML-100K, TALLRec split)" in report.problems[0]
    assert check_readme.main(["--readme", str(readme)]) == 1
    assert "UNBACKED 0.7295" in capsys.readouterr().out


def test_number_changed_in_readme_and_mapping_is_recomputed(check_readme: ModuleType,
                                                            tmp_path: Path) -> None:
    """Editing the mapping's text along with the README does not help: the ratio is recomputed."""
    readme = _tampered_readme(tmp_path, "LoRA 0.57× and QLoRA 0.48×", "LoRA 0.45× and QLoRA 0.48×")
    mapping = json.loads(SOURCES.read_text(encoding="utf-8"))
    row = next(r for r in mapping["rows"] if r["where"] == "efficiency-gpu/")
    row["numbers"][0]["text"] = "0.45"
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps(mapping), encoding="utf-8")
    report = check_readme.check(readme=readme, sources=sources)
    assert len(report.problems) == 1
    assert "0.45" in report.problems[0] and "0.568" in report.problems[0]


def test_unmapped_number_and_old_gpu_speed_are_caught(check_readme: ModuleType, tmp_path: Path) -> None:
    readme = _tampered_readme(tmp_path, "LoRA 0.78× full's training speed", "LoRA 1.04× full's training speed")
    problems = check_readme.check(readme=readme).problems
    assert any("UNBACKED 1.04" in p for p in problems)
    readme = _tampered_readme(tmp_path, "HR@10 0.1115 |", "HR@10 0.1115, HR@50 0.2014 |")
    problems = check_readme.check(readme=readme).problems
    assert problems == [p for p in problems if "0.2014" in p] and problems


def test_numbers_and_precision(check_readme: ModuleType) -> None:
    assert check_readme.numbers_in("NDCG@10 0.1724, P1 0.55–0.58, LLaMA-7B, 8,000 −0.010") == [
        "0.1724", "0.55", "0.58", "7", "8,000", "-0.010"]
    assert check_readme.formats_as(0.72937, "0.7294")
    assert not check_readme.formats_as(0.72937, "0.7293")
    assert check_readme.formats_as(7999.6, "8,000")


def _mini_project(tmp_path: Path, record: dict, numbers: list[dict]) -> tuple[Path, Path, Path]:
    results = tmp_path / "results"
    (results / "s" / "runs").mkdir(parents=True)
    (results / "s" / "runs" / "a.json").write_text(json.dumps(record), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("## Measured results\n\nHeadline numbers:\n\n| what | measured | where |\n"
                      "|---|---|---|\n| X | AUC 0.70 | `s/` |\n", encoding="utf-8")
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"table": {"section": "## Measured results", "marker": "Headline numbers"},
                                   "rows": [{"what": "X", "where": "s/", "numbers": numbers}]}),
                       encoding="utf-8")
    return readme, sources, results


def test_records_must_be_successful_run_records(check_readme: ModuleType, tmp_path: Path) -> None:
    value = {"record": "s/runs/a.json", "key": "metrics.test.auc"}
    good = {"run_info": {"status": "ok", "command": "x", "machine": {"cpu": "y"}},
            "metrics": {"test": {"auc": 0.701}}}
    readme, sources, results = _mini_project(tmp_path, good, [{"text": "0.70", "value": value}])
    assert check_readme.check(readme, sources, results, tmp_path).ok

    failed = {**good, "run_info": {**good["run_info"], "status": "failed"}}
    readme, sources, results = _mini_project(tmp_path / "f", failed, [{"text": "0.70", "value": value}])
    assert "status 'failed'" in check_readme.check(readme, sources, results, tmp_path).problems[0]

    bare = {"metrics": {"test": {"auc": 0.701}}}
    readme, sources, results = _mini_project(tmp_path / "b", bare, [{"text": "0.70", "value": value}])
    assert "not a run record" in check_readme.check(readme, sources, results, tmp_path).problems[0]

    other_folder = {"record": "t/runs/a.json", "key": "metrics.test.auc"}
    readme, sources, results = _mini_project(tmp_path / "o", good, [{"text": "0.70", "value": other_folder}])
    assert "not in the row's folder" in check_readme.check(readme, sources, results, tmp_path).problems[0]

    glob = {"mean": {"glob": "s/runs/*.json", "key": "metrics.test.auc", "count": 3}}
    readme, sources, results = _mini_project(tmp_path / "g", good, [{"text": "0.70", "value": glob}])
    assert "matches 1 records" in check_readme.check(readme, sources, results, tmp_path).problems[0]
