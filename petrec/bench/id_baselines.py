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
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

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


@dataclass
class IDCTRConfig:
    """Shape and training of the ID-based ctr baselines (one set of defaults for all three)."""

    hidden: int = 64
    """Embedding / encoder width."""
    dropout: float = 0.2
    """Encoder and head dropout."""
    layers: int = 1
    """gru4rec: GRU layers."""
    window: int | None = None
    """caser: positions convolved; None = the data's ``history_len``."""
    blocks: int = 2
    """sasrec: transformer blocks."""
    heads: int = 1
    """sasrec: attention heads."""
    min_item_count: int = 1
    """Items seen fewer times than this in the training examples share the OOV embedding."""
    lr: float = 1e-3
    """AdamW learning rate (constant after warm-up)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases / norms)."""
    batch_size: int = 64
    """Training batch size."""
    eval_batch_size: int = 1000
    """Validation / test batch size."""
    epochs: int = 40
    """Passes over the training examples (an upper bound: early stopping usually ends sooner)."""
    min_steps: int = 200
    """Small training sets get more passes, up to at least this many optimizer steps."""
    eval_every_steps: int = 10
    """Validation AUC every this many optimizer steps (model selection, early stopping)."""
    early_stopping_patience: int = 10
    """Stop after this many evaluations without a better validation AUC."""
    threads: int = 1
    """torch intra-op threads while the baseline runs (restored afterwards)."""

    def __post_init__(self) -> None:
        positive = ("hidden", "layers", "blocks", "heads", "min_item_count", "batch_size", "eval_batch_size",
                    "epochs", "min_steps", "eval_every_steps", "threads")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"IDCTRConfig: {', '.join(bad)} must be ≥ 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("IDCTRConfig: lr must be > 0 and weight_decay ≥ 0")
        if self.early_stopping_patience < 0:
            raise ValueError("IDCTRConfig.early_stopping_patience must be ≥ 0")


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
    from petrec.models.sequential.ctr import (
        ItemVocab,
        SequenceCTRConfig,
        TensorRows,
        encode_examples,
        evaluate_sequence_ctr,
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
        out = {s: evaluate_sequence_ctr(model, accelerator.prepare(loaders[s]), accelerator)
               for s in ("valid", "test")}
        infer_s = time.perf_counter() - tick
    finally:
        torch.set_num_threads(threads)
    n_params = param_counts(model)["trainable_params"]
    for split in ("valid", "test"):
        out[split].pop("n_examples", None)
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
            "valid_best": {"metric": "auc", "value": result.best_metric, "step": result.best_step},
            "trainable_params": n_params, "total_params": n_params, "trainable_percent": 100.0,
            "steps": result.global_step, "stopped_early": result.stopped_early, "labels": [label],
            "train_examples": len(train_split), "train_seconds": round(result.train_seconds, 2),
            "test_eval_seconds": round(infer_s, 2), "hyperparameters": hparams,
            "valid_history": result.valid_history}


def train_id_ctr(tensors: dict[str, Any], n_tokens: int, model_cfg: Any, cfg: IDCTRConfig,
                 seed: int) -> tuple[Any, Any, Any, int]:
    """Train a :class:`petrec.models.sequential.ctr.SequenceCTR` with the shared loop (early stopping on ``valid``).

    The one training procedure of the ID baselines and of collaborative tokens' ID model
    (:mod:`petrec.collab_fit`).

    Args:
        tensors: ``train`` and ``valid`` tensors of :func:`petrec.models.sequential.ctr.encode_examples`.
        n_tokens: Rows of the item table (:attr:`petrec.models.sequential.ctr.ItemVocab.n_tokens`).
        model_cfg: The model's :class:`~petrec.models.sequential.ctr.SequenceCTRConfig`.
        cfg: Optimisation settings.
        seed: Seeds the weights, shuffling and dropout.

    Returns:
        The trained model (best validation weights), the loop's result, its accelerator and the
        epoch budget it ran under.
    """
    import torch
    from torch.utils.data import DataLoader

    from petrec.models.sequential.ctr import SequenceCTR, TensorRows, evaluate_sequence_ctr
    from petrec.train import TrainConfig, make_accelerator, train

    n_train = len(tensors["train"]["labels"])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="petrec-id-ctr-") as tmp:
            train_cfg = TrainConfig(output_dir=tmp, epochs=epochs, batch_size=cfg.batch_size,
                                    eval_batch_size=cfg.eval_batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    warmup_ratio=0.0, scheduler="constant", mixed_precision="no",
                                    eval_every_steps=cfg.eval_every_steps,
                                    early_stopping_patience=cfg.early_stopping_patience, metric_for_best="auc",
                                    seed=seed, progress=False, trackers=[], log_every_steps=10_000)
            accelerator = make_accelerator(train_cfg, cpu=True)
            torch.set_num_threads(cfg.threads)  # Accelerate may have set its own count
            torch.manual_seed(seed)
            model = SequenceCTR(n_tokens, model_cfg)
            train_loader = DataLoader(TensorRows(tensors["train"]), batch_size=cfg.batch_size, shuffle=True)
            valid_loader = DataLoader(TensorRows(tensors["valid"]), batch_size=cfg.eval_batch_size)
            result = train(model, train_loader, valid_loader, train_cfg, evaluate_fn=evaluate_sequence_ctr,
                           accelerator=accelerator)
    finally:
        torch.set_num_threads(threads)
    return model, result, accelerator, epochs
