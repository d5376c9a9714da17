"""Reload a finished training run (its config and adapter) for evaluation and prediction.

A run folder, as ``recipes/finetune.py`` writes it, holds ``config.yaml`` and ``adapter/``.
Only the ``data``, ``model`` and token-budget sections of the config are read back here,
each into its own dataclass, so this module does not depend on the recipe file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import petrec
from petrec.collate import pad_sequences
from petrec.config import ConfigError, from_dict, read_yaml
from petrec.data import DataConfig, DataError
from petrec.data.features import BehaviourStats
from petrec.models import BehaviourModel, ModelConfig, load_tokenizer
from petrec.models.build import load_backbone


@dataclass
class TrainedRun:
    """A trained behaviour model with everything needed to feed it."""

    folder: Path
    data: DataConfig
    model_cfg: ModelConfig
    model: BehaviourModel
    tokenizer: Any
    max_length: int
    stats: BehaviourStats | None = None
    """The behaviour statistics of a model with ``behaviour_prior`` (``behaviour_stats.json``)."""


def load_run(folder: str | os.PathLike[str], *, data_dir: str | None = None) -> TrainedRun:
    """Rebuild the run's model (base + saved adapter) in evaluation mode.

    Args:
        folder: A run output folder (``config.yaml`` + ``adapter/``).
        data_dir: Override of ``data.data_dir`` (the data may live elsewhere now).

    Raises:
        ConfigError: The folder is not a run folder or its config does not load.
    """
    folder = Path(folder)
    for needed in ("config.yaml", "adapter"):
        if not (folder / needed).exists():
            raise ConfigError(f"{folder} is not a petrec run folder: {needed} is missing")
    data_cfg, model_cfg, max_length = read_run_config(folder, data_dir)
    # The plain base (backbone + fresh head); load_adapter re-applies the saved method,
    # quantization included, and restores every trained tensor (head too).
    backbone, is_decoder = load_backbone(model_cfg)
    model = petrec.load_adapter(BehaviourModel(backbone, model_cfg, is_decoder=is_decoder), folder / "adapter")
    model.eval()
    stats = BehaviourStats.load(folder) if model_cfg.behaviour_prior else None
    return TrainedRun(folder, data_cfg, model_cfg, model, load_tokenizer(model_cfg), max_length, stats)


def read_run_config(folder: str | os.PathLike[str],
                    data_dir: str | None = None) -> tuple[DataConfig, ModelConfig, int]:
    """A run's (or an export's) ``config.yaml`` as ``(DataConfig, ModelConfig, max_length)``.

    Only these sections are read back, each into its own dataclass, so this does not depend on
    the recipe file.

    Args:
        folder: Holds ``config.yaml``.
        data_dir: Override of ``data.data_dir`` (the data may live elsewhere now).

    Raises:
        ConfigError: A missing file or a wrong key (named in the message).
    """
    raw = read_yaml(Path(folder) / "config.yaml")
    data_raw = dict(raw.get("data") or {})
    if data_dir is not None:
        data_raw["data_dir"] = data_dir
    return (from_dict(DataConfig, data_raw, prefix="data."),
            from_dict(ModelConfig, raw.get("model") or {}, prefix="model."),
            int(raw.get("max_length", 128)))


@torch.no_grad()
def score_examples(run: TrainedRun, examples: Any, *, items: Any = None, batch_size: int = 64) -> np.ndarray:
    """Scores of pointwise examples: click/like probabilities (ctr) or predicted ratings.

    Args:
        run: From :func:`load_run`.
        examples: A ``datasets.Dataset`` of examples (the columns ``petrec.data`` builds).
        items: The catalogue, to render history item texts.
        batch_size: Examples per forward pass.
    """
    if run.model_cfg.task not in ("ctr", "rating"):
        raise ValueError(f"scoring needs a ctr or rating model, this run is {run.model_cfg.task!r}")
    tokens = petrec.data.tokenize_examples(examples, run.tokenizer, max_length=run.max_length, items=items,
                                           template=run.data.template, task=run.model_cfg.task)
    features = run.stats.features(examples) if run.stats is not None else None
    return score_token_ids(run.model, run.model_cfg.task, tokens["input_ids"], run.tokenizer,
                           batch_size=batch_size, features=features).cpu().numpy()


@torch.no_grad()
def score_token_ids(model: BehaviourModel, task: str, seqs: Sequence[Sequence[int]], tokenizer: Any, *,
                    batch_size: int = 64, features: np.ndarray | None = None) -> torch.Tensor:
    """Click probabilities (ctr) or predicted ratings of token-id lists, in order.

    The one scoring pass behind :func:`score_examples`, ``petrec.deploy.load.score_requests``
    and the server: pad each batch on the tokenizer's side, forward, sigmoid for ctr.

    Args:
        model: A ctr / rating behaviour model (its device is used).
        task: ``ctr`` or ``rating``.
        seqs: Token ids per example.
        tokenizer: Gives ``pad_token_id`` and ``padding_side``.
        batch_size: Examples per forward pass.
        features: ``(len(seqs), n_features)`` behaviour features, for a model with a behaviour prior.
    """
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        ids = pad_sequences(chunk, tokenizer.pad_token_id, tokenizer.padding_side)
        mask = pad_sequences([[1] * len(s) for s in chunk], 0, tokenizer.padding_side)
        extra = {}
        if features is not None:
            extra["features"] = torch.as_tensor(features[start:start + batch_size], device=device)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.reshape(-1).float()
        out.append(torch.sigmoid(logits) if task == "ctr" else logits)
    return torch.cat(out) if out else torch.zeros(0)


def read_candidates_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read (history, candidate) rows for ``petrec predict --csv``.

    Columns: ``user_id``, ``history_item_ids`` (space-separated, oldest first),
    ``history_labels`` (space-separated 0/1, same length; optional, default all 1),
    ``item_id`` (the candidate).

    Raises:
        DataError: Missing file or columns, or a row whose lists differ in length.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"candidates file {str(path)!r} not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("user_id", "history_item_ids", "item_id") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected user_id, history_item_ids, item_id"
                        " [, history_labels]")
    hist = df["history_item_ids"].str.split()
    labels = (df["history_labels"].str.split() if "history_labels" in df.columns
              else hist.map(lambda h: ["1"] * len(h)))
    mismatch = np.flatnonzero(hist.str.len().to_numpy() != labels.str.len().to_numpy())
    if mismatch.size:
        row = int(mismatch[0])
        raise DataError(f"{path}, line {row + 2}: {len(hist[row])} history items but "
                        f"{len(labels[row])} history labels")
    return pd.DataFrame({
        "user_id": df["user_id"],
        "history_item_ids": hist,
        "history_labels": labels.map(lambda xs: [int(x) for x in xs]),
        "history_ratings": labels.map(lambda xs: [float(x) for x in xs]),
        "item_id": df["item_id"],
        "label": 0,
        "rating": 0.0,
        "timestamp": np.arange(len(df), dtype=np.int64),
    })
