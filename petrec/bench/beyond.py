"""The report's "beyond accuracy" table: the debiased metric and the popularity / cold-start groups.

Run records carry ``snips_*`` metrics and ``<group>/<metric>`` breakdowns when the recipe annotated
their test split (:mod:`petrec.debias`); baselines computed without it leave those cells empty.
One row per method of a (table, variant, k) block, each cell the mean over the method's ok seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from petrec.debias import GROUPS

#: How the table names each group.
GROUP_LABELS = {"head": "head", "torso": "torso", "tail": "tail", "cold_user": "cold users",
                "cold_item": "cold items"}


def debiased_metric(metric: str) -> str | None:
    """The SNIPS counterpart of a selection metric (``auc``, ``hr@K``, ``ndcg@K``), if there is one."""
    base, _, k = metric.partition("@")
    if base == "auc":
        return "snips_auc"
    if base in ("hr", "recall", "ndcg") and k:
        return f"snips_{'ndcg' if base == 'ndcg' else 'recall'}@{k}"
    return None


def beyond_accuracy_rows(part: pd.DataFrame, metric: str, order: Mapping[str, int]
                         ) -> tuple[list[str], list[list[str]]] | None:
    """Headers and rows of the table for one block of run rows (:func:`petrec.bench.aggregate.runs_frame`).

    Args:
        part: The runs of one (table, variant, k) block.
        metric: The block's test metric.
        order: Method → position in the report.

    Returns:
        None when no run of the block has a debiased metric or a group breakdown.
    """
    from petrec.bench.report import fmt

    snips = debiased_metric(metric)
    groups = [g for g in GROUPS if f"test_{g}/{metric}" in part]
    ok = part[part["status"] == "ok"] if "status" in part else part
    has_snips = snips is not None and f"test_{snips}" in ok and ok[f"test_{snips}"].notna().any()
    if ok.empty or not (has_snips or groups):
        return None

    def size(group: str) -> str:
        col = f"test_{group}/n_examples"
        n = ok[col].mean() if col in ok else math.nan
        return "" if math.isnan(n) else f" (n={n:.0f})"

    columns = [f"test_{metric}", *([f"test_{snips}"] if has_snips else []), *(f"test_{g}/{metric}" for g in groups)]
    headers = ["method", f"test {metric}", *([snips] if has_snips else []),
               *(f"{GROUP_LABELS[g]}{size(g)}" for g in groups)]
    rows = []
    for method in sorted(ok["method"].unique(), key=lambda m: order.get(m, 999)):
        runs = ok[ok["method"] == method]
        rows.append([str(method), *(fmt(runs[c].mean(), 4) if c in runs else fmt(None) for c in columns)])
    return headers, rows


def beyond_accuracy_lines(runs: pd.DataFrame, keys: Mapping[str, Any], metric: str | None,
                          order: Mapping[str, int], style: str, heading: str) -> list[str]:
    """The table under ``heading`` for the runs matching ``keys`` (column → value), or nothing."""
    from petrec.bench.report import format_table

    if not metric or runs.empty:
        return []
    part = runs
    for column, value in keys.items():
        part = part[part[column] == value]
    found = beyond_accuracy_rows(part, metric, order)
    if found is None:
        return []
    note = (f"{debiased_metric(metric) or 'no debiased metric'}: inverse-propensity (SNIPS) estimate of the "
            "metric under uniform exposure; groups: test examples by the training popularity of their item "
            "(head / torso / tail) and cold users / items (petrec.debias)")
    return [heading, "", note, "", format_table(*found, style), ""]
