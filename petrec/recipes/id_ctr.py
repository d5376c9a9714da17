"""Training of the ID click models (:class:`petrec.models.sequential.ctr.SequenceCTR`) with the shared loop.

One procedure for the ID baselines of the benchmark (:mod:`petrec.bench.id_baselines`) and for the
ID model behind collaborative tokens (:mod:`petrec.recipes.collab`): AdamW at a constant rate,
validation AUC every few steps, early stopping, the best weights kept, one CPU thread.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Any

__all__ = ["IDCTRConfig", "train_id_ctr"]


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


def train_id_ctr(tensors: dict[str, Any], n_tokens: int, model_cfg: Any, cfg: IDCTRConfig,
                 seed: int) -> tuple[Any, Any, Any, int]:
    """Train a :class:`petrec.models.sequential.ctr.SequenceCTR` with the shared loop (early stopping on ``valid``).

    The one training procedure of the ID baselines and of collaborative tokens' ID model
    (:mod:`petrec.recipes.collab`).

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
