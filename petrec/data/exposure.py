"""Exposure columns for the evaluation splits: where :mod:`petrec.debias` meets the prepared data.

:func:`annotate_splits` fits :class:`petrec.debias.ExposureStats` on the whole training block and
adds :data:`petrec.debias.DEBIAS_COLUMNS` to the valid / test splits (and, for
``train.ips_weighting``, the ``ips_weight`` column to the training split). It lives in the data
layer because it may re-prepare the unsampled training block; the statistics and metrics stay in
the foundation layer, where the collator and the evaluators read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from petrec.data.config import DataConfig
from petrec.data.prepare import PreparedData, prepare
from petrec.debias import DebiasConfig, ExposureStats

__all__ = ["annotate_splits"]


def annotate_splits(splits: Mapping[str, Any], data: PreparedData, data_cfg: DataConfig, cfg: DebiasConfig, *,
                    train_weights: bool = False) -> dict[str, Any]:
    """Add :data:`DEBIAS_COLUMNS` to the valid and test splits: the recipe's one call.

    The exposure counts come from the **whole** training block even when the run trains on a
    sample of it (``few_shot_k`` / ``max_train_examples``), so that every run of a benchmark
    table is scored with the same weights and groups.

    Args:
        splits: Tokenised splits (``train`` / ``valid`` / ``test`` ``datasets.Dataset``); the valid
            and test splits present are annotated.
        data: The :class:`petrec.data.PreparedData` they came from (catalogue, summary).
        data_cfg: Its :class:`petrec.data.DataConfig`.
        cfg: The run's debias settings; with ``enabled`` false only ``train_weights`` can add a column.
        train_weights: Also give the training split its ``ips_weight`` column (for
            ``train.ips_weighting``).

    Returns:
        The splits, valid and test with the extra columns.
    """
    if train_weights and data_cfg.task not in ("ctr", "rating"):
        raise ValueError(f"train.ips_weighting is for tasks ctr and rating, not data.task={data_cfg.task!r}")
    if not (cfg.enabled or train_weights):
        return dict(splits)

    train = data.splits["train"]
    # A fresh salt would re-hash the user ids of an anonymised block: count the sample instead.
    if data_cfg.sampled and not (data_cfg.anonymize and not data_cfg.anonymize_salt):
        train = prepare(data_cfg.unsampled()).splits["train"]
    implicit_ctr = data_cfg.task == "ctr" and bool(data.summary.get("implicit"))
    stats = ExposureStats.fit(train, data.items["item_id"], cfg, implicit_ctr=implicit_ctr,
                              item_genres=_genres(data.items) if cfg.propensity == "logistic" else None)
    out = dict(splits)
    annotated = [name for name in ("valid", "test") if name in splits] if cfg.enabled else []
    for name in annotated:
        for column, values in stats.columns(splits[name]).items():
            out[name] = out[name].add_column(column, values)
    if train_weights:
        out["train"] = out["train"].add_column("ips_weight", stats.columns(splits["train"])["ips_weight"])
    return out


def _genres(items: Any) -> list[Any] | None:
    """The catalogue's ``genres`` (else ``category``) column for the logistic exposure model, or None."""
    for column in ("genres", "category"):
        if column in items.column_names:
            return list(items[column])
    return None
