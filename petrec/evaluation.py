"""Evaluation passes for each task, written for the Accelerate loop.

Every function takes an already *prepared* loader and gathers with
``accelerator.gather_for_metrics`` so that, under DDP, each example is counted exactly
once (the duplicates Accelerate pads the last batch with are dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from petrec import metrics as M
from petrec.collate import COLLAB_COLUMNS
from petrec.debias import DEBIAS_COLUMNS, pointwise_breakdown, ranking_breakdown
from petrec.fusion import fit_fusion_weights

#: ``(model, prepared_loader, accelerator) -> {metric name: value}``; the first key is the
#: task's default model-selection metric.
EvalFn = Callable[[nn.Module, Any, Accelerator], dict[str, float]]

_LOWER_IS_BETTER = ("loss", "logloss", "rmse", "mae", "mse")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (losses and errors are not)."""
    base = metric.split("/")[-1].split("@")[0]
    return base not in _LOWER_IS_BETTER


#: Batch keys a :class:`petrec.models.BehaviourModel` reads (``features`` only with a behaviour prior).
MODEL_INPUTS = ("input_ids", "attention_mask", "features", *COLLAB_COLUMNS)
#: The scores a stacked-fusion model outputs beside its fused one (petrec.fusion); the ID model's
#: only with ``model.collab_in_fusion``.
FUSION_PARTS = ("lm_logits", "prior_logits", "collab_logits")


def predict_scores(model: nn.Module, loader: Any, accelerator: Accelerator,
                   input_keys: tuple[str, ...] = MODEL_INPUTS) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs and labels for a pointwise task, gathered over processes.

    Args:
        model: Returns an object with ``.logits`` (one per example).
        loader: A prepared loader whose batches hold ``labels`` and ``input_keys``.
        accelerator: The run's accelerator.
        input_keys: Batch keys passed to the model.

    Returns:
        ``(predictions, labels)`` as float64 arrays, one entry per example, in loader order.
    """
    preds, labels, _ = predict_with_extras(model, loader, accelerator, input_keys)
    return preds, labels


@torch.no_grad()
def predict_with_extras(model: nn.Module, loader: Any, accelerator: Accelerator,
                        input_keys: tuple[str, ...] = MODEL_INPUTS
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """:func:`predict_scores`, plus the batches' :data:`petrec.debias.DEBIAS_COLUMNS` (gathered alike).

    Returns:
        ``(predictions, labels, extras)``; ``extras`` maps each debias column the batches carry
        to one float64 value per example (empty when the split was not annotated), and, for a
        stacked-fusion model (:mod:`petrec.fusion`), ``lm_logits`` and ``prior_logits``.
    """
    model.eval()
    preds, labels, extras = [], [], {}
    for batch in loader:
        out = model(**{k: v for k, v in batch.items() if k in input_keys})
        logits = out.logits.reshape(-1).float()
        carried = {k: batch[k] for k in DEBIAS_COLUMNS if k in batch}
        for part in FUSION_PARTS:
            if getattr(out, part, None) is not None:
                carried[part] = getattr(out, part).reshape(-1).float()
        p, y, c = accelerator.gather_for_metrics((logits, batch["labels"].reshape(-1).float(), carried))
        preds.append(p.cpu())
        labels.append(y.cpu())
        for name, values in c.items():
            extras.setdefault(name, []).append(values.cpu())
    return (torch.cat(preds).double().numpy(), torch.cat(labels).double().numpy(),
            {name: torch.cat(parts).double().numpy() for name, parts in extras.items()})


def _fused(model: nn.Module, accelerator: Accelerator, task: str, preds: np.ndarray, targets: np.ndarray,
           extras: dict[str, np.ndarray], calibrate: bool) -> tuple[np.ndarray, dict[str, float]]:
    """Stacked fusion: with ``calibrate``, fit the mix on this split and store it in the model.

    Returns the (re)mixed predictions and the metrics of the parts: the language model's alone,
    and the fitted weight (``lm_*``, ``fusion_*``); unchanged predictions and no metrics for any
    other model, or without ``calibrate``.
    """
    parts = {k: extras.pop(k) for k in FUSION_PARTS if k in extras}
    if not calibrate or len(parts) < 2:
        return preds, {}
    lm, prior = parts["lm_logits"], parts["prior_logits"]
    collab = parts.get("collab_logits")  # the ID model's logit, with model.collab_in_fusion only

    def alone(scores: np.ndarray) -> tuple[str, float]:
        """The task's first metric of one part on its own."""
        if task == "ctr":
            metrics = M.compute_ctr(targets.astype(np.int64), scores, from_logits=True)
        else:
            metrics = M.compute_rating(targets, scores)
        first = next(iter(metrics))
        return first, metrics[first]

    columns = [lm] if collab is None else [lm, collab]
    weights, bias = fit_fusion_weights(np.stack(columns, axis=1), prior, targets, task)
    weight = float(weights[0])
    collab_weight = None if collab is None else float(weights[1])
    head = accelerator.unwrap_model(model).prior
    if collab is None:
        head.set_fusion(weight, bias)
    else:
        head.set_fusion(weight, bias, collab_weight)
    name, lm_alone = alone(lm)
    out = {f"lm_{name}": lm_alone, "fusion_weight": weight, "fusion_bias": bias}
    fused = prior + weight * lm + bias
    if collab is not None:
        out.update({f"collab_{name}": alone(collab)[1], "fusion_collab_weight": collab_weight})
        fused = fused + collab_weight * collab
    return fused, out


def evaluate_ctr(model: nn.Module, loader: Any, accelerator: Accelerator,
                 input_keys: tuple[str, ...] = MODEL_INPUTS, *, calibrate: bool = False) -> dict[str, float]:
    """AUC (first: the default selection metric), log loss, accuracy and F1 of click/like logits.

    On an annotated split (:func:`petrec.data.exposure.annotate_splits`) also ``ips_auc``, ``snips_auc``
    and the per-group breakdown (:func:`petrec.debias.pointwise_breakdown`). With ``calibrate``, a
    stacked-fusion model's mix is fitted on this split first (:mod:`petrec.fusion`; the
    recipe calibrates on the validation split only) and ``lm_auc`` / ``fusion_weight`` are added.
    """
    logits, labels, extras = predict_with_extras(model, loader, accelerator, input_keys)
    logits, fusion = _fused(model, accelerator, "ctr", logits, labels, extras, calibrate)
    out = {**M.compute_ctr(labels.astype(np.int64), logits, from_logits=True), "n_examples": float(len(labels))}
    out.update(fusion)
    return {**out, **pointwise_breakdown("ctr", labels, logits, extras)} if extras else out


def evaluate_rating(model: nn.Module, loader: Any, accelerator: Accelerator, *,
                    calibrate: bool = False) -> dict[str, float]:
    """RMSE (first: the default selection metric) and MAE of rating predictions (+ group breakdown).

    ``calibrate``: as in :func:`evaluate_ctr` (``lm_rmse`` / ``fusion_weight`` are added).
    """
    preds, targets, extras = predict_with_extras(model, loader, accelerator)
    preds, fusion = _fused(model, accelerator, "rating", preds, targets, extras, calibrate)
    out = {**M.compute_rating(targets, preds), "n_examples": float(len(targets))}
    out.update(fusion)
    return {**out, **pointwise_breakdown("rating", targets, preds, extras)} if extras else out


def make_next_item_eval(item_loader: Any, ks: tuple[int, ...] = (10, 50), exclude_history: bool = True) -> EvalFn:
    """Full-ranking evaluation against **all** items (no sampled negatives).

    Item embeddings are computed once per evaluation from ``item_loader`` (every process
    embeds the whole catalogue); each user is scored against every item, history items are
    excluded when ``exclude_history`` (the target never is), and per-user metrics are
    gathered so that every user counts once. On an annotated split
    (:func:`petrec.data.exposure.annotate_splits`) the debiased Recall@K / NDCG@K and the per-group
    means are added (:func:`petrec.debias.ranking_breakdown`).

    Args:
        item_loader: Un-prepared loader over the tokenised catalogue, in item-index order.
        ks: Cut-offs for HR / NDCG / MRR.
        exclude_history: Remove already-seen items from each user's ranking.
    """

    @torch.no_grad()
    def evaluate_next_item(model: nn.Module, loader: Any, accelerator: Accelerator) -> dict[str, float]:
        model.eval()
        core = accelerator.unwrap_model(model)
        item_emb = core.embed_items(
            {k: v.to(accelerator.device) for k, v in b.items()} for b in item_loader
        )
        per_user: dict[str, list[torch.Tensor]] = {}
        extras: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            user_emb = core.encode(batch["input_ids"], batch["attention_mask"])
            scores = core.score_all(user_emb, item_emb).float()
            exclude = batch.get("history_index") if exclude_history else None
            values = M.ranking_per_user(scores, batch["target_index"], ks=ks, exclude=exclude)
            carried = {k: batch[k] for k in DEBIAS_COLUMNS if k in batch}
            gathered, carried = accelerator.gather_for_metrics((values, carried))
            for name, tensor in gathered.items():
                per_user.setdefault(name, []).append(tensor.cpu())
            for name, tensor in carried.items():
                extras.setdefault(name, []).append(tensor.cpu())
        ordered = [f"ndcg@{ks[0]}", *sorted(k for k in per_user if k != f"ndcg@{ks[0]}")]
        out = {name: float(torch.cat(per_user[name]).double().mean()) for name in ordered}
        out["n_examples"] = float(len(torch.cat(per_user[ordered[0]])))
        if extras:
            out.update(ranking_breakdown({k: torch.cat(v).double().numpy() for k, v in per_user.items()},
                                         {k: torch.cat(v).double().numpy() for k, v in extras.items()}))
        return out

    return evaluate_next_item


def evaluator_for(task: str, item_loader: Any = None) -> EvalFn:
    """The evaluation function of ``task`` (``ctr``, ``rating`` or ``next_item``)."""
    if task == "ctr":
        return evaluate_ctr
    if task == "rating":
        return evaluate_rating
    if task == "next_item":
        if item_loader is None:
            raise ValueError("next_item evaluation needs the item catalogue loader")
        return make_next_item_eval(item_loader)
    raise ValueError(f"unknown task {task!r}; accepted: ctr, rating, next_item")
