"""petrec.bench.continual: forgetting arithmetic, the summary over seeds, REPORT.md and plots from fake records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from petrec.bench import continual as C
from petrec.bench.system import clean_floats

#: Test AUC of each job's model: {(job, period): {evaluated period: auc}} (seed 1; seed 2 adds 0.01).
AUCS = {
    ("scratch", 1): {1: 0.70},
    ("warm", 2): {1: 0.66, 2: 0.72},
    ("warm", 3): {1: 0.64, 2: 0.69, 3: 0.75},
    ("scratch", 2): {1: 0.60, 2: 0.71},
    ("scratch", 3): {1: 0.58, 2: 0.62, 3: 0.73},
    ("full", 1): {1: 0.72},
    ("full", 2): {1: 0.65, 2: 0.74},
    ("full", 3): {1: 0.61, 2: 0.66, 3: 0.76},
}


def fake_record(job: str, period: int, seed: int, shift: float = 0.0, status: str = "ok") -> dict:
    evals = {str(q): {"auc": auc + shift, "logloss": 0.6} for q, auc in AUCS.get((job, period), {}).items()}
    return {"run_info": {"run_id": f"{job}__p{period}__s{seed}", "job": job, "period": period, "seed": seed,
                         "status": status, "error": None if status == "ok" else "Killed"},
            "train_info": {"cpu_sharing": {"other_share": 0.05 * period}},
            "metrics": {"wall_seconds": 100.0 * period + (50 if job == "full" else 0) + seed},
            "eval": evals if status == "ok" else {}}


def records(seeds: tuple[int, ...] = (1,)) -> list[dict]:
    return [fake_record(job, p, s, 0.01 * (s - 1)) for s in seeds for (job, p) in AUCS]


def test_job_for_shares_period_one() -> None:
    assert [C.job_for(s, 1) for s in C.STRATEGIES] == ["scratch", "scratch", "full", "scratch"]
    assert [C.job_for(s, 2) for s in C.STRATEGIES] == list(C.STRATEGIES)
    with pytest.raises(C.ContinualError, match="unknown strategy 'lwf'"):
        C.job_for("lwf", 2)


def test_forgetting_is_the_drop_since_the_period_was_learned() -> None:
    matrix = C.metric_matrix(records())
    assert set(matrix) == {("warm", 1), ("scratch", 1), ("full", 1)}  # no record names replay
    warm = matrix[("warm", 1)]
    assert warm[(1, 1)] == 0.70 and warm[(3, 2)] == 0.69  # period 1 of warm is scratch's run
    drops = C.forgetting(warm)
    assert drops == pytest.approx({(2, 1): 0.04, (3, 1): 0.06, (3, 2): 0.03})
    assert C.average_forgetting(drops, 3) == pytest.approx(0.045)
    assert math.isnan(C.average_forgetting(drops, 1))
    assert C.forgetting({(2, 1): 0.5}) == {}  # never measured right after period 1: no figure


def test_summary_over_seeds_has_intervals_and_lists_failures() -> None:
    recs = [*records((1, 2)), fake_record("replay", 2, 1, status="timeout")]
    summary = C.summarize(recs)
    assert summary["strategies"] == ["warm", "scratch", "full", "replay"] and summary["seeds"] == [1, 2]
    assert not [r for r in summary["cells"] if r["strategy"] == "replay" and r["period"] > 1]  # it timed out
    cell = next(r for r in summary["cells"] if (r["strategy"], r["period"], r["eval_period"]) == ("full", 3, 3))
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(0.765) and cell["ci_low"] < 0.76 < 0.77 < cell["ci_high"]
    avg = next(r for r in summary["average_forgetting"] if (r["strategy"], r["period"]) == ("scratch", 3))
    assert avg["mean"] == pytest.approx(((0.70 - 0.58) + (0.71 - 0.62)) / 2)
    time = next(r for r in summary["train_seconds"] if (r["strategy"], r["period"]) == ("warm", 1))
    assert time["mean"] == pytest.approx(101.5)  # scratch's period-1 run, seeds 1 and 2
    assert summary["failed"] == [{"run_id": "replay__p2__s1", "status": "timeout", "error": "Killed"}]


def test_report_and_plots_are_written_from_the_records(tmp_path: Path) -> None:
    for rec in [*records(), fake_record("replay", 2, 1, status="failed")]:
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{rec['run_info']['run_id']}.json").write_text(json.dumps(rec))
    meta = {"command": "python benchmarks/continual.py --n-periods 3", "started": "2026-12-03T08:00:00+00:00",
            "ended": "2026-12-03T08:40:00+00:00", "git": {"commit": "abc123", "dirty": False},
            "machine": {"cpu_model": "Test CPU", "cpu_cores_usable": 2, "memory_gib": 8.0, "gpus": []},
            "data": {"periods": [{"period": 1, "start": "(first)", "end": "1997-11-15 20:00", "examples": 33000,
                                  "train": 1500, "valid": 500, "test": 500}], "note": "Sampled as said."}}
    summary = C.write_outputs(tmp_path, meta)
    report = (tmp_path / "REPORT.md").read_text()
    assert "`python benchmarks/continual.py --n-periods 3`" in report and "abc123" in report and "Test CPU" in report
    assert "| warm | 0.7000 | 0.7200 | 0.7500 |" in report  # the newest period's AUC per strategy
    assert "| full | 0.0700 | 0.1100 | 0.0800 | 0.0950 |" in report  # forgetting: (2,1), (3,1), (3,2), mean
    assert "other processes during the training runs: 5–15% of the machine" in report and "not clean" in report
    assert "not distinguishable" in report and "replay__p2__s1`: failed: Killed" in report
    assert "| 1 | (first) | 1997-11-15 20:00 | 33,000 | 1,500 | 500 | 500 |" in report
    for name in ("metric_per_period.png", "forgetting.png", "train_time.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000 and f"(plots/{name})" in report
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["summary"] == clean_floats(summary) and written["command"] == meta["command"]
    assert len(written["records"]) == len(AUCS) + 1


def test_an_empty_results_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(C.ContinualError, match="no run records"):
        C.write_outputs(tmp_path, {})
