"""The seeded synthetic behaviour world: petrec's embedded default data set.

Users have a latent taste over genres; items belong to one or two genres and carry titles
built from words typical of their main genre ("Haunted Crypt", "Galactic Starship"), so a
pretrained text encoder has something to recognise. Exposure is popularity-skewed and
tilted towards liked genres; ratings are personal taste + a population-wide genre effect +
item quality + noise, rounded to 1..5.
The same arguments give byte-identical tables.

:func:`exposure_world` is a second, smaller world for debiased evaluation: it knows every user's
like probability for every item, so it can draw both a logged (popularity-exposed) sample and an
unbiased one (every item shown uniformly at random) to check an estimator against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from petrec.data.readers import Tables
from petrec.data.validate import Source

#: Spread of the population-wide like/dislike of each genre (rating points).
GENRE_BIAS_STD = 0.8

#: genre → (adjectives, nouns) used in titles of that genre.
GENRE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Horror": (("Haunted", "Bloody", "Cursed", "Midnight", "Evil"),
               ("Ghost", "Nightmare", "Crypt", "Zombie", "Demon")),
    "Romance": (("Tender", "Sweet", "Eternal", "Summer", "Secret"),
                ("Love", "Kiss", "Wedding", "Heart", "Romance")),
    "Sci-Fi": (("Galactic", "Robot", "Quantum", "Alien", "Cosmic"),
               ("Spaceship", "Planet", "Android", "Starship", "Invasion")),
    "Comedy": (("Crazy", "Silly", "Goofy", "Wacky", "Funny"),
               ("Party", "Prank", "Roommates", "Vacation", "Mixup")),
    "War": (("Fallen", "Iron", "Frontline", "Brave", "Bloodied"),
            ("Battalion", "Battle", "Soldiers", "Siege", "Trenches")),
    "Western": (("Dusty", "Lone", "Outlaw", "Wild", "Desert"),
                ("Rider", "Sheriff", "Gunslinger", "Saloon", "Ranch")),
    "Animation": (("Little", "Magic", "Happy", "Tiny", "Cuddly"),
                  ("Puppy", "Dragon", "Princess", "Bunny", "Toys")),
    "Crime": (("Deadly", "Silent", "Dirty", "Cold", "Street"),
              ("Heist", "Detective", "Gangster", "Murder", "Mob")),
    "Documentary": (("True", "Hidden", "Real", "Inside", "Untold"),
                    ("History", "Nature", "Science", "Ocean", "Story")),
    "Musical": (("Singing", "Dancing", "Golden", "Broadway", "Rhythm"),
                ("Melody", "Song", "Stage", "Chorus", "Concert")),
}


def synthetic_world(seed: int = 0, n_users: int = 300, n_items: int = 300, mean_len: int = 20,
                    n_genres: int = 8) -> Tables:
    """Generate the synthetic world.

    Args:
        seed: Seed of everything.
        n_users: Users (ids ``u0000``...).
        n_items: Items (ids ``i0000``...).
        mean_len: Mean interactions per user (at least 5 each).
        n_genres: Genres used (at most 10).

    Returns:
        Canonical tables: interactions with integer timestamps and 1..5 ratings, items with
        ``title``, ``genres``, ``year`` and ``text``.
    """
    genres = list(GENRE_WORDS)[: max(2, min(n_genres, len(GENRE_WORDS)))]
    g = len(genres)
    rng = np.random.default_rng(seed)
    main = rng.integers(0, g, size=n_items)
    second = np.where(rng.random(n_items) < 0.3, rng.integers(0, g, size=n_items), main)
    member = np.zeros((n_items, g))
    member[np.arange(n_items), main] = 1.0
    member[np.arange(n_items), second] = 1.0
    member /= member.sum(1, keepdims=True)
    adj = rng.integers(0, 5, size=n_items)
    noun = rng.integers(0, 5, size=n_items)
    year = rng.integers(1960, 2024, size=n_items)
    quality = rng.normal(0.0, 0.4, size=n_items)
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** 0.7
    taste = rng.dirichlet(np.full(g, 0.3), size=n_users)
    pref = taste @ member.T * g - 1.0  # > 0 for liked genres, about -1 for ignored ones
    lengths = 5 + rng.poisson(max(mean_len - 5, 0), size=n_users)
    lengths = np.minimum(lengths, n_items)
    exposure = popularity[None, :] * np.exp(0.6 * np.tanh(pref))
    # Per-user sampling without replacement: one small draw per user (not a hot path).
    chosen = [rng.choice(n_items, size=int(k), replace=False, p=w / w.sum())
              for k, w in zip(lengths, exposure, strict=True)]
    users = np.repeat(np.arange(n_users), lengths)
    items = np.concatenate(chosen)
    # Genres most people like or dislike (a main effect a text model can pick up from the
    # candidate's title alone), on its own random stream so every other draw is unchanged.
    genre_bias = np.random.default_rng([seed, 1]).normal(0.0, GENRE_BIAS_STD, size=g)
    latent = (3.1 + 1.6 * np.tanh(pref[users, items]) + (member @ genre_bias)[items] + quality[items]
              + rng.normal(0, 0.6, len(items)))
    rating = np.clip(np.rint(latent), 1, 5)
    start = rng.integers(0, 180 * 86400, size=n_users)
    gaps = rng.exponential(86400.0, size=len(items)).astype(np.int64) + 1
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths] -
                                          gaps[np.cumsum(lengths) - lengths], lengths)
    ts = 1_600_000_000 + np.repeat(start, lengths) + offsets
    inter = pd.DataFrame({
        "user_id": pd.array([f"u{k:04d}" for k in users], dtype="string"),
        "item_id": pd.array([f"i{k:04d}" for k in items], dtype="string"),
        "timestamp": ts.astype(np.int64),
        "rating": rating.astype(np.float64),
        "label": np.full(len(items), np.nan),
        "_line": np.arange(len(items), dtype=np.int64),
    })
    gname = np.array(genres, dtype=object)
    words = [GENRE_WORDS[genres[m]] for m in main]
    titles = [f"{w[0][a]} {w[1][n]} ({y})" for w, a, n, y in zip(words, adj, noun, year, strict=True)]
    genre_str = ["|".join(dict.fromkeys((gname[m], gname[s]))) for m, s in zip(main, second, strict=True)]
    item_df = pd.DataFrame({
        "item_id": pd.array([f"i{k:04d}" for k in range(n_items)], dtype="string"),
        "title": pd.array(titles, dtype="string"),
        "genres": pd.array(genre_str, dtype="string"),
        "year": pd.array([str(y) for y in year], dtype="string"),
    })
    item_df["text"] = item_df["title"] + ". Genres: " + item_df["genres"].str.replace("|", ", ") + "."
    return Tables(inter, item_df, Source(f"synthetic(seed={seed})", unit="row"), rating_range=(1.0, 5.0))


#: The exposure worlds the debiasing benchmarks measure (name -> ``exposure_taste``): the logging
#: recommender shows items by popularity alone, or also leans towards each user's liked genres.
EXPOSURE_WORLDS = {"popularity": 0.0, "taste": 2.0}


@dataclass
class ExposureWorld:
    """Ground truth for debiased evaluation: what users like, and what a recommender shows them.

    Preference comes from genre taste (plus a popularity-linked item appeal: popular items are
    liked somewhat more, as in real logs); exposure of the logging recommender comes from item
    popularity alone (``exposure_taste=0``) or also leans towards each user's liked genres. The
    same world draws a **logged** sample (impressions as the recommender chose them: what every
    real data set is) and an **unbiased** one (impressions uniformly at random over the
    catalogue), both labelled by the same like probabilities.

    Attributes:
        like: ``(n_users, n_items)`` probability that the user likes the item once shown.
        preference: ``(n_users, n_items)`` genre affinity, > 0 for liked genres, about -1 for
            ignored ones (the signal a good model learns).
        exposure: ``(n_users, n_items)`` share of the user's logged impressions each item gets
            (rows sum to 1).
        popularity: ``(n_items,)`` popularity of each item (Zipf-like, largest 1).
        genre: ``(n_items,)`` each item's genre code (what an exposure model may read), or None.
    """

    like: np.ndarray
    preference: np.ndarray
    exposure: np.ndarray
    popularity: np.ndarray
    genre: np.ndarray | None = None

    def impressions(self, per_user: int, *, seed: int, uniform: bool = False) -> pd.DataFrame:
        """Labelled impressions: ``per_user`` distinct items shown to every user.

        Args:
            per_user: Impressions per user (at most the catalogue size).
            seed: Seed of this draw (labels included).
            uniform: Show items uniformly at random (the unbiased set) instead of as the
                logging recommender does.

        Returns:
            Columns ``user`` and ``item`` (int codes), ``label`` (0/1), one row per impression.
        """
        n_users, n_items = self.like.shape
        if not 0 < per_user <= n_items:
            raise ValueError(f"per_user={per_user}: expected 1..{n_items} (the catalogue size)")
        rng = np.random.default_rng([seed, 2])
        # Gumbel top-k == sampling without replacement in proportion to the weights.
        logits = np.log(np.full(n_items, 1.0 / n_items) if uniform else self.exposure)
        keys = logits + rng.gumbel(size=(n_users, n_items))
        items = np.argpartition(-keys, per_user - 1, axis=1)[:, :per_user].reshape(-1)
        users = np.repeat(np.arange(n_users), per_user)
        labels = (rng.random(items.size) < self.like[users, items]).astype(np.int64)
        return pd.DataFrame({"user": users, "item": items, "label": labels})

    def histories(self, log: pd.DataFrame, rows: pd.DataFrame) -> list[np.ndarray]:
        """Each row's history for an exposure model: the items ``log`` showed the row's user, the
        row's own item left out (so a training interaction does not see itself)."""
        shown = {int(u): g.to_numpy() for u, g in log.groupby("user")["item"]}
        empty = np.zeros(0, dtype=np.int64)
        return [(h := shown.get(int(u), empty))[h != i] for u, i in zip(rows["user"], rows["item"], strict=True)]

    def genre_membership(self) -> np.ndarray:
        """One-hot ``(n_items, n_genres)`` genre membership (what :class:`petrec.metrics.exposure.LogisticExposure` reads)."""
        if self.genre is None:
            raise ValueError("this ExposureWorld was built without item genres")
        return np.eye(int(self.genre.max()) + 1)[self.genre]

    def targets(self, per_user: int, *, seed: int, uniform: bool = False) -> pd.DataFrame:
        """Held-out next items: liked impressions, ``per_user`` per user (with replacement).

        An item is drawn in proportion to (its exposure) x (its like probability): the first liked
        item of an impression stream, logged or uniform.

        Returns:
            Columns ``user`` and ``item`` (int codes).
        """
        n_users, n_items = self.like.shape
        rng = np.random.default_rng([seed, 3])
        mass = self.like * (1.0 if uniform else self.exposure)
        cdf = np.cumsum(mass / mass.sum(axis=1, keepdims=True), axis=1)
        draws = rng.random((n_users, per_user))
        items = np.minimum((cdf[:, None, :] < draws[:, :, None]).sum(axis=2), n_items - 1)
        return pd.DataFrame({"user": np.repeat(np.arange(n_users), per_user), "item": items.reshape(-1)})


def exposure_world(seed: int = 0, n_users: int = 500, n_items: int = 400, n_genres: int = 8, *,
                   zipf: float = 1.0, appeal: float = 0.8, taste: float = 1.5,
                   exposure_taste: float = 0.0) -> ExposureWorld:
    """Generate an :class:`ExposureWorld`.

    Args:
        seed: Seed of everything.
        n_users: Users.
        n_items: Items.
        n_genres: Genres, one per item.
        zipf: Popularity of the item of popularity rank r is ``r^-zipf``; exposure follows it.
        appeal: Log-odds of liking per standard deviation of log popularity (popular items are
            liked more; 0 = popularity says nothing about liking).
        taste: Log-odds weight of the genre affinity.
        exposure_taste: Exposure multiplier ``exp(exposure_taste * tanh(affinity))``; 0 = the
            recommender shows by popularity alone (what item-popularity propensities assume).
    """
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, size=n_items)
    member = np.zeros((n_items, n_genres))
    member[np.arange(n_items), genre] = 1.0
    preference = rng.dirichlet(np.full(n_genres, 0.3), size=n_users) @ member.T * n_genres - 1.0
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** zipf
    log_pop = np.log(popularity)
    item_appeal = appeal * (log_pop - log_pop.mean()) / log_pop.std()
    like = 1.0 / (1.0 + np.exp(-(taste * np.tanh(preference) + item_appeal - 0.5)))
    exposure = popularity[None, :] * np.exp(exposure_taste * np.tanh(preference))
    return ExposureWorld(like=like, preference=preference,
                         exposure=exposure / exposure.sum(axis=1, keepdims=True), popularity=popularity,
                         genre=genre)
