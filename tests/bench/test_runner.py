"""Runner: one subprocess per run, failures recorded, resume skips finished runs, --force re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from petrec.bench.runner import load_records, run_suite
from petrec.bench.suite import SuiteConfig
from petrec.config import from_dict
from tests.bench.conftest import calls, fake_suite_dict


def _by_id(records: list[dict]) -> dict[str, dict]:
    return {r["run_info"]["run_id"]: r for r in records}


def test_runs_are_recorded_and_failure_does_not_stop_the_suite(fake_suite: SuiteConfig, tmp_path: Path) -> None:
    lines: list[str] = []
    records = run_suite(fake_suite, tmp_path / "res", progress=lines.append)
    assert [r["run_info"]["run_id"] for r in records] == [
        "E__default__full__kfull__s1", "E__default__lora__kfull__s1", "E__default__head__kfull__s1",
        "E__default__full__kfull__s2", "E__default__lora__kfull__s2", "E__default__head__kfull__s2",
    ]
    assert sorted(calls(tmp_path)) == sorted(["full 1", "lora 1", "head 1", "full 2", "lora 2", "head 2"])
    runs = _by_id(load_records(tmp_path / "res"))
    assert len(runs) == 6
    ok = runs["E__default__lora__kfull__s2"]
    assert ok["run_info"]["status"] == "ok"
    assert ok["run_info"]["returncode"] == 0
    assert ok["metrics"]["test"]["auc"] == 0.68 + 0.02
    assert ok["metrics"]["valid_best"]["step"] == 7
    assert ok["train_info"]["steps_to_best"] == 7
    assert ok["train_info"]["train_examples"] == 32
    assert ok["train_info"]["adapter_bytes"] == 100
    assert ok["train_info"]["trainable_params"] == 10
    assert ok["train_info"]["peak_memory"]["cpu_peak_rss_mb"] == 200.0
    assert ok["train_info"]["peak_memory"]["process_peak_rss_mb"] > 1.0  # measured by the runner (wait4)
    assert ok["run_info"]["config"]["train"] == {"epochs": 1, "seed": 2}
    assert ok["run_info"]["config"]["model"]["method"] == "lora"
    assert ok["run_info"]["config"]["data"] == {"few_shot_k": None, "seed": 2}
    assert "--config" in ok["run_info"]["command"]
    assert ok["run_info"]["machine"]["cpu_cores_usable"] >= 1
    assert ok["run_info"]["versions"]["torch"]
    failed = runs["E__default__head__kfull__s1"]
    assert failed["run_info"]["status"] == "failed"
    assert failed["run_info"]["returncode"] == 3
    assert failed["run_info"]["error"].startswith("exit code 3")
    assert "RuntimeError: fake failure of head" in failed["run_info"]["error"]
    assert failed["metrics"] == {"valid": {}, "valid_best": {}, "test": {}}
    assert sum("FAILED" in line for line in lines) == 2
    assert sum(": running" in line for line in lines) == 6
    assert (tmp_path / "res" / ".gitignore").read_text() == "_work/\n"


def test_resume_skips_finished_runs_and_force_reruns(fake_suite: SuiteConfig, tmp_path: Path) -> None:
    res = tmp_path / "res"
    first = run_suite(fake_suite, res, progress=lambda s: None)
    assert len(calls(tmp_path)) == 6
    lines: list[str] = []
    again = run_suite(fake_suite, res, progress=lines.append)
    assert len(calls(tmp_path)) == 6  # nothing ran again, failed runs included
    assert sum("skipped" in line for line in lines) == 6
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    run_suite(fake_suite, res, retry_failed=True, progress=lambda s: None)
    assert calls(tmp_path)[6:] == ["head 1", "head 2"]
    run_suite(fake_suite, res, force=True, progress=lambda s: None, command_line="petrec bench --force")
    assert len(calls(tmp_path)) == 6 + 2 + 6
    meta = json.loads((res / "bench_meta.json").read_text())
    assert [i["command"] for i in meta["invocations"]] == ["petrec bench --suite fake"] * 3 + ["petrec bench --force"]
    assert all(i["finished_at"] for i in meta["invocations"]) and meta["command"] == "petrec bench --force"


def test_interrupted_run_is_redone_and_changed_config_reruns(fake_suite: SuiteConfig, tmp_path: Path) -> None:
    res = tmp_path / "res"
    run_suite(fake_suite, res, progress=lambda s: None)
    (res / "runs" / "E__default__full__kfull__s2.json").unlink()  # as if killed mid-run
    run_suite(fake_suite, res, progress=lambda s: None)
    assert calls(tmp_path)[6:] == ["full 2"]
    changed = fake_suite_dict(tmp_path, fail_methods=["head"])
    changed["methods"]["lora"] = {"train": {"lr": 3e-4}}
    run_suite(from_dict(SuiteConfig, changed), res, progress=lambda s: None)
    assert calls(tmp_path)[7:] == ["lora 1", "lora 2"]


def test_timeout_and_missing_metrics_are_failures(tmp_path: Path) -> None:
    data = fake_suite_dict(tmp_path, sleep_methods=["full"], silent_methods=["lora"])
    data["timeout_s"] = 2
    data["experiments"][0]["seeds"] = [1]
    data["experiments"][0]["methods"] = ["full", "lora"]
    records = _by_id(run_suite(from_dict(SuiteConfig, data), tmp_path / "res", progress=lambda s: None))
    slow = records["E__default__full__kfull__s1"]["run_info"]
    assert slow["status"] == "failed" and slow["error"].startswith("timed out after 2 s")
    assert records["E__default__full__kfull__s1"]["train_info"]["wall_seconds"] < 15
    silent = records["E__default__lora__kfull__s1"]["run_info"]
    assert silent["status"] == "failed" and "metrics.json is missing" in silent["error"]


def test_default_commands_run_the_recipe_module(tmp_path: Path) -> None:
    import sys

    from petrec.bench.runner import build_command
    from petrec.bench.suite import expand

    suite = from_dict(SuiteConfig, fake_suite_dict(tmp_path))
    suite.command = None
    spec = expand(suite)[0]
    argv = build_command(suite, spec, tmp_path / "c.yaml", tmp_path / "out")
    # A module of the installed package, never a file path: a non-editable install has no checkout.
    assert argv == [sys.executable, "-m", "petrec.recipes.finetune", "--config", str(tmp_path / "c.yaml"),
                    "--train.output_dir", str(tmp_path / "out")]


def test_parallel_jobs_give_the_same_records_in_suite_order(fake_suite: SuiteConfig, tmp_path: Path) -> None:
    serial = run_suite(fake_suite, tmp_path / "one", progress=lambda s: None)
    parallel = run_suite(fake_suite, tmp_path / "three", progress=lambda s: None, jobs=3)
    assert [r["run_info"]["run_id"] for r in parallel] == [r["run_info"]["run_id"] for r in serial]
    assert [r["run_info"]["status"] for r in parallel] == [r["run_info"]["status"] for r in serial]
    assert [r["metrics"] for r in parallel] == [r["metrics"] for r in serial]
    assert {r["run_info"]["concurrent_jobs"] for r in parallel} == {3}
    assert {r["run_info"]["concurrent_jobs"] for r in serial} == {1}
    with pytest.raises(Exception, match="jobs must be >= 1"):
        run_suite(fake_suite, tmp_path / "zero", progress=lambda s: None, jobs=0)


def test_machine_cpu_seconds_reads_busy_time_and_cpu_count(tmp_path: Path) -> None:
    import os

    from petrec.bench.system import machine_cpu_seconds

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy = 100+0+50+(idle 900, iowait 7 excluded)+2+3+5
    stat.write_text("cpu  100 0 50 900 7 2 3 5 0 0\ncpu0 50 0 25 450 3 1 1 2 0 0\n"
                    "cpu1 50 0 25 450 4 1 2 3 0 0\nintr 1\n")
    busy, cpus = machine_cpu_seconds(stat)
    assert busy == pytest.approx(160 / os.sysconf("SC_CLK_TCK")) and cpus == 2
    assert machine_cpu_seconds(tmp_path / "absent") is None
    (tmp_path / "bad").write_text("intr 1 2 3\n")
    assert machine_cpu_seconds(tmp_path / "bad") is None


def test_cpu_sharing_is_the_other_processes_share_of_the_cores() -> None:
    from petrec.bench.runner import ProcessResult, cpu_sharing

    # 2 CPUs for 10 s = 20 CPU-s; the run used 9, the machine 14 → others 5 = 25% of the machine.
    proc = ProcessResult(0, 10.0, None, False, cpu_seconds=9.0, machine_cpu_seconds=14.0, cpus=2)
    assert cpu_sharing(proc) == {"run_cpu_seconds": 9.0, "other_cpu_seconds": 5.0, "cpus": 2, "other_share": 0.25}
    # Tick rounding can make the machine's total a hair below the run's own time: never negative.
    assert cpu_sharing(ProcessResult(0, 10.0, None, False, 9.0, 8.99, 2))["other_share"] == 0.0
    assert cpu_sharing(ProcessResult(0, 10.0, None, False)) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_run_process_measures_the_run_cpu_time_within_the_machine_total(tmp_path: Path) -> None:
    import sys

    from petrec.bench.runner import cpu_sharing, run_process

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
    proc = run_process([sys.executable, "-c", spin], tmp_path / "log.txt", 30)
    assert proc.returncode == 0 and proc.cpu_seconds >= 0.5
    assert proc.machine_cpu_seconds >= proc.cpu_seconds - 0.05  # the machine's total includes the run
    sharing = cpu_sharing(proc)
    assert sharing is not None and 0.0 <= sharing["other_share"] <= 1.0


def test_records_carry_cpu_sharing_and_flag_a_shared_cpu(fake_suite: SuiteConfig, tmp_path: Path) -> None:
    from petrec.bench.runner import _summary

    records = run_suite(fake_suite, tmp_path / "res", progress=lambda s: None)
    ok = [r for r in records if r["run_info"]["status"] == "ok"]
    if Path("/proc/stat").exists():
        assert all(set(r["train_info"]["cpu_sharing"]) == {"run_cpu_seconds", "other_cpu_seconds", "cpus",
                                                           "other_share"} for r in ok)
    rec = ok[0]
    rec["train_info"]["cpu_sharing"] = {"other_share": 0.4}
    assert "other processes used 40% of the CPU: speed not clean" in _summary(rec)
    rec["train_info"]["cpu_sharing"] = {"other_share": 0.05}
    assert "speed not clean" not in _summary(rec)


def test_git_state_is_read_before_the_runner_writes_into_the_results_folder(
        fake_suite: SuiteConfig, tmp_path: Path, monkeypatch) -> None:
    # A committed results folder is rewritten by the runner (suite.yaml, bench_meta.json); reading
    # the checkout's state afterwards marked every record of a clean checkout "dirty".
    import petrec.bench.runner as runner

    res = tmp_path / "res"
    seen: list[bool] = []
    monkeypatch.setattr(runner, "git_state", lambda: seen.append(res.exists()) or {"commit": "c", "dirty": False})
    records = run_suite(fake_suite, res, progress=lambda s: None, select=lambda s: s.method == "lora")
    assert seen == [False] and all(r["run_info"]["git"] == {"commit": "c", "dirty": False} for r in records)


def test_git_state_counts_code_changes_not_result_changes(tmp_path: Path) -> None:
    import subprocess

    from petrec.bench.system import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "REPORT.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "benchmarks" / "results" / "REPORT.md").write_text("new\n")
    assert git_state(tmp_path)["dirty"] is False  # results are outputs
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_kfold_suite_runs_every_fold_records_it_and_baselines_see_each_fold(tmp_path: Path) -> None:
    from petrec.bench.report import build_report

    data = fake_suite_dict(tmp_path)
    data["defaults"]["data"] = {"dataset": "synthetic", "task": "ctr", "history_len": 3, "synthetic_users": 40,
                                "synthetic_items": 40, "synthetic_mean_len": 8}
    data["methods"] = {"lora": {}}
    data["experiments"] = [{"name": "CV", "folds": 3, "seeds": [1], "metric": "auc", "baselines": ["history-share"]}]
    res = tmp_path / "res"
    records = _by_id(run_suite(from_dict(SuiteConfig, data), res, progress=lambda s: None))
    assert list(records) == [f"CV__default__{m}__kfull__f{f}__s1" for f in range(3) for m in ("history-share", "lora")]
    assert calls(tmp_path) == ["lora 1 f0", "lora 1 f1", "lora 1 f2"]
    for run_id, rec in records.items():
        info = rec["run_info"]
        assert info["status"] == "ok", info["error"]
        assert info["fold"] == int(run_id.split("__f")[1][0])
        assert info["config"]["data"]["protocol"] == "kfold"
        assert (info["config"]["data"]["kfold_k"], info["config"]["data"]["kfold_fold"]) == (3, info["fold"])
    assert [records[f"CV__default__lora__kfull__f{f}__s1"]["metrics"]["test"]["auc"] for f in range(3)] == \
        pytest.approx([0.69, 0.691, 0.692])
    # the baseline is computed on each fold's own users: three different test sets
    tests = [records[f"CV__default__history-share__kfull__f{f}__s1"]["metrics"]["test"] for f in range(3)]
    assert len({json.dumps(t, sort_keys=True) for t in tests}) == 3
    md = build_report(res, make_plots=False)[0].read_text()
    assert "0.6910 ± 0.0010" in md and "(n=3: 3 folds × 1 seed)" in md
    assert md.count("(n=3: 3 folds × 1 seed)") == 2
