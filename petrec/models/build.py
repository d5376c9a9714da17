"""Load a backbone and tokenizer offline, build the behaviour model, attach the PEFT method."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from petrec.data.frame import answer_token_ids, get_frame, prompt_frame, set_frame
from petrec.methods import attach, get_method
from petrec.models.answer import answer_rows
from petrec.models.behaviour import BehaviourModel
from petrec.models.collab import CollabSpec
from petrec.models.config import ModelConfig, PetrecModelError
from petrec.paths import resolve_model

__all__ = [
    "DROPOUT_ATTRS",
    "build_model",
    "is_decoder_config",
    "load_backbone",
    "load_tokenizer",
    "set_backbone_dropout",
]

_DTYPES: dict[str, Any] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}


def is_decoder_config(config: PretrainedConfig) -> bool:
    """Whether a backbone is a causal decoder (pooled on its last token by default).

    ``config.is_decoder`` when set (a BERT configured as decoder); otherwise a model type
    that has a causal-LM class but no masked-LM class (GPT-2, Llama, Qwen2 ... but not BERT,
    which has both).

    Raises:
        PetrecModelError: An encoder-decoder model (T5, BART): not supported as a backbone.
    """
    if getattr(config, "is_encoder_decoder", False):
        raise PetrecModelError(
            f"model.backbone: {config.model_type!r} is an encoder-decoder model; petrec needs an "
            "encoder (BERT-like) or a decoder (GPT-like) backbone"
        )
    if getattr(config, "is_decoder", False):
        return True
    mt = config.model_type
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


#: Dropout-rate attributes of Hugging Face configs (BERT family, GPT-2, Llama/Qwen, DistilBERT ...).
DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "hidden_dropout",
    "activation_dropout",
    "dropout",
)


def set_backbone_dropout(config: PretrainedConfig, rate: float) -> list[str]:
    """Set every dropout rate a backbone config exposes to ``rate``.

    Returns:
        The attribute names that were set.

    Raises:
        PetrecModelError: The config exposes none of :data:`DROPOUT_ATTRS`.
    """
    found = [a for a in DROPOUT_ATTRS if isinstance(getattr(config, a, None), (int, float))]
    if not found:
        raise PetrecModelError(
            f"model.backbone_dropout: {config.model_type!r} configs expose none of {list(DROPOUT_ATTRS)}"
        )
    for attr in found:
        setattr(config, attr, float(rate))
    return found


def _load_error(cfg: ModelConfig, path: str, exc: Exception) -> PetrecModelError:
    return PetrecModelError(
        f"model.backbone={cfg.backbone!r}: could not load {path!r} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}). petrec runs offline: give a local "
        "folder, the alias 'minilm', or a hub id already in the Hugging Face cache"
    )


def load_backbone(cfg: ModelConfig) -> tuple[nn.Module, bool]:
    """The HF base model (no LM / classification head) named by ``cfg.backbone``.

    The BERT-style pooler, when present, is removed: petrec pools itself, and an unused
    trained layer would break DDP (parameters without gradients) and inflate counts.

    Returns:
        ``(backbone, is_decoder)``.
    """
    path = resolve_model(cfg.backbone)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(cfg, path, exc) from exc
    decoder = is_decoder_config(config)
    if cfg.backbone_dropout is not None:
        set_backbone_dropout(config, cfg.backbone_dropout)
    quantize = get_method(cfg.method).quantize or cfg.quantize
    try:
        if quantize is not None and torch.cuda.is_available():
            # CUDA: bitsandbytes' own quantization_config path (never materialises the fp32
            # model on the GPU). Each process loads onto its own device, so QLoRA works
            # under DDP. On CPU, petrec.attach quantizes the fp32 model instead.
            from accelerate import PartialState

            from petrec.methods import load_quantized

            backbone = load_quantized(path, quantize, device_map={"": PartialState().local_process_index},
                                      config=config)
        else:
            backbone = AutoModel.from_pretrained(path, config=config, dtype=_DTYPES[cfg.dtype])
    except (OSError, ValueError) as exc:
        raise _load_error(cfg, path, exc) from exc
    drop_pooler(backbone)
    return backbone, decoder


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute a transformers model's layer activations in the backward pass (non-reentrant).

    Non-reentrant checkpointing also reaches trainable parameters when the frozen input embeddings
    need no gradient. transformers 5 names the switch ``activation_checkpointing_enable`` and keeps
    ``gradient_checkpointing_enable`` as a deprecated alias (to go in v6); either is taken.
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False


def drop_pooler(backbone: nn.Module) -> None:
    """Remove a BERT-style pooler: petrec pools itself, and an unused trained layer would break
    DDP (parameters without gradients) and inflate parameter counts."""
    if isinstance(getattr(backbone, "pooler", None), nn.Module):
        backbone.pooler = None


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer, ready for batching.

    * Decoders without a pad token get ``pad = eos`` (the attention mask keeps padding out
      of every computation, so reusing eos is safe).
    * ``padding_side`` is ``cfg.padding_side`` (``right`` by default for every model). The
      model's pooling finds the first / last real token from the attention mask, so ``cls``
      and ``last`` pooling are correct under either side; with left padding the model also
      derives position ids from the mask.

    Raises:
        PetrecModelError: The tokenizer cannot be loaded, or has neither pad nor eos token.
    """
    path = resolve_model(cfg.backbone)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(cfg, path, exc) from exc
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise PetrecModelError(
                f"model.backbone={cfg.backbone!r}: the tokenizer has neither a pad nor an eos token"
            )
        tok.pad_token = tok.eos_token
    tok.padding_side = cfg.padding_side
    if cfg.scoring == "answer":
        # Every petrec tokenisation of this tokenizer now wraps prompts in the answer frame
        # (chat template or "Answer:"), and the answer words are checked to be single tokens.
        frame = prompt_frame(tok, cfg.task, cfg.prompt_format)
        answer_token_ids(tok, frame, cfg.task)
        set_frame(tok, frame)
    return tok


def build_model(cfg: ModelConfig, *, collab: CollabSpec | None = None) -> BehaviourModel:
    """Load the backbone (offline), build pooling + head, then attach the PEFT method.

    Order: backbone -> gradient checkpointing -> head (with ``scoring: answer``, the LM head's
    rows of the answer tokens) -> ``petrec.attach(model, cfg.method,
    head=["head"], quantize=cfg.quantize, **cfg.method_kwargs)``; the head always trains.

    With ``cfg.collab_tokens`` the collaborative-token module (``collab``: ID model + projector,
    sized by ``collab``) is a head too, so it is trained and saved with the adapter; the ID model
    inside it is then frozen again unless ``cfg.collab_tune`` (it is still saved: a reloaded run
    needs it). Load the fitted ID model's weights with ``model.collab.id_model.load_state_dict``.

    Args:
        cfg: The model config.
        collab: With ``cfg.collab_tokens``: the ID vocabulary and shape (petrec.models.collab).

    Returns:
        The behaviour model with the method's trainable parameters (and the head) unfrozen.
    """
    backbone, decoder = load_backbone(cfg)
    if cfg.gradient_checkpointing:
        if not getattr(backbone, "supports_gradient_checkpointing", False):
            raise PetrecModelError(
                f"model.gradient_checkpointing: {type(backbone).__name__} does not support it"
            )
        enable_activation_checkpointing(backbone)
    model = BehaviourModel(backbone, cfg, is_decoder=decoder, collab=collab)
    if cfg.scoring == "answer":
        tok = load_tokenizer(cfg)
        ids = answer_token_ids(tok, get_frame(tok), cfg.task)
        model.head.init_rows(answer_rows(backbone, resolve_model(cfg.backbone), ids))
    heads = ["head", *(["prior"] if cfg.behaviour_prior else []), *(["collab"] if cfg.collab_tokens else [])]
    model = attach(model, cfg.method, targets=cfg.targets, head=heads, quantize=cfg.quantize, **cfg.method_kwargs)
    if cfg.collab_tokens:
        model.collab.freeze_id_model(logit_only=not cfg.collab_prompt_tokens)
    if not isinstance(model, BehaviourModel):
        raise PetrecModelError(
            f"petrec.attach returned a {type(model).__name__}, expected the BehaviourModel it was given"
        )
    return model
