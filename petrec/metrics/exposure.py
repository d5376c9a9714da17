"""A logistic exposure model: propensities that depend on the user's taste, not only on popularity.

:func:`petrec.metrics.debias.popularity_propensities` assumes the logging recommender showed each
item in proportion to ``(count + s)^eta`` for every user alike. Real recommenders also lean towards
what each user already consumes, and then popularity weights stay biased (the synthetic exposure
world with ``exposure_taste > 0`` shows it: benchmarks/results/debias/REPORT.md). This model
estimates the share of a user's impressions each catalogue item gets from two features of the pair
(item ``i``, user history ``h``):

* ``log(1 + c_i)``, the item's training interactions (its coefficient is a fitted ``eta``);
* the genre affinity ``sum_g share_h(g) * member_i(g)``: how much of the history lies in the
  item's genres (``member_i`` is the item's genre membership, normalised to sum 1; ``share_h`` the
  mean of the history items' memberships). Without genres the model is the popularity one with
  ``eta`` fitted instead of assumed.

Fitting is case-control logistic regression: every training interaction (item shown after its
history) is a positive, ``negatives`` items drawn uniformly from the catalogue with the same history
are the controls. With uniform controls the fitted logit is ``log p(i | h) + const(h)``, so the
propensity, an item's share of the impressions given the history, is the softmax of the logits over
the catalogue (King & Zeng, "Logistic regression in rare events data", 2001, on case-control
sampling). Weights follow as in :func:`petrec.metrics.debias.ips_weights`: ``min((1/M) / p, clip)``.

scikit-learn fits the regression (two features, L2); the features and the softmax over the
catalogue are numpy here, since no library offers an exposure model for recommendation logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from petrec.metrics.functional import PetrecMetricError, _to_numpy_1d

__all__ = ["LogisticExposure", "genre_membership"]

#: At most this many training interactions enter the fit (a seeded sample above it): two
#: coefficients need far fewer, and the fit stays seconds on ML-1M-sized blocks.
MAX_FIT_POSITIVES = 200_000
#: Catalogue logits are computed for this many examples at a time (rows x catalogue floats).
_CHUNK = 1024


def genre_membership(genres: Sequence[Any], *, sep: str = "|") -> np.ndarray | None:
    """Each item's genre membership, normalised to sum 1 (zero rows for items without genres).

    Args:
        genres: One string per catalogue item, genres joined by ``sep`` (empty / None: none).
        sep: The separator.

    Returns:
        ``(n_items, n_genres)`` float64, or None when no item has a genre.
    """
    names = [[g.strip() for g in str(v).split(sep) if g.strip()] if v is not None and v == v else [] for v in genres]
    vocab = {g: n for n, g in enumerate(sorted({g for row in names for g in row}))}
    if not vocab:
        return None
    member = np.zeros((len(names), len(vocab)))
    for r, row in enumerate(names):
        for g in row:
            member[r, vocab[g]] = 1.0
    sums = member.sum(axis=1, keepdims=True)
    return np.divide(member, sums, out=np.zeros_like(member), where=sums > 0)


@dataclass(frozen=True)
class LogisticExposure:
    """A fitted exposure model (see the module docstring).

    Attributes:
        coef: Coefficients of ``(log popularity, genre affinity)``; the affinity one is 0 without genres.
        log_pop: ``log(1 + c_i)`` of every catalogue item.
        member: Normalised genre membership ``(n_items, n_genres)``, or None.
    """

    coef: np.ndarray
    log_pop: np.ndarray
    member: np.ndarray | None

    @classmethod
    def fit(cls, counts: Any, histories: Sequence[Sequence[int]], items: Any, *, member: np.ndarray | None = None,
            negatives: int = 4, l2: float = 1.0, seed: int = 0) -> LogisticExposure:
        """Fit on training interactions: ``items[k]`` was shown after ``histories[k]``.

        Args:
            counts: Training interactions per catalogue item, shape ``(n_items,)``.
            histories: Each interaction's history as catalogue indices (may be empty).
            items: Each interaction's item as a catalogue index.
            member: :func:`genre_membership` of the catalogue, or None (popularity feature only).
            negatives: Uniform controls per interaction (≥ 1).
            l2: Inverse of scikit-learn's ``C`` (> 0).
            seed: Seed of the control draw and of the sample above :data:`MAX_FIT_POSITIVES`.

        Raises:
            PetrecMetricError: Mismatched lengths, an index outside the catalogue, no interaction,
                or a bad setting.
        """
        from sklearn.linear_model import LogisticRegression

        log_pop = np.log1p(_to_numpy_1d(counts, "counts"))
        n_items = log_pop.size
        pos = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(histories) != pos.size:
            raise PetrecMetricError(f"histories ({len(histories)}) and items ({pos.size}) differ in length")
        if pos.size == 0:
            raise PetrecMetricError("no training interaction to fit the exposure model on")
        if negatives < 1 or not l2 > 0:
            raise PetrecMetricError(f"negatives must be ≥ 1 and l2 > 0, got {negatives!r} and {l2!r}")
        if member is not None and member.shape[0] != n_items:
            raise PetrecMetricError(f"member has {member.shape[0]} rows for {n_items} catalogue items")
        _check_indices(pos, n_items, "items")
        rng = np.random.default_rng(seed)
        rows = np.arange(pos.size)
        if pos.size > MAX_FIT_POSITIVES:
            rows = np.sort(rng.choice(pos.size, MAX_FIT_POSITIVES, replace=False))
        model = cls(np.zeros(2), log_pop, member)
        share = model._history_share([histories[r] for r in rows])
        controls = rng.integers(0, n_items, size=(rows.size, negatives))
        cand = np.concatenate([pos[rows, None], controls], axis=1)
        feats = np.stack([log_pop[cand], model._affinity_at(share, cand)], axis=-1).reshape(-1, 2)
        labels = np.zeros(cand.shape, dtype=np.int64)
        labels[:, 0] = 1
        used = [0, 1] if member is not None else [0]
        reg = LogisticRegression(C=1.0 / l2, max_iter=1000).fit(feats[:, used], labels.reshape(-1))
        coef = np.zeros(2)
        coef[used] = reg.coef_[0]
        return cls(coef, log_pop, member)

    def _history_share(self, histories: Sequence[Sequence[int]]) -> np.ndarray | None:
        """Mean genre membership of each history's items ``(n, n_genres)`` (zeros when empty)."""
        if self.member is None:
            return None
        out = np.zeros((len(histories), self.member.shape[1]))
        for r, hist in enumerate(histories):
            idx = np.asarray(hist, dtype=np.int64)
            if idx.size:
                _check_indices(idx, self.log_pop.size, "history")
                out[r] = self.member[idx].mean(axis=0)
        return out

    def _affinity_at(self, share: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
        """Genre affinity of each row's candidate items ``cand`` (same shape; zeros without genres)."""
        if share is None:
            return np.zeros(cand.shape)
        return np.einsum("rg,rkg->rk", share, self.member[cand])

    def propensities(self, histories: Sequence[Sequence[int]], items: Any) -> np.ndarray:
        """Each example's item share of the impressions given its history (softmax over the catalogue).

        Args:
            histories: Each example's history as catalogue indices.
            items: Each example's item as a catalogue index.

        Returns:
            float64 propensities in (0, 1), shape ``(n,)``.
        """
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(histories) != idx.size:
            raise PetrecMetricError(f"histories ({len(histories)}) and items ({idx.size}) differ in length")
        _check_indices(idx, self.log_pop.size, "items")
        out = np.empty(idx.size)
        for start in range(0, idx.size, _CHUNK):
            stop = min(start + _CHUNK, idx.size)
            share = self._history_share(histories[start:stop])
            logits = np.broadcast_to(self.coef[0] * self.log_pop, (stop - start, self.log_pop.size))
            if share is not None:
                logits = logits + self.coef[1] * (share @ self.member.T)
            logits = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            rows = np.arange(stop - start)
            out[start:stop] = probs[rows, idx[start:stop]] / probs.sum(axis=1)
        return out

    def weights(self, histories: Sequence[Sequence[int]], items: Any, *, clip: float | None = 100.0) -> np.ndarray:
        """Importance weights ``min((1/M) / p, clip)`` of each example (``M`` the catalogue size)."""
        w = 1.0 / (self.log_pop.size * self.propensities(histories, items))
        return w if clip is None else np.minimum(w, clip)


def _check_indices(idx: np.ndarray, n_items: int, name: str) -> None:
    """Raise naming the first index outside ``[0, n_items)``."""
    bad = np.flatnonzero((idx < 0) | (idx >= n_items))
    if bad.size:
        raise PetrecMetricError(f"{name}: index {int(idx[bad[0]])} at position {int(bad[0])} is outside the "
                                f"catalogue of {n_items} items")
