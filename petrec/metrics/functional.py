"""Plain numpy click-through and rating metrics used by the training loop and the evaluate modules.

Why our own code instead of calling scikit-learn inside the loop: one documented policy for
the edge cases (single-class AUC, thresholds, clipping), no per-call input-validation
overhead, and scikit-learn stays an *independent* reference in the tests (tests/metrics).

Policies (all documented here once):

* **Single-class AUC** (all labels 0 or all 1): AUC is undefined; :func:`roc_auc` returns
  ``nan`` and emits a :class:`MetricWarning` instead of raising, so that a small validation
  split does not crash a training run. Early stopping code must treat ``nan`` as "no
  improvement".
* **Thresholded metrics** (accuracy, F1): an example is predicted positive when its
  probability is ``>= threshold`` (0.5 by default, i.e. logit ``>= 0``). F1 is 0.0 when
  there are neither true nor predicted positives (scikit-learn's ``zero_division`` default).
* **Log loss**: probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the float64
  machine epsilon (as scikit-learn does); with ``from_logits=True`` it is computed from the
  logits directly (``softplus``), which is exact and never clips.
* Ranking policies (ties, exclusion, K > n_items): see :mod:`petrec.metrics.ranking`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "MetricWarning",
    "PetrecMetricError",
    "accuracy",
    "compute_ctr",
    "compute_rating",
    "f1",
    "log_loss",
    "mae",
    "rmse",
    "roc_auc",
]


class PetrecMetricError(ValueError):
    """Inputs to a metric are malformed; the message names the argument, position and value."""


class MetricWarning(UserWarning):
    """A metric is undefined for the given inputs (e.g. single-class AUC) and returns nan."""


# ---------------------------------------------------------------------------- input checks


def _to_numpy_1d(x: Any, name: str) -> np.ndarray:
    """Convert a list / numpy array / torch tensor to a float64 1-D numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PetrecMetricError(
            f"{name}: expected a 1-D array of numbers, got {type(x).__name__}"
        ) from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise PetrecMetricError(f"{name}: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise PetrecMetricError(f"{name}: is empty; a metric needs at least one example")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise PetrecMetricError(
            f"{name}: non-finite value {float(arr[bad[0]])!r} at position {int(bad[0])}"
        )
    return arr


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise PetrecMetricError(f"{name_a} has {a.shape[0]} values but {name_b} has {b.shape[0]}")


def _binary_labels(labels: Any) -> np.ndarray:
    y = _to_numpy_1d(labels, "labels")
    bad = np.flatnonzero((y != 0.0) & (y != 1.0))
    if bad.size:
        raise PetrecMetricError(
            f"labels: expected 0/1 values, got {float(y[bad[0]])!r} at position {int(bad[0])}"
        )
    return y


def _probabilities(scores: Any, from_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (probabilities, logits or None) as float64 arrays."""
    s = _to_numpy_1d(scores, "scores")
    if from_logits:
        # 0.5 * (1 + tanh(z / 2)) is the overflow-free sigmoid.
        return 0.5 * (1.0 + np.tanh(0.5 * s)), s
    bad = np.flatnonzero((s < 0.0) | (s > 1.0))
    if bad.size:
        raise PetrecMetricError(
            f"scores: expected probabilities in [0, 1], got {float(s[bad[0]])!r} at position "
            f"{int(bad[0])} (pass from_logits=True for raw logits)"
        )
    return s, None


# ---------------------------------------------------------------------------- CTR metrics


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (ties get half credit, as scikit-learn's ``roc_auc_score``).

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        scores: Any monotone score (probabilities or logits), shape ``(n,)``.

    Returns:
        The AUC, or ``nan`` with a :class:`MetricWarning` when only one class is present.
    """
    y = _binary_labels(labels)
    s = _to_numpy_1d(scores, "scores")
    _same_length(y, s, "labels", "scores")
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"AUC is undefined with a single class ({int(n_pos)} positives, {int(n_neg)} "
            "negatives); returning nan",
            MetricWarning,
            stacklevel=2,
        )
        return math.nan
    # Mann-Whitney U with average ranks == trapezoidal ROC area with ties.
    ranks = rankdata(s, method="average")
    u = float(ranks[y == 1.0].sum()) - n_pos * (n_pos + 1.0) / 2.0
    return u / (n_pos * n_neg)


def log_loss(labels: Any, scores: Any, *, from_logits: bool = False) -> float:
    """Mean binary cross-entropy.

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        scores: Probabilities in [0, 1], or logits when ``from_logits``.
        from_logits: Treat ``scores`` as logits (exact, no clipping).

    Returns:
        The mean negative log-likelihood in nats.
    """
    y = _binary_labels(labels)
    p, z = _probabilities(scores, from_logits)
    _same_length(y, p, "labels", "scores")
    if z is not None:
        # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
        losses = np.where(y == 1.0, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
        return float(losses.mean())
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1.0 - eps)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def _confusion(
    labels: Any, scores: Any, from_logits: bool, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= threshold <= 1.0:
        raise PetrecMetricError(f"threshold: expected a probability in [0, 1], got {threshold!r}")
    y = _binary_labels(labels)
    p, _ = _probabilities(scores, from_logits)
    _same_length(y, p, "labels", "scores")
    return y, (p >= threshold).astype(np.float64)


def accuracy(
    labels: Any, scores: Any, *, from_logits: bool = False, threshold: float = 0.5
) -> float:
    """Fraction of examples whose thresholded prediction equals the label.

    Args:
        labels: 0/1 labels.
        scores: Probabilities (or 0/1 predictions), or logits when ``from_logits``.
        from_logits: Treat ``scores`` as logits.
        threshold: Probability at or above which an example is predicted positive.

    Returns:
        Accuracy in [0, 1].
    """
    y, pred = _confusion(labels, scores, from_logits, threshold)
    return float((pred == y).mean())


def f1(labels: Any, scores: Any, *, from_logits: bool = False, threshold: float = 0.5) -> float:
    """F1 score of the positive class (0.0 when there are no true and no predicted positives).

    Args:
        labels: 0/1 labels.
        scores: Probabilities (or 0/1 predictions), or logits when ``from_logits``.
        from_logits: Treat ``scores`` as logits.
        threshold: Probability at or above which an example is predicted positive.

    Returns:
        F1 in [0, 1].
    """
    y, pred = _confusion(labels, scores, from_logits, threshold)
    tp = float((pred * y).sum())
    fp = float((pred * (1.0 - y)).sum())
    fn = float(((1.0 - pred) * y).sum())
    denom = 2.0 * tp + fp + fn
    return 0.0 if denom == 0.0 else 2.0 * tp / denom


def compute_ctr(
    labels: Any, scores: Any, *, from_logits: bool = False, threshold: float = 0.5
) -> dict[str, float]:
    """All click-through metrics at once.

    Args:
        labels: 0/1 labels, shape ``(n,)`` (list, numpy array or torch tensor).
        scores: Probabilities, or logits when ``from_logits``.
        from_logits: Treat ``scores`` as logits (what the ``ctr`` head outputs).
        threshold: Probability threshold for accuracy and F1.

    Returns:
        ``{"auc", "logloss", "accuracy", "f1"}`` (AUC is nan for a single class, see module doc).
    """
    return {
        "auc": roc_auc(labels, scores),
        "logloss": log_loss(labels, scores, from_logits=from_logits),
        "accuracy": accuracy(labels, scores, from_logits=from_logits, threshold=threshold),
        "f1": f1(labels, scores, from_logits=from_logits, threshold=threshold),
    }


# ---------------------------------------------------------------------------- rating metrics


def _regression_pair(y: Any, yhat: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _to_numpy_1d(y, "y")
    b = _to_numpy_1d(yhat, "yhat")
    _same_length(a, b, "y", "yhat")
    return a, b


def rmse(y: Any, yhat: Any) -> float:
    """Root mean squared error between true and predicted ratings."""
    a, b = _regression_pair(y, yhat)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(y: Any, yhat: Any) -> float:
    """Mean absolute error between true and predicted ratings."""
    a, b = _regression_pair(y, yhat)
    return float(np.mean(np.abs(a - b)))


def compute_rating(y: Any, yhat: Any) -> dict[str, float]:
    """Rating-prediction metrics.

    Args:
        y: True ratings, shape ``(n,)``.
        yhat: Predicted ratings, shape ``(n,)``.

    Returns:
        ``{"rmse", "mae"}``.
    """
    return {"rmse": rmse(y, yhat), "mae": mae(y, yhat)}
