"""Behaviour models: a Hugging Face backbone + pooling + a task head (ctr, rating, next_item).

cfg = ModelConfig(backbone="minilm", task="ctr", method="lora")
tokenizer = load_tokenizer(cfg)
model = build_model(cfg)           # backbone + head + petrec.attach(method)
out = model(input_ids, attention_mask, labels=labels)   # out.loss, out.logits
"""

from __future__ import annotations

from petrec.models.behaviour import (
    BehaviourModel,
    BehaviourOutput,
    duplicate_target_mask,
    in_batch_loss,
    same_item_mask,
)
from petrec.models.build import build_model, is_decoder_config, load_backbone, load_tokenizer
from petrec.models.config import POOLINGS, TASKS, ModelConfig, PetrecModelError
from petrec.models.pooling import first_token_index, last_token_index, pool

__all__ = [
    "POOLINGS",
    "TASKS",
    "BehaviourModel",
    "BehaviourOutput",
    "ModelConfig",
    "PetrecModelError",
    "build_model",
    "duplicate_target_mask",
    "first_token_index",
    "in_batch_loss",
    "is_decoder_config",
    "last_token_index",
    "load_backbone",
    "load_tokenizer",
    "pool",
    "same_item_mask",
]
