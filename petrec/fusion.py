"""Stacked fusion of the language model with the behaviour prior (``model.prior_fusion: stacked``).

The joint prior path (``prior_fusion: joint``) adds the language model's logit to a fitted count
model and trains both on the few training examples. Measured on P1 k=256
(benchmarks/results/collab-ctr-cpu, smollm2-ctr-cpu), the language model then only memorises
the residual of a few hundred examples: validation never rose above the count model's, and the
kept weights were the count model's. Stacking keeps the two apart:

1. the prior is the count model, fitted once on the training examples and frozen;
2. the language model trains on the text alone (its own loss, exactly the text-only recipe);
3. at every evaluation of the validation split, two numbers, ``weight`` and ``bias``, are fitted
   on that split's language-model and prior scores: the model's score is then
   ``prior + weight * lm + bias``. The checkpoint is chosen by that fused score, as always by
   the validation metric; the test split is never read.

For AUC only the ratio of the two scores counts (``bias`` shifts every score alike), so what the
validation labels choose is one mixing weight: the same kind of choice as picking the
checkpoint. The fitted numbers are parameters of the prior head (``fusion_weight``,
``fusion_bias``), saved and reloaded with the adapter, so a reloaded run scores what it scored.

With collaborative tokens, ``model.collab_in_fusion`` adds a third part: the tokens' ID model's own
click logit, with a weight of its own (``fusion_collab_weight``), fitted with the others by
:func:`fit_fusion_weights`. The benchmark's ``prior-collab`` baseline is that mix without the
language model, so a report shows what the language model adds to it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_fusion", "fit_fusion_weights"]

#: L2 penalty on the fusion numbers (per example): keeps the fit finite when one class is
#: separable by the language model alone on a small validation split.
_L2 = 1e-4


def fit_fusion(lm: np.ndarray, prior: np.ndarray, target: np.ndarray, task: str) -> tuple[float, float]:
    """``(weight, bias)`` that best predict ``target`` as ``prior + weight * lm + bias``.

    ctr: the logistic log loss with ``prior`` as a fixed offset, minimised by Newton's method on the
    two numbers (scikit-learn's logistic regression takes no offset, hence these few lines).
    rating: least squares of ``target - prior`` on ``lm``.

    Args:
        lm: The language model's logits (ctr) / predicted ratings (rating), one per example.
        prior: The prior head's logits / rating offsets, same length.
        target: 0/1 labels (ctr) or ratings (rating), same length.
        task: ``ctr`` or ``rating``.

    Returns:
        The fitted ``(weight, bias)``; ``(0.0, 0.0)`` (the prior alone) when the split holds one
        class only, fewer than two examples, or a constant language-model score.

    Raises:
        ValueError: Arrays of different lengths, non-finite values, or an unknown task.
    """
    weights, bias = fit_fusion_weights(np.asarray(lm, dtype=np.float64).reshape(-1, 1), prior, target, task)
    return float(weights[0]), bias


def fit_fusion_weights(parts: np.ndarray, prior: np.ndarray, target: np.ndarray, task: str
                       ) -> tuple[np.ndarray, float]:
    """:func:`fit_fusion` with several scores beside the prior: ``prior + parts @ weights + bias``.

    Used when the collaborative tokens' ID model adds its own logit to the mix
    (``model.collab_in_fusion``): ``parts`` columns are the language model's and the ID model's.

    Args:
        parts: ``(n, k)`` scores, one column per part.
        prior, target, task: As in :func:`fit_fusion`.

    Returns:
        ``(weights, bias)``: ``k`` weights (0 for a constant column) and the shift; all zero when the
        split holds one class only or fewer than two examples.

    Raises:
        ValueError: Arrays of different lengths, non-finite values, or an unknown task.
    """
    parts = np.asarray(parts, dtype=np.float64)
    prior, target = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (prior, target))
    if parts.ndim != 2 or not len(parts) == len(prior) == len(target):
        raise ValueError(f"fit_fusion: parts {parts.shape}, prior and target differ in length "
                         f"({len(prior)}, {len(target)})")
    if not (np.isfinite(parts).all() and np.isfinite(prior).all() and np.isfinite(target).all()):
        raise ValueError("fit_fusion: non-finite scores or targets")
    if task not in ("ctr", "rating"):
        raise ValueError(f"fit_fusion: unknown task {task!r}; accepted: ctr, rating")
    weights = np.zeros(parts.shape[1])
    used = [j for j in range(parts.shape[1]) if len(parts) >= 2 and np.ptp(parts[:, j]) > 0]
    if not used or (task == "ctr" and len(np.unique(target)) < 2):
        return weights, 0.0
    design = np.concatenate([parts[:, used], np.ones((len(prior), 1))], axis=1)
    if task == "rating":
        solution, *_ = np.linalg.lstsq(design, target - prior, rcond=None)
        weights[used] = solution[:-1]
        return weights, float(solution[-1])
    theta = np.zeros(design.shape[1])
    n = len(prior)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(prior + design @ theta)))
        grad = design.T @ (p - target) / n + _L2 * theta
        hess = (design * (p * (1 - p))[:, None]).T @ design / n + _L2 * np.eye(design.shape[1])
        step = np.linalg.solve(hess, grad)
        step *= min(1.0, 5.0 / max(float(np.abs(step).max()), 1e-12))  # damped: no overshoot from far starts
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    weights[used] = theta[:-1]
    return weights, float(theta[-1])
