"""Prompt rendering for language-model backbones: a compact template (default) and TALLRec's.

Two implementations that must agree (a test checks they do): :func:`render_column` renders a
whole split at once with pyarrow string kernels (the hot path), :func:`render_one` renders one
example in plain Python (used when tokenisation has to drop old history items to fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def _joined(flat: pa.Array, row_counts: np.ndarray, sep: str) -> pa.Array:
    offsets = np.zeros(len(row_counts) + 1, dtype=np.int32)
    np.cumsum(row_counts, out=offsets[1:])
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), flat), sep)


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
    n_items = len(names)
    n = len(row_counts)
    cand = name_arr.take(pa.array(cand_codes)) if cand_codes is not None else None
    if template == "compact":
        if task == "next_item":
            flat = name_arr.take(pa.array(hist_codes))
        elif task == "rating":
            levels, level_idx = np.unique(np.nan_to_num(hist_ratings, nan=-1.0), return_inverse=True)
            tags = [" (rated " + fmt_rating(np.nan if v == -1.0 else v) + ")" for v in levels]
            table = [pc.binary_join_element_wise(name_arr, t, "") for t in tags]
            seg = pa.concat_arrays(table) if table else pa.array([], type=pa.string())
            flat = seg.take(pa.array(level_idx.reshape(-1) * n_items + hist_codes, type=pa.int64()))
        else:
            seg = pa.concat_arrays([pc.binary_join_element_wise(name_arr, " (disliked)", ""),
                                    pc.binary_join_element_wise(name_arr, " (liked)", "")])
            flat = seg.take(pa.array(hist_codes + n_items * (np.asarray(hist_labels) > 0)))
        hist = _joined(flat, row_counts, "; ")
        hist = pc.if_else(pa.array(row_counts == 0), "none", hist)
        pieces: list = ["History: ", hist]
        if task != "next_item":
            pieces += [" | Candidate: ", cand]
        return pc.binary_join_element_wise(*pieces, "")
    quoted = pc.binary_join_element_wise('"', name_arr, '"', "")
    if task == "next_item":
        hist = _joined(quoted.take(pa.array(hist_codes)), row_counts, ", ")
        return pc.binary_join_element_wise("User History: ", hist,
                                           f"\nWhich {noun} will the user choose next?", "")
    liked = np.asarray(hist_labels) > 0
    rows = np.repeat(np.arange(n), row_counts)
    liked_txt = _joined(quoted.take(pa.array(hist_codes[liked])),
                        np.bincount(rows[liked], minlength=n), ", ")
    disliked_txt = _joined(quoted.take(pa.array(hist_codes[~liked])),
                           np.bincount(rows[~liked], minlength=n), ", ")
    head, tail = _tallrec_tail(noun, "\x00").split("\x00")
    return pc.binary_join_element_wise(
        TALLREC_INSTRUCTION.format(noun=noun) + "\nUser Preference: ", liked_txt,
        "\nUser Unpreference: ", disliked_txt, head, cand, tail, "")
