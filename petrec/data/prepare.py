"""``prepare(cfg)``: files → validated interactions → split task examples → PreparedData on disk."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from petrec.data import readers
from petrec.data.config import DataConfig
from petrec.data.errors import DataFileError
from petrec.data.splits import SPLIT_NAMES, sample_indices
from petrec.data.synthetic import synthetic_world
from petrec.data.tasks import build_examples
from petrec.data.tokenize import name_column
from petrec.data.validate import (
    ValidationReport,
    check_history_lengths,
    min_count_filter,
    validate_interactions,
)

_FOLDERS = {"ml-100k": "ml-100k", "ml-1m": "ml-1m", "ml-latest-small": "ml-latest-small",
            "scientific": "amazon-scientific"}
_MOVIES = ("ml-100k", "ml-1m", "ml-latest-small")


def load_tables(cfg: DataConfig) -> readers.Tables:
    """Read the configured dataset into canonical tables (no validation yet)."""
    if cfg.dataset == "synthetic":
        return synthetic_world(cfg.synthetic_seed, cfg.synthetic_users, cfg.synthetic_items, cfg.synthetic_mean_len)
    if cfg.dataset == "csv":
        tables = readers.read_log(cfg.interactions_path, cfg.columns, sep=cfg.sep, encoding=cfg.encoding)
        if cfg.items_path:
            tables.items = readers.read_catalogue(cfg.items_path, cfg.item_columns, sep=cfg.sep,
                                                  encoding=cfg.encoding)
        return tables
    from petrec.paths import PetrecPathError, data_dir

    try:
        folder = data_dir(cfg.data_dir, dataset=_FOLDERS[cfg.dataset])
    except PetrecPathError as exc:
        raise DataFileError(str(exc)) from None
    if cfg.dataset == "ml-100k":
        return readers.read_ml100k(folder)
    if cfg.dataset == "ml-1m":
        return readers.read_ml1m(folder)
    if cfg.dataset == "ml-latest-small":
        return readers.read_ml_latest_small(folder)
    return readers.read_unisrec(folder, "Scientific")


@dataclass
class PreparedData:
    """Model-ready examples, the item catalogue and an honest summary."""

    splits: datasets.DatasetDict
    """``train``, ``valid`` and ``test`` example datasets."""
    items: datasets.Dataset
    """Catalogue of the items in the examples: item_id, title, text (and genres/year/... when known;
    ``name``, what prompts call an item, under ``item_name: text``)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Counts read/kept/dropped per reason, label balance, users, items, history lengths, config."""

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write OUT/{train,valid,test} (datasets on disk), OUT/items.parquet and OUT/summary.json.

        Everything is written to a temporary folder next to ``out_dir`` and moved into place at
        the end, so a crash never leaves a half-written output.
        """
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            for name in SPLIT_NAMES:
                self.splits[name].save_to_disk(str(tmp / name))
            self.items.to_parquet(str(tmp / "items.parquet"))
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
            old = None
            if out.exists():
                old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def tokenize(self, tokenizer: Any, *, max_length: int, **kwargs: Any) -> datasets.DatasetDict:
        """Tokenise every split with this data's template, task and item names (see tokenize_examples)."""
        from petrec.data.tokenize import tokenize_examples

        render = self.summary.get("render", {})
        return tokenize_examples(self.splits, tokenizer, max_length=max_length, items=self.items,
                                 template=render.get("template", "compact"),
                                 task=render.get("task"), noun=render.get("noun", "item"), **kwargs)


def load_prepared(out_dir: str | os.PathLike[str]) -> PreparedData:
    """Load what :meth:`PreparedData.save` wrote (memory-mapped, so ``map`` caching works)."""
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise DataFileError(f"{out}: not a prepared-data folder (no summary.json); run `petrec data prepare`")
    splits = datasets.DatasetDict({n: datasets.load_from_disk(str(out / n)) for n in SPLIT_NAMES})
    items = datasets.Dataset.from_parquet(str(out / "items.parquet"))
    return PreparedData(splits, items, json.loads((out / "summary.json").read_text()))


def _anonymize(tables: dict[str, pa.Table], salt: str) -> dict[str, pa.Table]:
    """Replace user ids by ``sha256(salt + id)[:16]``, hashing each distinct id once."""
    out = {}
    for name, tab in tables.items():
        uniq = pc.unique(tab["user_id"]).to_pylist()
        hashed = pa.array([hashlib.sha256((salt + u).encode()).hexdigest()[:16] for u in uniq])
        idx = pc.index_in(tab["user_id"], value_set=pa.array(uniq, type=pa.string()))
        col = tab.schema.get_field_index("user_id")
        out[name] = tab.set_column(col, "user_id", hashed.take(idx))
    return out


def _split_stats(tab: pa.Table, task: str) -> dict[str, Any]:
    hist = pc.list_value_length(tab["history_item_ids"]).to_numpy(zero_copy_only=False)
    stats: dict[str, Any] = {
        "examples": tab.num_rows,
        "users": len(pc.unique(tab["user_id"])),
        "items": len(pc.unique(tab["item_id"])),
        "history_length_histogram": {str(k): int(v) for k, v in enumerate(np.bincount(hist)) if v},
    }
    if task != "next_item":
        lab = tab["label"].to_numpy()
        stats["positives"] = int(lab.sum())
        stats["positive_rate"] = round(float(lab.mean()), 6) if len(lab) else None
        rat = tab["rating"].to_numpy(zero_copy_only=False)
        stats["mean_rating"] = round(float(np.nanmean(rat)), 6) if np.isfinite(rat).any() else None
    return stats


def _sample(table: pa.Table, k: int | None, seed: int) -> pa.Table:
    """Seeded sample of at most ``k`` rows, kept in order (the table itself when k is None or ≥ its rows)."""
    if k is None or k >= table.num_rows:
        return table
    return table.take(pa.array(sample_indices(table.num_rows, k, seed)))


def _with_replay(tables: dict[str, pa.Table], cfg: DataConfig) -> tuple[pa.Table, int]:
    """The period's training table plus a seeded sample of the earlier periods' training examples.

    Each earlier period's examples are first subsampled exactly as that period's own run sampled
    its training split (``max_train_examples``, then ``few_shot_k``, same seed), so the replay
    buffer holds examples an earlier run trained on; ``period_replay`` × the period's training
    examples are drawn from their union (all of it when it is smaller). The ``replay*`` tables
    are removed from ``tables``.

    Returns:
        The training table (the period's rows first, then the replayed ones) and the replayed count.
    """
    pools = [tables.pop(name) for name in sorted(n for n in tables if n.startswith("replay"))]
    pools = [_sample(_sample(t, cfg.max_train_examples, cfg.seed), cfg.few_shot_k, cfg.seed) for t in pools]
    train = tables["train"]
    if not pools:
        return train, 0
    pool = pa.concat_tables(pools)
    want = round(cfg.period_replay * train.num_rows)
    replayed = _sample(pool, want, cfg.seed + 1)
    return pa.concat_tables([train, replayed]), replayed.num_rows


class _HashSink:
    """A write-only file object that feeds what is written into an xxh3 digest and keeps nothing."""

    def __init__(self) -> None:
        self.digest = xxhash.xxh3_64(b"petrec.data.prepare/arrow-ipc/v1")
        self.closed = False

    def write(self, data: Any) -> int:
        """Hash ``data`` (any buffer: pyarrow passes its buffers without copying them)."""
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Mark closed (pyarrow checks)."""
        self.closed = True


def table_fingerprint(table: pa.Table) -> str:
    """A ``datasets`` fingerprint of a table: xxh3 of its Arrow IPC stream, hashed as it is written.

    Replaces ``datasets.Dataset(table)``'s own fingerprint, which pickles the whole table
    through dill into memory and hashes the pickle: about half of ``prepare``'s time on ML-1M
    ctr (~660 MB of examples, copied three times). The IPC stream is the table's logical
    content (schema, rows; slices resolved) and pyarrow hands its buffers to the sink without
    copying, so like the library's fingerprint it changes when the data does (a differently
    chunked copy may get another one: a cache miss, never a wrong hit); it keys the
    tokenisation cache (:func:`petrec.data.tokenize.tokenize_examples`).

    Args:
        table: The table a dataset will hold.

    Returns:
        16 hex digits.
    """
    sink = _HashSink()
    with pa.PythonFile(sink, mode="w") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    return sink.digest.hexdigest()


def _dataset(table: pa.Table) -> datasets.Dataset:
    return datasets.Dataset(table, fingerprint=table_fingerprint(table))


def prepare(cfg: DataConfig) -> PreparedData:
    """Read, validate, split and build examples as ``cfg`` says.

    Args:
        cfg: The configuration.

    Returns:
        The prepared data (in memory; call ``.save(out_dir)`` to write it).

    Raises:
        DataError: Bad input (one clear message naming file, row and column) or config.
    """
    tables = load_tables(cfg)
    inter, items, source = tables.interactions, tables.items, tables.source
    has_rating = bool(inter["rating"].notna().any())
    has_label = bool(inter["label"].notna().any())
    implicit = cfg.implicit if cfg.implicit is not None else not (has_rating or has_label)
    report = ValidationReport(rows_read=len(inter), dropped=Counter())
    catalogue = items["item_id"] if len(items) else None
    inter, report = validate_interactions(
        inter, source, policy=cfg.policy, rating_range=cfg.rating_range or tables.rating_range,
        catalogue=catalogue, require_rating=(cfg.task == "rating" or (not implicit and not has_label)),
        report=report)
    inter = min_count_filter(inter, cfg.min_user_interactions, cfg.min_item_interactions, report)
    if cfg.protocol != "tallrec":
        need = cfg.effective_min_history + (2 if cfg.protocol == "loo" else 1)
        inter = check_history_lengths(inter, source, need, cfg.policy, report,
                                      f"protocol {cfg.protocol!r} with min_history={cfg.effective_min_history}")
    if len(inter) == 0:
        raise DataFileError(f"{source.path}: no interactions left after validation ({report.as_dict()})")
    if catalogue is None:  # no catalogue: the item id is all the text there is
        ids = pd.unique(inter["item_id"])
        items = pd.DataFrame({"item_id": pd.array(ids, dtype="string")})
        items["title"] = items["item_id"]
        items["text"] = items["item_id"]
    used = items["item_id"].isin(pd.unique(inter["item_id"]))
    items = items.loc[used].reset_index(drop=True)
    items = items.drop(columns="name", errors="ignore")
    if cfg.item_name == "text":  # the catalogue's `name` column: what prompts (and a server) call an item
        items["name"] = items["text"]
    name_col = name_column(items.columns)
    noun = "movie" if cfg.dataset in _MOVIES else "item"
    tables_out, info = build_examples(
        inter, items["item_id"].to_numpy(dtype=object),
        items[name_col].fillna("").to_numpy(dtype=object), cfg, implicit=implicit, noun=noun)
    n_train_full = tables_out["train"].num_rows
    n_eval_full = {name: tables_out[name].num_rows for name in ("valid", "test")}
    tables_out["train"] = _sample(_sample(tables_out["train"], cfg.max_train_examples, cfg.seed),
                                  cfg.few_shot_k, cfg.seed)
    if cfg.period_replay > 0:
        tables_out["train"], info["replay_examples"] = _with_replay(tables_out, cfg)
    for name in ("valid", "test"):
        tables_out[name] = _sample(tables_out[name], cfg.max_eval_examples, cfg.seed)
    if cfg.anonymize:
        tables_out = _anonymize(tables_out, cfg.anonymize_salt or secrets.token_hex(16))
    splits = datasets.DatasetDict({n: _dataset(tables_out[n]) for n in SPLIT_NAMES})
    item_ds = datasets.Dataset.from_pandas(items.astype({c: "object" for c in items.columns}),
                                           preserve_index=False)
    summary = {
        "dataset": cfg.dataset,
        "task": cfg.task,
        "protocol": cfg.protocol,
        "implicit": implicit,
        "timestamps": "time" if tables.has_time else "sequence position",
        "interactions": report.as_dict(),
        "users": int(inter["user_id"].nunique()),
        "items": int(inter["item_id"].nunique()),
        "catalogue_items": len(items),
        "train_examples_before_sampling": n_train_full,
        "eval_examples_before_sampling": n_eval_full,
        "splits": {n: _split_stats(tables_out[n], cfg.task) for n in SPLIT_NAMES},
        "render": {"template": cfg.template, "task": cfg.task, "noun": noun},
        "config": cfg.to_dict(),
        **info,
    }
    if cfg.anonymize:
        summary["anonymized"] = "user ids are salted SHA-256 hashes; the salt is not stored"
    return PreparedData(splits, item_ds, json.loads(json.dumps(summary)))
