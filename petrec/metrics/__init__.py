"""Recommendation metrics: fast functions for the training loop + offline evaluate modules.

Functions (numpy / torch, no evaluate overhead)::

    compute_ctr(labels, scores, from_logits=False)   -> {"auc", "logloss", "accuracy", "f1"}
    compute_rating(y, yhat)                           -> {"rmse", "mae"}
    compute_ranking(scores, targets, ks=(10, 50), exclude=None)
                                                      -> {"hr@K", "ndcg@K", "mrr@K"}

Debiased (inverse-propensity) estimates and popularity strata, in :mod:`petrec.metrics.debias`::

    debias.debiased_ctr(labels, scores, weights)      -> {"ips_auc", "snips_auc"}
    debias.debiased_ranking(per_user, weights)        -> {"ips_recall@K", "snips_recall@K", "ips_ndcg@K", ...}

evaluate modules (``add_batch`` / ``compute``, no network)::

    metric = petrec.metrics.load("auc")

Policies for ties, single-class AUC, excluded items and K > n_items are documented in
:mod:`petrec.metrics.functional` (CTR, rating) and
:mod:`petrec.metrics.ranking`.
"""

from __future__ import annotations

from petrec.metrics.functional import (
    MetricWarning,
    PetrecMetricError,
    accuracy,
    compute_ctr,
    compute_rating,
    f1,
    log_loss,
    mae,
    rmse,
    roc_auc,
)
from petrec.metrics.modules import METRICS, load
from petrec.metrics.ranking import compute_ranking, ranking_per_user, target_ranks

__all__ = [
    "METRICS",
    "MetricWarning",
    "PetrecMetricError",
    "accuracy",
    "compute_ctr",
    "compute_ranking",
    "compute_rating",
    "f1",
    "load",
    "log_loss",
    "mae",
    "ranking_per_user",
    "rmse",
    "roc_auc",
    "target_ranks",
]
