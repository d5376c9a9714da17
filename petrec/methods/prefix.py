"""Prefix tuning for encoders *and* decoders: trained key/value prefixes in every attention layer.

Paper: Li & Liang 2021 https://arxiv.org/abs/2101.00190 (P-Tuning v2 for encoders:
https://arxiv.org/abs/2110.07602)

Why our own instead of peft's ``PrefixTuningConfig``: with transformers 5.x / peft 0.21, peft
feeds the prefix through ``past_key_values``, which BERT-family encoders reject ("Model does not
support past key values which are required for prefix tuning"), and peft's path needs the
top-level ``PreTrainedModel`` wrapped in a task-specific ``PeftModel`` — it cannot reach a
backbone nested inside a user module (``BehaviourModel.backbone``). Transformers 5 routes every
attention layer through one pluggable function (``AttentionInterface``); petrec registers its own
implementation that concatenates this layer's prefix keys/values in front of the real ones and
extends the attention mask with "attend" columns, then calls the stock sdpa / eager kernel. The
same code serves BERT, GPT-2, Llama and Qwen2 (grouped-query attention included), nested or not.
DeBERTa-v2/v3 computes its disentangled attention itself; :mod:`.prefix_deberta` patches it.
The output keeps the input's sequence length (prefixes are keys/values only, never positions).
Prefixes carry no position: decoders see real tokens at positions 0..T-1 (peft's cache-based
prefix shifts them to P..P+T-1), and the original attention kernel is replaced by sdpa unless
it was eager (a flash-attention model runs on sdpa while a prefix is attached).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from petrec.methods.base import NamedAdapterModule
from petrec.methods.discovery import find_hf_base, require_hf_base
from petrec.methods.errors import PetrecMethodError
from petrec.methods.prefix_deberta import DEBERTA_TYPES, patch_deberta, unpatch_deberta

PREFIX_ATTR = "petrec_prefix"
_REF = "_petrec_prefix_ref"
_IMPL = {"sdpa": "petrec_prefix_sdpa", "eager": "petrec_prefix_eager"}
_RECORDER: list[tuple[nn.Module, tuple[int, ...]]] | None = None


@dataclass
class PrefixOptions:
    """Options of ``prefix``."""

    num_virtual_tokens: int = 10
    """Number of prefix key/value positions per layer."""
    projection: bool = False
    """Reparameterise the prefixes through an MLP (embedding → Linear → tanh → Linear)."""
    projection_dim: int = 128
    """Hidden width of that MLP (only with ``projection=True``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise PetrecMethodError(
                f"prefix option num_virtual_tokens must be a positive int, got {self.num_virtual_tokens!r}"
            )
        if self.projection_dim < 1:
            raise PetrecMethodError(f"prefix option projection_dim must be >= 1, got {self.projection_dim!r}")


def _extend_mask(
    mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor, n_prefix: int, causal: bool, eager: bool
) -> torch.Tensor:
    """Attention mask for [prefix, keys]: prefix columns always visible."""
    q_len, k_len = query.shape[2], key.shape[2]
    dtype = query.dtype
    if mask is None:
        if causal and q_len > 1:
            base = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        else:
            base = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        mask = base[None, None]
        if eager:
            mask = torch.zeros(mask.shape, dtype=dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
    shape = (*mask.shape[:-1], n_prefix)
    if mask.dtype == torch.bool:
        pad = torch.ones(shape, dtype=torch.bool, device=mask.device)
    else:
        pad = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def _make_attention(eager: bool) -> Any:
    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
        if _RECORDER is not None:
            _RECORDER.append((module, tuple(key.shape)))
        ref = module.__dict__.get(_REF)
        kv = ref[0].layer_kv(ref[1]) if ref is not None else None
        if kv is not None:
            pk, pv = kv
            batch = key.shape[0]
            pk = pk.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
            pv = pv.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
            causal = kwargs.get("is_causal")
            causal = getattr(module, "is_causal", False) if causal is None else causal
            attention_mask = _extend_mask(attention_mask, query, key, pk.shape[2], bool(causal), eager)
            key = torch.cat([pk, key], dim=2)
            value = torch.cat([pv, value], dim=2)
        if eager:
            fn = sys.modules[type(module).__module__].eager_attention_forward
        else:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward as fn
        return fn(module, query, key, value, attention_mask, **kwargs)

    return attention


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    AttentionInterface.register(_IMPL["sdpa"], _make_attention(eager=False))
    AttentionInterface.register(_IMPL["eager"], _make_attention(eager=True))
    AttentionMaskInterface.register(_IMPL["sdpa"], sdpa_mask)
    AttentionMaskInterface.register(_IMPL["eager"], eager_mask)


class PrefixParams(nn.Module):
    """The trained prefixes of one adapter: per layer keys and values ``[kv_heads, P, head_dim]``."""

    def __init__(self, shapes: list[tuple[int, int]], hidden: int, opts: PrefixOptions) -> None:
        super().__init__()
        self.shapes = shapes
        self.n = opts.num_virtual_tokens
        total = sum(2 * h * d for h, d in shapes)
        if opts.projection:
            self.embedding = nn.Embedding(self.n, hidden)
            self.mlp = nn.Sequential(
                nn.Linear(hidden, opts.projection_dim), nn.Tanh(), nn.Linear(opts.projection_dim, total)
            )
        else:
            self.prefix = nn.Parameter(torch.randn(self.n, total) * 0.02)

    def forward(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """All layers' (key, value) prefixes."""
        flat = self.mlp(self.embedding.weight) if hasattr(self, "mlp") else self.prefix
        out, start = [], 0
        for heads, dim in self.shapes:
            size = heads * dim
            k = flat[:, start : start + size].reshape(self.n, heads, dim).transpose(0, 1)
            v = flat[:, start + size : start + 2 * size].reshape(self.n, heads, dim).transpose(0, 1)
            out.append((k, v))
            start += 2 * size
        return out


class PrefixStore(NamedAdapterModule):
    """Lives on the HF base model as ``petrec_prefix``; computes the prefixes once per forward."""

    def __init__(self, original_impl: str) -> None:
        super().__init__()
        self.original_impl = original_impl
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.hook_handles: list[Any] = []
        self.layer_shapes: list[tuple[int, int]] = []

    def __getstate__(self) -> dict[str, Any]:
        # A copy (copy.deepcopy, as export and serve make) never carries the last forward's
        # prefixes: they are non-leaf tensors, which deepcopy refuses, and the copy recomputes them.
        state = dict(self.__dict__)
        state["_kv"] = None
        return state

    def layer_kv(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Prefix of attention layer ``index`` for the running forward (``None`` when disabled)."""
        if self._kv is None:
            return None
        return self._kv[index]

    def begin(self, *_: Any) -> None:
        """Forward pre-hook of the base: materialise the active prefixes."""
        adapter = self.current()
        self._kv = adapter() if adapter is not None else None

    def end(self, *_: Any) -> None:
        """Forward hook of the base: drop the per-forward prefixes, unless a backward pass may
        still need them.

        Activation checkpointing re-runs the attention layers during the backward pass, after
        this forward has returned; they must concatenate the same prefixes as the first time
        (without them the recomputation saves fewer tensors and torch raises ``CheckpointError``).
        With autograd on, the prefixes are kept until the next forward's :meth:`begin` replaces
        them; they are a few small tensors per layer.
        """
        if not torch.is_grad_enabled():
            self._kv = None


def _discover(base: nn.Module) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Run a 2-token forward and record every attention call (module, key shape) in order."""
    global _RECORDER
    _RECORDER = []
    try:
        with torch.no_grad():
            ids = torch.ones(1, 2, dtype=torch.long, device=base.get_input_embeddings().weight.device)
            base(input_ids=ids, attention_mask=torch.ones_like(ids))
        return _RECORDER
    finally:
        _RECORDER = None


def _install(base: nn.Module, store: PrefixStore) -> None:
    setattr(base, PREFIX_ATTR, store)
    store.hook_handles = [
        base.register_forward_pre_hook(store.begin),
        base.register_forward_hook(store.end),
    ]


def apply_prefix(model: nn.Module, opts: PrefixOptions, targets: object, heads: list[str], adapter_name: str) -> list[str]:
    """Add prefix adapter ``adapter_name`` to the HF backbone inside ``model``."""
    if targets is not None:
        raise PetrecMethodError("method 'prefix' adapts every attention layer; it takes no targets=")
    base_name, base = require_hf_base(model, "prefix")
    store = getattr(base, PREFIX_ATTR, None)
    if store is None and getattr(base.config, "model_type", None) in DEBERTA_TYPES:
        store = PrefixStore("")  # "" = attention implementation untouched (forward patched instead)
        store.layer_shapes = patch_deberta(base, store)
        _install(base, store)
    if store is None:
        _register()
        impl = base.config._attn_implementation or "eager"
        store = PrefixStore(impl)
        base.config._attn_implementation = _IMPL["eager" if impl == "eager" else "sdpa"]
        calls = _discover(base)
        if not calls:
            base.config._attn_implementation = impl
            raise PetrecMethodError(
                f"method 'prefix': {type(base).__name__} does not route attention through "
                "transformers' AttentionInterface, so petrec cannot add prefixes to it "
                f"(supported: models using AttentionInterface, and {list(DEBERTA_TYPES)})"
            )
        shapes: list[tuple[int, int]] = []
        for module, shape in calls:
            if _REF in module.__dict__:
                continue
            # A plain (not registered) reference: invisible to state_dict, kept by deepcopy.
            module.__dict__[_REF] = (store, len(shapes))
            shapes.append((shape[1], shape[3]))
        store.layer_shapes = shapes
        _install(base, store)
    hidden = base.get_input_embeddings().weight.shape[1]
    ref = base.get_input_embeddings().weight
    store.adapters[adapter_name] = PrefixParams(store.layer_shapes, hidden, opts).to(ref.device)
    store.set_active(adapter_name)
    prefix_name = f"{base_name}.{PREFIX_ATTR}" if base_name else PREFIX_ATTR
    return [prefix_name]


def remove_prefix(model: nn.Module) -> None:
    """Undo :func:`apply_prefix` entirely (hooks, attention implementation, module)."""
    found = find_hf_base(model)
    if found is None:
        return
    base = found[1]
    store = getattr(base, PREFIX_ATTR, None)
    if store is None:
        return
    for h in store.hook_handles:
        h.remove()
    for m in base.modules():
        m.__dict__.pop(_REF, None)
    if store.original_impl:
        base.config._attn_implementation = store.original_impl
    else:
        unpatch_deberta(base)
    delattr(base, PREFIX_ATTR)
