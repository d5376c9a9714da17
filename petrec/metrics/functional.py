"""Plain numpy / torch metric functions used by the training loop and by the evaluate modules.

Why our own code instead of calling scikit-learn inside the loop: one documented policy for
the edge cases (single-class AUC, ties in ranking, items excluded from ranking), no
per-call input-validation overhead, ranking on whatever device the scores live on, and
scikit-learn stays an *independent* reference in the tests (tests/metrics).

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
* **Ranking ties are pessimistic**: the rank of the target is the number of candidate items
  whose score is ``>=`` the target's score (the target included). An item tied with the
  target therefore counts *against* it, so a model that scores everything equally gets the
  worst rank, never a lucky one.
* **Ranking candidates**: all items, minus the optional ``exclude`` items of each user
  (typically their history); the target is never excluded even when it is in the history.
  ``K`` larger than the number of candidates is allowed: every target is then inside the
  top K (HR@K = 1).
* **One target per user** (leave-one-out protocol): HR@K = 1[rank <= K],
  NDCG@K = 1 / log2(rank + 1) if rank <= K else 0, MRR@K = 1 / rank if rank <= K else 0,
  each averaged over users.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "MetricWarning",
    "PetrecMetricError",
    "accuracy",
    "compute_ctr",
    "compute_ranking",
    "compute_rating",
    "f1",
    "log_loss",
    "mae",
    "ranking_per_user",
    "rmse",
    "roc_auc",
    "target_ranks",
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


# ---------------------------------------------------------------------------- ranking metrics


def _as_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PetrecMetricError(f"{name}: expected an array, got {type(x).__name__}") from exc
    return t.to(device=device, dtype=dtype)


def _exclusion_mask(exclude: Any, n_users: int, n_items: int, device: torch.device) -> torch.Tensor:
    """Boolean (n_users, n_items) mask from one of the three accepted ``exclude`` forms.

    * a **boolean** array / tensor of the scores' shape (True = excluded);
    * an **integer** array / tensor ``(n_users, max_history)`` of item indices padded with
      negative values (what :class:`petrec.collate.BehaviourCollator` gives as
      ``history_index``, padded with -1);
    * a sequence of per-user iterables of item indices (ragged lists).
    """
    if isinstance(exclude, (torch.Tensor, np.ndarray)):
        is_bool = (
            exclude.dtype == torch.bool
            if isinstance(exclude, torch.Tensor)
            else exclude.dtype == np.bool_
        )
        if is_bool:
            mask = _as_tensor(exclude, "exclude", torch.bool, device)
            if tuple(mask.shape) != (n_users, n_items):
                raise PetrecMetricError(
                    f"exclude: a boolean mask must have the scores' shape {(n_users, n_items)}, "
                    f"got {tuple(mask.shape)}"
                )
            return mask.clone()
        index = _as_tensor(exclude, "exclude", torch.long, device)
        if index.ndim != 2 or index.shape[0] != n_users:
            raise PetrecMetricError(
                f"exclude: an index tensor must have shape ({n_users}, max_history) padded with -1, "
                f"got {tuple(index.shape)}"
            )
        if index.numel() and int(index.max()) >= n_items:
            user, col = torch.nonzero(index >= n_items)[0].tolist()
            raise PetrecMetricError(
                f"exclude[{user}]: item id {int(index[user, col])} is outside [0, {n_items})"
            )
        mask = torch.zeros(n_users, n_items + 1, dtype=torch.bool, device=device)
        # padding (negative) goes to a spare last column that is dropped
        mask.scatter_(1, torch.where(index < 0, n_items, index), True)
        return mask[:, :n_items]
    if not isinstance(exclude, Sequence) or len(exclude) != n_users:
        got = len(exclude) if isinstance(exclude, Sequence) else type(exclude).__name__
        raise PetrecMetricError(
            f"exclude: expected a boolean mask, a padded index tensor or one list of item ids per "
            f"user ({n_users}), got {got}"
        )
    rows: list[int] = []
    cols: list[int] = []
    for user, items in enumerate(exclude):
        if not isinstance(items, Iterable):
            raise PetrecMetricError(f"exclude[{user}]: expected a list of item ids, got {items!r}")
        for item in items:
            item_i = int(item)
            if not 0 <= item_i < n_items:
                raise PetrecMetricError(
                    f"exclude[{user}]: item id {item_i} is outside [0, {n_items})"
                )
            rows.append(user)
            cols.append(item_i)
    mask = torch.zeros(n_users, n_items, dtype=torch.bool, device=device)
    if rows:
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    return mask


def target_ranks(
    scores: Any, targets: Any, exclude: Any = None, *, chunk_size: int = 4096
) -> torch.Tensor:
    """Pessimistic 1-based rank of each user's target among all non-excluded items.

    Args:
        scores: ``(n_users, n_items)`` scores (numpy array or torch tensor, any device).
        targets: ``(n_users,)`` integer item index of each user's target.
        exclude: Optional items to leave out of each user's candidates: a boolean
            ``(n_users, n_items)`` mask, or one iterable of item ids per user. The target
            is never excluded.
        chunk_size: Users processed at once (bounds the temporary memory).

    Returns:
        Long tensor ``(n_users,)`` on the scores' device: number of candidates scored
        ``>=`` the target (the target included).
    """
    device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
    s = _as_tensor(
        scores, "scores", torch.float64 if device.type == "cpu" else torch.float32, device
    )
    if s.ndim != 2:
        raise PetrecMetricError(f"scores: expected shape (n_users, n_items), got {tuple(s.shape)}")
    n_users, n_items = s.shape
    if n_users == 0 or n_items == 0:
        raise PetrecMetricError(f"scores: empty shape {tuple(s.shape)}")
    if torch.isnan(s).any():
        where = torch.nonzero(torch.isnan(s))[0].tolist()
        raise PetrecMetricError(f"scores: nan at (user, item) = {tuple(where)}")
    t_raw = targets.detach().cpu() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    t_np = np.asarray(t_raw)
    if t_np.ndim != 1 or t_np.shape[0] != n_users:
        raise PetrecMetricError(
            f"targets: expected shape ({n_users},) (one per user), got {tuple(t_np.shape)}"
        )
    if not np.issubdtype(t_np.dtype, np.integer):
        raise PetrecMetricError(f"targets: expected integer item ids, got dtype {t_np.dtype}")
    bad = np.flatnonzero((t_np < 0) | (t_np >= n_items))
    if bad.size:
        raise PetrecMetricError(
            f"targets: item id {int(t_np[bad[0]])} for user {int(bad[0])} is outside [0, {n_items})"
        )
    t = torch.as_tensor(t_np, dtype=torch.long, device=device)
    mask = None if exclude is None else _exclusion_mask(exclude, n_users, n_items, device)
    ranks = torch.empty(n_users, dtype=torch.long, device=device)
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        block = s[start:stop]
        rows = torch.arange(stop - start, device=device)
        target_score = block[rows, t[start:stop]].unsqueeze(1)
        at_least = block >= target_score
        if mask is not None:
            keep = ~mask[start:stop]
            keep[rows, t[start:stop]] = True  # the target is never excluded
            at_least &= keep
        ranks[start:stop] = at_least.sum(dim=1)
    return ranks


def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if len(ks) == 0 or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 for k in ks
    ):
        raise PetrecMetricError(f"ks: expected positive integers, got {list(ks)!r}")
    return tuple(int(k) for k in ks)


def ranking_per_user(
    scores: Any,
    targets: Any,
    ks: Sequence[int] = (10, 50),
    exclude: Any = None,
) -> dict[str, torch.Tensor]:
    """Per-user HR@K, NDCG@K and MRR@K, as float tensors on the scores' device.

    Meant for distributed evaluation: gather these per-user values across processes
    (``accelerator.gather_for_metrics``), then average; see :func:`compute_ranking` for the
    arguments and policies.

    Returns:
        ``{"hr@K", "ndcg@K", "mrr@K"}`` for every K, each a float32 tensor ``(n_users,)``.
    """
    ks = _check_ks(ks)
    ranks = target_ranks(scores, targets, exclude).to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        inside = ranks <= k
        out[f"hr@{k}"] = inside.to(torch.float32)
        out[f"ndcg@{k}"] = torch.where(inside, 1.0 / torch.log2(ranks + 1.0), 0.0).to(torch.float32)
        out[f"mrr@{k}"] = torch.where(inside, 1.0 / ranks, 0.0).to(torch.float32)
    return out


def compute_ranking(
    scores: Any,
    targets: Any,
    ks: Sequence[int] = (10, 50),
    exclude: Any = None,
) -> dict[str, float]:
    """Full-ranking HR@K, NDCG@K and MRR@K with one target per user.

    Args:
        scores: ``(n_users, n_items)`` scores over **all** items (numpy or torch, any device).
        targets: ``(n_users,)`` index of each user's held-out item.
        ks: Cut-offs; any positive integer (larger than the item count is fine).
        exclude: Optional per-user items to remove from the candidates, e.g. the user's
            history: a boolean ``(n_users, n_items)`` mask, an integer ``(n_users, h)``
            index tensor padded with -1, or one list of item ids per user. The target is
            never removed.

    Returns:
        ``{"hr@K", "ndcg@K", "mrr@K"}`` for every K, averaged over users (float64 mean).
        Ties count against the target (pessimistic; see the module docstring).
    """
    ks = _check_ks(ks)
    ranks = target_ranks(scores, targets, exclude).to("cpu", torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        inside = ranks <= k
        out[f"hr@{k}"] = float(inside.double().mean())
        out[f"ndcg@{k}"] = float(torch.where(inside, 1.0 / torch.log2(ranks + 1.0), 0.0).mean())
        out[f"mrr@{k}"] = float(torch.where(inside, 1.0 / ranks, 0.0).mean())
    return out
