"""Does inverse-propensity-weighted training help? Measured on the synthetic exposure world.

The training loop's ``train.ips_weighting`` weights each example's loss by its clipped
inverse-propensity weight, self-normalised per batch (:func:`petrec.debias.weighted_loss`). This
script asks whether that makes a better model *for the unbiased world*: for each seed and world,
:func:`petrec.data.synthetic.exposure_world` draws a logged training log (30 impressions per user,
500 users, 400 items), a logged validation set and test set (the same recommender) and an unbiased
test set (30 items per user uniformly at random). A logistic matrix-factorisation click model
(global, user and item biases plus an 8-dimensional dot product, L2 10 on embeddings and biases:
the best plain-arm logged validation AUC of 1 / 10 / 30 / 100 in a sweep by hand on seeds 0-1,
no record kept; ``--l2`` changes it) is trained
twice on the same log with the same seed, full batch with Adam:

* **plain**: the mean binary cross-entropy; the step kept is the one with the best plain AUC on
  the logged validation set (what a team without a propensity model would do);
* **ips**: :func:`petrec.debias.weighted_loss` with the weights the recipe would use
  (:class:`petrec.debias.DebiasConfig` defaults: popularity propensities from training counts,
  eta 1, smoothing 1, clip 100); the step kept is the one with the best SNIPS AUC on the logged
  validation set (the same weights), so no arm sees unbiased data before the test;
* **ips_logistic**: the same with the weights of the logistic exposure model
  (:class:`petrec.metrics.exposure.LogisticExposure`, ``debias.propensity: logistic``; each
  example's history is its user's training log).

Each arm is scored on the unbiased test set (the truth a debiased model is for) and on the logged
test set. Two worlds (:data:`petrec.data.synthetic.EXPOSURE_WORLDS`): ``popularity`` (exposure
follows item popularity alone: the popularity propensities are right) and ``taste`` (the recommender
also leans towards each user's liked genres, which only the logistic model sees).

::

    python benchmarks/debias_training.py --out benchmarks/results/debias

Writes ``ips_training.json`` (command, machine, git commit, one row per world x seed x arm) and
``IPS_TRAINING.md`` (per world, each arm's mean test AUC and the paired difference from plain
with its 95% interval over seeds).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petrec.bench.aggregate import mean_std_ci
from petrec.bench.system import git_state, machine
from petrec.data.synthetic import EXPOSURE_WORLDS, exposure_world
from petrec.debias import DebiasConfig, weighted_loss
from petrec.files import write_json_atomic, write_text_atomic
from petrec.metrics import debias as D
from petrec.metrics import roc_auc
from petrec.metrics.exposure import LogisticExposure

#: The training arms.
ARMS = ("plain", "ips", "ips_logistic")


class LogisticMF(nn.Module):
    """Click logit ``b + b_u + b_i + <p_u, q_i>``: the smallest collaborative click model."""

    def __init__(self, n_users: int, n_items: int, dim: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.user = nn.Parameter(torch.randn(n_users, dim, generator=gen) * 0.1)
        self.item = nn.Parameter(torch.randn(n_items, dim, generator=gen) * 0.1)
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user[users] * self.item[items]).sum(-1)
        return self.bias + self.user_bias[users] + self.item_bias[items] + dot

    def penalty(self) -> torch.Tensor:
        """Sum of squared embedding and bias entries (the L2 term)."""
        return sum((p**2).sum() for p in (self.user, self.item, self.user_bias, self.item_bias))


def _ids(frame: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """An impression frame's user and item codes as int64 tensors."""
    return torch.tensor(frame["user"].to_numpy()), torch.tensor(frame["item"].to_numpy())


def fit(train: Any, valid: Any, n_users: int, n_items: int, *, weights: np.ndarray | None, valid_weights: np.ndarray,
        seed: int, steps: int, lr: float, l2: float, dim: int) -> tuple[LogisticMF, int]:
    """Train one arm full batch; keep the step with the best validation criterion.

    Args:
        train, valid: Impression frames (``user``, ``item``, ``label``).
        weights: Per-training-example IPS weights (None: the plain mean loss).
        valid_weights: Per-validation-example weights; used for the selection criterion of the
            ips arm (SNIPS AUC), ignored by the plain arm (plain AUC).
        seed: Initialisation seed (the same for both arms).
        steps, lr, l2, dim: Adam steps, learning rate, L2 weight (per example), embedding width.

    Returns:
        The model at the best validation step, and that step (1-based).
    """
    model = LogisticMF(n_users, n_items, dim, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    users, items = _ids(train)
    labels = torch.tensor(train["label"].to_numpy(), dtype=torch.float32)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    v_users, v_items = _ids(valid)
    v_labels = valid["label"].to_numpy()
    best, best_step, best_state = -np.inf, 0, None
    for step in range(1, steps + 1):
        logits = model(users, items)
        loss = (F.binary_cross_entropy_with_logits(logits, labels) if w is None
                else weighted_loss(logits, labels, w, "ctr"))
        loss = loss + l2 * model.penalty() / len(labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            scores = model(v_users, v_items).numpy()
        crit = roc_auc(v_labels, scores) if weights is None else D.snips_auc(v_labels, scores, valid_weights)
        if crit > best:
            best, best_step = crit, step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, best_step


def measure(seed: int, world_name: str, *, steps: int, lr: float, l2: float, dim: int) -> list[dict[str, Any]]:
    """Both arms' rows for one seed of one world."""
    world = exposure_world(seed, exposure_taste=EXPOSURE_WORLDS[world_name])
    n_users, n_items = world.like.shape
    train = world.impressions(30, seed=seed * 10 + 1)
    valid = world.impressions(10, seed=seed * 10 + 6)
    logged = world.impressions(30, seed=seed * 10 + 2)
    unbiased = world.impressions(30, seed=seed * 10 + 3, uniform=True)
    cfg = DebiasConfig()
    counts = np.bincount(train["item"], minlength=n_items).astype(float)
    item_w = D.ips_weights(D.popularity_propensities(counts, eta=cfg.eta, smoothing=cfg.smoothing), clip=cfg.clip)
    exposure = LogisticExposure.fit(counts, world.histories(train, train), train["item"].to_numpy(),
                                    member=world.genre_membership(), negatives=cfg.exposure_negatives)
    arm_weights = {
        "plain": (None, item_w[valid["item"]]),
        "ips": (item_w[train["item"]], item_w[valid["item"]]),
        "ips_logistic": tuple(exposure.weights(world.histories(train, part), part["item"].to_numpy(), clip=cfg.clip)
                              for part in (train, valid)),
    }
    logged_logistic_w = exposure.weights(world.histories(train, logged), logged["item"].to_numpy(), clip=cfg.clip)
    rows = []
    for arm in ARMS:
        weights, valid_weights = arm_weights[arm]
        model, step = fit(train, valid, n_users, n_items, weights=weights, valid_weights=valid_weights,
                          seed=seed, steps=steps, lr=lr, l2=l2, dim=dim)
        with torch.no_grad():
            score = {name: model(*_ids(part)).numpy() for name, part in (("unbiased", unbiased), ("logged", logged))}
        rows.append({"world": world_name, "seed": seed, "arm": arm, "best_step": step,
                     "unbiased_auc": roc_auc(unbiased["label"], score["unbiased"]),
                     "logged_auc": roc_auc(logged["label"], score["logged"]),
                     "logged_snips_auc": D.snips_auc(logged["label"], score["logged"], item_w[logged["item"]]),
                     "logged_snips_logistic_auc": D.snips_auc(logged["label"], score["logged"], logged_logistic_w)})
    return rows


def _paired(rows: list[dict[str, Any]], world: str, key: str, arm: str) -> dict[str, float]:
    """Mean and 95% interval over seeds of ``arm - plain`` on ``key`` in one world."""
    by = {(r["seed"], r["arm"]): r[key] for r in rows if r["world"] == world}
    seeds = sorted({s for s, _ in by})
    return mean_std_ci([by[(s, arm)] - by[(s, "plain")] for s in seeds])


def _verdict(diff: dict[str, float]) -> str:
    """Plain words for a paired difference's interval."""
    if diff["n"] < 2:
        return "one seed: not distinguishable"
    if diff["ci_low"] > 0:
        return "better"
    if diff["ci_high"] < 0:
        return "worse"
    return "not distinguishable"


#: Report rows: record key -> what it is.
TEST_SETS = {"unbiased_auc": "unbiased (the truth)", "logged_auc": "logged, plain AUC",
             "logged_snips_auc": "logged, SNIPS (popularity)", "logged_snips_logistic_auc": "logged, SNIPS (logistic)"}


def report(rows: list[dict[str, Any]], command: str) -> str:
    """IPS_TRAINING.md from the rows only."""
    seeds = sorted({r["seed"] for r in rows})
    others = [a for a in ARMS if a != "plain"]
    lines = ["# Does IPS-weighted training help? (synthetic exposure world)", "",
             f"Seeds {seeds}; protocol and model: benchmarks/debias_training.py. Command: `{command}`.", "",
             "Mean test AUC of each arm, then each weighted arm's paired difference from *plain* over seeds "
             "with its 95% interval and verdict. Arms: *plain* (mean loss), *ips* (popularity propensities), "
             "*ips_logistic* (the logistic exposure model's). Test sets: *unbiased*, uniformly exposed (the "
             "truth); *logged*, the recommender's, plain and SNIPS-estimated with either propensity model.", "",
             "| world | test set | " + " | ".join(ARMS) + " | "
             + " | ".join(f"{a} − plain [95% interval]" for a in others) + " |",
             "|---|---|" + "---|" * (len(ARMS) + len(others))]
    for world in dict.fromkeys(r["world"] for r in rows):
        for key, label in TEST_SETS.items():
            means = [np.mean([r[key] for r in rows if r["world"] == world and r["arm"] == arm]) for arm in ARMS]
            diffs = [_paired(rows, world, key, arm) for arm in others]
            lines.append(f"| {world} | {label} | " + " | ".join(f"{m:.4f}" for m in means) + " | " + " | ".join(
                f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] {_verdict(d)}" for d in diffs) + " |")
    steps = ", ".join(f"{arm} {np.median([r['best_step'] for r in rows if r['arm'] == arm]):.0f}" for arm in ARMS)
    lines += ["", f"Median step kept by validation: {steps}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/debias", help="output folder")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--steps", type=int, default=300, help="full-batch Adam steps per arm")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    parser.add_argument("--l2", type=float, default=10.0, help="L2 weight on embeddings and biases (per example)")
    parser.add_argument("--dim", type=int, default=8, help="embedding width")
    parser.add_argument("--worlds", nargs="+", default=list(EXPOSURE_WORLDS), choices=list(EXPOSURE_WORLDS), help="worlds to run")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be ≥ 1")
    torch.set_num_threads(1)
    rows = [row for world in args.worlds for seed in range(args.seeds)
            for row in measure(seed, world, steps=args.steps, lr=args.lr, l2=args.l2, dim=args.dim)]
    command = "python " + shlex.join(["benchmarks/debias_training.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ips_training.json", {"command": command, "machine": machine(), "git": git_state(),
                                                   "config": {k: v for k, v in vars(args).items() if k != "out"},
                                                   "rows": rows})
    text = report(rows, command)
    write_text_atomic(out / "IPS_TRAINING.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
