"""benchmarks/continual.py: the plan, the command line's errors, and the orchestration with a fake runner."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from petrec.bench.runner import ProcessResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    """benchmarks/continual.py imported as a module."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("petrec_bench_continual_driver", ROOT / "benchmarks" / "continual.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plan_runs_each_chain_parent_first(driver: ModuleType) -> None:
    jobs = driver.plan(3, [1], 0.2)
    assert [j.run_id for j in jobs] == [
        "scratch__p1__s1", "full__p1__s1",
        "warm__p2__s1", "scratch__p2__s1", "full__p2__s1", "replay__p2__s1",
        "warm__p3__s1", "scratch__p3__s1", "full__p3__s1", "replay__p3__s1"]
    parents = {j.run_id: (j.init_from().run_id if j.init_from() else None) for j in jobs}
    assert parents["warm__p2__s1"] == parents["replay__p2__s1"] == "scratch__p1__s1"
    assert parents["warm__p3__s1"] == "warm__p2__s1" and parents["replay__p3__s1"] == "replay__p2__s1"
    assert parents["scratch__p3__s1"] is None and parents["full__p2__s1"] is None
    assert all(j.kind != "replay" for j in driver.plan(2, [1, 2], 0.0)) and len(driver.plan(2, [1, 2], 0.0)) == 10


@pytest.mark.parametrize(("argv", "message"), [
    (["--n-periods", "1"], "--n-periods must be >= 2, got 1"),
    (["--train-per-period", "0"], "--train-per-period must be >= 1"),
    (["--replay", "-0.5"], "--replay must be a finite fraction >= 0"),
    (["--replay", "nan"], "--replay must be a finite fraction >= 0"),
    (["--seeds", "1", "1"], "--seeds must be distinct"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--resume", "--force"], "--resume and --force exclude each other"),
])
def test_bad_flags_are_usage_errors(driver: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str],
                                    message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        driver.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_recipe_config_is_the_documented_schedule(driver: ModuleType) -> None:
    args = driver.parse_args(["--replay", "0.3", "--train-per-period", "900"])
    replay = driver.recipe_config(args, driver.Job("replay", 2, 1))
    assert replay["data"] == {"dataset": "ml-100k", "task": "ctr", "protocol": "periods", "history_len": 10,
                              "n_periods": 3, "period": 2, "period_replay": 0.3, "max_train_examples": 900,
                              "max_eval_examples": 500, "seed": 1}
    assert replay["model"]["method_kwargs"] == {"r": 8, "alpha": 16, "dropout": 0.05}
    assert (replay["train"]["lr"], replay["train"]["epochs"], replay["max_length"]) == (2e-3, 1, 256)
    full = driver.recipe_config(args, driver.Job("full", 2, 1))
    assert full["model"]["method"] == "full" and full["train"]["lr"] == 1e-4 and full["data"]["period_replay"] == 0
    from petrec.config import from_dict
    from petrec.recipes.finetune import FinetuneConfig

    assert from_dict(FinetuneConfig, replay).data.period_replay == 0.3  # the recipe accepts it as written


class FakeRunner:
    """Stands in for run_process: writes what the recipe / `petrec evaluate` would, and remembers the calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: list[str], log: Path, timeout: float, env: dict | None) -> ProcessResult:
        self.calls.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("fake log\nboom\n")
        if "petrec.recipes.finetune" in argv:
            out = Path(argv[argv.index("--train.output_dir") + 1])
            if self.fail and out.name == self.fail:
                return ProcessResult(1, 1.0, 10.0, False)
            cfg = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
            p = cfg["data"]["period"]
            (out / "adapter").mkdir(parents=True)
            metrics = {"test": {"auc": 0.6 + 0.05 * p, "logloss": 0.6, "n_examples": 50.0}, "wall_seconds": 10.0 * p}
            (out / "metrics.json").write_text(json.dumps(metrics))
        else:
            run = Path(argv[argv.index("--run") + 1])
            q = int(argv[argv.index("--data-override") + 1].split("=")[1])
            trained = int(run.name.split("__p")[1].split("__")[0])
            Path(argv[argv.index("--out") + 1]).parent.mkdir(parents=True, exist_ok=True)
            Path(argv[argv.index("--out") + 1]).write_text(json.dumps({"auc": 0.6 + 0.05 * q - 0.01 * (trained - q)}))
        return ProcessResult(0, 2.0, 100.0, False, cpu_seconds=2.0, machine_cpu_seconds=4.0, cpus=2)


def _no_data(args, seed) -> dict:
    return {"periods": [], "note": ""}


def test_main_trains_chains_evaluates_earlier_periods_and_writes_the_report(
        driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "period_facts", _no_data)
    out, work = tmp_path / "results", tmp_path / "work"
    fake = FakeRunner()
    argv = ["--out", str(out), "--work", str(work), "--replay", "0.2", "--no-plots"]
    assert driver.main(argv, runner=fake) == 0
    warm3 = json.loads((out / "runs" / "warm__p3__s1.json").read_text())
    info = warm3["run_info"]
    assert info["status"] == "ok" and info["init_adapter"] == str(work / "warm__p2__s1")
    assert f"--init_adapter {work / 'warm__p2__s1'}" in info["command"] and len(info["eval_commands"]) == 2
    assert "--data-override period=1" in info["eval_commands"][0] and warm3["machine"]["cpu_count"] >= 1
    assert warm3["eval"] == {"1": {"auc": pytest.approx(0.63), "source": "petrec evaluate"},
                             "2": {"auc": pytest.approx(0.69), "source": "petrec evaluate"},
                             "3": {"auc": pytest.approx(0.75), "logloss": 0.6, "n_examples": 50.0,
                                   "source": "the recipe's test pass"}}
    scratch1 = json.loads((out / "runs" / "scratch__p1__s1.json").read_text())["run_info"]
    assert scratch1["strategies"] == ["warm", "scratch", "replay"] and scratch1["init_adapter"] is None
    assert sum("petrec.recipes.finetune" in c for c in fake.calls) == 10 and len(fake.calls) == 10 + 2 * 4 + 4 * 1
    summary = json.loads((out / "summary.json").read_text())
    drop = next(r for r in summary["summary"]["forgetting"]
                if (r["strategy"], r["period"], r["eval_period"]) == ("replay", 3, 1))
    assert drop["mean"] == pytest.approx(0.02) and summary["command"].startswith("python benchmarks/continual.py")
    assert "| replay | 0.6500 | 0.7000 | 0.7500 |" in (out / "REPORT.md").read_text()
    # a second invocation refuses to mix with these records; --resume keeps them and runs nothing
    assert driver.main(argv, runner=fake) == 2
    fake.calls.clear()
    assert driver.main([*argv, "--resume"], runner=fake) == 0 and fake.calls == []


def test_a_failed_run_skips_its_chain_and_is_reported(driver: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "period_facts", _no_data)
    out = tmp_path / "results"
    argv = ["--out", str(out), "--work", str(tmp_path / "work"), "--no-plots"]
    assert driver.main(argv, runner=FakeRunner(fail="warm__p2__s1")) == 1
    failed = json.loads((out / "runs" / "warm__p2__s1.json").read_text())["run_info"]
    skipped = json.loads((out / "runs" / "warm__p3__s1.json").read_text())["run_info"]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    assert skipped["status"] == "skipped" and "warm__p2__s1 did not finish" in skipped["error"]
    report = (out / "REPORT.md").read_text()
    assert "`warm__p3__s1`: skipped" in report and "| warm | 0.6500 | — | — |" in report
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert not math.isnan(next(r["mean"] for r in summary["cells"] if r["strategy"] == "scratch"))
