"""The one typed configuration of the data layer (:class:`DataConfig`) and the benchmark presets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from petrec.data.errors import DataConfigError

DATASETS = ("ml-100k", "ml-1m", "ml-latest-small", "scientific", "synthetic", "csv")
TASKS = ("ctr", "rating", "next_item")
PROTOCOLS = ("tallrec", "temporal", "periods", "loo", "kfold")
TEMPLATES = ("compact", "tallrec")
ITEM_NAMES = ("title", "text")
POLICIES = ("error", "filter")
COLUMN_KEYS = ("user", "item", "time", "rating", "label")
ITEM_COLUMN_KEYS = ("item", "title", "genres", "year", "category", "brand", "text")


def _bad(name: str, value: object, accepted: str) -> DataConfigError:
    return DataConfigError(f"DataConfig.{name}={value!r} is not accepted; expected {accepted}")


@dataclass
class DataConfig:
    """Everything that decides which examples :func:`petrec.data.prepare` builds.

    Each field is documented by the string literal that follows it.
    """

    dataset: str = "synthetic"
    """Which reader: one of ml-100k, ml-1m, ml-latest-small, scientific, synthetic, csv."""
    data_dir: str | None = None
    """Folder holding the dataset folders (or the dataset folder itself); None → $PETREC_DATA_DIR."""
    task: str = "ctr"
    """ctr (label 0/1), rating (regression on the rating) or next_item (history → next item id)."""
    protocol: str = "temporal"
    """tallrec (BENCHMARKS P1), temporal (global time quantiles), periods (consecutive time periods,
    each split by time: continual fine-tuning), loo (leave-one-out) or kfold (by user)."""
    history_len: int = 10
    """Most recent history items per example (N)."""
    min_history: int | None = None
    """Fewest history items an example needs; None → history_len for tallrec, 1 otherwise."""
    rating_threshold: float = 3.0
    """Explicit feedback: label = 1 when rating > rating_threshold."""
    few_shot_k: int | None = None
    """Keep a seeded random sample of k training examples; None keeps all."""
    seed: int = 0
    """Seed for few-shot sampling, subsampling, negative sampling, k-fold and the synthetic world."""
    template: str = "compact"
    """Prompt template for the ``text`` column: compact (default, short) or tallrec."""
    item_name: str = "title"
    """What names an item in prompts: title (the default: short prompts) or text, the catalogue's
    whole item text (MovieLens ``Title (year). Genres: A, B.``; a csv catalogue's ``text`` column, else
    its title with genres / year / category / brand). Longer names leave room for fewer history items
    under the same max_length (the oldest are dropped first)."""
    negatives: int = 1
    """Implicit-feedback ctr: sampled negative candidates per observed (positive) interaction."""
    implicit: bool | None = None
    """Treat every interaction as a positive (and sample negatives for ctr); None → when there is no rating."""
    max_train_examples: int | None = None
    """Seeded subsample of the training split to at most this many examples (None: no limit)."""
    max_eval_examples: int | None = None
    """Seeded subsample of the valid and of the test split to at most this many examples each
    (None: no limit): quicker evaluation of a large split, at the price of a wider interval."""
    anonymize: bool = False
    """Replace user ids by salted SHA-256 hashes before anything is written."""
    anonymize_salt: str | None = None
    """Salt for anonymize (never written to disk); None → a fresh random salt per run."""
    policy: str = "error"
    """Bad rows: error (raise one clear error) or filter (drop them and count drops per reason)."""
    rating_range: tuple[float, float] | None = None
    """Allowed [low, high] ratings; None → the dataset's own range (MovieLens 1–5 / 0.5–5), none for csv."""
    min_user_interactions: int = 0
    """Preprocessing: drop users with fewer interactions (counted once on the full log)."""
    min_item_interactions: int = 0
    """Preprocessing: drop items with fewer interactions (counted once on the full log; P3 uses 5)."""
    interactions_path: str | None = None
    """csv dataset: the interaction log (.csv, .tsv, .parquet, .jsonl; .gz allowed)."""
    items_path: str | None = None
    """csv dataset: optional item catalogue file."""
    columns: dict[str, str] = field(default_factory=dict)
    """csv dataset: canonical name (user, item, time, rating, label) → column name (default user_id, item_id)."""
    item_columns: dict[str, str] = field(default_factory=dict)
    """csv dataset: canonical name (item, title, genres, year, category, brand, text) → catalogue column."""
    sep: str | None = None
    """csv dataset: field separator; None → from the extension (.tsv → tab, else comma)."""
    encoding: str = "utf-8"
    """csv dataset: text encoding of the files."""
    synthetic_seed: int = 0
    """synthetic dataset: seed of the world itself (``seed`` only drives sampling and splits)."""
    synthetic_users: int = 300
    """synthetic dataset: number of users."""
    synthetic_items: int = 300
    """synthetic dataset: number of items."""
    synthetic_mean_len: int = 20
    """synthetic dataset: mean interactions per user."""
    kfold_k: int = 5
    """kfold protocol: number of user folds."""
    kfold_fold: int = 0
    """kfold protocol: which fold is test (fold+1 mod k is valid, the rest train)."""
    temporal_quantiles: tuple[float, float] = (0.8, 0.9)
    """temporal protocol: timestamp quantiles ending train and valid; periods protocol: the same,
    taken over the rows of the chosen period."""
    n_periods: int = 3
    """periods protocol: cut the log into this many consecutive periods at its timestamp quantiles
    (k / n_periods); an example belongs to the period of its target's timestamp. Histories may
    reach back into earlier periods (the user's past)."""
    period: int = 1
    """periods protocol: which period (1 = the earliest, n_periods = the latest) gives the examples."""
    period_replay: float = 0.0
    """periods protocol: add to the training split a seeded sample of the earlier periods' training
    examples (each earlier period subsampled as its own run was, by max_train_examples / few_shot_k),
    this many times the period's own training examples (0.2 → 20% more); 0 = none. Never valid or
    test examples; period 1 has no earlier periods, so nothing is added there."""
    tallrec_keep: int = 10_000
    """tallrec protocol: keep this many last examples, split 80/10/10."""

    def __post_init__(self) -> None:
        """Check every field; raise one DataConfigError naming the field and the accepted values."""
        for name, options in (
            ("dataset", DATASETS),
            ("task", TASKS),
            ("protocol", PROTOCOLS),
            ("template", TEMPLATES),
            ("item_name", ITEM_NAMES),
            ("policy", POLICIES),
        ):
            if getattr(self, name) not in options:
                raise _bad(name, getattr(self, name), "one of " + ", ".join(options))
        for name, low in (
            ("history_len", 1),
            ("negatives", 1),
            ("kfold_k", 2),
            ("tallrec_keep", 10),
            ("synthetic_users", 2),
            ("synthetic_items", 2),
            ("synthetic_mean_len", 3),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise _bad(name, value, f"an integer >= {low}")
        for name, low in (("n_periods", 2), ("period", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise _bad(name, value, f"an integer >= {low}" + (" (one period is protocol temporal)"
                                                                   if name == "n_periods" else ""))
        if self.period > self.n_periods:
            raise _bad("period", self.period, f"1 <= period <= n_periods={self.n_periods}")
        replay = self.period_replay
        if isinstance(replay, bool) or not isinstance(replay, (int, float)) or not 0 <= replay < float("inf"):
            raise _bad("period_replay", replay, "a finite number >= 0 (share of the period's training examples)")
        self.period_replay = float(replay)
        if self.period_replay > 0 and self.protocol != "periods":
            raise _bad("period_replay", replay, f"0 unless protocol='periods' (protocol is {self.protocol!r})")
        for name in ("min_user_interactions", "min_item_interactions", "seed", "synthetic_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _bad(name, value, "an integer >= 0")
        for name in ("few_shot_k", "max_train_examples", "max_eval_examples", "min_history"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "min_history" else 1)):
                raise _bad(name, value, "None or a positive integer")
        if self.min_history is not None and self.min_history > self.history_len:
            raise _bad("min_history", self.min_history, f"at most history_len={self.history_len}")
        if not 0 <= self.kfold_fold < self.kfold_k:
            raise _bad("kfold_fold", self.kfold_fold, f"0 <= kfold_fold < kfold_k={self.kfold_k}")
        q = tuple(self.temporal_quantiles)
        if len(q) != 2 or not 0 < q[0] < q[1] < 1:
            raise _bad("temporal_quantiles", self.temporal_quantiles, "(a, b) with 0 < a < b < 1")
        self.temporal_quantiles = (float(q[0]), float(q[1]))
        if self.rating_range is not None:
            r = tuple(self.rating_range)
            if len(r) != 2 or not float(r[0]) <= float(r[1]):
                raise _bad("rating_range", self.rating_range, "(low, high) with low <= high")
            self.rating_range = (float(r[0]), float(r[1]))
        if self.protocol == "tallrec" and self.task == "next_item":
            raise _bad("protocol", self.protocol, "temporal, loo or kfold for task next_item (tallrec is ctr/rating)")
        if self.task == "rating" and self.implicit:
            raise _bad("implicit", self.implicit, "False or None for task rating (it needs ratings)")
        bad_keys = set(self.columns) - set(COLUMN_KEYS)
        if bad_keys:
            raise _bad("columns", self.columns, "keys among " + ", ".join(COLUMN_KEYS))
        bad_keys = set(self.item_columns) - set(ITEM_COLUMN_KEYS)
        if bad_keys:
            raise _bad("item_columns", self.item_columns, "keys among " + ", ".join(ITEM_COLUMN_KEYS))
        if self.dataset == "csv" and not self.interactions_path:
            raise _bad("interactions_path", self.interactions_path, "a file path when dataset='csv'")
        self.columns, self.item_columns = dict(self.columns), dict(self.item_columns)
        if self.dataset == "csv":
            for key in ("user", "item"):
                self.columns.setdefault(key, f"{key}_id")
        if self.data_dir is not None:
            self.data_dir = os.fspath(self.data_dir)

    @property
    def effective_min_history(self) -> int:
        """The fewest history items an example needs under this protocol."""
        if self.min_history is not None:
            return self.min_history
        return self.history_len if self.protocol == "tallrec" else 1

    @property
    def sampled(self) -> bool:
        """Whether the training split is a sample of the block (``few_shot_k`` / ``max_train_examples``)."""
        return self.few_shot_k is not None or self.max_train_examples is not None

    def unsampled(self) -> DataConfig:
        """This config without the training-split sampling: its split is the whole training block."""
        return dataclasses.replace(self, few_shot_k=None, max_train_examples=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (the anonymisation salt is left out on purpose)."""
        out = dataclasses.asdict(self)
        out.pop("anonymize_salt")
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DataConfig:
        """A config for a named BENCHMARKS.md protocol (P1..P4), with field overrides.

        Args:
            name: P1, P2, P3 or P4.
            **overrides: Any DataConfig field.

        Returns:
            The config.
        """
        if name not in PRESETS:
            raise DataConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


#: BENCHMARKS.md protocols as DataConfig fields.
PRESETS: dict[str, dict[str, Any]] = {
    "P1": {"dataset": "ml-100k", "task": "ctr", "protocol": "tallrec", "template": "tallrec"},
    "P2": {"dataset": "ml-100k", "task": "ctr", "protocol": "temporal"},
    "P3": {"dataset": "ml-1m", "task": "next_item", "protocol": "loo", "min_item_interactions": 5,
           "min_user_interactions": 5},
    "P4": {"dataset": "scientific", "task": "next_item", "protocol": "loo"},
}
