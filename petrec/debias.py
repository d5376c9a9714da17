"""Debiased evaluation of a run: exposure statistics of the training split, per-example columns
for the evaluation splits, and the breakdowns the evaluators add to every metrics record.

How it is wired (the recipe makes one call, :func:`petrec.data.exposure.annotate_splits`)::

    training split ──ExposureStats.fit──▶ item propensities, strata, user / item counts
    valid / test splits ──ExposureStats.columns──▶ DEBIAS_COLUMNS (per example)
    BehaviourCollator ──▶ batch["ips_weight"], batch["pop_stratum"], ...
    petrec.evaluation ──gather──▶ pointwise_breakdown / ranking_breakdown ──▶ metrics.json

Metric keys added (formulas in :mod:`petrec.metrics.debias`):

* ctr: ``ips_auc``, ``snips_auc``;
* next_item: ``ips_recall@K``, ``snips_recall@K``, ``ips_ndcg@K``, ``snips_ndcg@K``;
* every task, per group of :data:`GROUPS`: ``<group>/<metric>`` (the task's plain metrics over the
  examples whose item is in the head / torso / tail stratum, or whose user / item is cold) and
  ``<group>/n_examples``.

What counts as a training interaction: every training example, except the sampled negatives of an
implicit ctr data set (those were never shown by anyone). Those negatives are drawn uniformly from
the catalogue, i.e. already under uniform exposure, so their weight is 1; telling them apart reads
the example's label, which only the evaluation (and, with ``train.ips_weighting``, the training
loss) sees: no weight or group is ever a model input.

Training with ``train.ips_weighting`` (:class:`petrec.train.TrainConfig`) weights each training
example's loss by the same clipped weight, self-normalised per batch (:func:`weighted_loss`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from petrec.metrics import MetricWarning, compute_rating, roc_auc
from petrec.metrics import debias as D
from petrec.metrics.exposure import LogisticExposure, genre_membership

#: Per-example columns :func:`petrec.data.exposure.annotate_splits` adds and the collator carries into batches.
DEBIAS_COLUMNS = ("ips_weight", "pop_stratum", "cold_user", "cold_item")
#: Breakdown groups, in the order their keys appear: the popularity strata, then cold users / items.
GROUPS = (*D.STRATA, "cold_user", "cold_item")


#: ``debias.propensity`` values.
PROPENSITY_MODELS = ("popularity", "logistic")


@dataclass
class DebiasConfig:
    """Propensity model, weight clipping, strata and cold-start thresholds of debiased evaluation."""

    enabled: bool = True
    """Add the ``ips_*`` / ``snips_*`` metrics and the group breakdowns to the run's metrics."""
    propensity: str = "popularity"
    """Propensity model. ``popularity``: an item's exposure ∝ (training count + smoothing)^eta, the
    same for every user. ``logistic``: :class:`petrec.metrics.exposure.LogisticExposure`, fitted on
    the training split, with the popularity exponent fitted instead of ``eta`` and the genre affinity
    of each example's history to its item (the catalogue's ``genres``, else ``category``)."""
    exposure_negatives: int = 4
    """``logistic`` only: uniform catalogue controls per training interaction in the fit."""
    eta: float = 1.0
    """Popularity exponent of the propensity model: an item's exposure ∝ (training count + smoothing)^eta."""
    smoothing: float = 1.0
    """Pseudo-count added to every item's training count (items unseen in training stay finite)."""
    clip: float = 100.0
    """Largest importance weight (bounds the variance rare items add)."""
    head_share: float = 0.2
    """Share of training interactions held by the head items (the most popular ones)."""
    torso_share: float = 0.3
    """Share held by the torso items, next after the head; the tail holds the rest."""
    cold_user_max: int = 5
    """A user with at most this many training interactions is cold."""
    cold_item_max: int = 5
    """An item with at most this many training interactions is cold."""

    def __post_init__(self) -> None:
        if self.propensity not in PROPENSITY_MODELS:
            raise ValueError(f"debias.propensity must be one of {', '.join(PROPENSITY_MODELS)}, got {self.propensity!r}")
        if self.exposure_negatives < 1:
            raise ValueError(f"debias.exposure_negatives must be ≥ 1, got {self.exposure_negatives!r}")
        if not self.eta >= 0:
            raise ValueError(f"debias.eta must be ≥ 0, got {self.eta!r}")
        if not self.smoothing > 0:
            raise ValueError(f"debias.smoothing must be > 0, got {self.smoothing!r}")
        if not self.clip > 0:
            raise ValueError(f"debias.clip must be > 0, got {self.clip!r}")
        if not (0 < self.head_share < 1 and self.torso_share >= 0 and self.head_share + self.torso_share <= 1):
            raise ValueError(f"debias.head_share={self.head_share!r} and debias.torso_share={self.torso_share!r}: "
                             "expected 0 < head_share < 1, torso_share ≥ 0 and a sum ≤ 1")
        for name in ("cold_user_max", "cold_item_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"debias.{name} must be ≥ 0, got {getattr(self, name)!r}")


@dataclass
class ExposureStats:
    """Training interactions per catalogue item and per user, and what follows from them.

    Attributes:
        item_ids: The catalogue, in item-index order.
        item_counts: Training interactions of each catalogue item.
        user_counts: user id → training interactions.
        weights: Importance weight of each catalogue item under the popularity propensities
            (:func:`petrec.metrics.debias.ips_weights`); the examples' weights when ``exposure`` is None.
        strata: Popularity stratum code of each catalogue item (indexes ``STRATA``).
        cfg: The settings they were computed with.
        implicit_ctr: The examples' label-0 rows are sampled negatives (weight 1, see the module doc).
        exposure: The fitted logistic exposure model (``debias.propensity: logistic``), else None.
    """

    item_ids: list[str]
    item_counts: np.ndarray
    user_counts: dict[str, int]
    weights: np.ndarray
    strata: np.ndarray
    cfg: DebiasConfig
    implicit_ctr: bool = False
    exposure: LogisticExposure | None = None

    @classmethod
    def fit(cls, train: Any, item_ids: Any, cfg: DebiasConfig, *, implicit_ctr: bool = False,
            item_genres: Sequence[Any] | None = None) -> ExposureStats:
        """Count the training split's interactions per item and per user (and fit the exposure model).

        Args:
            train: Training examples (a ``datasets.Dataset`` or column mapping) with ``user_id``,
                ``item_id`` (and ``label`` when ``implicit_ctr``; ``history_item_ids`` for the
                ``logistic`` propensity).
            item_ids: Every catalogue item id (the propensities are normalised over them).
            cfg: Propensity, strata and threshold settings.
            implicit_ctr: The examples include sampled negatives (label 0) that nobody was shown:
                count the positives only.
            item_genres: ``|``-joined genres of every catalogue item, in ``item_ids`` order
                (``logistic`` only; None: its popularity feature alone).

        Raises:
            KeyError: A training example's item (or history item) is not in the catalogue, or the
                ``logistic`` propensity finds no ``history_item_ids`` column (names it).
        """
        users = list(train["user_id"])
        items = list(train["item_id"])
        histories = _histories(train) if cfg.propensity == "logistic" else []
        if implicit_ctr:
            shown = [int(v) == 1 for v in train["label"]]
            users = [u for u, keep in zip(users, shown, strict=True) if keep]
            items = [i for i, keep in zip(items, shown, strict=True) if keep]
            if histories:
                histories = [h for h, keep in zip(histories, shown, strict=True) if keep]
        index = {str(i): n for n, i in enumerate(item_ids)}
        codes = _codes(items, index, "training item")
        counts = np.bincount(codes, minlength=len(index)).astype(np.float64)
        user_counts: dict[str, int] = {}
        for user in users:
            user_counts[str(user)] = user_counts.get(str(user), 0) + 1
        exposure = None
        if cfg.propensity == "logistic":
            member = None if item_genres is None else genre_membership(item_genres)
            exposure = LogisticExposure.fit(counts, [_codes(h, index, "training history item") for h in histories],
                                            codes, member=member, negatives=cfg.exposure_negatives)
        propensities = D.popularity_propensities(counts, eta=cfg.eta, smoothing=cfg.smoothing)
        return cls(list(index), counts, user_counts, D.ips_weights(propensities, clip=cfg.clip),
                   D.popularity_strata(counts, head_share=cfg.head_share, torso_share=cfg.torso_share), cfg,
                   implicit_ctr, exposure)

    def columns(self, rows: Any) -> dict[str, list[Any]]:
        """The :data:`DEBIAS_COLUMNS` of examples with ``user_id`` and ``item_id`` (and ``label``
        for an implicit ctr data set, whose sampled negatives get weight 1).

        Raises:
            KeyError: An example's item is not in the catalogue (names it).
        """
        index = {i: n for n, i in enumerate(self.item_ids)}
        out: dict[str, list[Any]] = {name: [] for name in DEBIAS_COLUMNS}
        sampled = [int(v) == 0 for v in rows["label"]] if self.implicit_ctr else [False] * len(rows["item_id"])
        codes = _codes(rows["item_id"], index, "example item")
        if self.exposure is None:
            weights = self.weights[codes]
        else:
            histories = [_codes(h, index, "example history item") for h in _histories(rows)]
            weights = self.exposure.weights(histories, codes, clip=self.cfg.clip)
        for user, n, w, negative in zip(rows["user_id"], codes, weights, sampled, strict=True):
            out["ips_weight"].append(1.0 if negative else float(w))
            out["pop_stratum"].append(int(self.strata[n]))
            out["cold_user"].append(int(self.user_counts.get(str(user), 0) <= self.cfg.cold_user_max))
            out["cold_item"].append(int(self.item_counts[n] <= self.cfg.cold_item_max))
        return out


def _codes(ids: Iterable[Any], index: Mapping[str, int], what: str) -> np.ndarray:
    """Catalogue indices of item ids; KeyError naming the first id outside the catalogue."""
    try:
        return np.fromiter((index[str(i)] for i in ids), dtype=np.int64)
    except KeyError as err:
        raise KeyError(f"{what} {err.args[0]!r} is not in the item catalogue") from None


def _histories(rows: Any) -> list[Any]:
    """The ``history_item_ids`` column, or a KeyError saying the logistic propensity needs it."""
    try:
        return list(rows["history_item_ids"])
    except (KeyError, ValueError):
        raise KeyError("debias.propensity 'logistic' reads each example's 'history_item_ids' column, "
                       "and these examples have none") from None


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, task: str) -> torch.Tensor:
    """Inverse-propensity-weighted task loss, self-normalised over the batch.

    ``sum_k w_k l_k / sum_k w_k`` with ``l_k`` the example's binary cross-entropy on its logit
    (``ctr``) or squared error (``rating``): the weighted counterpart of the model's own mean loss,
    at the same scale, so learning rates carry over.

    Raises:
        ValueError: Another task (next-item's in-batch softmax has no per-example weighting here).
    """
    target = labels.reshape(-1).to(logits.dtype)
    logits = logits.reshape(-1)
    if task == "ctr":
        per_example = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif task == "rating":
        per_example = (logits - target) ** 2
    else:
        raise ValueError(f"train.ips_weighting is for tasks ctr and rating, not {task!r}")
    w = weights.reshape(-1).to(per_example.dtype)
    return (w * per_example).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


# ---------------------------------------------------------------------------- breakdowns


def _groups(extras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean example mask of every group of :data:`GROUPS`."""
    strata = np.asarray(extras["pop_stratum"])
    masks = {name: strata == code for code, name in enumerate(D.STRATA)}
    masks["cold_user"] = np.asarray(extras["cold_user"]).astype(bool)
    masks["cold_item"] = np.asarray(extras["cold_item"]).astype(bool)
    return masks


def _by_group(extras: Mapping[str, np.ndarray], compute: Callable[[np.ndarray], dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for group, mask in _groups(extras).items():
        out[f"{group}/n_examples"] = float(mask.sum())
        if mask.any():
            with warnings.catch_warnings():  # a single-class group's AUC is nan: the record says so
                warnings.simplefilter("ignore", MetricWarning)
                out.update({f"{group}/{k}": v for k, v in compute(mask).items()})
    return out


def pointwise_breakdown(task: str, labels: np.ndarray, preds: np.ndarray,
                        extras: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Debiased metrics and group breakdowns of a ctr (logits) or rating evaluation.

    Args:
        task: ``ctr`` or ``rating``.
        labels: 0/1 labels (ctr) or ratings, one per example.
        preds: Logits (ctr) or predicted ratings.
        extras: The gathered :data:`DEBIAS_COLUMNS`, one value per example.

    Returns:
        ``ips_auc`` and ``snips_auc`` (ctr), then ``<group>/<metric>`` and ``<group>/n_examples``.
    """
    if task == "ctr":
        y = labels.astype(np.int64)
        out = D.debiased_ctr(y, preds, extras["ips_weight"])
        return {**out, **_by_group(extras, lambda m: {"auc": roc_auc(y[m], preds[m])})}
    return _by_group(extras, lambda m: compute_rating(labels[m], preds[m]))


def ranking_breakdown(per_user: Mapping[str, np.ndarray], extras: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Debiased Recall@K / NDCG@K and group means of per-user next-item metrics.

    Args:
        per_user: ``{"hr@K", "ndcg@K", "mrr@K"}`` values, one per user (target).
        extras: The gathered :data:`DEBIAS_COLUMNS` of each user's example.
    """
    out = D.debiased_ranking(per_user, extras["ips_weight"])
    return {**out, **_by_group(extras, lambda m: {k: float(np.mean(v[m])) for k, v in per_user.items()})}
