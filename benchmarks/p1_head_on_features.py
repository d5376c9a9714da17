"""Diagnostic for P1: petrec's own task head and optimiser on FROZEN MiniLM features.

Reads the features ``benchmarks/p1_frozen_probe.py --save FEATS.npz`` wrote and trains the
BehaviourModel head exactly as the ml100k-ctr suite trains the ``head`` method (dropout 0.1 +
one linear layer on the mean-pooled features, AdamW, linear schedule with 6% warm-up, weight
decay 0.01, batch 8, validation AUC every 64 steps, early stopping after 4, best weights tested),
but on cached features, so a whole learning-rate sweep takes seconds. If this reaches the
logistic-regression probe's AUC, the encoder features are fine and the gap is in training
dynamics; if not, the head recipe itself loses the signal.

    python benchmarks/p1_head_on_features.py /tmp/p1_feats.npz
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from transformers import get_scheduler


def normalise(x: dict[str, np.ndarray], train: str, how: str) -> dict[str, np.ndarray]:
    """``raw``; ``standardize`` (per feature, training statistics); ``layernorm`` (per vector,
    what an affine-free LayerNorm in front of the head would do)."""
    if how == "standardize":
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        return {k: (v - mean) / std for k, v in x.items()}
    if how == "layernorm":
        return {k: (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-5) for k, v in x.items()}
    return x


def fit(x: dict[str, np.ndarray], y: dict[str, np.ndarray], train: str, lr: float, epochs: int,
        norm: str = "raw", seed: int = 42) -> dict[str, float]:
    """One head training run; returns best-valid step, valid and test AUC."""
    torch.manual_seed(seed)
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in normalise(x, train, norm).items()}
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(t[train].shape[1], 1))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    n, batch = len(t[train]), 8
    steps = epochs * ((n + batch - 1) // batch)
    sched = get_scheduler("linear", opt, num_warmup_steps=int(0.06 * steps), num_training_steps=steps)
    ytr = torch.tensor(y[train], dtype=torch.float32)

    def auc(name: str) -> float:
        head.eval()
        with torch.no_grad():
            s = head(t[name]).squeeze(-1).numpy()
        head.train()
        return float(roc_auc_score(y[name], s))

    best, bad, step = {"valid": -1.0}, 0, 0
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(head(t[train][idx]).squeeze(-1), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 64 == 0:
                v = auc("valid")
                if v > best["valid"]:
                    best, bad = {"valid": v, "test": auc("test"), "step": step}, 0
                else:
                    bad += 1
                if bad >= 4:
                    return {k: round(v, 4) for k, v in best.items()}
    return {k: round(v, 4) for k, v in best.items()}


def main(argv: list[str] | None = None) -> None:
    """Sweep learning rate × feature normalisation for each training set in the file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    z = np.load(args.features)
    x = {k[:-3]: z[k] for k in z.files if k.endswith("__x")}
    y = {k[:-3]: z[k] for k in z.files if k.endswith("__y")}
    out = {}
    for train in [k for k in x if k not in ("valid", "test")]:
        epochs = 2 if train == "train" else 20
        for norm in ("raw", "standardize", "layernorm"):
            for lr in (1e-3, 1e-2, 1e-1):
                out[f"{train} lr={lr:g} norm={norm}"] = fit(x, y, train, lr, epochs, norm)
    for k, v in out.items():
        print(json.dumps({"run": k, **v}))


if __name__ == "__main__":
    main()
