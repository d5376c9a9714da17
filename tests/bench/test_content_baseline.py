"""The logreg-content baseline: catalogue tokens, the affinity feature, errors, and that content helps
where the labels follow it (the synthetic world's genre taste)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from petrec.bench.baselines import BaselineError, ItemStats, _logreg_content, run_baseline
from petrec.bench.content import AFFINITY_PRIOR_STRENGTH, ItemContent, affinity, one_hot

CATALOGUE = pd.DataFrame({
    "item_id": ["a", "b", "c", "d"],
    "title": ["A", "B", "C", "D"],
    "genres": ["Drama|Comedy", "Drama", "Horror", ""],
    "year": ["1994", "2001", None, "19xx"],
}).astype({"year": "string"})  # a missing year as pd.NA


def test_catalogue_tokens_by_hand() -> None:
    content = ItemContent.from_catalogue(CATALOGUE)
    names = {item: {content.vocab[i] for i in content.of(item)} for item in "abcd"}
    assert names == {"a": {"genres:Drama", "genres:Comedy", "decade:1990s"},
                     "b": {"genres:Drama", "decade:2000s"},
                     "c": {"genres:Horror"},
                     "d": set()}  # an empty genre and an unreadable year give no token
    assert content.of("not in the catalogue") == frozenset()
    x = one_hot({"item_id": ["a", "d", "zz"]}, content).toarray()
    assert x.shape == (3, len(content.vocab)) and x.sum(axis=1).tolist() == [3, 0, 0]


def test_affinity_by_hand() -> None:
    content = ItemContent.from_catalogue(CATALOGUE)
    split = {"history_item_ids": [["b", "c", "a"], []], "history_labels": [[1, 0, 0], []], "item_id": ["a", "c"]}
    x = affinity(split, content, prior=0.6)
    m = AFFINITY_PRIOR_STRENGTH
    # Candidate a shares Drama with b (liked) and with a itself (disliked); c (Horror) does not match.
    np.testing.assert_allclose(x[0], [(1 + m * (1 / 3)) / (2 + m), math.log(3)])
    np.testing.assert_allclose(x[1], [0.6, 0.0])  # empty history → the block's like rate, nothing matched


def test_a_catalogue_without_content_fields_is_refused() -> None:
    stats = ItemStats.from_split(["a", "b"], [1, 0])
    train = {"history_item_ids": [["a"], ["b"]], "history_labels": [[1], [0]], "item_id": ["a", "b"], "label": [1, 0]}
    with pytest.raises(BaselineError, match=r"logreg-content: the item catalogue has none of the content fields "
                                            r"\['genres', 'year', 'category', 'brand'\] \(its columns: \['item_id', 'title'\]\)"):
        _logreg_content(train, stats, CATALOGUE[["item_id", "title"]])
    with pytest.raises(BaselineError, match="needs both classes"):
        _logreg_content({**train, "label": [1, 1]}, stats, CATALOGUE)


@pytest.mark.parametrize("protocol", ["tallrec", "temporal"])
def test_content_beats_counts_where_labels_follow_genre_taste(protocol: str) -> None:
    # The synthetic world's users like items by genre taste, which item counts cannot see.
    data = {"dataset": "synthetic", "task": "ctr", "protocol": protocol, "synthetic_users": 120,
            "synthetic_items": 80, "few_shot_k": 256 if protocol == "tallrec" else None, "seed": 1}
    counts = run_baseline("logreg-counts", {"data": data})
    content = run_baseline("logreg-content", {"data": data})
    assert content["test"]["auc"] > counts["test"]["auc"] + 0.05
    assert content["trainable_params"] > counts["trainable_params"]
    assert content["item_stat_examples"] == counts["item_stat_examples"]
    assert "catalogue tokens" in content["labels"][0]


def test_logreg_content_fits_on_the_leave_one_out_counts() -> None:
    """As logreg-counts: each item seen once with a random label; its own label left out, the item
    rate carries nothing, so the fitted model cannot rank the training rows scored with every count."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 400
    items = [f"i{k}" for k in range(n)]
    labels = rng.integers(0, 2, n).tolist()
    catalogue = pd.DataFrame({"item_id": items, "title": items, "genres": ["Drama"] * n})
    stats = ItemStats.from_split(items, labels)
    train = {"history_item_ids": [[]] * n, "history_labels": [[]] * n, "item_id": items, "label": labels}
    score, _ = _logreg_content(train, stats, catalogue)
    assert roc_auc_score(labels, score(train)) < 0.65
