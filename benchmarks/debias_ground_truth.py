"""Debiased evaluation against ground truth: the synthetic exposure world's logged vs unbiased test sets.

For each world and seed, :func:`petrec.data.synthetic.exposure_world` (500 users, 400 items) draws a
training log (30 impressions per user), a logged test set (the same recommender) and an unbiased
test set (30 items per user uniformly at random); next-item targets are 5 liked impressions per
user, logged or uniform. Worlds (:data:`petrec.data.synthetic.EXPOSURE_WORLDS`): *popularity*, the
recommender shows by popularity alone, and *taste*, it also leans towards each user's liked genres.
Propensities are fit on the training log only (for next-item on its likes only): popularity^1
(smoothing 1, clip 100), and the logistic exposure model (:mod:`petrec.metrics.exposure`, each
example's history = its user's training log). Two fixed scorers: the training popularity, and the
true genre affinity plus N(0, 1) noise. The record gives, per metric, the value on the unbiased set
(the truth), the plain value on the logged set, and its IPS / SNIPS estimates from the logged set.
tests/metrics/test_debias.py asserts the same comparison on seeds 0-2 of the popularity world (SNIPS
at least 0.02 closer to the truth than the plain logged metric); tests/metrics/test_exposure.py
the logistic model's fix on the taste world.

::

    python benchmarks/debias_ground_truth.py --out benchmarks/results/debias

Writes ``ground_truth.json`` (command, machine, git commit, one row per world x seed x scorer x metric) and
``REPORT.md`` (mean absolute error to the truth over seeds).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from petrec.bench.system import git_state, machine
from petrec.data.synthetic import EXPOSURE_WORLDS, ExposureWorld, exposure_world
from petrec.files import write_json_atomic, write_text_atomic
from petrec.metrics import debias as D
from petrec.metrics import ranking_per_user, roc_auc
from petrec.metrics.exposure import LogisticExposure

#: Ranking cut-offs reported.
KS = (10, 50)


def _exposure_weights(world: ExposureWorld, log: Any, rows: Any, counts: np.ndarray) -> np.ndarray:
    """Per-row weights of the logistic exposure model fit on ``log`` (histories: the user's log)."""
    model = LogisticExposure.fit(counts, world.histories(log, log), log["item"].to_numpy(),
                                 member=world.genre_membership())
    return model.weights(world.histories(log, rows), rows["item"].to_numpy())


def measure(seed: int, world_name: str = "popularity") -> list[dict[str, Any]]:
    """Every (scorer, metric) row of one seed of one world (same draws as the ground-truth tests)."""
    world = exposure_world(seed, exposure_taste=EXPOSURE_WORLDS[world_name])
    n_users, n_items = world.like.shape
    train = world.impressions(30, seed=seed * 10 + 1)
    noise = np.random.default_rng([seed, 9]).normal(0.0, 1.0, (n_users, n_items))
    rows: list[dict[str, Any]] = []
    base = {"world": world_name, "seed": seed}

    counts = np.bincount(train["item"], minlength=n_items).astype(float)
    logged = world.impressions(30, seed=seed * 10 + 2)
    unbiased = world.impressions(30, seed=seed * 10 + 3, uniform=True)
    w = D.ips_weights(D.popularity_propensities(counts))[logged["item"]]
    w_logistic = _exposure_weights(world, train, logged, counts)
    for scorer, scores in (("popularity", np.tile(counts, (n_users, 1))), ("taste", world.preference + noise)):
        s_log = scores[logged["user"], logged["item"]]
        est = D.debiased_ctr(logged["label"], s_log, w)
        rows.append({**base, "scorer": scorer, "metric": "auc",
                     "truth": roc_auc(unbiased["label"], scores[unbiased["user"], unbiased["item"]]),
                     "logged": roc_auc(logged["label"], s_log), "ips": est["ips_auc"], "snips": est["snips_auc"],
                     "snips_logistic": D.snips_auc(logged["label"], s_log, w_logistic)})

    liked = train[train["label"] == 1]
    counts = np.bincount(liked["item"], minlength=n_items).astype(float)
    weights = D.ips_weights(D.popularity_propensities(counts))
    targets = world.targets(5, seed=seed * 10 + 4)
    uniform = world.targets(5, seed=seed * 10 + 5, uniform=True)
    w_logistic = _exposure_weights(world, liked, targets, counts)
    for scorer, scores in (("popularity", np.tile(counts, (n_users, 1))), ("taste", world.preference + noise)):
        per_log = ranking_per_user(scores[targets["user"]], np.array(targets["item"]), ks=KS)
        per_unb = ranking_per_user(scores[uniform["user"]], np.array(uniform["item"]), ks=KS)
        est = D.debiased_ranking(per_log, weights[targets["item"]])
        est_logistic = D.debiased_ranking(per_log, w_logistic)
        for k in KS:
            for plain, name in ((f"hr@{k}", f"recall@{k}"), (f"ndcg@{k}", f"ndcg@{k}")):
                rows.append({**base, "scorer": scorer, "metric": name,
                             "truth": float(per_unb[plain].double().mean()),
                             "logged": float(per_log[plain].double().mean()),
                             "ips": est[f"ips_{name}"], "snips": est[f"snips_{name}"],
                             "snips_logistic": est_logistic[f"snips_{name}"]})
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """REPORT.md: mean |estimate - truth| over seeds, per world, scorer and metric."""
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Debiased evaluation on the synthetic exposure world", "",
             f"Truth: the metric on the unbiased test set (mean over seeds {seeds}). The other columns: the "
             "mean absolute error of each estimate from the logged test set against that truth (smaller is "
             "better). IPS / SNIPS use popularity propensities; *SNIPS, logistic* the logistic exposure model "
             "(petrec.metrics.exposure: fitted popularity exponent + the history's genre affinity). Worlds: "
             "*popularity*, the recommender shows by popularity alone; *taste*, it also leans towards each "
             f"user's liked genres (exposure_taste={EXPOSURE_WORLDS['taste']}). Protocol: "
             "benchmarks/debias_ground_truth.py.", "",
             "| world | scorer | metric | truth | error: plain logged metric | error: IPS | error: SNIPS | "
             "error: SNIPS, logistic |",
             "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r.get("world", "popularity"), r["scorer"], r["metric"]) for r in rows))
    for world, scorer, metric in keys:
        part = [r for r in rows if (r.get("world", "popularity"), r["scorer"], r["metric"]) == (world, scorer, metric)]
        err = {k: np.mean([abs(r[k] - r["truth"]) for r in part]) for k in ("logged", "ips", "snips", "snips_logistic")}
        lines.append(f"| {world} | {scorer} | {metric} | {np.mean([r['truth'] for r in part]):.4f} | "
                     f"{err['logged']:.4f} | {err['ips']:.4f} | {err['snips']:.4f} | {err['snips_logistic']:.4f} |")
    lines += ["", "Whether IPS-weighted *training* helps on the same worlds: IPS_TRAINING.md "
              "(benchmarks/debias_training.py)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/debias", help="output folder")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    args = parser.parse_args(argv)
    rows = [row for world in EXPOSURE_WORLDS for seed in range(args.seeds) for row in measure(seed, world)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/debias_ground_truth.py", *(argv if argv is not None else sys.argv[1:])])
    write_json_atomic(out / "ground_truth.json", {"command": command, "machine": machine(), "git": git_state(),
                                                  "rows": rows})
    text = report(rows)
    write_text_atomic(out / "REPORT.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
