"""Diagnostic for P1: can a linear probe on FROZEN all-MiniLM-L6-v2 features read the signal?

Every fine-tuned MiniLM method stayed near chance on P1 (test AUC 0.53-0.55, see
benchmarks/results/ml100k-ctr), while a 3-feature logistic regression on history counts reaches
0.745. This script separates "the encoder's features do not carry the history-share signal"
from "our fine-tuning fails to find it": it embeds every P1 prompt once (``--pooling mean``,
the sentence-transformers pooling of this checkpoint, or ``cls``, the first token, which is what
BehaviourModel's ``pooling: auto`` picks for encoders), fits an L2 logistic regression on the 8,000 training prompts
(C chosen on valid AUC), and reports valid / test AUC, plus the same probe with the
history-share feature appended as a control. ``--few-shot 256`` repeats the probe on the
few-shot training samples the suite's runs get (seeds 1-3), and ``--save`` keeps the features.

    PETREC_DATA_DIR=../shared/data python benchmarks/p1_frozen_probe.py [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel, AutoTokenizer

from petrec.data import DataConfig, prepare, tokenize_examples
from petrec.paths import minilm_path


@torch.inference_mode()
def embed(model: torch.nn.Module, ids: list[list[int]], batch: int = 64, pooling: str = "mean") -> np.ndarray:
    """Mean-pooled (or first-token, ``cls``) last hidden states of token-id lists."""
    out = []
    for i in range(0, len(ids), batch):
        rows = ids[i:i + batch]
        width = max(len(r) for r in rows)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for j, r in enumerate(rows):
            x[j, :len(r)] = torch.tensor(r)
            mask[j, :len(r)] = 1
        h = model(input_ids=x, attention_mask=mask).last_hidden_state
        if pooling == "cls":
            out.append(h[:, 0].numpy())
            continue
        m = mask.unsqueeze(-1).float()
        out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def history_share(split) -> np.ndarray:
    """Share of liked items in each example's history (the 0.726 no-training baseline)."""
    return np.array([np.mean(h) if len(h) else 0.5 for h in split["history_labels"]], dtype=np.float64)


def probe(feats: dict, labels: dict, share: dict, train: str, variant: str) -> dict[str, float]:
    """L2 logistic regression on ``train`` features, C picked on valid AUC; valid / test / train AUC."""
    def x(name: str) -> np.ndarray:
        return feats[name] if variant == "frozen" else np.column_stack([feats[name], share[name]])

    scaler = StandardScaler().fit(x(train))
    best = None
    for c in (1e-3, 1e-2, 1e-1, 1.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x(train)), labels[train])
        auc = {n: roc_auc_score(labels[n], clf.predict_proba(scaler.transform(x(n)))[:, 1])
               for n in ("valid", "test", train)}
        if best is None or auc["valid"] > best["valid_auc"]:
            best = {"valid_auc": round(auc["valid"], 4), "test_auc": round(auc["test"], 4),
                    "train_auc": round(auc[train], 4), "C": c}
    return best


def main(argv: list[str] | None = None) -> None:
    """Embed, probe, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--few-shot", type=int, default=0, help="also probe k-shot samples (seeds 1-3)")
    parser.add_argument("--save", default=None, help="write the features and labels to this .npz")
    parser.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                        help="mean: sentence-transformers' pooling for this model; cls: the first token, "
                             "what BehaviourModel's pooling='auto' picks for encoders")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tick = time.perf_counter()
    data = prepare(DataConfig(dataset="ml-100k", task="ctr", protocol="tallrec", template="tallrec",
                              history_len=10))
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    feats, labels, share, kept = {}, {}, {}, {}
    for name in ("train", "valid", "test"):
        split = tokenize_examples(data.splits[name], tok, max_length=args.max_length, items=data.items,
                                  template="tallrec", task="ctr")
        feats[name] = embed(model, split["input_ids"], pooling=args.pooling)
        labels[name] = np.asarray(split["label"])
        share[name] = history_share(split)
        kept[name] = float(np.mean(split["n_history_kept"]))
    def few_shot_split(seed: int):
        cfg = DataConfig(dataset="ml-100k", task="ctr", protocol="tallrec", template="tallrec",
                         history_len=10, few_shot_k=args.few_shot, seed=seed)
        return tokenize_examples(prepare(cfg).splits["train"], tok, max_length=args.max_length,
                                 items=data.items, template="tallrec", task="ctr")

    for seed in (1, 2, 3) if args.few_shot else ():
        split = few_shot_split(seed)
        name = f"k{args.few_shot}_s{seed}"
        feats[name] = embed(model, split["input_ids"], pooling=args.pooling)
        labels[name] = np.asarray(split["label"])
        share[name] = history_share(split)
    if args.save:
        np.savez(args.save, **{f"{k}__x": v for k, v in feats.items()},
                 **{f"{k}__y": v for k, v in labels.items()}, **{f"{k}__share": v for k, v in share.items()})
    result: dict[str, object] = {"max_length": args.max_length, "pooling": args.pooling,
                                 "mean_history_items_kept": kept}
    train_sets = ["train"] + [k for k in feats if k.startswith("k")]
    for train_name in train_sets:
        for variant in ("frozen", "frozen+history_share"):
            result[f"{train_name}:{variant}"] = probe(feats, labels, share, train_name, variant)
    result["seconds"] = round(time.perf_counter() - tick, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
