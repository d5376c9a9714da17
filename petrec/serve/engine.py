"""Requests → model inputs → scores, with petrec.data's own prompt rendering and tokenisation.

A :class:`Job` is one request's rows in the column layout :mod:`petrec.data.tokenize` renders
from (``history_item_ids``, ``history_labels``, ``history_ratings``, ``item_id``), so the
prompt, the dropping of the oldest history items to fit ``max_length`` and the token ids are
exactly those of training and of ``petrec predict``. Raw item texts get request-local ids (an
ID model and the behaviour statistics know none of them: they read as items never seen in
training). :func:`run_batch` tokenises each piece (a slice of a job's rows, see
:mod:`petrec.serve.batching`) on its own and computes its rows' behaviour features /
collaborative tokens where the model reads them (:mod:`petrec.deploy.inputs`; a bad piece fails
alone), then runs the rows through the model in chunks of ``max_rows``. :func:`check_cost` is the
per-request admission bound.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from petrec.collate import pad_sequences
from petrec.data.errors import DataError
from petrec.deploy.inputs import row_inputs
from petrec.runs import score_token_ids
from petrec.serve.batching import Piece
from petrec.serve.registry import LoadedAdapter

#: Prefix of request-local ids given to raw item texts (cannot clash with catalogue ids).
RAW_PREFIX = "\x00text:"


class ItemNotFoundError(LookupError):
    """A request names an item id the adapter's catalogue does not have."""


class BadInputError(ValueError):
    """A request cannot be rendered (e.g. the candidate alone exceeds max_length)."""


class RequestTooCostlyError(ValueError):
    """A request's cost (rows x max_length tokens) is above ``max_request_tokens``."""


@dataclass
class Job:
    """One request's work for one adapter."""

    columns: dict[str, list]
    extra_names: dict[str, str] = field(default_factory=dict)
    k: int = 0
    exclude: list[int] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Examples this job adds to a batch."""
        return len(self.columns["history_item_ids"])


def _ref(adapter: LoadedAdapter, item: Any, extra: dict[str, str]) -> str:
    """The id to render ``item`` (an object with ``item_id`` or ``text``) by."""
    if item.item_id is not None:
        if item.item_id not in adapter.names:
            raise ItemNotFoundError(f"unknown item_id {item.item_id!r}: not in adapter {adapter.name!r}'s catalogue")
        return item.item_id
    key = f"{RAW_PREFIX}{len(extra)}"
    extra[key] = item.text
    return key


def build_job(adapter: LoadedAdapter, history: list[Any], candidates: list[Any] | None,
              *, k: int = 0, exclude_seen: bool = False) -> Job:
    """Turn validated request items into a job (one row per candidate, or one for recommend).

    Raises:
        ItemNotFoundError: An item id is not in the catalogue.
    """
    extra: dict[str, str] = {}
    hist = [_ref(adapter, h, extra) for h in history]
    labels = [int(h.label) for h in history]
    # Same convention as ``petrec predict --csv``: a rating defaults to the label.
    ratings = [float(h.rating) if h.rating is not None else float(h.label) for h in history]
    cands = [_ref(adapter, c, extra) for c in candidates] if candidates is not None else [""]
    n = len(cands)
    columns = {"history_item_ids": [hist] * n, "history_labels": [labels] * n,
               "history_ratings": [ratings] * n, "item_id": cands}
    exclude = [adapter.index[h] for h in hist if h in adapter.index] if exclude_seen else []
    return Job(columns, extra, k=k, exclude=exclude)


def build_occlusion_job(adapter: LoadedAdapter, history: list[Any], candidate: Any) -> Job:
    """The job of ``/v1/explain``: the candidate with the full history, then without each history
    item in turn (:func:`petrec.explain.occlusion_rows`), ``len(history) + 1`` rows.

    Raises:
        ItemNotFoundError: An item id is not in the catalogue.
    """
    from petrec.explain import occlusion_rows

    job = build_job(adapter, history, [candidate])
    return Job(occlusion_rows({k: v[0] for k, v in job.columns.items()}), job.extra_names)


def tokenize_job(adapter: LoadedAdapter, job: Job, start: int = 0, stop: int | None = None) -> list[list[int]]:
    """Token ids of rows ``start:stop`` of the job, rendered exactly as in training.

    Raises:
        BadInputError: A row does not fit ``max_length`` even without history.
    """
    from petrec.data import tokenize_rows

    names = ChainMap(job.extra_names, adapter.names) if job.extra_names else adapter.names
    columns = {k: v[start:stop] for k, v in job.columns.items()}
    try:
        out = tokenize_rows(columns, adapter.tokenizer, max_length=adapter.max_length,
                            names=names, task=adapter.task, template=adapter.template)
    except DataError as exc:
        raise BadInputError(str(exc).replace(RAW_PREFIX, "text#")) from None
    return out["input_ids"]


def job_inputs(adapter: LoadedAdapter, job: Job, start: int = 0,
               stop: int | None = None) -> tuple[np.ndarray | None, dict[str, list] | None]:
    """Behaviour features / collaborative-token columns of rows ``start:stop`` (None where the
    model reads none), computed from those rows as :func:`petrec.runs.score_examples` does.

    Raises:
        BadInputError: A history the features or ID tokens cannot read.
    """
    if adapter.stats is None and adapter.collab is None:
        return None, None
    columns = {k: v[start:stop] for k, v in job.columns.items()}
    try:
        return row_inputs(adapter.stats, adapter.collab, columns)
    except DataError as exc:
        raise BadInputError(str(exc).replace(RAW_PREFIX, "text#")) from None


@torch.inference_mode()
def _forward(adapter: LoadedAdapter, seqs: list[list[int]], max_rows: int, *,
             features: np.ndarray | None = None, collab: dict[str, list] | None = None) -> torch.Tensor:
    tok = adapter.tokenizer
    if adapter.task != "next_item":
        return score_token_ids(adapter.model, adapter.task, seqs, tok, batch_size=max_rows, features=features,
                               collab=collab)
    out = []
    for start in range(0, len(seqs), max_rows):
        chunk = seqs[start:start + max_rows]
        ids = pad_sequences(chunk, tok.pad_token_id, tok.padding_side)
        mask = pad_sequences([[1] * len(s) for s in chunk], 0, tok.padding_side)
        out.append(adapter.model.encode(ids, mask))
    return torch.cat(out)


def _top_k(adapter: LoadedAdapter, user: torch.Tensor, job: Job) -> list[tuple[str, float]]:
    scores = (user.reshape(1, -1) @ adapter.item_embeddings.T).reshape(-1).clone()
    if job.exclude:
        scores[torch.tensor(job.exclude, dtype=torch.long)] = float("-inf")
    k = min(job.k, int(torch.isfinite(scores).sum()))
    values, idx = torch.topk(scores, k)
    return [(adapter.item_ids[i], float(v)) for i, v in zip(idx.tolist(), values.tolist(), strict=True)]


def run_batch(adapter: LoadedAdapter, pieces: list[Piece], max_rows: int) -> list[Any]:
    """Results per piece (rows ``start:stop`` of a job), in order: a list with one entry per row
    (a score for ctr / rating, a top-k list for next_item), or the exception that piece raised
    (the other pieces still run)."""
    results: list[Any] = [None] * len(pieces)
    seqs: list[list[int]] = []
    spans: list[tuple[int, int, int]] = []
    features: list[np.ndarray] = []
    collab: dict[str, list] = {}
    for j, piece in enumerate(pieces):
        try:
            ids = tokenize_job(adapter, piece.job, piece.start, piece.stop)
            feats, tokens = job_inputs(adapter, piece.job, piece.start, piece.stop)
        except BadInputError as exc:
            results[j] = exc
            continue
        spans.append((j, len(seqs), len(ids)))
        seqs.extend(ids)
        if feats is not None:
            features.append(feats)
        for name, values in (tokens or {}).items():
            collab.setdefault(name, []).extend(values)
    if seqs:
        out = _forward(adapter, seqs, max_rows, features=np.concatenate(features) if features else None,
                       collab=collab or None)
        with torch.inference_mode():
            for j, start, n in spans:
                part = out[start:start + n]
                job = pieces[j].job
                results[j] = ([_top_k(adapter, row, job) for row in part] if adapter.task == "next_item"
                              else part.tolist())
    return results


def check_cost(adapter: LoadedAdapter, rows: int, max_tokens: int, what: str = "candidates") -> None:
    """Refuse a request whose forward pass may process more than ``max_tokens`` tokens.

    The cost of a request is its rows (candidates; 1 for ``/v1/recommend``) times the adapter's
    ``max_length``: every row is a prompt of at most that many tokens (the history is cut to fit,
    so history length and candidates together are bounded by it). ``/v1/explain`` scores one row per
    history item plus one, and names its rows ``what`` in the message.

    Raises:
        RequestTooCostlyError: Over the limit (the message names ``max_request_tokens``).
    """
    cost = rows * adapter.max_length
    if cost > max_tokens:
        most = max_tokens // adapter.max_length
        raise RequestTooCostlyError(
            f"request too costly: {rows} rows x max_length {adapter.max_length} of adapter {adapter.name!r} "
            f"= {cost} tokens, above the server's limit max_request_tokens={max_tokens}; send at most "
            f"{most} {what} per request"
        )
