"""Behaviour features for the prior path of collaborative PEFT (ctr and rating).

A language model reading a prompt never sees how often an item was liked by others. These few numbers, computed from the **training split only**,
are what count baselines win with (BENCHMARKS.md P1: logistic regression on three of them, 0.745
test AUC). :class:`BehaviourStats` holds the per-item statistics of the training
split and turns any example (history + candidate) into a fixed feature vector; the behaviour
model's prior head maps that vector to a logit added to the language model's
(:class:`petrec.models.behaviour.PriorHead`).

Leakage-safe by construction: the statistics are fitted on training targets only, and an
example's features read nothing but its own inputs (its history and its candidate id) and
those statistics (training rows leave their own target out), so no valid / test label can reach them (tests/data/test_features.py
flips every test label and compares).

The statistics are plain JSON (:meth:`BehaviourStats.to_json`), written with the run, so that
evaluation, export and a server compute the same features at request time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petrec.data.errors import DataError
from petrec.files import write_json_atomic

#: Columns of the feature vector, in order. No per-user statistics: under P1 the test users are
#: not in the training block, so a user's training mean is informative on every training row and
#: a constant on every test row. (An unrecorded probe with them scored lower on P1 k=256 than the
#: recorded ``prior-features`` baseline without them: benchmarks/results/collab-ctr-cpu.)
FEATURE_NAMES = (
    "history_mean",  # mean label (ctr) / rating (rating) of the example's own history
    "history_log_len",  # log(1 + history length)
    "item_mean",  # the candidate's mean training target, shrunk toward the global mean
    "item_log_count",  # log(1 + the candidate's training examples)
)
#: Which example columns hold the target value and the history values, per task.
VALUE_COLUMNS = {"ctr": ("label", "history_labels"), "rating": ("rating", "history_ratings")}
STATS_FILE = "behaviour_stats.json"
STATS_FORMAT = "petrec-behaviour-stats"
STATS_VERSION = 2


@dataclass
class BehaviourStats:
    """Per-item target statistics of a training split, and the feature scaler.

    Attributes:
        task: ``ctr`` or ``rating``.
        global_mean: Mean training target.
        prior_strength: Pseudo-count of the shrinkage toward ``global_mean``.
        items: item id → (training examples, sum of targets).
        feature_mean: Mean of each raw feature over the training examples (standardisation).
        feature_std: Their standard deviations (1 where a feature is constant).
        fitted_on: How many training examples the statistics count.
    """

    task: str
    global_mean: float
    prior_strength: float
    items: dict[str, tuple[int, float]] = field(default_factory=dict)
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    fitted_on: int = 0

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train: Any, task: str, *, prior_strength: float = 10.0,
            scaler_rows: Any | None = None) -> BehaviourStats:
        """Count the training split's targets per item; fit the feature scaler.

        Args:
            train: The training split (a ``datasets.Dataset`` or a column mapping) with
                ``item_id`` and the task's target column.
            task: ``ctr`` or ``rating``.
            prior_strength: Pseudo-count of the shrinkage toward the global mean (> 0).
            scaler_rows: Rows whose raw features fit the standardisation (default ``train``;
                a few-shot run passes its k training examples while the counts come from the
                whole training block). They must be among the counted rows (their features are
                taken leave-one-out).

        Raises:
            DataError: Unknown task, missing columns, an empty split or a bad prior strength.
        """
        if task not in VALUE_COLUMNS:
            raise DataError(f"behaviour features are for tasks {sorted(VALUE_COLUMNS)}, got task {task!r}")
        if not prior_strength > 0:
            raise DataError(f"features prior_strength must be > 0, got {prior_strength!r}")
        target_col, _ = VALUE_COLUMNS[task]
        cols = _columns(train, ("item_id", target_col), "training split")
        values = np.asarray(cols[target_col], dtype=float)
        if values.size == 0:
            raise DataError("behaviour features need a non-empty training split")
        stats = cls(task=task, global_mean=float(values.mean()), prior_strength=float(prior_strength),
                    items=_group(cols["item_id"], values), fitted_on=int(values.size))
        raw = stats.raw_features(train if scaler_rows is None else scaler_rows, leave_one_out=True)
        std = raw.std(axis=0)
        stats.feature_mean = [float(v) for v in raw.mean(axis=0)]
        stats.feature_std = [float(v) if v > 1e-8 else 1.0 for v in std]
        return stats

    # ------------------------------------------------------------------ features
    def raw_features(self, rows: Any, *, leave_one_out: bool = False) -> np.ndarray:
        """``(n, len(FEATURE_NAMES))`` unscaled features of examples (a split or column mapping).

        Args:
            rows: Examples with ``item_id`` and the history column.
            leave_one_out: The rows are among the examples the statistics counted (the training
                split): take each row's own target out of its item's counts, so a
                training example's features never contain its own label (without it the prior
                learns the label from itself, and does worse on unseen rows).
                Needs the target column.
        """
        target_col, history_col = VALUE_COLUMNS[self.task]
        names = ("item_id", history_col, *((target_col,) if leave_one_out else ()))
        cols = _columns(rows, names, "examples")
        own = cols[target_col] if leave_one_out else [None] * len(cols["item_id"])
        out = np.empty((len(cols["item_id"]), len(FEATURE_NAMES)), dtype=np.float64)
        for row, (item, history, value) in enumerate(zip(cols["item_id"], cols[history_col], own, strict=True)):
            hist = [float(v) for v in history] if history is not None else []
            item_n, item_mean = self._shrunk(self.items, item, value)
            out[row] = (
                sum(hist) / len(hist) if hist else self.global_mean,
                math.log1p(len(hist)),
                item_mean,
                math.log1p(item_n),
            )
        return out

    def features(self, rows: Any, *, leave_one_out: bool = False) -> np.ndarray:
        """Standardised ``float32`` features of examples: what the prior head reads.

        ``leave_one_out`` for the training split's own rows (see :meth:`raw_features`).
        """
        raw = self.raw_features(rows, leave_one_out=leave_one_out)
        return ((raw - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)).astype(np.float32)

    def _shrunk(self, table: Mapping[str, tuple[int, float]], key: Any,
                own: float | None = None) -> tuple[int, float]:
        n, total = table.get(str(key), (0, 0.0))
        if own is not None and n > 0:  # leave the row's own target out
            n, total = n - 1, total - float(own)
        return n, (total + self.prior_strength * self.global_mean) / (n + self.prior_strength)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (format and version first)."""
        body = asdict(self)
        body["items"] = {k: list(v) for k, v in self.items.items()}
        return {"format": STATS_FORMAT, "version": STATS_VERSION, "feature_names": list(FEATURE_NAMES), **body}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "behaviour stats") -> BehaviourStats:
        """Rebuild from :meth:`to_json` output.

        Raises:
            DataError: Not a petrec behaviour-stats document, another version, or other features.
        """
        if not isinstance(data, Mapping) or data.get("format") != STATS_FORMAT:
            raise DataError(f"{source}: not a {STATS_FORMAT} document (key 'format')")
        if data.get("version") != STATS_VERSION:
            raise DataError(f"{source}: version {data.get('version')!r}, this petrec reads {STATS_VERSION}")
        if list(data.get("feature_names") or []) != list(FEATURE_NAMES):
            raise DataError(f"{source}: feature_names {data.get('feature_names')!r}, expected {list(FEATURE_NAMES)}")
        try:
            return cls(
                task=str(data["task"]), global_mean=float(data["global_mean"]),
                prior_strength=float(data["prior_strength"]),
                items={str(k): (int(v[0]), float(v[1])) for k, v in data["items"].items()},
                feature_mean=[float(v) for v in data["feature_mean"]],
                feature_std=[float(v) for v in data["feature_std"]],
                fitted_on=int(data["fitted_on"]),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise DataError(f"{source}: malformed behaviour stats ({type(exc).__name__}: {exc})") from exc

    def save(self, folder: str | Path) -> Path:
        """Write :data:`STATS_FILE` into ``folder`` atomically (temporary file, then rename)."""
        path = Path(folder) / STATS_FILE
        write_json_atomic(path, self.to_json(), indent=None)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> BehaviourStats:
        """Read :data:`STATS_FILE` from ``folder``.

        Raises:
            DataError: Missing, not JSON, or not a behaviour-stats document (names the file).
        """
        path = Path(folder) / STATS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: missing (the run was trained with behaviour features)") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc})") from exc
        return cls.from_json(data, str(path))


def _columns(rows: Any, names: Sequence[str], what: str) -> dict[str, list[Any]]:
    available = set(getattr(rows, "column_names", None) or rows.keys())
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(f"behaviour features: the {what} lack column(s) {missing}; have {sorted(available)}")
    return {n: list(rows[n]) for n in names}


def _group(keys: Sequence[Any], values: np.ndarray) -> dict[str, tuple[int, float]]:
    out: dict[str, list[float]] = {}
    for key, value in zip(keys, values, strict=True):
        entry = out.setdefault(str(key), [0, 0.0])
        entry[0] += 1
        entry[1] += float(value)
    return {k: (int(v[0]), float(v[1])) for k, v in out.items()}
