"""Findings: comparisons and goals are claimed only when the 95% intervals support them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from petrec.bench.aggregate import runs_frame, summarize
from petrec.bench.findings import (
    Estimate,
    ablation_lines,
    check_goals,
    compare_methods,
    goal_verdict,
    ratio_interval,
)
from tests.bench.test_aggregate import record


def _line(lora: list[float], base: list[float]) -> str:
    recs = [record("lora", s, v) for s, v in enumerate(lora, 1)]
    recs += [record("logreg-counts", s, v, kind="baseline") for s, v in enumerate(base, 1)]
    return compare_methods(summarize(runs_frame(recs)), {})[0]


def test_overlapping_intervals_are_not_distinguishable() -> None:
    # means 0.71 and 0.70, std 0.01, n=3: half-width t(0.975, 2) · 0.01 / √3 = 0.0248
    assert _line([0.70, 0.71, 0.72], [0.69, 0.70, 0.71]).endswith(
        "the best parameter-efficient method (lora) and the best baseline (logreg-counts) are not "
        "distinguishable (their 95% intervals overlap: [0.685, 0.735] vs [0.675, 0.725])")


def test_separate_intervals_beat_or_do_not_beat() -> None:
    assert _line([0.80, 0.81, 0.80], [0.70, 0.71, 0.70]).endswith(
        "the best parameter-efficient method beats the best baseline (logreg-counts) "
        "(95% intervals [0.789, 0.818] vs [0.689, 0.718] do not overlap)")
    assert _line([0.70, 0.71, 0.70], [0.80, 0.81, 0.80]).endswith(
        "the best parameter-efficient method does NOT beat the best baseline (logreg-counts) "
        "(95% intervals [0.689, 0.718] vs [0.789, 0.818] do not overlap)")


def test_one_run_on_a_side_is_not_a_tested_difference() -> None:
    for lora, base in (([0.80, 0.81, 0.80], [0.70]), ([0.90], [0.70, 0.71, 0.70])):
        line = _line(lora, base)
        assert line.endswith("the best parameter-efficient method (lora) and the best baseline (logreg-counts) "
                             "are not distinguishable (one run on a side: no interval)")
        assert "beats" not in line and "NOT beat" not in line


def _goals(values: list[float], goals: list[dict[str, Any]]) -> list[str]:
    recs = [record("full", s, v) for s, v in enumerate([0.70, 0.71, 0.72], 1)]
    recs += [record("lora", s, v) for s, v in enumerate(values, 1)]
    runs = runs_frame(recs)
    meta = {"suite_config": {"experiments": [{"name": "P1", "goals": goals}]}}
    return check_goals(summarize(runs), meta, runs)


def test_goal_on_a_difference_uses_its_welch_interval() -> None:
    # lora and full: the same three values, so the difference is 0 ± t(0.975, df=4) · √(2 · 0.01² / 3) = 0.0227
    goals = [{"method": "lora", "quantity": "metric_minus_full", "op": ">=", "value": v, "label": f"g{v}"}
             for v in (-0.05, -0.01, 0.05)]
    measured = "measured 0.000 [95% CI -0.023, 0.023] (n=3)"
    assert _goals([0.70, 0.71, 0.72], goals) == [
        f"goal 'g-0.05' (P1 default k=256): {measured}, met (the whole interval is >= -0.05)",
        f"goal 'g-0.01' (P1 default k=256): {measured}, not distinguishable from the goal (the interval contains -0.01)",
        f"goal 'g0.05' (P1 default k=256): {measured}, NOT met (the whole interval is on the wrong side of 0.05)",
    ]


def test_goal_with_a_single_run_is_a_point_estimate_only() -> None:
    goal = {"method": "lora", "quantity": "metric_minus_full", "op": ">=", "value": -0.01, "label": "g"}
    assert _goals([0.72], [goal]) == [
        "goal 'g' (P1 default k=256): single run: point estimate 0.010 vs goal >= -0.01, not a tested result"]


def test_goal_verdict_branches_for_lower_is_better_goals() -> None:
    assert goal_verdict(Estimate(0.3, 0.2, 0.4, 3), "<=", 0.45).endswith(", met (the whole interval is <= 0.45)")
    assert goal_verdict(Estimate(0.6, 0.5, 0.7, 3), "<=", 0.45).endswith(
        ", NOT met (the whole interval is on the wrong side of 0.45)")
    assert goal_verdict(Estimate(0.4, 0.3, 0.5, 3), "<=", 0.45).endswith(
        ", not distinguishable from the goal (the interval contains 0.45)")
    assert goal_verdict(Estimate(0.4, math.nan, math.nan, 3), "<=", 0.45) == (
        "no 95% interval: point estimate 0.400 vs goal <= 0.45, not a tested result")


def test_ratio_interval_by_the_delta_method() -> None:
    # 110 / 400 = 0.275; relative variance of the numerator mean 200 / (2 · 110²), denominator 0 → df 1
    low, high = ratio_interval([100.0, 120.0], [400.0, 400.0])
    half = 0.275 * 12.706204736174696 * math.sqrt(200 / (2 * 110**2))
    assert (low, high) == (pytest.approx(0.275 - half), pytest.approx(0.275 + half))
    assert all(math.isnan(x) for x in ratio_interval([100.0], [400.0, 400.0]))


def test_baseline_kinds_name_trained_id_models() -> None:
    from petrec.bench.findings import _baseline_kind

    assert _baseline_kind("history-share") == _baseline_kind("prior-features") == "statistics"
    assert _baseline_kind("gru4rec-ctr") == _baseline_kind("collab-id") == "ID-based sequence model"


def _ablation(lora: dict[int, float], base: dict[int, float], **ablation: Any) -> list[str]:
    recs = [record("lora", s, v) for s, v in lora.items()]
    recs += [record("prior-collab", s, v, kind="baseline") for s, v in base.items()]
    runs = runs_frame(recs)
    meta = {"suite_config": {"experiments": [{"name": "P1", "metric": "auc", "ablations": [
        {"method": "lora", "against": "prior-collab", **ablation}]}]}}
    return ablation_lines(summarize(runs), meta, runs)


def test_ablation_pairs_runs_by_seed() -> None:
    # differences 0.002, 0.003, 0.001 (seed 4 has one side only and is left out):
    # mean 0.002, std 0.001, half-width t(0.975, 2) · 0.001 / √3 = 0.00248
    lines = _ablation({1: 0.752, 2: 0.703, 3: 0.801, 4: 0.9}, {1: 0.750, 2: 0.700, 3: 0.800})
    assert lines == ["ablation 'lora − prior-collab' (P1 default k=256, test auc): +0.0020 [-0.0005, +0.0045] "
                     "paired over 3 seeds (+0.0020, +0.0030, +0.0010): the paired interval holds 0, "
                     "not distinguishable"]


def test_ablation_says_above_only_when_the_rows_intervals_also_separate() -> None:
    # paired differences 0.010, 0.011, 0.012 exclude 0, but the seeds spread the rows' own intervals
    overlap = _ablation({1: 0.710, 2: 0.761, 3: 0.812}, {1: 0.700, 2: 0.750, 3: 0.800})[0]
    assert ": the paired interval lies above 0, but the rows' own 95% intervals overlap" in overlap
    assert "not distinguishable" in overlap
    apart = _ablation({1: 0.810, 2: 0.811, 3: 0.812}, {1: 0.700, 2: 0.701, 3: 0.702})[0]
    assert apart.endswith("lora is above prior-collab (their 95% intervals [0.809, 0.813] vs [0.699, 0.703] "
                          "do not overlap)")
    assert _ablation({1: 0.71}, {1: 0.70})[0].endswith("+0.0100 (one seed: not a tested difference)")
    assert _ablation({1: 0.71}, {2: 0.70})[0].endswith("not checked, no seed has both rows")
    assert _ablation({1: 0.71}, {1: 0.70}, variant="other") == [
        "ablation 'lora − prior-collab' (P1): not checked, no runs of that cell"]


def test_suite_refuses_an_ablation_of_rows_it_does_not_run() -> None:
    from petrec.bench.suite import SuiteConfig
    from petrec.config import from_dict

    exp = {"name": "P1", "methods": ["lora"], "baselines": ["logreg-counts"],
           "ablations": [{"method": "lora", "against": "prior-collab"}]}
    with pytest.raises(ValueError, match=r"ablation 'lora − prior-collab' names \['prior-collab'\]"):
        from_dict(SuiteConfig, {"name": "s", "methods": {"lora": {}}, "experiments": [exp]})
