"""Typed configuration of a behaviour model (backbone + pooling + head + PEFT method)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["POOLINGS", "TASKS", "ModelConfig", "PetrecModelError"]

Task = Literal["ctr", "rating", "next_item"]
Pooling = Literal["auto", "cls", "mean", "last"]
Quantize = Literal["nf4", "int8"]
PaddingSide = Literal["right", "left"]
DType = Literal["float32", "bfloat16", "float16", "auto"]
Scoring = Literal["head", "answer"]
PromptFormat = Literal["auto", "chat", "plain"]
PriorFusion = Literal["joint", "stacked"]
LMTarget = Literal["text", "residual"]
CollabEncoder = Literal["gru4rec", "sasrec", "caser"]

TASKS: tuple[str, ...] = get_args(Task)
POOLINGS: tuple[str, ...] = get_args(Pooling)


class PetrecModelError(ValueError):
    """A behaviour-model config or input is wrong; the message names the field and what is accepted."""


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise PetrecModelError(f"model.{name}: got {value!r}; accepted values: {list(choices)}")


@dataclass
class ModelConfig:
    """Backbone, pooling, task head, PEFT method and quantization of a behaviour model."""

    backbone: str = "minilm"
    """Hugging Face id, local folder, or the alias ``minilm`` (the packaged all-MiniLM-L6-v2)."""
    task: Task = "ctr"
    """``ctr`` (one logit, BCE), ``rating`` (one value, MSE) or ``next_item`` (embeddings, in-batch CE)."""
    pooling: Pooling = "auto"
    """``cls`` (first real token), ``mean`` (over the mask), ``last`` (last real token);
    ``auto`` = the checkpoint's own sentence-transformers pooling when its folder has
    ``1_Pooling/config.json`` (mean for the packaged MiniLM), else ``cls`` for encoders and
    ``last`` for decoders."""
    head_hidden: int = 0
    """Width of the head's hidden layer; 0 = a single linear layer."""
    head_norm: bool = False
    """ctr / rating: normalise the pooled vector (a LayerNorm without parameters) before the
    head. Mean-pooled sentence-encoder states are tiny (MiniLM: per-feature std 0.03), which
    starves a linear head of step size; on P1's frozen MiniLM features this took petrec's head
    recipe from test AUC 0.58 to 0.647 (benchmarks/results/ml100k-ctr/NOTES.md). It also makes
    the head's effective step ~30x larger: the quick start (LoRA, head_lr 1e-2) fell from test
    AUC 0.652 to 0.588 with it, so lower ``train.head_lr`` when turning it on. Off by default."""
    dropout: float = 0.1
    """Dropout on the pooled representation (and inside an MLP head); off in ``eval()``."""
    backbone_dropout: float | None = None
    """Override every dropout rate of the backbone's config (None = keep the pretrained ones)."""
    method: str = "lora"
    """PEFT method name from ``petrec.methods`` (full, head, bitfit, lora, dora, ia3, prompt,
    prefix, adapter, qlora)."""
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the method (``r``, ``alpha`` ...), passed to ``petrec.attach``."""
    targets: list[str] | str | None = None
    """Modules the method adapts, passed to ``petrec.attach(targets=...)``: a list of module names
    (matched exactly or as a dotted suffix: ``[q_proj, v_proj]``) or one regex over whole names.
    None = the method's default for the model family (peft's per-family mapping; for LoRA / DoRA
    the attention query and value projections). Only methods that add layers to
    chosen modules take it (lora, dora, qlora, ia3, adapter); the others refuse it by name."""
    quantize: Quantize | None = None
    """Quantize the frozen backbone weights: ``nf4`` or ``int8`` (``qlora`` implies ``nf4``)."""
    gradient_checkpointing: bool = False
    """Recompute backbone activations in the backward pass (less memory, ~30% slower)."""
    temperature: float = 0.05
    """Softmax temperature of the next-item in-batch loss (scores are cosine similarities)."""
    padding_side: PaddingSide = "right"
    """Side the tokenizer pads on; pooling handles both (decoders may prefer ``left``)."""
    dtype: DType = "float32"
    """Dtype the backbone weights load in (``auto`` = the checkpoint's own)."""
    behaviour_prior: bool = False
    """ctr / rating: add a prior head over the behaviour features of :mod:`petrec.data.features`
    (history mean, the candidate's and the user's training statistics), whose output is added to
    the language model's logit, so the model learns the residual. The recipe fits the
    statistics on the training split and writes them with the run."""
    prior_hidden: int = 16
    """Hidden width of the prior head's MLP branch (0 = the linear branch alone)."""
    prior_fusion: PriorFusion = "joint"
    """With ``behaviour_prior``: ``joint`` = the language model's logit is added to the prior's and
    both train together on the training examples; ``stacked`` = the prior stays the fitted count
    model, the language model trains on the text alone, and two numbers (weight, bias) fitted on
    the validation split at each evaluation mix them (:mod:`petrec.fusion`)."""
    lm_target: LMTarget = "text"
    """With ``prior_fusion: stacked``: what the language model's training loss fits. ``text`` = the
    label from the text alone; ``residual`` = the label with the frozen count model's logit (and,
    with ``collab_in_fusion``, the ID model's) as a fixed offset, so the gradient goes to what the
    counts and IDs miss (boosting on the stacked parts). The offset's weights are fitted once on
    the training examples (their leave-one-out features and, with ``collab_fit: heldout``, an ID
    model that never saw them); the mix itself is still fitted on validation."""
    collab_tokens: bool = False
    """ctr: collaborative tokens (:mod:`petrec.models.collab`, CoLLM / LLaRA style). The recipe
    trains an ID click model (``collab_encoder``) on training examples only; each example's
    history positions, the ID model's user state and the candidate's ID embedding go through a
    trainable MLP into the backbone's embedding space and are inserted into the prompt as
    ``history_len + 2`` soft tokens. Combines with any method and with ``behaviour_prior``."""
    collab_encoder: CollabEncoder = "gru4rec"
    """With ``collab_tokens``: the ID model's sequence encoder (gru4rec, sasrec or caser)."""
    collab_dim: int = 64
    """With ``collab_tokens``: the ID model's embedding width."""
    collab_tune: bool = False
    """With ``collab_tokens``: train the ID model with the adapter (``true``) or keep it as fitted
    (``false``, the default: only the projector learns to read it)."""
    collab_in_fusion: bool = False
    """With ``collab_tokens`` and ``prior_fusion: stacked``: the ID model's own click logit joins the
    stacked mix with a weight of its own, ``prior + w_lm * lm + w_id * id + bias``, all fitted on the
    validation split (:func:`petrec.fusion.fit_fusion_weights`)."""
    collab_prompt_tokens: bool = True
    """With ``collab_tokens``: insert the soft tokens into the prompt (``true``). ``false`` keeps the
    ID model for its logit in the stacked mix only (needs ``collab_in_fusion``; the projector is not
    used and stays frozen): the language model then trains on the text alone, so its part of the mix
    is what the text adds beside the counts and the ID model, not a second reading of the ID model."""
    scoring: Scoring = "head"
    """ctr / rating: ``head`` = a new linear head on the pooled state; ``answer`` = a decoder's
    own next-token scores of the answer words after the prompt (TALLRec): ctr = logit of "Yes"
    minus "No", rating = expectation over "1".."5" (:mod:`petrec.models.answer`). Untrained, an
    ``answer`` model is the zero-shot LM."""
    prompt_format: PromptFormat = "auto"
    """With ``scoring: answer``: wrap each prompt in the tokenizer's chat template (``chat``), in
    plain text ending ``Answer:`` (``plain``), or ``auto`` (chat where the tokenizer has one)."""

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise PetrecModelError(
                f"model.backbone: expected a model id or folder, got {self.backbone!r}"
            )
        _check_choice("task", self.task, TASKS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("quantize", self.quantize, (None, *get_args(Quantize)))
        _check_choice("padding_side", self.padding_side, get_args(PaddingSide))
        _check_choice("dtype", self.dtype, get_args(DType))
        if (
            isinstance(self.head_hidden, bool)
            or not isinstance(self.head_hidden, int)
            or self.head_hidden < 0
        ):
            raise PetrecModelError(
                f"model.head_hidden: expected an integer >= 0, got {self.head_hidden!r}"
            )
        if self.behaviour_prior and self.task == "next_item":
            raise PetrecModelError("model.behaviour_prior applies to ctr / rating models, not next_item")
        if isinstance(self.prior_hidden, bool) or not isinstance(self.prior_hidden, int) or self.prior_hidden < 0:
            raise PetrecModelError(f"model.prior_hidden: expected an integer >= 0, got {self.prior_hidden!r}")
        _check_choice("prior_fusion", self.prior_fusion, get_args(PriorFusion))
        if self.prior_fusion != "joint" and not self.behaviour_prior:
            raise PetrecModelError(
                f"model.prior_fusion={self.prior_fusion!r} mixes the language model with the behaviour "
                "prior: set model.behaviour_prior: true as well"
            )
        _check_choice("lm_target", self.lm_target, get_args(LMTarget))
        if self.lm_target == "residual" and self.prior_fusion != "stacked":
            raise PetrecModelError(
                "model.lm_target: residual trains the language model beside the stacked parts' fixed "
                "offset: it needs model.behaviour_prior: true and model.prior_fusion: stacked"
            )
        _check_choice("scoring", self.scoring, get_args(Scoring))
        _check_choice("collab_encoder", self.collab_encoder, get_args(CollabEncoder))
        if isinstance(self.collab_dim, bool) or not isinstance(self.collab_dim, int) or self.collab_dim < 1:
            raise PetrecModelError(f"model.collab_dim: expected an integer >= 1, got {self.collab_dim!r}")
        if self.collab_in_fusion and not (self.collab_tokens and self.behaviour_prior
                                          and self.prior_fusion == "stacked"):
            raise PetrecModelError(
                "model.collab_in_fusion adds the ID model's logit to the stacked mix: it needs "
                "model.collab_tokens: true, model.behaviour_prior: true and model.prior_fusion: stacked"
            )
        if not self.collab_prompt_tokens and not (self.collab_tokens and self.collab_in_fusion):
            raise PetrecModelError(
                "model.collab_prompt_tokens: false keeps the ID model for its logit in the stacked mix "
                "only: it needs model.collab_tokens: true and model.collab_in_fusion: true"
            )
        if not self.collab_prompt_tokens and self.collab_tune:
            raise PetrecModelError(
                "model.collab_tune trains the ID model through the soft tokens; with "
                "model.collab_prompt_tokens: false there are none (the mix is fitted on validation)"
            )
        if self.collab_tokens and self.task != "ctr":
            raise PetrecModelError(
                f"model.collab_tokens applies to ctr models (the ID model reads like / dislike "
                f"histories); this model's task is {self.task!r}"
            )
        _check_choice("prompt_format", self.prompt_format, get_args(PromptFormat))
        if self.scoring == "answer":
            if self.task == "next_item":
                raise PetrecModelError("model.scoring='answer' applies to ctr / rating models, not next_item")
            if self.head_hidden or self.head_norm:
                raise PetrecModelError(
                    "model.scoring='answer' reads the LM head's answer rows; head_hidden / head_norm "
                    "apply to scoring='head' only"
                )
            if self.behaviour_prior and self.task == "rating":
                raise PetrecModelError(
                    "model.behaviour_prior with scoring='answer' is built for ctr; use scoring='head' "
                    "for rating with a prior"
                )
        if self.head_norm and self.task == "next_item":
            raise PetrecModelError(
                "model.head_norm applies to ctr / rating heads; next_item embeddings are "
                "L2-normalised already"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise PetrecModelError(
                f"model.dropout: expected a value in [0, 1), got {self.dropout!r}"
            )
        if self.backbone_dropout is not None and not 0.0 <= float(self.backbone_dropout) < 1.0:
            raise PetrecModelError(
                f"model.backbone_dropout: expected null or a value in [0, 1), got {self.backbone_dropout!r}"
            )
        if not float(self.temperature) > 0.0:
            raise PetrecModelError(
                f"model.temperature: expected a value > 0, got {self.temperature!r}"
            )
        if not isinstance(self.method_kwargs, dict):
            raise PetrecModelError(
                f"model.method_kwargs: expected a mapping, got {self.method_kwargs!r}"
            )
        self._check_targets()
        self._check_method()

    def _check_targets(self) -> None:
        """``targets``: None, a non-empty regex string, or a non-empty list of non-empty names."""
        t = self.targets
        if t is None or (isinstance(t, str) and t.strip()):
            return
        if isinstance(t, (list, tuple)) and t and all(isinstance(n, str) and n.strip() for n in t):
            self.targets = list(t)
            return
        raise PetrecModelError(
            "model.targets: expected null, a regex string or a non-empty list of module names "
            f"(e.g. [q_proj, v_proj]), got {t!r}"
        )

    def _check_method(self) -> None:
        """Validate ``method`` and ``method_kwargs`` against the registry, before any model loads."""
        from petrec.methods.registry import METHODS  # lazy: keeps config import light

        _check_choice("method", self.method, tuple(METHODS))
        if self.collab_tokens and self.collab_prompt_tokens and METHODS[self.method].changes_input:
            others = [name for name, spec in METHODS.items() if not spec.changes_input]
            raise PetrecModelError(
                f"model.collab_tokens inserts soft tokens into the prompt's embeddings; method "
                f"{self.method!r} rewrites the input too: use another method ({', '.join(others)})"
            )
        if self.targets is not None and not METHODS[self.method].takes_targets:
            takers = [name for name, spec in METHODS.items() if spec.takes_targets]
            raise PetrecModelError(
                f"model.targets: method {self.method!r} adapts its own fixed set of parameters and takes "
                f"no targets; methods that do: {', '.join(takers)}"
            )
        try:
            METHODS[self.method].make_options(dict(self.method_kwargs))
        except (TypeError, ValueError) as exc:
            raise PetrecModelError(f"model.method_kwargs: {exc}") from exc
