"""Prompt rendering for language-model backbones: a compact template (default) and TALLRec's.

Two implementations that must agree (a test checks they do): :func:`render_column` renders a
whole split at once with one pyarrow ``take`` over a small vocabulary of prompt pieces (the hot
path; see :func:`_concat_parts`), :func:`render_one` renders one
example in plain Python (used when tokenisation has to drop old history items to fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from petrec.data.splits import window_mask

TALLREC_INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the "
    'target {noun} by answering "Yes." or "No.".'
)


def fmt_rating(r: float) -> str:
    """``4.0`` → ``4``, ``3.5`` → ``3.5``, NaN → ``?``."""
    return "?" if r is None or math.isnan(r) else f"{r:g}"


def _tallrec_tail(noun: str, cand: str) -> str:
    return f'\nWhether the user will like the target {noun} "{cand}"?'


def render_one(task: str, template: str, hist_names: Sequence[str], hist_labels: Sequence[int],
               hist_ratings: Sequence[float], cand_name: str | None, noun: str = "item") -> str:
    """Render one example's prompt.

    Args:
        task: ctr, rating or next_item.
        template: compact or tallrec.
        hist_names: History item names, oldest first.
        hist_labels: Their 0/1 labels (ctr, rating with tallrec).
        hist_ratings: Their ratings (rating task with the compact template).
        cand_name: Candidate item name (None for next_item).
        noun: What an item is called in the TALLRec prompt (``movie`` for MovieLens).

    Returns:
        The prompt.
    """
    if template == "compact":
        if task == "next_item":
            segs = list(hist_names)
        elif task == "rating":
            segs = [f"{n} (rated {fmt_rating(r)})" for n, r in zip(hist_names, hist_ratings, strict=True)]
        else:
            segs = [f"{n} ({'liked' if lab else 'disliked'})" for n, lab in zip(hist_names, hist_labels, strict=True)]
        text = "History: " + ("; ".join(segs) if segs else "none")
        return text if task == "next_item" else text + " | Candidate: " + str(cand_name)
    quoted = [f'"{n}"' for n in hist_names]
    if task == "next_item":
        return f"User History: {', '.join(quoted)}\nWhich {noun} will the user choose next?"
    liked = ", ".join(q for q, lab in zip(quoted, hist_labels, strict=True) if lab)
    disliked = ", ".join(q for q, lab in zip(quoted, hist_labels, strict=True) if not lab)
    return (TALLREC_INSTRUCTION.format(noun=noun) + "\nUser Preference: " + liked
            + "\nUser Unpreference: " + disliked + _tallrec_tail(noun, str(cand_name)))


@dataclass(frozen=True)
class _Each:
    """A part with exactly one piece per row: ``pieces[codes[row]]``."""

    pieces: pa.Array
    codes: np.ndarray


@dataclass(frozen=True)
class _Joined:
    """A part joining a per-row list: ``first`` piece for its first entry, ``rest`` (separator-prefixed) after.

    ``codes`` are the flattened entry codes into ``first`` / ``rest``, row by row, and ``counts``
    the entries per row; a row without entries gets the single piece ``empty`` (no piece when None).
    """

    first: pa.Array
    rest: pa.Array
    codes: np.ndarray
    counts: np.ndarray
    empty: str | None = None


_Part = str | _Each | _Joined


def _prefixed(prefix: str, arr: pa.Array, suffix: str = "") -> pa.Array:
    return pc.binary_join_element_wise(prefix, arr, suffix, "")


def _block(n: int, part: _Part) -> tuple[list[pa.Array], np.ndarray, np.ndarray | None]:
    """A part's vocabulary pieces, its (n, width) matrix of codes into them and which codes are used."""
    if isinstance(part, str):
        return [pa.array([part], type=pa.string())], np.zeros((n, 1), dtype=np.int32), None
    if isinstance(part, _Each):
        return [part.pieces], np.asarray(part.codes, dtype=np.int32)[:, None], None
    counts = np.asarray(part.counts, dtype=np.int64)
    width = int(counts.max(initial=0))
    used = window_mask(counts, width)
    codes = np.zeros((n, width), dtype=np.int32)
    codes[used] = np.asarray(part.codes) + len(part.first)  # every entry from `rest` ...
    some = np.flatnonzero(counts)
    codes[some, width - counts[some]] -= len(part.first)  # ... but each row's first from `first`
    if part.empty is None:
        return [part.first, part.rest], codes, used
    empty = np.full((n, 1), len(part.first) + len(part.rest), dtype=np.int32)
    return ([part.first, part.rest, pa.array([part.empty], type=pa.string())],
            np.hstack([codes, empty]), np.hstack([used, (counts == 0)[:, None]]))


def _concat_parts(n: int, parts: list[_Part]) -> pa.Array:
    """Per row, the concatenation of ``parts`` (vectorised; one string materialisation in all).

    Replaces chained ``pc.binary_join`` / ``pc.binary_join_element_wise`` calls, each of which
    copies every prompt once more: every piece of every row (constants, list entries with their
    separators, candidates) is one entry of a small vocabulary; a (rows × slots) matrix of
    vocabulary codes with a mask of the used slots is flattened row by row, a single ``take``
    lays all pieces out, and since the values of a string array are contiguous, row ``r``'s
    prompt is the byte range from its first piece's offset to its last piece's end: the result
    shares the taken array's values buffer and only picks offsets.

    Args:
        n: Number of rows.
        parts: What each row is made of, in order.

    Returns:
        A string array of ``n`` prompts; a row with a null piece is null (as pyarrow's joins do).
    """
    if n == 0:
        return pa.array([], type=pa.string())
    vocab: list[pa.Array] = []
    codes, used = [], []
    for part in parts:
        pieces, block, mask = _block(n, part)
        codes.append(block + sum(len(v) for v in vocab))
        used.append(np.ones(block.shape, dtype=bool) if mask is None else mask)
        vocab += pieces
    mask = np.hstack(used)
    index = np.hstack(codes)[mask]
    per_row = mask.sum(axis=1)
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_row, out=bounds[1:])
    table = pa.concat_arrays(vocab)
    flat = table.take(pa.array(index))
    offsets = np.frombuffer(flat.buffers()[1], dtype=np.int32)[flat.offset:][bounds]
    out = pa.StringArray.from_buffers(n, pa.array(offsets, type=pa.int32()).buffers()[1], flat.buffers()[2])
    if table.null_count:
        is_null = table.is_null().to_numpy(zero_copy_only=False)
        row_null = np.bincount(np.repeat(np.arange(n), per_row)[is_null[index]], minlength=n) > 0
        out = pc.if_else(pa.array(row_null), pa.scalar(None, type=pa.string()), out)
    return out


def render_column(task: str, template: str, names: np.ndarray, hist_codes: np.ndarray,
                  row_counts: np.ndarray, hist_labels: np.ndarray, hist_ratings: np.ndarray,
                  cand_codes: np.ndarray | None, noun: str = "item") -> pa.Array:
    """Render every example's prompt at once (vectorised; same strings as :func:`render_one`).

    Args:
        task: ctr, rating or next_item.
        template: compact or tallrec.
        names: Item name per item code.
        hist_codes: Flattened history item codes, row by row, oldest first.
        row_counts: History length per example.
        hist_labels: Flattened 0/1 labels aligned with ``hist_codes``.
        hist_ratings: Flattened ratings aligned with ``hist_codes``.
        cand_codes: Candidate item code per example (None for next_item).
        noun: Item noun for the TALLRec prompt.

    Returns:
        A pyarrow string array, one prompt per example.
    """
    name_arr = pa.array(names, type=pa.string())
    hist_codes = np.asarray(hist_codes, dtype=np.int64)
    row_counts = np.asarray(row_counts)
    if template == "compact":
        parts = _compact_parts(task, name_arr, hist_codes, row_counts, hist_labels, hist_ratings, cand_codes)
    else:
        parts = _tallrec_parts(task, name_arr, hist_codes, row_counts, hist_labels, cand_codes, noun)
    return _concat_parts(len(row_counts), parts)


def _compact_parts(task: str, name_arr: pa.Array, hist_codes: np.ndarray, row_counts: np.ndarray,
                   hist_labels: np.ndarray, hist_ratings: np.ndarray,
                   cand_codes: np.ndarray | None) -> list[_Part]:
    """``History: a; b; c | Candidate: d`` (``History: none`` without history; no candidate for next_item)."""
    n_items = len(name_arr)
    if task == "next_item":
        segs, codes = name_arr, hist_codes
    elif task == "rating":
        levels, level_idx = np.unique(np.nan_to_num(hist_ratings, nan=-1.0), return_inverse=True)
        tags = [" (rated " + fmt_rating(np.nan if v == -1.0 else v) + ")" for v in levels]
        segs = _concat_or_empty([_prefixed("", name_arr, t) for t in tags])
        codes = level_idx.reshape(-1).astype(np.int64) * n_items + hist_codes
    else:
        segs = pa.concat_arrays([_prefixed("", name_arr, " (disliked)"), _prefixed("", name_arr, " (liked)")])
        codes = hist_codes + n_items * (np.asarray(hist_labels) > 0)
    parts: list[_Part] = [_Joined(_prefixed("History: ", segs), _prefixed("; ", segs), codes, row_counts,
                                  empty="History: none")]
    if task != "next_item":
        parts.append(_Each(_prefixed(" | Candidate: ", name_arr), np.asarray(cand_codes)))
    return parts


def _tallrec_parts(task: str, name_arr: pa.Array, hist_codes: np.ndarray, row_counts: np.ndarray,
                   hist_labels: np.ndarray, cand_codes: np.ndarray | None, noun: str) -> list[_Part]:
    """TALLRec's instruction, liked / disliked quoted lists and candidate question (or the next-item one)."""
    quoted = _prefixed('"', name_arr, '"')
    sep_quoted = _prefixed(', "', name_arr, '"')
    if task == "next_item":
        return ["User History: ", _Joined(quoted, sep_quoted, hist_codes, row_counts),
                f"\nWhich {noun} will the user choose next?"]
    liked = np.asarray(hist_labels) > 0
    rows = np.repeat(np.arange(len(row_counts)), row_counts)
    head, tail = _tallrec_tail(noun, "\x00").split("\x00")
    return [
        TALLREC_INSTRUCTION.format(noun=noun) + "\nUser Preference: ",
        _Joined(quoted, sep_quoted, hist_codes[liked], np.bincount(rows[liked], minlength=len(row_counts))),
        "\nUser Unpreference: ",
        _Joined(quoted, sep_quoted, hist_codes[~liked], np.bincount(rows[~liked], minlength=len(row_counts))),
        _Each(_prefixed(head, name_arr, tail), np.asarray(cand_codes)),
    ]


def _concat_or_empty(arrays: list[pa.Array]) -> pa.Array:
    return pa.concat_arrays(arrays) if arrays else pa.array([], type=pa.string())
