"""ID-based sequence baselines for click/like prediction: GRU4Rec / Caser / SASRec with a binary head.

``gru4rec-ctr``, ``caser-ctr`` and ``sasrec-ctr`` train
:class:`petrec.models.sequential.ctr.SequenceCTR` from scratch on exactly the training examples a
language-model run of the same ``data`` config gets (its ``few_shot_k`` sample for its
``seed``), with the shared Accelerate loop (:func:`petrec.train.train`): AdamW, validation AUC
every ``eval_every_steps`` steps, early stopping, the best validation weights tested. They run
in-process on the CPU with one torch thread (:class:`IDCTRConfig` holds every setting; the
values used are written into the record's label). Item IDs are known only from those training
examples: other items share one out-of-vocabulary embedding.

TALLRec (Bao et al., RecSys 2023) reports Caser at 0.5420 test AUC with 256 shots on this split.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from petrec.recipes.id_ctr import IDCTRConfig, train_id_ctr

#: Key of a baseline result holding each evaluated split's raw scores (one per example, split
#: order); :func:`petrec.bench.baselines.run_baseline` turns them into the debiased breakdowns and
#: drops them before the record is written.
SCORES_KEY = "_scores"

#: Baseline name → :class:`petrec.models.sequential.ctr.SequenceCTRConfig` encoder.
ID_BASELINES: dict[str, str] = {"gru4rec-ctr": "gru4rec", "caser-ctr": "caser", "sasrec-ctr": "sasrec"}

ID_BASELINE_DESCRIPTIONS: dict[str, str] = {
    "gru4rec-ctr": "GRU4Rec (GRU over item-ID + like/dislike embeddings) with a binary head, trained from "
                   "scratch on the run's training examples only",
    "caser-ctr": "Caser (horizontal + vertical convolutions over item-ID + like/dislike embeddings) with a "
                 "binary head, trained from scratch on the run's training examples only",
    "sasrec-ctr": "SASRec (causal self-attention over item-ID + like/dislike embeddings) with a binary head, "
                  "trained from scratch on the run's training examples only",
}


def run_id_baseline(name: str, data_cfg: Any, splits: Any, overrides: dict[str, Any] | None,
                    error: type[Exception]) -> dict[str, Any]:
    """Train and test one ID baseline on prepared ctr splits.

    Args:
        name: A key of :data:`ID_BASELINES`.
        data_cfg: The run's :class:`petrec.data.DataConfig`: ``seed`` seeds the weights,
            shuffling and dropout, ``history_len`` is the model's history length.
        splits: ``train`` / ``valid`` / ``test`` splits of ``data_cfg`` (train already holds the
            run's few-shot sample).
        overrides: :class:`IDCTRConfig` fields to change (the run config's ``id_ctr`` mapping).
        error: Exception type raised for data the baseline cannot use.

    Raises:
        error: One training class only, or malformed histories / labels.
        petrec.config.ConfigError: An unknown or mistyped ``id_ctr`` key.

    Returns:
        A ``metrics.json``-shaped dict (see :func:`petrec.bench.baselines.run_baseline`).
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from petrec.config import from_dict
    from petrec.evaluation import predict_scores
    from petrec.metrics import compute_ctr
    from petrec.models.sequential.ctr import (
        INPUTS,
        ItemVocab,
        SequenceCTRConfig,
        TensorRows,
        encode_examples,
    )
    from petrec.models.sequential.run import param_counts

    if name not in ID_BASELINES:
        raise error(f"unknown ID baseline {name!r}; known: {sorted(ID_BASELINES)}")
    cfg = from_dict(IDCTRConfig, overrides or {}, prefix="id_ctr.")
    seed, max_len = int(data_cfg.seed), int(data_cfg.history_len)
    train_split = splits["train"]
    y = np.asarray(train_split["label"], dtype=float)
    if len(np.unique(y)) < 2:
        raise error(f"{name} needs both classes; the {len(y)} training examples are all label "
                    f"{int(y[0]) if len(y) else '?'}")
    vocab = ItemVocab.from_examples(list(train_split["history_item_ids"]), list(train_split["item_id"]),
                                    cfg.min_item_count)
    try:
        tensors = {s: encode_examples(splits[s], vocab, max_len) for s in ("train", "valid", "test")}
    except ValueError as exc:
        raise error(f"{name}: {exc}") from None
    model_cfg = SequenceCTRConfig(encoder=ID_BASELINES[name], hidden=cfg.hidden, max_len=max_len,  # type: ignore[arg-type]
                                  dropout=cfg.dropout, layers=cfg.layers, window=cfg.window, blocks=cfg.blocks,
                                  heads=cfg.heads)
    model, result, accelerator, epochs = train_id_ctr(tensors, vocab.n_tokens, model_cfg, cfg, seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        loaders = {s: DataLoader(TensorRows(tensors[s]), batch_size=cfg.eval_batch_size) for s in ("valid", "test")}
        tick = time.perf_counter()
        predicted = {s: predict_scores(model, accelerator.prepare(loaders[s]), accelerator, INPUTS)
                     for s in ("valid", "test")}
        infer_s = time.perf_counter() - tick
    finally:
        torch.set_num_threads(threads)
    n_params = param_counts(model)["trainable_params"]
    out: dict[str, Any] = {s: compute_ctr(labels.astype(np.int64), logits, from_logits=True)
                           for s, (logits, labels) in predicted.items()}
    oov = {s: float((t["item_ids"] == 1).float().mean()) for s, t in tensors.items()}
    hparams = {**dataclasses.asdict(cfg), "history_len": max_len, "epochs_run_max": epochs,
               "vocab_items": len(vocab.items), "device": str(accelerator.device)}
    label = (f"baseline: {ID_BASELINE_DESCRIPTIONS[name]}; settings "
             + ", ".join(f"{k}={v}" for k, v in hparams.items())
             + f"; steps {result.global_step}, best valid step {result.best_step}"
             + f", stopped early {result.stopped_early}; OOV candidates train/valid/test "
             + "/".join(f"{oov[s]:.3f}" for s in ("train", "valid", "test")))
    # Speed and memory stay out of the record's columns: an in-process CPU baseline's numbers
    # would be divided by a GPU run's in the report's ratio columns.
    return {"valid": out["valid"], "test": out["test"],
            SCORES_KEY: {s: logits for s, (logits, _) in predicted.items()},
            "valid_best": {"metric": "auc", "value": result.best_metric, "step": result.best_step},
            "trainable_params": n_params, "total_params": n_params, "trainable_percent": 100.0,
            "steps": result.global_step, "stopped_early": result.stopped_early, "labels": [label],
            "train_examples": len(train_split), "train_seconds": round(result.train_seconds, 2),
            "test_eval_seconds": round(infer_s, 2), "hyperparameters": hparams,
            "valid_history": result.valid_history}
