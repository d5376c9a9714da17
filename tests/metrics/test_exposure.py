"""The logistic exposure model: its features, its normalisation, what it recovers on the synthetic
exposure world, and that its weights fix the SNIPS bias that popularity weights leave when the
recommender leans towards each user's taste."""

from __future__ import annotations

import numpy as np
import pytest

from petrec.data.synthetic import exposure_world
from petrec.metrics import PetrecMetricError, roc_auc
from petrec.metrics import debias as D
from petrec.metrics.exposure import LogisticExposure, genre_membership


def _fit(world, train, *, genres: bool = True) -> LogisticExposure:
    counts = np.bincount(train["item"], minlength=world.like.shape[1]).astype(float)
    return LogisticExposure.fit(counts, world.histories(train, train), train["item"].to_numpy(),
                                member=world.genre_membership() if genres else None)


def test_genre_membership_normalises_rows() -> None:
    member = genre_membership(["A|B", "", None, "B"])
    assert member.shape == (4, 2)
    assert member.tolist() == [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert genre_membership(["", None]) is None


def test_without_genres_it_is_popularity_with_a_fitted_eta() -> None:
    world = exposure_world(0, n_users=200, n_items=100)
    train = world.impressions(15, seed=1)
    model = _fit(world, train, genres=False)
    counts = np.bincount(train["item"], minlength=100).astype(float)
    assert model.coef[1] == 0.0 and model.coef[0] > 0.5
    items = np.arange(100)
    expected = D.popularity_propensities(counts, eta=model.coef[0], smoothing=1.0)
    np.testing.assert_allclose(model.propensities([[3, 4]] * 100, items), expected, rtol=1e-10)


def test_propensities_sum_to_one_over_the_catalogue() -> None:
    world = exposure_world(1, n_users=100, n_items=60)
    model = _fit(world, world.impressions(10, seed=2))
    history = [5, 17, 40]
    p = model.propensities([history] * 60, np.arange(60))
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    w = model.weights([history] * 60, np.arange(60), clip=3.0)
    assert w.max() <= 3.0 and w == pytest.approx(np.minimum(1.0 / (60 * p), 3.0))


def test_fitted_popularity_exponent_matches_the_world() -> None:
    # exposure_world shows items in proportion to popularity^1: the fitted exponent is near 1.
    world = exposure_world(0)
    model = _fit(world, world.impressions(30, seed=1))
    assert model.coef[0] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_weights_fix_the_bias_popularity_weights_leave(seed: int) -> None:
    # The recommender leans towards each user's liked genres (exposure_taste=2): popularity
    # propensities miss that, the history's genre affinity catches it.
    world = exposure_world(seed, exposure_taste=2.0)
    n_users, n_items = world.like.shape
    train = world.impressions(30, seed=seed * 10 + 1)
    logged = world.impressions(30, seed=seed * 10 + 2)
    unbiased = world.impressions(30, seed=seed * 10 + 3, uniform=True)
    scores = world.preference + np.random.default_rng([seed, 9]).normal(0.0, 1.0, (n_users, n_items))
    truth = roc_auc(unbiased["label"], scores[unbiased["user"], unbiased["item"]])
    s_log = scores[logged["user"], logged["item"]]
    counts = np.bincount(train["item"], minlength=n_items).astype(float)
    w_pop = D.ips_weights(D.popularity_propensities(counts))[logged["item"]]
    model = _fit(world, train)
    w_log = model.weights(world.histories(train, logged), logged["item"].to_numpy())
    err_pop = abs(D.snips_auc(logged["label"], s_log, w_pop) - truth)
    err_log = abs(D.snips_auc(logged["label"], s_log, w_log) - truth)
    assert model.coef[1] > 1.0  # exposure follows the history's genres
    assert err_log + 0.02 < err_pop, (err_log, err_pop)


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(PetrecMetricError, match=r"items: index 9 at position 1 is outside the catalogue of 3"):
        LogisticExposure.fit([1, 2, 3], [[0], [1]], [0, 9])
    with pytest.raises(PetrecMetricError, match=r"histories \(1\) and items \(2\) differ"):
        LogisticExposure.fit([1, 2, 3], [[0]], [0, 1])
    with pytest.raises(PetrecMetricError, match="no training interaction"):
        LogisticExposure.fit([1, 2, 3], [], [])
    model = LogisticExposure.fit([5, 2, 1], [[0], [1], [2], [0]], [0, 1, 0, 0], member=np.eye(3))
    with pytest.raises(PetrecMetricError, match=r"history: index -1 at position 0"):
        model.propensities([[-1]], [0])
