"""IPS / SNIPS metrics: exact values against independent references, and ground truth on the
synthetic exposure world (the SNIPS estimate from the logged test set lands closer to the metric
on an unbiased test set than the plain metric does)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from petrec.data.synthetic import exposure_world
from petrec.metrics import PetrecMetricError, ranking_per_user, roc_auc
from petrec.metrics import debias as D


def test_snips_auc_is_sklearns_weighted_auc_and_ips_rescales_it() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 20, 300).astype(float)  # many ties
    w = rng.uniform(0.1, 5.0, 300)
    out = D.debiased_ctr(y, s, w)
    assert out["snips_auc"] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    scale = w[y == 1].sum() * w[y == 0].sum() / ((y == 1).sum() * (y == 0).sum())
    assert out["ips_auc"] == pytest.approx(out["snips_auc"] * scale, rel=1e-12)
    # Unit weights give the plain AUC both ways.
    ones = np.ones(300)
    assert D.ips_auc(y, s, ones) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert D.snips_auc(y, s, ones) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert math.isnan(D.snips_auc(np.ones(5), np.arange(5.0), np.ones(5)))


def test_propensities_weights_and_clipping() -> None:
    counts = np.array([9.0, 3.0, 0.0, 0.0])
    p = D.popularity_propensities(counts, eta=1.0, smoothing=1.0)
    assert p == pytest.approx(np.array([10, 4, 1, 1]) / 16)
    assert D.popularity_propensities(counts, eta=0.0) == pytest.approx(np.full(4, 0.25))
    assert D.popularity_propensities(counts, eta=0.5) == pytest.approx(np.sqrt([10, 4, 1, 1]) / np.sqrt([10, 4, 1, 1]).sum())
    w = D.ips_weights(p, clip=None)
    assert w == pytest.approx(16 / (4 * np.array([10, 4, 1, 1])))
    assert (p * w).sum() == pytest.approx(1.0)  # the unclipped weights average 1 under the log
    assert D.ips_weights(p, clip=2.0) == pytest.approx([0.4, 1.0, 2.0, 2.0])
    with pytest.raises(PetrecMetricError, match="infinite weight"):
        D.ips_weights(D.popularity_propensities(counts, smoothing=0.0), clip=None)
    with pytest.raises(PetrecMetricError, match=r"counts: negative count -1.0 at item 1"):
        D.popularity_propensities([3, -1])
    with pytest.raises(PetrecMetricError, match=r"weights: negative weight -1.0 at position 2"):
        D.snips_mean([1, 2, 3], [1, 1, -1])
    with pytest.raises(PetrecMetricError, match="values has 3 values but weights has 2"):
        D.ips_mean([1, 2, 3], [1, 1])


def test_strata_rule() -> None:
    # 100 interactions: the 40-item starts at 0% (head: it crosses the 20% line), the 20-item at
    # 40% (torso: below 50%), the 15-item at 60% (tail), and the tail holds an item never seen.
    counts = np.array([5, 40, 20, 15, 10, 10, 0])
    assert D.popularity_strata(counts).tolist() == [2, 0, 1, 2, 2, 2, 2]
    assert D.popularity_strata(counts, head_share=0.5, torso_share=0.5).tolist() == [1, 0, 0, 1, 1, 1, 2]
    assert D.popularity_strata(np.zeros(3)).tolist() == [2, 2, 2]
    with pytest.raises(PetrecMetricError, match="head_share"):
        D.popularity_strata(counts, head_share=0.8, torso_share=0.3)


def test_debiased_ranking_on_hand_values() -> None:
    per_user = {"hr@10": np.array([1.0, 0.0, 1.0]), "ndcg@10": np.array([1.0, 0.0, 0.5]),
                "mrr@10": np.array([1.0, 0.0, 0.5])}
    w = np.array([0.5, 2.0, 1.5])
    out = D.debiased_ranking(per_user, w)
    assert set(out) == {"ips_recall@10", "snips_recall@10", "ips_ndcg@10", "snips_ndcg@10"}
    assert out["ips_recall@10"] == pytest.approx((0.5 + 1.5) / 3)
    assert out["snips_recall@10"] == pytest.approx((0.5 + 1.5) / 4)
    assert out["snips_ndcg@10"] == pytest.approx((0.5 + 0.75) / 4)


# ---------------------------------------------------------------------------- ground truth
#: |estimate - truth| must shrink by at least this much (absolute) for SNIPS to win.
MARGIN = 0.02


def _popularity_and_taste_scorers(world, counts: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Two fixed scorers on which exposure bias matters: training popularity, and the true genre
    affinity blurred by noise (a decent personal model that ignores popularity)."""
    n_users, n_items = world.like.shape
    noise = np.random.default_rng([seed, 9]).normal(0.0, 1.0, (n_users, n_items))
    return {"popularity": np.tile(counts, (n_users, 1)), "taste": world.preference + noise}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snips_auc_is_closer_to_the_unbiased_auc_than_the_logged_auc(seed: int) -> None:
    world = exposure_world(seed)
    n_items = world.like.shape[1]
    train = world.impressions(30, seed=seed * 10 + 1)
    logged = world.impressions(30, seed=seed * 10 + 2)
    unbiased = world.impressions(30, seed=seed * 10 + 3, uniform=True)
    counts = np.bincount(train["item"], minlength=n_items).astype(float)
    weights = D.ips_weights(D.popularity_propensities(counts))[logged["item"]]
    for name, scores in _popularity_and_taste_scorers(world, counts, seed).items():
        s_log = scores[logged["user"], logged["item"]]
        truth = roc_auc(unbiased["label"], scores[unbiased["user"], unbiased["item"]])
        naive = roc_auc(logged["label"], s_log)
        snips = D.snips_auc(logged["label"], s_log, weights)
        assert abs(snips - truth) + MARGIN < abs(naive - truth), (name, naive, snips, truth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snips_recall_is_closer_to_the_unbiased_recall_than_the_logged_recall(seed: int) -> None:
    world = exposure_world(seed)
    n_items = world.like.shape[1]
    train = world.impressions(30, seed=seed * 10 + 1)
    positives = train[train["label"] == 1]  # implicit feedback: only the likes are logged
    counts = np.bincount(positives["item"], minlength=n_items).astype(float)
    weights = D.ips_weights(D.popularity_propensities(counts))
    logged = world.targets(5, seed=seed * 10 + 4)
    unbiased = world.targets(5, seed=seed * 10 + 5, uniform=True)
    scorers = _popularity_and_taste_scorers(world, counts, seed)
    # popularity: every cut-off; taste (whose logged error is small at K=10): the K=50 figures
    cases = [("popularity", "recall@10"), ("popularity", "ndcg@10"), ("popularity", "recall@50"),
             ("taste", "recall@50")]
    for name, metric in cases:
        scores = scorers[name]
        per_log = ranking_per_user(scores[logged["user"]], np.array(logged["item"]), ks=(10, 50))
        per_unb = ranking_per_user(scores[unbiased["user"]], np.array(unbiased["item"]), ks=(10, 50))
        plain = metric.replace("recall", "hr")
        truth = float(per_unb[plain].double().mean())
        naive = float(per_log[plain].double().mean())
        snips = D.debiased_ranking(per_log, weights[logged["item"]])[f"snips_{metric}"]
        assert abs(snips - truth) + MARGIN < abs(naive - truth), (name, metric, naive, snips, truth)


def test_uniform_propensities_leave_the_logged_metric_unchanged() -> None:
    # eta = 0 (no popularity in the propensity model) makes SNIPS the plain metric: the ground
    # truth tests above pass only because the propensities carry the exposure.
    world = exposure_world(0, n_users=100, n_items=50)
    logged = world.impressions(10, seed=1)
    counts = np.bincount(logged["item"], minlength=50).astype(float)
    w = D.ips_weights(D.popularity_propensities(counts, eta=0.0))[logged["item"]]
    s = world.preference[logged["user"], logged["item"]]
    assert D.snips_auc(logged["label"], s, w) == pytest.approx(roc_auc(logged["label"], s), abs=1e-12)


def test_exposure_world_draws() -> None:
    world = exposure_world(3, n_users=50, n_items=40)
    assert np.allclose(world.exposure.sum(axis=1), 1.0)
    shown = world.impressions(10, seed=0)
    assert len(shown) == 500 and shown.groupby("user")["item"].nunique().eq(10).all()
    assert world.impressions(10, seed=0).equals(shown)  # seeded
    # Logged impressions favour popular items; uniform ones do not.
    top = np.argsort(-world.popularity)[:4]
    assert shown["item"].isin(top).mean() > 0.3
    assert world.impressions(10, seed=0, uniform=True)["item"].isin(top).mean() < 0.2
    targets = world.targets(3, seed=0)
    assert len(targets) == 150 and targets["item"].between(0, 39).all()
    with pytest.raises(ValueError, match="per_user=41"):
        world.impressions(41, seed=0)
