"""Prompt tuning: trained soft-prompt vectors prepended to the input embeddings.

Paper: Lester et al. 2021 https://arxiv.org/abs/2104.08691

Why our own instead of peft's ``PromptTuningConfig``: peft injects soft prompts only from a
task-specific ``PeftModel`` wrapper around the top-level ``PreTrainedModel``; it cannot reach a
backbone nested inside a user module (``BehaviourModel.backbone``) and its base ``PeftModel``
forward does not support prompt learning at all. Here a forward pre-hook on the HF base model
turns ``input_ids`` into ``inputs_embeds`` with the prompt in front (attention mask and token
types extended), and a forward hook strips the prompt positions again, so ``last_hidden_state``
(and every ``hidden_states`` entry) has exactly the input's length: pooling code (CLS, mean,
last-token) keeps working unchanged. Initialisation: ``"vocab"`` copies randomly chosen rows
of the frozen word-embedding matrix (the sampled-vocabulary init of Lester et al.), ``"random"``
draws N(0, 0.02).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from petrec.methods.base import NamedAdapterModule
from petrec.methods.discovery import find_hf_base, require_hf_base
from petrec.methods.errors import PetrecMethodError

PROMPT_ATTR = "petrec_prompt"


@dataclass
class PromptOptions:
    """Options of ``prompt``."""

    num_virtual_tokens: int = 10
    """Number of soft-prompt vectors prepended to every input."""
    init: str = "vocab"
    """``"vocab"`` (copies of random vocabulary embeddings) or ``"random"`` (N(0, 0.02))."""
    seed: int = 0
    """Seed for choosing the initial vocabulary rows / random values."""

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise PetrecMethodError(
                f"prompt option num_virtual_tokens must be a positive int, got {self.num_virtual_tokens!r}"
            )
        if self.init not in ("vocab", "random"):
            raise PetrecMethodError(f"prompt option init must be 'vocab' or 'random', got {self.init!r}")


class SoftPrompt(nn.Module):
    """``num_virtual_tokens`` trained vectors of the embedding width."""

    def __init__(self, embeddings: torch.Tensor, opts: PromptOptions) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(opts.seed)
        vocab, width = embeddings.shape
        if opts.init == "vocab":
            rows = torch.randint(0, vocab, (opts.num_virtual_tokens,), generator=gen)
            init = embeddings.detach().float().cpu()[rows].clone()
        else:
            init = torch.randn(opts.num_virtual_tokens, width, generator=gen) * 0.02
        self.weight = nn.Parameter(init.to(device=embeddings.device))


class PromptStore(NamedAdapterModule):
    """Lives on the HF base model as ``petrec_prompt``; its hooks add and strip the prompt."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_handles: list[Any] = []
        self._added = 0

    def before(self, base: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Forward pre-hook: prepend the active prompt to the input embeddings."""
        prompt = self.current()
        self._added = 0
        if prompt is None:
            return args, kwargs
        kwargs = dict(kwargs)
        if args:  # HF heads call their backbone as ``self.bert(input_ids, ...)``
            kwargs["input_ids"], args = args[0], args[1:]
        if kwargs.get("past_key_values") is not None:
            raise PetrecMethodError("prompt tuning does not support past_key_values (incremental decoding)")
        ids = kwargs.pop("input_ids", None)
        embeds = kwargs.pop("inputs_embeds", None)
        if embeds is None:
            if ids is None:
                raise PetrecMethodError("prompt tuning needs input_ids or inputs_embeds")
            embeds = base.get_input_embeddings()(ids)
        if kwargs.get("position_ids") is not None:
            raise PetrecMethodError("prompt tuning cannot shift explicit position_ids; leave them unset")
        batch, n = embeds.shape[0], prompt.weight.shape[0]
        soft = prompt.weight.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        kwargs["inputs_embeds"] = torch.cat([soft, embeds], dim=1)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        kwargs["attention_mask"] = torch.cat(
            [torch.ones(batch, n, dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        types = kwargs.get("token_type_ids")
        if types is not None:
            kwargs["token_type_ids"] = torch.cat(
                [torch.zeros(batch, n, dtype=types.dtype, device=types.device), types], dim=1
            )
        self._added = n
        return args, kwargs

    def after(self, base: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        """Forward hook: drop the prompt positions from the hidden states."""
        n, self._added = self._added, 0
        if not n:
            return output
        if hasattr(output, "last_hidden_state") and output.last_hidden_state is not None:
            output.last_hidden_state = output.last_hidden_state[:, n:]
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, n:] for h in output.hidden_states)
        if isinstance(output, tuple) and not hasattr(output, "last_hidden_state"):
            output = (output[0][:, n:], *output[1:])
        return output


def apply_prompt(model: nn.Module, opts: PromptOptions, targets: object, heads: list[str], adapter_name: str) -> list[str]:
    """Add soft prompt ``adapter_name`` to the HF backbone inside ``model``."""
    if targets is not None:
        raise PetrecMethodError("method 'prompt' adapts the input embeddings; it takes no targets=")
    base_name, base = require_hf_base(model, "prompt")
    store = getattr(base, PROMPT_ATTR, None)
    if store is None:
        store = PromptStore()
        setattr(base, PROMPT_ATTR, store)
        store.hook_handles = [
            base.register_forward_pre_hook(store.before, with_kwargs=True),
            base.register_forward_hook(store.after, with_kwargs=True),
        ]
    store.adapters[adapter_name] = SoftPrompt(base.get_input_embeddings().weight, opts)
    store.set_active(adapter_name)
    return [f"{base_name}.{PROMPT_ATTR}" if base_name else PROMPT_ATTR]


def remove_prompt(model: nn.Module) -> None:
    """Undo :func:`apply_prompt` entirely (hooks and module)."""
    found = find_hf_base(model)
    if found is None or getattr(found[1], PROMPT_ATTR, None) is None:
        return
    base = found[1]
    for h in getattr(base, PROMPT_ATTR).hook_handles:
        h.remove()
    delattr(base, PROMPT_ATTR)
