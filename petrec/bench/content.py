"""The ``logreg-content`` baseline: the count features plus the item catalogue's fields, no language model.

A language-model row reads item titles and genres; the count rows read none of it. When the LM
adds nothing beyond the counts, two explanations compete: the LM fails to use the item content,
or the content holds nothing the counts lack. This row separates them by putting the content,
as plain features, beside the counts in the same table:

* the three count features of ``logreg-counts`` (history like share, smoothed item like rate,
  log item count, over the same block);
* the candidate's catalogue tokens, one-hot: each genre / category / brand value and the
  release decade (``year`` → ``1990s``);
* the user's affinity to that content: the smoothed like share of the history items that share
  a token with the candidate, and log(1 + their number).

A scikit-learn logistic regression fits them on the run's training examples. The catalogue is
the one the recipe prompts with (``PreparedData.items``), and nothing reads valid or test labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: Catalogue columns read as tokens (the structured fields :mod:`petrec.data.readers` keeps).
CONTENT_FIELDS = ("genres", "year", "category", "brand")
#: Pseudo-count pulling the content-matched history like share toward the whole history's share.
AFFINITY_PRIOR_STRENGTH = 2.0


@dataclasses.dataclass(frozen=True)
class ItemContent:
    """Each catalogue item's content tokens, as indices into one vocabulary."""

    vocab: tuple[str, ...]
    tokens: dict[str, frozenset[int]]

    @classmethod
    def from_catalogue(cls, items: Any) -> ItemContent:
        """Tokens of every item of a catalogue (a ``datasets.Dataset`` or a pandas frame).

        Raises:
            ValueError: The catalogue has none of :data:`CONTENT_FIELDS`, or no item has a value.
        """
        import pandas as pd

        df = items.to_pandas() if hasattr(items, "to_pandas") else pd.DataFrame(items)
        fields = [f for f in CONTENT_FIELDS if f in df.columns]
        if not fields:
            raise ValueError(f"the item catalogue has none of the content fields {list(CONTENT_FIELDS)} "
                             f"(its columns: {list(df.columns)})")
        names: dict[str, int] = {}
        tokens: dict[str, frozenset[int]] = {}
        for row in df[["item_id", *fields]].itertuples(index=False):
            found = {names.setdefault(t, len(names)) for f, v in zip(fields, row[1:], strict=True)
                     for t in _field_tokens(f, v)}
            tokens[str(row[0])] = frozenset(found)
        if not names:
            raise ValueError(f"no item of the catalogue has a value in {fields}")
        return cls(tuple(sorted(names, key=names.__getitem__)), tokens)

    def of(self, item: Any) -> frozenset[int]:
        """The token indices of one item (none for an item outside the catalogue)."""
        return self.tokens.get(str(item), frozenset())


def _field_tokens(field: str, value: Any) -> list[str]:
    """``genres`` / ``category`` / ``brand`` split on ``|``; ``year`` → its decade."""
    import pandas as pd

    if not isinstance(value, str) and pd.isna(value):  # None, NaN, pd.NA
        return []
    text = str(value).strip()
    if not text:
        return []
    if field == "year":
        return [f"decade:{int(text[:4]) // 10 * 10}s"] if text[:4].isdigit() else []
    return [f"{field}:{part.strip()}" for part in text.split("|") if part.strip()]


def affinity(split: Any, content: ItemContent, prior: float) -> np.ndarray:
    """The user's like share over history items sharing a token with the candidate, per example.

    Columns: the share smoothed toward the whole history's like share (the block's like rate
    for an empty history) with :data:`AFFINITY_PRIOR_STRENGTH`, and log(1 + matched items).
    """
    rows = []
    for hist, labels, item in zip(split["history_item_ids"], split["history_labels"], split["item_id"],
                                  strict=True):
        cand = content.of(item)
        share = float(np.mean(labels)) if len(labels) else prior
        matched = [lab for h, lab in zip(hist, labels, strict=True) if cand & content.of(h)]
        m = AFFINITY_PRIOR_STRENGTH
        rows.append(((sum(matched) + m * share) / (len(matched) + m), math.log1p(len(matched))))
    return np.asarray(rows, dtype=float).reshape(-1, 2)


def one_hot(split: Any, content: ItemContent) -> Any:
    """A sparse ``(n_examples, vocabulary)`` matrix of the candidates' tokens."""
    from scipy import sparse

    cols = [sorted(content.of(item)) for item in split["item_id"]]
    indptr = np.cumsum([0, *(len(c) for c in cols)])
    indices = np.fromiter((i for c in cols for i in c), dtype=np.int64, count=int(indptr[-1]))
    return sparse.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(cols), len(content.vocab)))


def fit_content_logreg(train: Any, counts: Callable[[Any, bool], np.ndarray], content: ItemContent,
                       prior: float) -> tuple[Callable[[Any], np.ndarray], int]:
    """Fit the logistic regression on a training split.

    Args:
        train: The training examples (``history_item_ids``, ``history_labels``, ``item_id``, ``label``).
        counts: (split, leave_one_out) → the ``logreg-counts`` features of its examples (the same
            block's statistics; ``leave_one_out`` for the training rows, which the block counted).
        content: The catalogue's tokens.
        prior: The block's like rate (the affinity of an empty history).

    Returns:
        (split → probability of a like, number of fitted parameters).
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def dense(split: Any, loo: bool = False) -> np.ndarray:  # the three counts, then the two affinity columns
        return np.hstack([counts(split, loo), affinity(split, content, prior)])

    def matrix(rows: np.ndarray, split: Any) -> Any:
        return sparse.hstack([sparse.csr_matrix(scaler.transform(rows)), one_hot(split, content)]).tocsr()

    train_dense = dense(train, loo=True)
    scaler = StandardScaler().fit(train_dense)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(matrix(train_dense, train), np.asarray(train["label"], dtype=float))
    n_params = train_dense.shape[1] + len(content.vocab) + 1
    return (lambda split: model.predict_proba(matrix(dense(split), split))[:, 1]), n_params
