"""Plots: one metric-vs-params panel per training-set size with that size's baselines; 95% error bars."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from petrec.bench.aggregate import runs_frame, summarize
from petrec.bench.plots import draw_metric_vs_params, draw_pareto, metric_name
from tests.bench.test_aggregate import record


@pytest.fixture
def summary() -> pd.DataFrame:
    """k=256: full and lora with 3 seeds, head with 1; k=full: full and lora with 1 seed; caser at both."""
    recs = [record(m, s, v + 0.01 * s, params=p) for m, v, p in (("full", 0.55, 1000), ("lora", 0.56, 10))
            for s in (1, 2, 3)]
    recs += [record("head", 1, 0.50, params=2)]
    recs += [record(m, 1, v, k=None, params=p) for m, v, p in (("full", 0.73, 1000), ("lora", 0.72, 10))]
    recs += [record("caser", s, 0.70 + 0.01 * s, kind="baseline", params=0, mem=None) for s in (1, 2, 3)]
    recs += [record("caser", 1, 0.75, kind="baseline", k=None, params=0, mem=None)]
    return summarize(runs_frame(recs), {"P1": "auc"})


def _errorbars(ax: Any) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _bar_span(container: ErrorbarContainer) -> tuple[float, float]:
    (segment,) = container.lines[2][0].get_segments()
    return float(segment[0][1]), float(segment[1][1])


def test_metric_vs_params_has_one_panel_per_k_with_its_own_baselines(summary: pd.DataFrame) -> None:
    fig = draw_metric_vs_params(summary, "P1", {"TALLRec": {"256": 0.7198}})
    assert [ax.get_title() for ax in fig.axes] == ["k=256", "all training data"]
    k256, full = fig.axes
    assert len(_errorbars(k256)) == 2 and len(_errorbars(full)) == 0  # head and the k=full rows: one run
    row = summary[(summary["method"] == "lora") & (summary["k_label"] == "256")].iloc[0]
    spans = sorted(_bar_span(c) for c in _errorbars(k256))
    assert spans[1] == (pytest.approx(row["metric_ci_low"]), pytest.approx(row["metric_ci_high"]))

    def lines(ax: Any) -> dict[str, float]:
        return {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines() if not ln.get_label().startswith("_")}

    assert lines(k256) == {"caser (baseline)": pytest.approx(0.72), "TALLRec (published)": 0.7198}
    assert lines(full) == {"caser (baseline)": pytest.approx(0.75)}  # the k=full caser, not the k=256 one
    assert len(k256.patches) == 1 and not full.patches  # caser's 95% band where it has 3 runs
    assert {ax.get_ylabel() for ax in fig.axes} == {"test AUC"}


def test_metric_vs_params_panels_per_variant_and_nothing_to_draw(summary: pd.DataFrame) -> None:
    other = summary.assign(variant="large")
    fig = draw_metric_vs_params(pd.concat([summary, other]), "P1", {})
    assert [ax.get_title() for ax in fig.axes] == [
        "default, k=256", "default, all training data", "large, k=256", "large, all training data"]
    assert draw_metric_vs_params(summary[summary["kind"] == "baseline"], "P1", {}) is None


def test_pareto_has_error_bars_where_there_are_intervals(summary: pd.DataFrame) -> None:
    fig = draw_pareto(summary, "P1")
    (ax,) = fig.axes
    assert len(_errorbars(ax)) == 2  # full and lora at k=256; head has one run
    assert ax.get_ylabel() == "test AUC"


def test_metric_name() -> None:
    assert metric_name("auc") == "AUC" and metric_name("ndcg@10") == "NDCG@10" and metric_name("loss") == "loss"
