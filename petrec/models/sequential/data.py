"""Data bridge: canonical interactions (from :mod:`petrec.data` readers) → integer item sequences.

Item *codes* are dense ``0 .. n_items-1`` (the column of :meth:`score_all`); inside padded
model inputs an item is its code + 1 and 0 is padding. Sequences are **left**-padded, so the
last position of every row is the most recent item.

Leave-one-out (BENCHMARKS P3/P4): for a user with sequence ``s`` (length n ≥ 3) training
sees only ``s[:n-2]``; validation predicts ``s[n-2]`` from ``s[:n-2]``; test predicts
``s[n-1]`` from ``s[:n-1]``. :func:`training_positions` states which positions any training
dataset may use and the leakage test checks every dataset against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

PAD = 0


class SeqDataError(ValueError):
    """Sequences cannot be built from the given interactions; the message says which user/row."""


@dataclass
class SeqData:
    """Per-user chronological item-code sequences and the catalogue they index."""

    sequences: list[np.ndarray]
    """One int64 array of item codes per user, oldest first."""
    user_ids: np.ndarray
    """The raw user id of each sequence (same order)."""
    item_ids: np.ndarray
    """The raw item id of each code (``item_ids[code]``)."""

    @property
    def n_items(self) -> int:
        """Catalogue size (number of codes)."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Number of users (sequences)."""
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        """Total items over all sequences."""
        return int(sum(len(s) for s in self.sequences))

    def subset(self, users: np.ndarray) -> SeqData:
        """The same catalogue restricted to the users at positions ``users``."""
        return SeqData([self.sequences[u] for u in users], self.user_ids[users], self.item_ids)


def from_interactions(
    inter: pd.DataFrame, min_item_interactions: int = 0, min_len: int = 3
) -> SeqData:
    """Build sequences from a canonical interaction table (``user_id``, ``item_id``, ``timestamp``).

    Args:
        inter: As returned by :mod:`petrec.data.readers` (``timestamp`` orders each user's items;
            equal timestamps keep file order).
        min_item_interactions: Drop items with fewer interactions, counted once on the full log
            (P3 uses 5: SASRec's preprocessing); users are not filtered.
        min_len: Every user must keep at least this many items (3 = one train, valid, test).

    Raises:
        SeqDataError: A column is missing or a user is left with fewer than ``min_len`` items.
    """
    missing = {"user_id", "item_id", "timestamp"} - set(inter.columns)
    if missing:
        raise SeqDataError(
            f"interactions lack column(s) {sorted(missing)}; found {list(inter.columns)}"
        )
    df = inter[["user_id", "item_id", "timestamp"]].copy()
    df["_order"] = np.arange(len(df))
    if min_item_interactions > 0:
        counts = df.groupby("item_id", sort=False)["user_id"].transform("size")
        df = df.loc[(counts >= min_item_interactions).to_numpy()]
    df = df.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    item_ids, codes = np.unique(df["item_id"].to_numpy(), return_inverse=True)
    user_ids, starts, lengths = np.unique(
        df["user_id"].to_numpy(), return_index=True, return_counts=True
    )
    short = np.flatnonzero(lengths < min_len)
    if len(short):
        u = short[0]
        raise SeqDataError(
            f"user {user_ids[u]!r} has {lengths[u]} interaction(s) after filtering; "
            f"leave-one-out needs at least {min_len} ({len(short)} such users)"
        )
    codes = codes.astype(np.int64)
    seqs = [codes[s : s + n] for s, n in zip(starts, lengths, strict=True)]
    return SeqData(seqs, user_ids, item_ids)


def load(
    dataset: str, data_dir: str | None = None, min_item_interactions: int | None = None
) -> SeqData:
    """Read ``ml-1m`` (P3: items with < 5 interactions dropped) or ``scientific`` (P4) through petrec.data."""
    from petrec.data import DataConfig, load_tables

    defaults = {"ml-1m": 5, "scientific": 0}
    if dataset not in defaults:
        raise SeqDataError(
            f"dataset {dataset!r} is not a next-item benchmark; accepted: ml-1m, scientific"
        )
    tables = load_tables(DataConfig(dataset=dataset, data_dir=data_dir))
    k = defaults[dataset] if min_item_interactions is None else min_item_interactions
    return from_interactions(tables.interactions, min_item_interactions=k)


def cycle_data(n_users: int = 64, n_items: int = 12, length: int = 14, seed: int = 0) -> SeqData:
    """A planted pattern: every user walks the item cycle 0→1→…→n-1→0 from a random start."""
    rng = np.random.default_rng(seed)
    seqs = [(rng.integers(n_items) + np.arange(length)) % n_items for _ in range(n_users)]
    return SeqData([s.astype(np.int64) for s in seqs], np.arange(n_users), np.arange(n_items))


def training_positions(n: int) -> range:
    """Positions of a length-``n`` sequence that training may read (inputs *and* labels)."""
    return range(max(n - 2, 0))


def _left_pad(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for r, seq in enumerate(rows):
        seq = seq[-width:]
        if len(seq):
            out[r, width - len(seq) :] = seq
    return out


class TensorRows(Dataset):
    """Rows of equally long columns (one dict per index); collated by torch's default collate.

    Args:
        columns: Name → numpy array or tensor, all of the same length.
    """

    def __init__(self, columns: dict[str, np.ndarray | torch.Tensor]) -> None:
        self.columns = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in columns.items()}
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"TensorRows: columns differ in length {sorted(lengths)}")
        self.n = lengths.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}


def sequence_dataset(data: SeqData, max_len: int) -> Dataset:
    """One row per user (SASRec / GRU4Rec training): ``input_ids`` and shifted ``labels`` tokens.

    From the training prefix ``t = s[:n-2]``: inputs ``t[:-1]``, labels ``t[1:]`` (last ``max_len``).
    """
    prefixes = [s[list(training_positions(len(s)))] + 1 for s in data.sequences]
    keep = [i for i, p in enumerate(prefixes) if len(p) >= 2]
    return TensorRows(dict(
        input_ids=_left_pad([prefixes[i][:-1] for i in keep], max_len),
        labels=_left_pad([prefixes[i][1:] for i in keep], max_len),
        user_index=np.asarray(keep, dtype=np.int64),
    ))


def window_dataset(data: SeqData, window: int) -> Dataset:
    """One row per training target position ≥ 1 (Caser): the previous ``window`` items → next item."""
    inputs, labels, users = [], [], []
    for u, s in enumerate(data.sequences):
        t = s[list(training_positions(len(s)))] + 1
        for p in range(1, len(t)):
            inputs.append(t[max(0, p - window) : p])
            labels.append(t[p])
            users.append(u)
    return TensorRows(dict(
        input_ids=_left_pad(inputs, window),
        labels=np.asarray(labels, dtype=np.int64),
        user_index=np.asarray(users, dtype=np.int64),
    ))


def pair_dataset(data: SeqData) -> Dataset:
    """One row per training interaction (BPR-MF): ``user_index`` and positive ``labels`` token."""
    users, labels = [], []
    for u, s in enumerate(data.sequences):
        t = s[list(training_positions(len(s)))]
        users.extend([u] * len(t))
        labels.extend((t + 1).tolist())
    return TensorRows(dict(
        user_index=np.asarray(users, dtype=np.int64), labels=np.asarray(labels, dtype=np.int64)
    ))


def eval_dataset(
    data: SeqData, split: str, max_len: int, history_cap: int | None = None
) -> Dataset:
    """One row per user: ``input_ids`` (history tokens), ``target_index`` (code), ``history_index``.

    ``split`` is ``valid`` (target ``s[n-2]``) or ``test`` (target ``s[n-1]``). ``history_index``
    holds the codes of the whole history, -1 padded, for excluding seen items from the ranking.
    """
    if split not in ("valid", "test"):
        raise SeqDataError(f"split must be 'valid' or 'test', got {split!r}")
    back = 2 if split == "valid" else 1
    hist = [s[: len(s) - back] for s in data.sequences]
    targets = np.asarray([s[len(s) - back] for s in data.sequences], dtype=np.int64)
    width = max(len(h) for h in hist) if history_cap is None else history_cap
    history = np.full((len(hist), width), -1, dtype=np.int64)
    for r, h in enumerate(hist):
        h = np.unique(h[-width:])
        history[r, : len(h)] = h
    return TensorRows(dict(
        input_ids=_left_pad([h + 1 for h in hist], max_len),
        target_index=targets,
        history_index=history,
        user_index=np.arange(len(hist), dtype=np.int64),
    ))


def item_counts(data: SeqData) -> np.ndarray:
    """Interactions per item code over the training prefixes only (popularity baseline)."""
    counts = np.zeros(data.n_items, dtype=np.int64)
    for s in data.sequences:
        np.add.at(counts, s[list(training_positions(len(s)))], 1)
    return counts
