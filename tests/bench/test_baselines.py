"""Statistics baselines: features, scores and errors on hand-made splits; P1 numbers on the real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from petrec.bench.baselines import (
    ITEM_PRIOR_STRENGTH,
    BaselineError,
    ItemStats,
    _logreg,
    features,
    run_baseline,
)


def test_item_stats_and_features_by_hand() -> None:
    stats = ItemStats.from_split(["a", "a", "b", "c"], [1, 0, 1, 1])
    assert stats.counts == {"a": 2, "b": 1, "c": 1} and stats.likes == {"a": 1, "b": 1, "c": 1}
    assert stats.prior == 0.75
    m = ITEM_PRIOR_STRENGTH
    assert stats.rate("a") == pytest.approx((1 + m * 0.75) / (2 + m))
    assert stats.rate("unseen") == pytest.approx(0.75)
    split = {"history_labels": [[1, 0, 1, 1], []], "item_id": ["a", "zz"]}
    x = features(split, stats)
    assert x.shape == (2, 3)
    np.testing.assert_allclose(x[0], [0.75, (1 + m * 0.75) / (2 + m), math.log(3)])
    np.testing.assert_allclose(x[1], [0.75, 0.75, 0.0])  # empty history → the block's like rate


def test_training_rows_leave_their_own_label_out_of_the_item_counts() -> None:
    stats = ItemStats.from_split(["a", "a", "b"], [1, 0, 1])
    m, prior = ITEM_PRIOR_STRENGTH, stats.prior
    train = {"history_labels": [[1], [0], []], "item_id": ["a", "a", "b"], "label": [1, 0, 1]}
    x = features(train, stats, leave_one_out=True)
    np.testing.assert_allclose(x[:, 1], [(0 + m * prior) / (1 + m), (1 + m * prior) / (1 + m), prior])
    np.testing.assert_allclose(x[:, 2], [math.log(2), math.log(2), 0.0])  # b's only example: unseen
    assert features(train, stats)[0, 1] == pytest.approx((1 + m * prior) / (2 + m))  # scoring rows: all counts


def test_logreg_counts_fits_on_the_leave_one_out_rows() -> None:
    """Each item seen once, labels random: with its own label in its rate, the training rows would
    make the rate a perfect predictor; left out, the rate says nothing and gets no weight."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 2, n).tolist()
    items = [f"i{k}" for k in range(n)]
    stats = ItemStats.from_split(items, labels)
    train = {"history_labels": [[int(v)] for v in rng.integers(0, 2, n)], "item_id": items, "label": labels}
    score, n_params = _logreg(train, stats)
    assert n_params == 4
    # Scoring the same rows with every count in: a model fitted on leaked rates would rank them
    # almost perfectly; the leave-one-out fit cannot tell them apart.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, score(features(train, stats))) < 0.65


def test_logreg_needs_both_classes() -> None:
    stats = ItemStats.from_split(["a"], [1])
    with pytest.raises(BaselineError, match="needs both classes; the 2 training examples are all label 1"):
        _logreg({"history_labels": [[1], [0]], "item_id": ["a", "a"], "label": [1, 1]}, stats)


def test_unknown_baseline_and_wrong_task() -> None:
    with pytest.raises(BaselineError, match="unknown baseline 'x'"):
        run_baseline("x", {"data": {}})
    with pytest.raises(BaselineError, match=r"needs data\.task='ctr'"):
        run_baseline("history-share", {"data": {"dataset": "synthetic", "task": "rating"}})


def test_baselines_carry_the_debiased_metrics_a_model_run_gets() -> None:
    from petrec.data import DataConfig, prepare
    from petrec.data.exposure import annotate_splits
    from petrec.debias import DebiasConfig
    from petrec.metrics import debias as D

    data = {"dataset": "synthetic", "task": "ctr", "protocol": "tallrec", "synthetic_users": 60,
            "synthetic_items": 40, "few_shot_k": 64, "seed": 1}
    out = run_baseline("item-rate", {"data": data})
    assert "_scores" not in out
    # Recompute from the item-rate scores and the recipe's own exposure columns (whole block).
    cfg = DataConfig(**data)
    prepared = prepare(cfg)
    test = annotate_splits(prepared.splits, prepared, cfg, DebiasConfig())["test"]
    block = prepare(DataConfig(**{**data, "few_shot_k": None})).splits["train"]
    stats = ItemStats.from_split(list(block["item_id"]), [int(v) for v in block["label"]])
    scores = features(test, stats)[:, 1]
    assert out["test"]["snips_auc"] == pytest.approx(D.snips_auc(test["label"], scores, test["ips_weight"]))
    assert out["test"]["tail/n_examples"] == sum(1 for s in test["pop_stratum"] if s == 2)
    plain = run_baseline("item-rate", {"data": data, "debias": {"enabled": False}})
    assert set(plain["test"]) == {"auc", "logloss", "accuracy", "f1"}
    assert plain["test"]["auc"] == out["test"]["auc"]
    prior = run_baseline("prior-features", {"data": data, "debias": {"propensity": "logistic"}})
    assert "snips_auc" in prior["test"] and "_scores" not in prior


@pytest.mark.data
def test_p1_history_share_and_logreg_on_movielens(shared_data_dir: Path) -> None:
    data = {"dataset": "ml-100k", "protocol": "tallrec", "task": "ctr", "data_dir": str(shared_data_dir),
            "few_shot_k": 256, "seed": 1}
    share = run_baseline("history-share", {"data": data})
    assert round(share["test"]["auc"], 3) == 0.726  # BENCHMARKS.md P1 no-training row
    assert share["trainable_params"] == 0 and share["item_stat_examples"] == 8000
    lr = run_baseline("logreg-counts", {"data": data})
    assert lr["train_examples"] == 256 and lr["trainable_params"] == 4
    assert 0.70 < lr["test"]["auc"] < 0.80


def test_prior_features_is_the_recipes_warm_start_scored_alone() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from petrec.data import DataConfig, prepare
    from petrec.data.features import BehaviourStats

    data = {"history_len": 5, "few_shot_k": 200, "seed": 2}
    out = run_baseline("prior-features", {"data": data})
    splits = prepare(DataConfig(**data)).splits
    block = prepare(DataConfig(history_len=5)).splits["train"]
    stats = BehaviourStats.fit(block, "ctr", scaler_rows=splits["train"])
    fitted = LogisticRegression(C=1.0, max_iter=1000).fit(
        stats.features(splits["train"], leave_one_out=True), splits["train"]["label"])
    for split in ("valid", "test"):
        expected = roc_auc_score(splits[split]["label"], fitted.decision_function(stats.features(splits[split])))
        assert out[split]["auc"] == pytest.approx(expected, abs=1e-6)
    assert out["trainable_params"] == 5 and out["item_stat_examples"] == len(block) > out["train_examples"] == 200


def test_statistics_rows_count_over_the_block_the_recipes_prior_counts() -> None:
    """max_train_examples samples the examples, not the counts: as the recipe's ``prior_stats``."""
    from petrec.data import DataConfig, prepare
    from petrec.recipes.finetune import FinetuneConfig, fit_behaviour_stats

    data = {"history_len": 5, "max_train_examples": 150, "seed": 3}
    block = prepare(DataConfig(history_len=5, seed=3)).splits["train"]
    assert len(block) > 150
    for name in ("logreg-counts", "prior-features", "history-share"):
        out = run_baseline(name, {"data": data})
        assert out["train_examples"] == 150 and out["item_stat_examples"] == len(block), name
    own = run_baseline("prior-features", {"data": data, "prior_stats": "train"})
    assert own["item_stat_examples"] == 150
    # The recipe's prior over the same data: its statistics are the prior-features row's.
    cfg = FinetuneConfig(data=DataConfig(**data))
    train = prepare(cfg.data).splits["train"]
    counted = run_baseline("prior-features", {"data": data})
    assert fit_behaviour_stats(cfg, train).fitted_on == counted["item_stat_examples"] == len(block)
    with pytest.raises(BaselineError, match=r"prior_stats: expected 'block' or 'train', got 'all'"):
        run_baseline("logreg-counts", {"data": data, "prior_stats": "all"})
