"""Report: REPORT.md / text / CSV / PNG from tiny records, including failed runs and missing values."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from petrec.bench.plots import pareto_front
from petrec.bench.report import build_report, fmt, fmt_bytes, fmt_count, fmt_ratio
from petrec.bench.runner import BenchError, run_suite
from petrec.bench.system import write_record
from tests.bench.test_aggregate import record


def _write(results: Path, records: list[dict], suite: dict | None = None) -> None:
    for rec in records:
        write_record(results / "runs" / f"{rec['run_info']['run_id']}.json", rec)
    if suite is not None:
        import yaml

        (results / "suite.yaml").write_text(yaml.safe_dump(suite))


def test_report_of_fake_suite_lists_failures_and_has_every_method(fake_suite, tmp_path: Path) -> None:
    res = tmp_path / "res"
    run_suite(fake_suite, res, progress=lambda s: None, command_line="petrec bench --suite fake.yaml")
    path, text = build_report(res)
    md = path.read_text()
    assert "- command: `petrec bench --suite fake.yaml`" in md
    assert "usable cores" in md and "git commit:" in md
    assert "## E: fake experiment" in md
    assert "| full |" in md and "| lora |" in md
    assert "| head | — | — | — (2/2 failed) |" in md
    assert "## Failed runs" in md and "`E__default__head__kfull__s1`: exit code 3" in md
    assert "RuntimeError: fake failure of head" in md
    # full: auc 0.71, 0.72 → mean 0.715; lora: 0.69, 0.70
    assert "0.7150 ± 0.0071" in md and "0.6950 ± 0.0071" in md
    assert "best parameter-efficient method lora auc=0.6950" in md
    assert "lora − full = -0.0200 (not within 1 point)" in md
    assert "failed runs: head (2/2)" in md
    assert "Planned but not run" not in md  # every planned run has a record (failed ones included)
    assert "E: fake experiment" in text and "|" not in text.split("E: fake experiment")[1].splitlines()[2]
    with open(res / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok", "failed"}
    with open(res / "summary.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["full", "lora", "head"]
    pngs = sorted(p.name for p in (res / "plots").glob("*.png"))
    assert pngs == ["E__metric_vs_params.png", "E__pareto.png", "E__peak_memory.png"]
    assert all((res / "plots" / p).stat().st_size > 5000 for p in pngs)
    for p in pngs:
        assert f"](plots/{p})" in md


def test_report_renders_with_missing_values(tmp_path: Path) -> None:
    bare = {"run_info": {"run_id": "X__default__lora__kfull__s1", "experiment": "X", "method": "lora",
                         "status": "ok"}, "train_info": {}, "metrics": {}}
    recs = [bare, record("full", 1, None, mem=None, sps=None, params=None, table="X", k=None)]
    _write(tmp_path, recs)
    path, text = build_report(tmp_path)
    md = path.read_text()
    assert "test auc" not in md  # no metric at all → no metric column
    assert "| lora | — | — | — | — | — | — | — | — |" in md
    assert "No runs" not in md
    assert not list((tmp_path / "plots").glob("*.png"))  # nothing to draw: no empty plots
    assert "X" in text


def test_report_of_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    path, _ = build_report(tmp_path)
    assert "No runs recorded yet." in path.read_text()
    with pytest.raises(BenchError, match="no runs/ folder"):
        build_report(tmp_path / "absent")
    (tmp_path / "runs" / "broken.json").write_text("{")
    with pytest.raises(BenchError, match=r"broken\.json: not valid JSON"):
        build_report(tmp_path)


def test_references_goals_and_baselines_appear(tmp_path: Path) -> None:
    recs = [record("full", s, 0.70 + 0.01 * s, mem=400, sps=10) for s in (1, 2)]
    recs += [record("lora", s, 0.70 + 0.01 * s, mem=100, sps=14) for s in (1, 2)]
    for rec in recs:
        rec["train_info"]["cpu_sharing"] = {"other_share": 0.01}
    recs += [record("history-share", 1, 0.726, kind="baseline", mem=None, sps=None, params=0)]
    suite = {"name": "t", "methods": {"full": {}, "lora": {}}, "experiments": [{
        "name": "P1", "metric": "auc", "baselines": ["history-share"],
        "references": {"TALLRec": {"256": 0.7198}},
        "goals": [{"method": "lora", "quantity": "memory_ratio", "op": "<=", "value": 0.45, "label": "LoRA mem"},
                  {"method": "lora", "quantity": "train_sps_ratio", "op": ">=", "value": 1.5, "label": "LoRA speed"},
                  {"method": "qlora", "quantity": "memory_ratio", "op": "<=", "value": 0.25, "label": "QLoRA mem"}],
    }]}
    _write(tmp_path, recs, suite)
    md = build_report(tmp_path)[0].read_text()
    # identical memory and speed on both seeds: zero-width intervals
    assert ("goal 'LoRA mem' (P1 default k=256): measured 0.250 [95% CI 0.250, 0.250] (n=2), met "
            "(the whole interval is <= 0.45)") in md
    assert ("goal 'LoRA speed' (P1 default k=256): measured 1.400 [95% CI 1.400, 1.400] (n=2), NOT met "
            "(the whole interval is on the wrong side of 1.5)") in md
    assert "goal 'QLoRA mem' (P1 default k=256): not checked" in md
    assert "| TALLRec (published, not run here) | — | — | 0.7198 |" in md
    assert "| history-share (baseline) | 0 | 0.0000 | 0.7260 (n=1) |" in md  # hand-made record: percent 0
    assert "| lora | 10 | 1.0000 | 0.7150 ± 0.0071" in md
    assert md.index("history-share (baseline)") < md.index("| full |")  # baselines first
    assert "lora − full = +0.0000 (within 1 point)" in md
    assert ("the best parameter-efficient method (lora) and the best baseline (history-share) are not "
            "distinguishable (one run on a side: no interval)") in md
    assert "best baseline history-share (statistics) 0.7260" in md


def test_formatters_and_pareto_front() -> None:
    assert fmt(None) == "—" and fmt(float("nan")) == "—" and fmt(0.12345) == "0.123" and fmt(1234.5) == "1,234"
    assert fmt_bytes(2_500_000) == "2.5 MB" and fmt_bytes(None) == "—" and fmt_bytes(12) == "12 B"
    assert fmt_ratio(0.4) == "0.40×" and fmt_ratio(None) == "—"
    assert fmt_count(74_113) == "74.1K" and fmt_count(22_639_874) == "22.6M" and fmt_count(33) == "33"
    pts = [(100, 0.70, "a"), (200, 0.72, "b"), (300, 0.71, "c"), (50, 0.60, "d"), (100, 0.65, "e")]
    assert pareto_front(pts, lower_better=False) == [(50, 0.60, "d"), (100, 0.70, "a"), (200, 0.72, "b")]
    assert pareto_front([(1, 0.5, "x"), (2, 0.4, "y")], lower_better=True) == [(1, 0.5, "x"), (2, 0.4, "y")]


def test_efficiency_report_without_metric_has_memory_plot_and_goals(tmp_path: Path) -> None:
    recs = []
    for variant, scale in (("bert-base", 1.0), ("bert-large", 3.0)):
        for method, mem, sps in (("full", 1000.0, 10.0), ("lora", 300.0, 14.0), ("qlora", 200.0, 8.0)):
            rec = record(method, 1, None, k=None, mem=None, sps=sps, table="E1")
            rec["run_info"]["variant"] = variant
            rec["run_info"]["run_id"] = f"E1__{variant}__{method}__kfull__s1"
            rec["train_info"]["peak_memory"] = {"train_rss_delta_mb": mem * scale, "process_peak_rss_mb": 5000.0}
            rec["train_info"]["labels"] = [f"{variant} shape with RANDOM weights: memory and speed only"]
            rec["train_info"]["cpu_sharing"] = {"other_share": 0.0}
            recs.append(rec)
    suite = {"name": "efficiency", "methods": {"full": {}, "lora": {}, "qlora": {}}, "experiments": [{
        "name": "E1", "metric": None, "goals": [
            {"method": "qlora", "quantity": "memory_ratio", "op": "<=", "value": 0.25, "variant": "bert-large",
             "label": "QLoRA mem"}]}]}
    _write(tmp_path, recs, suite)
    md = build_report(tmp_path)[0].read_text()
    assert ("goal 'QLoRA mem' (E1 bert-large): single run: point estimate 0.200 vs goal <= 0.25, "
            "not a tested result") in md
    assert md.count("goal 'QLoRA mem'") == 1  # only the variant it names
    assert "peak mem MB (CPU RSS growth)" in md and "test " not in md.split("## E1")[1]
    assert "| lora | 10 | 1.0000 | 900 | 0.30× | 14.0 | 1.40× |" in md
    assert "Labels: bert-large shape with RANDOM weights: memory and speed only" in md
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["E1__peak_memory.png"]


def test_speeds_measured_on_a_shared_cpu_are_marked_and_listed(tmp_path: Path) -> None:
    recs = [record("full", s, 0.70, sps=10) for s in (1, 2)] + [record("lora", s, 0.69, sps=14) for s in (1, 2)]
    for rec in recs:
        rec["train_info"]["cpu_sharing"] = {"other_share": 0.02}  # idle machine
    recs[1]["train_info"]["cpu_sharing"] = {"other_share": 0.45}  # full s2 ran beside other work
    _write(tmp_path, recs)
    md = build_report(tmp_path)[0].read_text()
    full_row = next(ln for ln in md.splitlines() if ln.startswith("| full |"))
    lora_row = next(ln for ln in md.splitlines() if ln.startswith("| lora |"))
    assert "| 10.0 † | 1.00× | 20.0 † |" in full_row and "| 14.0 | 1.40× | 28.0 |" in lora_row
    assert "‡" not in md and "Speeds not recorded alone" not in md
    assert "## Runs that shared the CPU" in md
    assert "- `P1__default__full__k256__s2`: other processes used 45% of the CPU" in md
    assert "P1__default__lora__k256__s1`: other" not in md
    with open(tmp_path / "summary.csv") as f:
        assert {r["method"]: r["shared_cpu_runs"] for r in csv.DictReader(f)} == {"full": "1", "lora": "0"}


def test_speeds_without_a_cpu_sharing_figure_are_not_shown_as_clean(tmp_path: Path) -> None:
    recs = [record("full", s, 0.70, sps=10) for s in (1, 2)] + [record("lora", s, 0.69, sps=14) for s in (1, 2)]
    recs += [record("head", s, 0.60, sps=30) for s in (1, 2)]
    for rec in recs[2:]:
        rec["train_info"]["cpu_sharing"] = {"other_share": 0.02}
    recs[3]["train_info"].pop("cpu_sharing")  # lora s2: no figure, so the lora cells are blank
    _write(tmp_path, recs)
    md = build_report(tmp_path)[0].read_text()
    rows = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if ln.startswith("| ") and "(n=2)" in ln}
    assert rows["full"].endswith("| — ‡ | — ‡ | — ‡ | 1.0 KB |")  # both full runs lack the figure
    assert rows["lora"].endswith("| — ‡ | — ‡ | — ‡ | 1.0 KB |")  # one of two lora runs lacks it
    assert rows["head"].endswith("| 30.0 | — ‡ | 60.0 | 1.0 KB |")  # clean, but ÷ an unrecorded full
    assert "## Speeds not recorded alone" in md
    assert "‡ speed not recorded alone: no CPU-sharing figure." in md
    assert "- P1 default k=256: full (s1, s2); lora (s2)" in md
    with open(tmp_path / "summary.csv") as f:
        counts = {r["method"]: r["speed_unrecorded_runs"] for r in csv.DictReader(f)}
    assert counts == {"full": "2", "lora": "1", "head": "0"}


def test_speed_goal_is_not_checked_without_a_cpu_sharing_figure(tmp_path: Path) -> None:
    recs = [record("full", s, 0.70, sps=10) for s in (1, 2)] + [record("lora", s, 0.69, sps=14) for s in (1, 2)]
    suite = {"name": "t", "methods": {"full": {}, "lora": {}}, "experiments": [{
        "name": "P1", "metric": "auc",
        "goals": [{"method": "lora", "quantity": "train_sps_ratio", "op": ">=", "value": 1.3, "label": "speed"}]}]}
    _write(tmp_path, recs, suite)
    md = build_report(tmp_path)[0].read_text()
    assert ("goal 'speed' (P1 default k=256): not checked, speed not recorded alone: a lora run has no "
            "CPU-sharing figure") in md


def test_kfold_rows_say_folds_times_seeds_and_the_section_names_the_folds(tmp_path: Path) -> None:
    recs = [record("lora", s, 0.70 + 0.01 * f + 0.003 * s, fold=f) for f in range(5) for s in (1, 2)]
    recs += [record("history-share", s, 0.60 + 0.02 * f, kind="baseline", fold=f) for f in range(5) for s in (1, 2)]
    suite = {"name": "t", "methods": {"lora": {}}, "experiments": [{
        "name": "P1", "metric": "auc", "baselines": ["history-share"], "folds": 5, "seeds": [1, 2],
        "few_shot_k": [256]}]}
    _write(tmp_path, recs, suite)
    path, text = build_report(tmp_path, make_plots=False)
    md = path.read_text()
    assert "| lora | 10 | 1.0000 | 0.7245 ± 0.0150" in md and "(n=10: 5 folds × 2 seeds) |" in md
    assert "0.6400 ± 0.0298" in md
    assert ("Cross-validation (P1): 5 user folds (kfold protocol; each run tests one fold, the next fold is its "
            "validation set) × 2 seeds = 10 runs per row, baselines included") in md
    assert "k-fold rows (n=…: folds × seeds) pool their fold runs like seeds" in md
    assert "Planned but not run" not in md  # every fold × seed run of the suite has its record
    (tmp_path / "runs" / "P1__default__lora__k256__f3__s2.json").unlink()
    md = build_report(tmp_path, make_plots=False)[0].read_text()
    assert "(n=9: 5 folds × 2 seeds)" in md
    assert "P1: 19 of 20 planned runs recorded; missing — lora: default/k=256/f3/s2" in md
    assert "5 folds × 2 seeds" in text


def test_report_without_folds_mentions_no_folds(fake_suite, tmp_path: Path) -> None:
    run_suite(fake_suite, tmp_path / "res", progress=lambda s: None)
    md = build_report(tmp_path / "res", make_plots=False)[0].read_text()
    assert "folds" not in md and "Cross-validation" not in md and "(n=2) |" in md
