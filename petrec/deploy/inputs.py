"""Request-time model inputs beyond the prompt: behaviour features and collaborative ID tokens.

A model trained with ``model.behaviour_prior`` reads four behaviour features per example
(:class:`petrec.data.features.BehaviourStats`, ``behaviour_stats.json``); one trained with
``model.collab_tokens`` reads ID tokens of its history and candidate
(:class:`petrec.models.collab.CollabSpec`, ``collab_tokens.json``). Both are computed from nothing
but an example's own columns (``history_item_ids``, ``history_labels`` / ``history_ratings``,
``item_id``) and that file. An export carries the file (listed under the manifest's ``inputs``),
and every scoring path computes them from the rows it scores, as
:func:`petrec.runs.score_examples` does: :func:`petrec.deploy.load.score_requests` and the
server (:mod:`petrec.serve.engine`), whose ``/v1/explain`` rows are the occluded examples
themselves, so each occluded row gets its own features and tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petrec.data.errors import DataError
from petrec.data.features import STATS_FILE, BehaviourStats
from petrec.deploy.manifest import INPUTS
from petrec.models import ModelConfig
from petrec.models.collab import COLLAB_FILE, CollabSpec

__all__ = ["INPUT_FILES", "needed_files", "read_inputs", "row_inputs"]

#: The manifest's ``inputs`` names (:data:`petrec.deploy.manifest.INPUTS`) → file in the run /
#: export folder.
INPUT_FILES = {"behaviour_stats": STATS_FILE, "collab_tokens": COLLAB_FILE}


def needed_files(model_cfg: ModelConfig) -> dict[str, str]:
    """The input files a model config needs, as ``{inputs name: file name}`` (``{}`` for none)."""
    return {name: INPUT_FILES[name] for name, flag in INPUTS.items() if getattr(model_cfg, flag)}


def read_inputs(folder: str | os.PathLike[str], model_cfg: ModelConfig, error: type[ValueError], *,
                listed: Mapping[str, Any] | None = None) -> tuple[BehaviourStats | None, CollabSpec | None]:
    """Read the behaviour statistics and collaborative-token spec a model config needs.

    Args:
        folder: A run or export folder holding the files.
        model_cfg: Its model config (``behaviour_prior`` / ``collab_tokens`` say what is needed).
        error: The error type to raise (the caller's module's own).
        listed: An export's manifest ``inputs``: each needed file must be listed there
            (:func:`petrec.deploy.manifest.verify_export` checks the listed files' hashes).

    Returns:
        ``(stats, spec)``, each None where the config does not need it.

    Raises:
        ValueError: ``error``, with one line naming the file: missing, unlisted, unreadable, not
            what it should be, or statistics of another task.
    """
    folder = Path(folder)
    for key, file in needed_files(model_cfg).items():
        if listed is not None and (listed.get(key) or {}).get("file") != file:
            raise error(f"{folder / file}: the config's model.{INPUTS[key]} needs this file, and the export's manifest "
                        f"does not list it under inputs.{key}; re-export the run")
    stats = spec = None
    try:
        if model_cfg.behaviour_prior:
            stats = BehaviourStats.load(folder)
            if stats.task != model_cfg.task:
                raise DataError(f"{folder / STATS_FILE}: statistics of task {stats.task!r}, the model's "
                                f"task is {model_cfg.task!r}")
        if model_cfg.collab_tokens:
            spec = CollabSpec.load(folder)
    except DataError as exc:
        raise error(str(exc).strip().splitlines()[0]) from None
    return stats, spec


def row_inputs(stats: BehaviourStats | None, spec: CollabSpec | None,
               columns: Mapping[str, Sequence[Any]]) -> tuple[np.ndarray | None, dict[str, list] | None]:
    """The behaviour features and collaborative-token columns of rows, for ``score_token_ids``.

    Args:
        stats: The model's behaviour statistics (None: no prior).
        spec: Its collaborative-token spec (None: no collaborative tokens).
        columns: The rows as columns: ``history_item_ids``, ``item_id`` and the history's
            ``history_labels`` (ctr) / ``history_ratings`` (rating).

    Returns:
        ``(features, collab)``: the ``features=`` and ``collab=`` arguments of
        :func:`petrec.runs.score_token_ids` (each None where the model lacks that input).

    Raises:
        DataError: A missing column or a malformed history (named).
    """
    features = stats.features(columns) if stats is not None else None
    collab = spec.columns(columns) if spec is not None else None
    return features, collab
