"""Debiased (inverse-propensity) metrics and popularity strata for logged feedback.

Logged test sets hold only what an earlier recommender chose to show, and it showed popular items
far more often, so a plain metric over the log mostly measures the head of the catalogue. The
estimators here reweight each logged example by how much more (or less) often its item would
appear if every item were shown equally often.

Propensity model (fit on the **training split only**): an item's share of logged impressions,

    p_i = (c_i + s)^eta / sum_j (c_j + s)^eta

with ``c_i`` the item's training interactions, ``s`` a smoothing pseudo-count (so an item unseen in
training has a finite propensity) and ``eta`` how strongly exposure follows popularity (1: in
proportion; 0: uniform, which turns every estimator below back into the plain metric). The
importance weight of an example on item ``i`` is the uniform-exposure share over the logged share,
``w_i = min((1 / M) / p_i, clip)`` with ``M`` the number of items, clipped to bound the variance
that rare items would add. Under the logging distribution the unclipped weights average 1.

Estimators, for examples ``k = 1..n`` with weights ``w_k``:

* pointwise mean of a per-example value ``m_k`` (per-user Recall@K, NDCG@K):
  ``IPS = (1/n) sum_k w_k m_k`` and ``SNIPS = sum_k w_k m_k / sum_k w_k`` (self-normalised: lower
  variance, bounded like the metric, slightly biased);
* AUC over positives ``P`` and negatives ``N``, with ``K(a, b) = 1[a > b] + 0.5 * 1[a = b]``:
  ``SNIPS-AUC = sum_{i in P, j in N} w_i w_j K(s_i, s_j) / (sum_P w_i * sum_N w_j)`` (the weighted
  Mann-Whitney statistic; scikit-learn's ``roc_auc_score(sample_weight=w)`` computes the same) and
  ``IPS-AUC = sum_{i in P, j in N} w_i w_j K(s_i, s_j) / (|P| * |N|)`` (the pair weights divided by
  their expected sum under the logging distribution instead of their realised one; it is not
  bounded by 1, prefer SNIPS).

With one held-out target per user (the next-item protocol) Recall@K equals HR@K, so
``ips_recall@K`` / ``snips_recall@K`` are the debiased ``hr@K``.

Hugging Face ``evaluate`` has no inverse-propensity metrics (its ``roc_auc`` takes sample weights
but offers no propensity model, IPS normalisation or clipping), so these are plain numpy.

Popularity strata: items sorted by training interactions (most first, ties by item index); **head**
is the most popular items that together hold the first ``head_share`` (default 20%) of all
training interactions, the item that crosses the boundary included; **torso** the next items up to
``head_share + torso_share`` (default 50%); **tail** the rest, including every item never seen in
training.

Reference: Yang et al., "Unbiased offline recommender evaluation for missing-not-at-random implicit
feedback", RecSys 2018 (https://doi.org/10.1145/3240323.3240355); Schnabel et al.,
"Recommendations as treatments", ICML 2016 (https://arxiv.org/abs/1602.05352).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from petrec.metrics.functional import PetrecMetricError, _binary_labels, _same_length, _to_numpy_1d

__all__ = [
    "STRATA",
    "debiased_ctr",
    "debiased_ranking",
    "ips_auc",
    "ips_mean",
    "ips_weights",
    "popularity_propensities",
    "popularity_strata",
    "snips_auc",
    "snips_mean",
]

#: Popularity stratum names, in the order of the codes :func:`popularity_strata` returns.
STRATA = ("head", "torso", "tail")


# ---------------------------------------------------------------------------- propensities


def popularity_propensities(counts: Any, *, eta: float = 1.0, smoothing: float = 1.0) -> np.ndarray:
    """Each item's share of logged impressions, ``(c_i + smoothing)^eta`` normalised to sum 1.

    Args:
        counts: Training interactions per item, shape ``(n_items,)``, every item of the
            catalogue (zeros for items never seen in training).
        eta: Popularity exponent, ``>= 0`` (0 = uniform exposure).
        smoothing: Pseudo-count added to every item, ``>= 0``; with 0, an item without training
            interactions gets propensity 0 (and only a clip keeps its weight finite).

    Returns:
        float64 propensities, shape ``(n_items,)``, summing to 1.
    """
    c = _to_numpy_1d(counts, "counts")
    if (c < 0).any():
        bad = int(np.flatnonzero(c < 0)[0])
        raise PetrecMetricError(f"counts: negative count {float(c[bad])!r} at item {bad}")
    if not (np.isfinite(eta) and eta >= 0):
        raise PetrecMetricError(f"eta: expected a finite exponent >= 0, got {eta!r}")
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise PetrecMetricError(f"smoothing: expected a pseudo-count >= 0, got {smoothing!r}")
    mass = (c + smoothing) ** eta if eta > 0 else np.ones_like(c)
    total = mass.sum()
    if total <= 0:
        raise PetrecMetricError("counts: every item has 0 interactions and smoothing is 0")
    return mass / total


def ips_weights(propensities: Any, *, clip: float | None = 100.0) -> np.ndarray:
    """Importance weights ``min((1 / M) / p_i, clip)`` of uniform exposure over the logged one.

    Args:
        propensities: The whole catalogue's propensities, from :func:`popularity_propensities`
            (``M`` is their number). Index the returned weights by each example's item.
        clip: Largest weight (> 0); None = no clipping (then every propensity must be > 0).

    Returns:
        float64 weights, same shape as ``propensities``.
    """
    p = _to_numpy_1d(propensities, "propensities")
    if (p < 0).any() or (p > 1).any():
        bad = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise PetrecMetricError(f"propensities: {float(p[bad])!r} at position {bad} is not in [0, 1]")
    if clip is not None and not clip > 0:
        raise PetrecMetricError(f"clip: expected a weight > 0 or None, got {clip!r}")
    if clip is None and (p == 0).any():
        bad = int(np.flatnonzero(p == 0)[0])
        raise PetrecMetricError(f"propensities: 0 at position {bad} gives an infinite weight; set a clip")
    with np.errstate(divide="ignore"):
        w = 1.0 / (p.size * p)
    return w if clip is None else np.minimum(w, clip)


def popularity_strata(counts: Any, *, head_share: float = 0.2, torso_share: float = 0.3) -> np.ndarray:
    """Head (0) / torso (1) / tail (2) code of every item by its training interactions.

    See the module docstring for the rule.

    Args:
        counts: Training interactions per item, shape ``(n_items,)``.
        head_share: Share of all training interactions the head items hold, in (0, 1).
        torso_share: Share the torso items hold next, ``head_share + torso_share <= 1``.

    Returns:
        int8 codes, shape ``(n_items,)``, indexing :data:`STRATA`.
    """
    c = _to_numpy_1d(counts, "counts")
    if not (0 < head_share < 1 and torso_share >= 0 and head_share + torso_share <= 1):
        raise PetrecMetricError(
            f"head_share={head_share!r}, torso_share={torso_share!r}: expected 0 < head_share < 1, "
            "torso_share >= 0 and head_share + torso_share <= 1"
        )
    codes = np.full(c.size, 2, dtype=np.int8)
    total = c.sum()
    if total <= 0:
        return codes
    order = np.argsort(-c, kind="stable")
    before = (np.cumsum(c[order]) - c[order]) / total  # share held by more popular items
    seen = c[order] > 0
    codes[order[seen & (before < head_share + torso_share)]] = 1
    codes[order[seen & (before < head_share)]] = 0
    return codes


# ---------------------------------------------------------------------------- estimators


def _weights_for(values: np.ndarray, weights: Any) -> np.ndarray:
    w = _to_numpy_1d(weights, "weights")
    _same_length(values, w, "values", "weights")
    if (w < 0).any():
        bad = int(np.flatnonzero(w < 0)[0])
        raise PetrecMetricError(f"weights: negative weight {float(w[bad])!r} at position {bad}")
    return w


def ips_mean(values: Any, weights: Any) -> float:
    """IPS estimate ``(1/n) sum_k w_k m_k`` of the mean of ``values`` under uniform exposure."""
    m = _to_numpy_1d(values, "values")
    return float((_weights_for(m, weights) * m).mean())


def snips_mean(values: Any, weights: Any) -> float:
    """SNIPS estimate ``sum_k w_k m_k / sum_k w_k`` (nan when every weight is 0)."""
    m = _to_numpy_1d(values, "values")
    w = _weights_for(m, weights)
    total = w.sum()
    return float((w * m).sum() / total) if total > 0 else float("nan")


def _weighted_pairs(labels: Any, scores: Any, weights: Any) -> tuple[float, float, float, int, int]:
    """``(sum_{P x N} w_i w_j K(s_i, s_j), sum_P w, sum_N w, |P|, |N|)`` in O(n log n)."""
    y = _binary_labels(labels)
    s = _to_numpy_1d(scores, "scores")
    _same_length(y, s, "labels", "scores")
    w = _weights_for(y, weights)
    uniq, inv = np.unique(s, return_inverse=True)
    neg_at = np.bincount(inv, weights=w * (1.0 - y), minlength=uniq.size)
    neg_below = np.cumsum(neg_at) - neg_at
    pos = y == 1.0
    pairs = float((w[pos] * (neg_below[inv[pos]] + 0.5 * neg_at[inv[pos]])).sum())
    n_pos = int(pos.sum())
    return pairs, float(w[pos].sum()), float(w[~pos].sum()), n_pos, int(y.size - n_pos)


def snips_auc(labels: Any, scores: Any, weights: Any) -> float:
    """Self-normalised IPS AUC (formula in the module docstring); nan without both classes' weight."""
    return debiased_ctr(labels, scores, weights)["snips_auc"]


def ips_auc(labels: Any, scores: Any, weights: Any) -> float:
    """IPS AUC (formula in the module docstring; not bounded by 1); nan with a single class."""
    return debiased_ctr(labels, scores, weights)["ips_auc"]


def debiased_ctr(labels: Any, scores: Any, weights: Any) -> dict[str, float]:
    """``{"ips_auc", "snips_auc"}`` of click / like scores with per-example importance weights.

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        scores: Any monotone score (logits or probabilities).
        weights: Per-example importance weights (:func:`ips_weights` of the example's item).
    """
    pairs, w_pos, w_neg, n_pos, n_neg = _weighted_pairs(labels, scores, weights)
    return {
        "ips_auc": pairs / (n_pos * n_neg) if n_pos and n_neg else float("nan"),
        "snips_auc": pairs / (w_pos * w_neg) if w_pos > 0 and w_neg > 0 else float("nan"),
    }


def debiased_ranking(per_user: Mapping[str, Any], weights: Any) -> dict[str, float]:
    """IPS and SNIPS Recall@K and NDCG@K from per-user values with one target each.

    Args:
        per_user: ``{"hr@K": ..., "ndcg@K": ...}`` per-user values as
            :func:`petrec.metrics.ranking_per_user` returns them (other keys are ignored).
        weights: Importance weight of each user's target item.

    Returns:
        ``ips_recall@K``, ``snips_recall@K``, ``ips_ndcg@K`` and ``snips_ndcg@K`` for every K
        present (``hr@K`` becomes ``recall@K``: with one target they are equal).
    """
    out: dict[str, float] = {}
    for name, values in per_user.items():
        base, _, k = name.partition("@")
        if base not in ("hr", "ndcg"):
            continue
        label = f"{'recall' if base == 'hr' else base}@{k}"
        m = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.float64)
        out[f"ips_{label}"] = ips_mean(m, weights)
        out[f"snips_{label}"] = snips_mean(m, weights)
    return out
