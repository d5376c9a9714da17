"""Which past items drove a prediction: occlusion effects of the history, and the prior's share.

**Occlusion** (the method here). For an example with history ``h_1 .. h_n`` (oldest first) and
candidate ``c``, the prompt is rendered again without ``h_j`` (its label and rating go with it)
and scored again; the effect of ``h_j`` is

    effect_j = score(h_1 .. h_n, c) - score(h_1 .. h_n without h_j, c)

with *score* what the model serves: the click / like probability (ctr) or the predicted rating
(rating). A positive effect means the item pushed the score up. Rendering follows training
exactly, so when the full history does not fit ``max_length`` an occluded prompt may let an older
item back in (as if the user had never had ``h_j``), and an item already cut from the prompt has
effect exactly 0. For a model with a behaviour prior (``model.behaviour_prior``) the features are
recomputed without ``h_j`` too, so the effect covers both paths. Items are ranked by ``|effect|``.

**Prior share** (behaviour-prior models). The model's logit (ctr) or rating is the language
model's part plus the prior head's part (:class:`petrec.models.behaviour.PriorHead`); for the full
example, ``prior_share = |prior| / (|prior| + |lm|)``.

Gradient x input is not offered: occlusion measures exactly the served quantity, needs no
gradient through quantized or merged layers, and costs ``n + 1`` forward passes per example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from petrec.runs import TrainedRun

#: Columns an occlusion row carries from its example (the ones rendering and features read).
ROW_COLUMNS = ("history_item_ids", "history_labels", "history_ratings", "item_id")


def occlusion_rows(example: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The example, then the example without each history item in turn (``n + 1`` rows).

    Args:
        example: One example with ``history_item_ids`` and ``item_id`` (and optionally
            ``history_labels``, default all 1, and ``history_ratings``, default the labels).
            Other keys are copied to every row.

    Returns:
        Columns of the ``n + 1`` rows; row ``j + 1`` lacks history item ``j``.

    Raises:
        ValueError: The history lists differ in length (names the example's item).
    """
    hist = list(example["history_item_ids"])
    labels = list(example.get("history_labels") or [1] * len(hist))
    ratings = list(example.get("history_ratings") or [float(v) for v in labels])
    if not len(hist) == len(labels) == len(ratings):
        raise ValueError(f"example for item {example['item_id']!r}: {len(hist)} history items, {len(labels)} "
                         f"history labels and {len(ratings)} history ratings")
    keep = [list(range(len(hist)))] + [[k for k in range(len(hist)) if k != j] for j in range(len(hist))]
    out: dict[str, list[Any]] = {
        "history_item_ids": [[hist[k] for k in ks] for ks in keep],
        "history_labels": [[int(labels[k]) for k in ks] for ks in keep],
        "history_ratings": [[float(ratings[k]) for k in ks] for ks in keep],
        "item_id": [example["item_id"]] * len(keep),
    }
    for key, value in example.items():
        if key not in out:
            out[key] = [value] * len(keep)
    return out


def rank_by_magnitude(effects: Sequence[float]) -> list[int]:
    """History positions by ``|effect|``, largest first (ties: the more recent item first)."""
    return sorted(range(len(effects)), key=lambda j: (-abs(effects[j]), -j))


@dataclass
class Explanation:
    """The occlusion explanation of one example (see the module docstring).

    Attributes:
        item_id: The candidate.
        task: ``ctr`` or ``rating``.
        score: The full example's score (probability or rating).
        history_item_ids: The history, oldest first.
        effects: ``effect_j`` of each history item, in history order.
        ranking: History positions by ``|effect|``, largest first.
        prior: The prior head's part of the logit / rating (behaviour-prior models only).
        lm: The language model's part (behaviour-prior models only).
        prior_share: ``|prior| / (|prior| + |lm|)`` (behaviour-prior models only).
    """

    item_id: str
    task: str
    score: float
    history_item_ids: list[str]
    effects: list[float]
    ranking: list[int] = field(default_factory=list)
    prior: float | None = None
    lm: float | None = None
    prior_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``method``: ``occlusion``)."""
        return {"method": "occlusion", **asdict(self)}


def explain_examples(run: TrainedRun, examples: Any, *, items: Any = None, batch_size: int = 64) -> list[Explanation]:
    """Occlusion explanations of pointwise examples with a trained run's model.

    Args:
        run: A :class:`petrec.runs.TrainedRun` of a ctr or rating model.
        examples: A ``datasets.Dataset`` (or a list of mappings) of examples, as ``petrec.data``
            builds them or :func:`petrec.runs.read_candidates_csv` reads them.
        items: The catalogue, to render the item names.
        batch_size: Rows per forward pass.

    Returns:
        One :class:`Explanation` per example, in order.

    Raises:
        ValueError: A next-item run (it ranks the catalogue; nothing to occlude per candidate).
    """
    import datasets

    from petrec.runs import score_examples

    task = run.model_cfg.task
    if task not in ("ctr", "rating"):
        raise ValueError(f"explanations are for ctr and rating runs; {run.folder} is a {task!r} run")
    rows = examples.to_list() if isinstance(examples, datasets.Dataset) else list(examples)
    if not rows:
        return []
    blocks = [occlusion_rows({k: r[k] for k in ROW_COLUMNS if k in r}) for r in rows]
    columns = {k: [v for b in blocks for v in b[k]] for k in blocks[0]}
    scores = score_examples(run, datasets.Dataset.from_dict(columns), items=items, batch_size=batch_size)
    out, start = [], 0
    for row, block in zip(rows, blocks, strict=True):
        n = len(block["item_id"])
        part = scores[start:start + n].astype(np.float64)
        effects = [float(part[0] - v) for v in part[1:]]
        out.append(Explanation(str(row["item_id"]), task, float(part[0]), [str(i) for i in row["history_item_ids"]],
                               effects, rank_by_magnitude(effects)))
        start += n
    if run.stats is not None:
        _add_prior_share(run, datasets.Dataset.from_dict({k: [b[k][0] for b in blocks] for k in blocks[0]}), out)
    return out


@torch.no_grad()
def prior_parts(model: Any, features: np.ndarray) -> np.ndarray:
    """The prior head's part of each row's logit / rating (a behaviour-prior model's ``prior``)."""
    head = model.prior
    weight = next(head.parameters())
    return head(torch.as_tensor(features, device=weight.device).to(weight.dtype)).double().cpu().numpy()


def split_score(task: str, score: float, prior: float) -> tuple[float, float, float]:
    """``(prior, lm, prior_share)`` of one served score: its logit (ctr) or rating minus the prior's part."""
    total = score
    if task == "ctr":  # the served probability back to its logit
        q = min(max(score, 1e-12), 1 - 1e-12)
        total = math.log(q / (1 - q))
    lm = total - prior
    share = abs(prior) / (abs(prior) + abs(lm)) if prior or lm else 0.0
    return float(prior), float(lm), float(share)


def _add_prior_share(run: TrainedRun, full_rows: Any, out: list[Explanation]) -> None:
    """Split each full example's logit (ctr) or rating into the prior head's part and the rest."""
    prior = prior_parts(run.model, run.stats.features(full_rows))
    for exp, p in zip(out, prior, strict=True):
        exp.prior, exp.lm, exp.prior_share = split_score(exp.task, exp.score, float(p))
