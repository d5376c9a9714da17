"""Chronological ordering, split assignment (leave-one-out, temporal, time periods, user k-fold, TALLRec), history windows.

All functions work on whole numpy arrays (one entry per interaction or example); none loops
over rows in Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")


def chronological_order(user_id: pd.Series, timestamp: np.ndarray) -> np.ndarray:
    """Row order that groups users by first appearance and sorts each user's rows by time.

    Ties in time keep the file order (a stable sort), as TALLRec's preprocessing does.

    Returns:
        Indices into the input rows.
    """
    user_rank, _ = pd.factorize(user_id, sort=False)
    return np.lexsort((np.arange(len(user_rank)), np.asarray(timestamp), user_rank))


def positions(user_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows grouped by user: position within the user, the user's first row and its length.

    Args:
        user_codes: One code per row; equal codes must be contiguous.

    Returns:
        (pos, start, length), each one entry per row.
    """
    n = len(user_codes)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    new = np.ones(n, dtype=bool)
    new[1:] = user_codes[1:] != user_codes[:-1]
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, n))
    start = np.repeat(starts, lengths)
    return np.arange(n) - start, start, np.repeat(lengths, lengths)


def window_mask(counts: np.ndarray, width: int) -> np.ndarray:
    """``(len(counts), width)`` mask whose row ``r`` has its last ``counts[r]`` entries set.

    A flat list of row-by-row entries assigned through it (``matrix[mask] = flat``) lands
    right-aligned in a fixed-width matrix, oldest entry leftmost, with no per-entry index
    arithmetic; ``matrix[mask]`` reads it back in the same order.

    Args:
        counts: Entries per row, each at most ``width``.
        width: Columns of the matrix.

    Returns:
        A boolean matrix.
    """
    return np.arange(width - 1, -1, -1) < np.asarray(counts)[:, None]


def history_windows(targets: np.ndarray, pos: np.ndarray, history_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each target's history (its user's up to ``history_len`` rows right before it).

    A sliding window as index arithmetic: a (targets × history_len) matrix of ``target - lag``
    masked to the lags within the user's earlier rows, flattened row by row.

    Args:
        targets: Row index per example (rows grouped by user, chronological within a user).
        pos: Position of every row within its user (:func:`positions`).
        history_len: Most history rows per example.

    Returns:
        The flat history row indices (example by example, oldest first) and the history length
        per example.
    """
    counts = np.minimum(pos[targets], history_len)
    lags = np.arange(history_len, 0, -1)
    return (targets[:, None] - lags)[window_mask(counts, history_len)], counts


def loo_assign(pos: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Leave-one-out: a user's last row → test, second last → valid, the rest → train."""
    from_end = length - 1 - pos
    out = np.full(len(pos), TRAIN, dtype=np.int8)
    out[from_end == 1] = VALID
    out[from_end == 0] = TEST
    return out


def temporal_assign(timestamp: np.ndarray, quantiles: tuple[float, float]) -> tuple[np.ndarray, list[float]]:
    """Global time split: before the first quantile → train, before the second → valid, rest → test.

    Returns:
        The assignment per row and the two cut timestamps.
    """
    ts = np.asarray(timestamp)
    cuts = [float(c) for c in np.quantile(ts, quantiles)]
    out = np.full(len(ts), TRAIN, dtype=np.int8)
    out[ts >= cuts[0]] = VALID
    out[ts >= cuts[1]] = TEST
    return out, cuts


def period_assign(timestamp: np.ndarray, n_periods: int,
                  quantiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list[float], list[list[float]]]:
    """Time periods: cut the log at its ``k / n_periods`` timestamp quantiles, then split each period by time.

    Period ``p`` (0-based here) holds the rows with ``cut[p-1] <= timestamp < cut[p]`` (the first
    period starts at the earliest row, the last ends after the latest), so the periods are
    disjoint, ordered in time and cover every row. Within a period the rows before its own
    ``quantiles[0]`` timestamp quantile are train, those before ``quantiles[1]`` valid, the rest
    test (:func:`temporal_assign` on the period's rows).

    Args:
        timestamp: One timestamp per row.
        n_periods: How many periods.
        quantiles: Within-period quantiles ending train and valid.

    Returns:
        The period per row (0..n_periods-1), the split per row (train/valid/test within its period),
        the ``n_periods - 1`` timestamps between periods, and each period's two split timestamps.
    """
    ts = np.asarray(timestamp)
    cuts = [float(c) for c in np.quantile(ts, np.arange(1, n_periods) / n_periods)] if len(ts) else []
    period = np.searchsorted(np.asarray(cuts), ts, side="right").astype(np.int64)
    split = np.full(len(ts), TRAIN, dtype=np.int8)
    inner: list[list[float]] = []
    for p in range(n_periods):
        rows = np.flatnonzero(period == p)
        if len(rows) == 0:
            inner.append([])
            continue
        split[rows], within = temporal_assign(ts[rows], quantiles)
        inner.append(within)
    return period, split, cuts, inner


def kfold_user_folds(n_users: int, k: int, seed: int) -> np.ndarray:
    """A seeded fold number (0..k-1) per user code; fold sizes differ by at most one."""
    perm = np.random.default_rng(seed).permutation(n_users)
    fold = np.empty(n_users, dtype=np.int64)
    fold[perm] = np.arange(n_users) % k
    return fold


def kfold_assign(user_codes: np.ndarray, n_users: int, k: int, fold: int, seed: int) -> np.ndarray:
    """User k-fold: users of ``fold`` → test, of ``fold+1 mod k`` → valid, all others → train."""
    folds = kfold_user_folds(n_users, k, seed)[user_codes]
    out = np.full(len(user_codes), TRAIN, dtype=np.int8)
    out[folds == (fold + 1) % k] = VALID
    out[folds == fold] = TEST
    return out


def tallrec_assign(n_examples: int, keep: int) -> np.ndarray:
    """TALLRec (BENCHMARKS P1): keep the LAST ``keep`` examples of the concatenation, 80/10/10.

    Returns:
        Per example: 0/1/2 for train/valid/test, -1 for dropped (everything before the last ``keep``).
    """
    out = np.full(n_examples, -1, dtype=np.int8)
    kept = min(keep, n_examples)
    first = n_examples - kept
    n_train, n_valid = int(kept * 0.8), int(kept * 0.9)
    idx = np.arange(kept)
    out[first:] = np.where(idx < n_train, TRAIN, np.where(idx < n_valid, VALID, TEST))
    return out


def sample_indices(n: int, k: int | None, seed: int) -> np.ndarray:
    """Seeded sample of ``k`` of ``n`` row indices, returned in their original order (all when k is None or ≥ n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
