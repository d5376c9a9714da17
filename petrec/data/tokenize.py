"""Tokenisation of examples and item texts through ``datasets.map(batched=True)`` with its cache.

When a prompt is longer than ``max_length`` the *oldest* history items are dropped (a
per-example binary search over how many to keep) until it fits; the candidate is never cut.
``n_history_kept`` records how many history items survived.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import datasets
import pandas as pd
from datasets.fingerprint import Hasher

from petrec.data.errors import DataError, DataValueError
from petrec.data.frame import get_frame
from petrec.data.text import render_one

#: Number of example batches actually tokenised in this process (lets tests see cache hits).
BATCH_CALLS = {"examples": 0, "items": 0}


def name_column(columns: Iterable[str]) -> str:
    """The catalogue column that names items in prompts: ``name`` (``data.item_name: text`` writes
    it), else ``title``, else ``text``."""
    columns = set(columns)
    return "name" if "name" in columns else "title" if "title" in columns else "text"


def _names(items: Any) -> dict[str, str]:
    df = items.to_pandas() if isinstance(items, datasets.Dataset) else pd.DataFrame(items)
    col = name_column(df.columns)
    return dict(zip(df["item_id"].astype(str), df[col].fillna("").astype(str), strict=True))


def catalogue_names(items: Any) -> dict[str, str]:
    """``item_id`` → the name prompts use for it (:func:`name_column`) of a catalogue.

    Build it once and pass it to :func:`tokenize_rows` (a server or a fast scorer does).
    """
    return _names(items)


def tokenize_rows(rows: dict[str, list], tokenizer: Any, *, max_length: int, names: dict[str, str],
                  task: str, template: str, noun: str = "item") -> dict[str, list]:
    """Render and tokenise a column batch of (history, candidate) rows exactly as training does.

    The same prompts and the same oldest-first history dropping as :func:`tokenize_examples`,
    without ``datasets`` (for request paths where its per-call overhead matters).

    Args:
        rows: Columns ``history_item_ids``, ``history_labels``, ``history_ratings``, ``item_id``.
        tokenizer: A Hugging Face tokenizer.
        max_length: Token budget per example (special tokens included).
        names: :func:`catalogue_names` of the catalogue.
        task: ctr, rating or next_item.
        template: compact or tallrec.
        noun: Item noun of the TALLRec template.

    Returns:
        ``input_ids``, ``attention_mask`` and ``n_history_kept`` per row.

    Raises:
        DataError: A candidate whose prompt alone exceeds ``max_length`` (unknown item ids
            raise from the rendering, :class:`petrec.data.DataValueError`).
    """
    return _tokenize_batch(rows, tokenizer, max_length, names, task, template, noun)


def _tokenizer_signature(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    blob = json.dumps([type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""),
                       sorted(vocab.items()), str(getattr(tokenizer, "special_tokens_map", {})),
                       repr(get_frame(tokenizer))])
    return hashlib.sha256(blob.encode()).hexdigest()


def _render_rows(batch: Mapping[str, list], rows: list[int], keep: list[int], names: dict[str, str],
                 task: str, template: str, noun: str) -> list[str]:
    out = []
    for r, k in zip(rows, keep, strict=True):
        hist = batch["history_item_ids"][r]
        start = len(hist) - k
        labels = batch["history_labels"][r][start:] if "history_labels" in batch else [1] * k
        ratings = batch["history_ratings"][r][start:] if "history_ratings" in batch else [float("nan")] * k
        try:
            hist_names = [names[x] for x in hist[start:]]
            cand = None if task == "next_item" else names[batch["item_id"][r]]
        except KeyError as exc:
            raise DataValueError(f"item {exc.args[0]!r} of an example has no entry in the items table") from None
        out.append(render_one(task, template, hist_names, labels, ratings, cand, noun))
    return out


def _tokenize_batch(batch: dict[str, list], tokenizer: Any, max_length: int, names: dict[str, str] | None,
                    task: str, template: str, noun: str) -> dict[str, list]:
    BATCH_CALLS["examples"] += 1
    n = len(batch["history_item_ids"])
    full = [len(h) for h in batch["history_item_ids"]]
    rows = list(range(n))

    frame = get_frame(tokenizer)

    def encode(texts: list[str]) -> list[list[int]]:
        if frame is not None:  # answer scoring: chat template / "Answer:" around each prompt
            return tokenizer([frame.wrap(t) for t in texts], add_special_tokens=frame.add_special_tokens,
                             truncation=False)["input_ids"]
        return tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]

    texts = batch["text"] if names is None else _render_rows(batch, rows, full, names, task, template, noun)
    ids = encode(texts)
    keep = list(full)
    over = [r for r in rows if len(ids[r]) > max_length]
    if over and names is None:
        raise DataError(f"{len(over)} examples exceed max_length={max_length} tokens; pass items= so the "
                        "oldest history items can be dropped instead of cutting the prompt")
    if over:
        base = encode(_render_rows(batch, over, [0] * len(over), names, task, template, noun))
        too_long = [(r, len(b)) for r, b in zip(over, base, strict=True) if len(b) > max_length]
        if too_long:
            r, need = too_long[0]
            raise DataError(f"example with item {batch['item_id'][r] if 'item_id' in batch else '?'} needs "
                            f"{need} tokens without any history, more than max_length={max_length}; "
                            "raise max_length (the candidate is never cut)")
        lo = {r: 0 for r in over}  # largest count known to fit
        hi = {r: full[r] - 1 for r in over}  # largest count that may fit
        best = dict(zip(over, base, strict=True))
        # First probe: the count that fits if every history item costs the same number of tokens;
        # second probe: its neighbour. Then plain bisection. Any probe in (lo, hi] keeps it exact.
        per_item = {r: max(1e-9, (len(ids[r]) - len(b)) / full[r]) for r, b in zip(over, base, strict=True)}
        guess = {r: int((max_length - len(b)) / per_item[r]) for r, b in zip(over, base, strict=True)}
        fit_last: dict[int, bool] = {}
        step = 0
        while True:
            todo = [r for r in over if lo[r] < hi[r]]
            if not todo:
                break
            if step == 0:
                mid = [min(max(guess[r], lo[r] + 1), hi[r]) for r in todo]
            elif step == 1:
                mid = [lo[r] + 1 if fit_last[r] else hi[r] for r in todo]
            else:
                mid = [(lo[r] + hi[r] + 1) // 2 for r in todo]
            step += 1
            enc = encode(_render_rows(batch, todo, mid, names, task, template, noun))
            for r, m, e in zip(todo, mid, enc, strict=True):
                fit_last[r] = len(e) <= max_length
                if fit_last[r]:
                    lo[r], best[r] = m, e
                else:
                    hi[r] = m - 1
        for r in over:
            keep[r], ids[r] = lo[r], best[r]
    return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "n_history_kept": keep}


def tokenize_examples(dataset_or_dict: datasets.Dataset | datasets.DatasetDict, tokenizer: Any, *,
                      max_length: int, items: Any = None, template: str = "compact",
                      task: str | None = None, noun: str = "item", batch_size: int = 1000,
                      num_proc: int | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """Add ``input_ids``, ``attention_mask`` and ``n_history_kept`` to examples.

    Args:
        dataset_or_dict: Examples from :func:`petrec.data.prepare` (one split or all).
        tokenizer: A Hugging Face tokenizer.
        max_length: Token budget per example (special tokens included).
        items: Catalogue with item_id and title/text; needed to re-render prompts with fewer
            history items. Without it the stored ``text`` is used and an over-long example is an error.
        template: compact or tallrec (as used for ``text``).
        task: ctr, rating or next_item; None → next_item when there is no ``label`` column, else ctr.
        noun: Item noun of the TALLRec template.
        batch_size: Examples per ``map`` batch.
        num_proc: Worker processes for ``map``.

    Returns:
        The same kind of object with the three new columns. A second call with the same inputs
        on data loaded from disk reuses the ``datasets`` cache instead of tokenising again.
    """
    if isinstance(dataset_or_dict, datasets.DatasetDict):
        return datasets.DatasetDict({
            k: tokenize_examples(v, tokenizer, max_length=max_length, items=items, template=template,
                                 task=task, noun=noun, batch_size=batch_size, num_proc=num_proc)
            for k, v in dataset_or_dict.items()})
    ds = dataset_or_dict
    if max_length < 1:
        raise DataError(f"max_length={max_length} must be positive")
    task = task or ("ctr" if "label" in ds.column_names else "next_item")
    names = _names(items) if items is not None else None
    names_hash = Hasher.hash(sorted(names.items())) if names is not None else "text"
    fingerprint = Hasher.hash([ds._fingerprint, _tokenizer_signature(tokenizer), max_length, template,
                               task, noun, names_hash, "petrec-tokenize-v1"])
    return ds.map(_tokenize_batch, batched=True, batch_size=batch_size, num_proc=num_proc,
                  fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "names": names,
                             "task": task, "template": template, "noun": noun},
                  new_fingerprint=fingerprint, desc="tokenize examples")


def _tokenize_items_batch(batch: dict[str, list], tokenizer: Any, max_length: int) -> dict[str, list]:
    BATCH_CALLS["items"] += 1
    enc = tokenizer(batch["text"], add_special_tokens=True, truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def tokenize_items(items: Any, tokenizer: Any, max_length: int) -> datasets.Dataset:
    """Tokenise item texts (for next-item models that encode every catalogue item).

    Args:
        items: Dataset or DataFrame with ``item_id`` and ``text``.
        tokenizer: A Hugging Face tokenizer.
        max_length: Item texts are truncated to this many tokens.

    Returns:
        The items with ``input_ids`` and ``attention_mask`` added, in the same order.
    """
    ds = items if isinstance(items, datasets.Dataset) else datasets.Dataset.from_pandas(
        pd.DataFrame(items).astype({"item_id": "object", "text": "object"}), preserve_index=False)
    missing = {"item_id", "text"} - set(ds.column_names)
    if missing:
        raise DataError(f"tokenize_items: items lack column(s) {sorted(missing)}")
    fingerprint = Hasher.hash([ds._fingerprint, _tokenizer_signature(tokenizer), max_length, "items-v1"])
    return ds.map(_tokenize_items_batch, batched=True, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                  new_fingerprint=fingerprint, desc="tokenize items")
