"""Find what to adapt inside any model: the Hugging Face backbone, the task head, target layers.

Works the same on a top-level ``AutoModelForSequenceClassification``, on a user module that holds
a Hugging Face model as an attribute (``BehaviourModel.backbone``), and on a plain
``torch.nn.Module`` made of ``nn.Linear`` layers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from petrec.methods.errors import PetrecMethodError

#: Attribute names tried, in order, when ``head=None``: HF classification heads, then ours.
DEFAULT_HEAD_NAMES = ("classifier", "score", "head")

#: Bottleneck-adapter placement per HF ``model_type``: regexes (full match on the module name)
#: for the attention output projection and the feed-forward output projection.
ADAPTER_TARGETS: dict[str, tuple[str, str]] = {
    **{
        t: (r".*\.attention\.output\.dense", r".*\.layer\.\d+\.output\.dense")
        for t in ("bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "electra", "camembert")
    },
    "distilbert": (r".*\.attention\.out_lin", r".*\.ffn\.lin2"),
    "gpt2": (r".*\.attn\.c_proj", r".*\.mlp\.c_proj"),
    **{
        t: (r".*\.self_attn\.o_proj", r".*\.mlp\.down_proj")
        for t in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "olmo")
    },
}


def is_hf_model(module: nn.Module) -> bool:
    """True for a ``transformers.PreTrainedModel`` (checked without importing transformers eagerly)."""
    return any(c.__name__ == "PreTrainedModel" for c in type(module).__mro__)


def find_hf_base(model: nn.Module) -> tuple[str, nn.Module] | None:
    """Return ``(name, module)`` of the Hugging Face base transformer inside ``model``.

    The base transformer is the ``PreTrainedModel`` whose ``base_model`` is itself (``BertModel``,
    ``GPT2Model``, ``LlamaModel`` ...): the module that owns the input embeddings and the layers.
    ``name`` is ``""`` when ``model`` itself is that module.
    """
    for name, module in model.named_modules():
        if is_hf_model(module) and getattr(module, "base_model", None) is module:
            return name, module
    return None


def require_hf_base(model: nn.Module, method: str) -> tuple[str, nn.Module]:
    """:func:`find_hf_base`, or one clear error naming ``method`` when there is no HF transformer."""
    from petrec.methods.errors import PetrecMethodError

    found = find_hf_base(model)
    if found is None:
        raise PetrecMethodError(
            f"method {method!r} needs a Hugging Face transformer inside {type(model).__name__} "
            "(none found); for a plain nn.Module use lora, ia3 or adapter"
        )
    return found


def model_type(model: nn.Module) -> str | None:
    """The HF ``config.model_type`` of the backbone inside ``model`` (``None`` for plain modules)."""
    found = find_hf_base(model)
    if found is None:
        return None
    return getattr(found[1].config, "model_type", None)


def resolve_heads(model: nn.Module, head: str | Sequence[str] | None) -> list[str]:
    """Names of the task-head modules: ``head`` as given, else the first default name present.

    Raises:
        PetrecMethodError: A named head does not exist in ``model``.
    """
    modules = dict(model.named_modules())
    if head is None:
        return [n for n in DEFAULT_HEAD_NAMES if n in modules][:1]
    names = [head] if isinstance(head, str) else list(head)
    missing = [n for n in names if n not in modules]
    if missing:
        top = [n for n in modules if n and "." not in n]
        raise PetrecMethodError(
            f"head module(s) {missing} not found in {type(model).__name__}; "
            f"top-level modules are {top}"
        )
    return names


def under(name: str, prefixes: Iterable[str]) -> bool:
    """True when module ``name`` is one of ``prefixes`` or lies inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")


def linear_names(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Full names of every ``nn.Linear`` (or GPT-2 ``Conv1D``) outside ``exclude``.

    Linear layers owned by ``nn.MultiheadAttention`` are skipped: that module reads their weights
    directly instead of calling them, so a wrapper around them would silently do nothing.
    """
    mha_children = {
        f"{n}.{c}" if n else c
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        for c, _ in m.named_children()
    }
    return [
        n
        for n, m in model.named_modules()
        if n and _is_linear_like(m) and not under(n, exclude) and n not in mha_children
    ]


def match_targets(model: nn.Module, targets: str | Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Expand ``targets`` to full module names with peft's matching rules.

    A string is a regex that must match a whole module name; a list holds names matched exactly
    or as a dotted suffix (``"query"`` matches ``bert.encoder.layer.0.attention.self.query``).
    """
    names = [n for n, _ in model.named_modules() if n and not under(n, exclude)]
    if isinstance(targets, str):
        return [n for n in names if re.fullmatch(targets, n)]
    wanted = list(targets)
    return [n for n in names if any(n == t or n.endswith("." + t) for t in wanted)]


def _logical_shape(p: nn.Parameter) -> tuple[int, ...]:
    """Shape of the weight as the model sees it (a packed 4-bit weight reports its unpacked shape)."""
    qs = getattr(p, "quant_state", None)
    return tuple(qs.shape) if qs is not None else tuple(p.shape)


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """A shape summary of a model's parameters: class, count and a hash of (name, shape) pairs.

    Used to refuse loading an adapter into a base of another architecture or size.
    """
    items = sorted((n, _logical_shape(p)) for n, p in model.named_parameters())
    digest = hashlib.sha1(repr(items).encode()).hexdigest()[:16]
    found = find_hf_base(model)
    cfg = found[1].config if found else None
    return {
        "model_class": type(model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "num_parameters": int(sum(torch.Size(_logical_shape(p)).numel() for p in model.parameters())),
        "shape_hash": digest,
    }


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Return ``(parent, child_name)`` for the dotted module ``name``."""
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child
