"""The behaviour model: a Hugging Face backbone + pooling + one task head.

Tasks (one file, one forward, RecBole-style small surface: ``forward`` / ``encode`` /
``embed_items`` / ``score_all``):

* ``ctr``: one logit per example; loss ``BCEWithLogits`` against 0/1 labels.
* ``rating``: one value per example; loss ``MSE`` against the rating.
* ``next_item``: the user's text and each item's text go through the *same* backbone,
  pooling and head; the head output is L2-normalised, so a score is a cosine similarity.
  Training uses in-batch negatives: row i's positive is item i, every other item in the
  batch is a negative, except items equal to row i's target (duplicates are masked, not
  counted as negatives). Optionally, sampled negatives shared by the batch add columns
  (again masked where one equals a row's target). Loss = cross-entropy over
  ``scores / temperature``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from petrec.methods.prompt import PROMPT_ATTR
from petrec.models.answer import AnswerHead
from petrec.models.collab import COLLAB_COLUMNS, CollabSpec, CollabTokens, insert_tokens
from petrec.models.config import ModelConfig, PetrecModelError
from petrec.models.pooling import pool, resolve_pooling

__all__ = [
    "BehaviourModel",
    "BehaviourOutput",
    "PriorHead",
    "duplicate_target_mask",
    "in_batch_loss",
    "same_item_mask",
]


@dataclass
class BehaviourOutput(ModelOutput):
    """What :meth:`BehaviourModel.forward` returns.

    Attributes:
        loss: Scalar training loss (only when targets were given).
        logits: ``ctr``: ``(batch,)`` logits; ``rating``: ``(batch,)`` predicted ratings;
            ``next_item``: ``(batch, batch [+ n_neg])`` user-item dot products (cosines), when
            item inputs were given; columns = the batch's targets, then any sampled negatives.
        user_embeddings: ``next_item``: ``(batch, dim)`` normalised user embeddings.
        item_embeddings: ``next_item``: ``(batch, dim)`` normalised target-item embeddings.
        lm_logits: Stacked fusion (``model.prior_fusion: stacked``) only: the language model's
            own ``(batch,)`` scores, before they are mixed with the prior.
        prior_logits: Stacked fusion only: the prior head's ``(batch,)`` scores.
        collab_logits: Stacked fusion with ``model.collab_in_fusion`` only: the collaborative
            tokens' ID model's own ``(batch,)`` click logits.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    user_embeddings: torch.Tensor | None = None
    item_embeddings: torch.Tensor | None = None
    lm_logits: torch.Tensor | None = None
    prior_logits: torch.Tensor | None = None
    collab_logits: torch.Tensor | None = None


def _compact(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real tokens moved to the front (order kept), the rest -1: equal texts -> equal rows."""
    keep = mask.bool()
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    return torch.where(keep, ids, -1).gather(1, order)


def same_item_mask(
    a_index: torch.Tensor | None,
    a_ids: torch.Tensor,
    a_mask: torch.Tensor,
    b_index: torch.Tensor | None,
    b_ids: torch.Tensor,
    b_mask: torch.Tensor,
) -> torch.Tensor:
    """``(len(a), len(b))`` bool: True where item a_i and item b_j are the same item.

    Same catalogue index when both index tensors are given; otherwise the same tokens
    (padding and its side ignored).
    """
    if a_index is not None and b_index is not None:
        return a_index.reshape(-1, 1) == b_index.reshape(1, -1)
    a, b = _compact(a_ids, a_mask), _compact(b_ids, b_mask)
    width = max(a.shape[1], b.shape[1])
    a = F.pad(a, (0, width - a.shape[1]), value=-1)
    b = F.pad(b, (0, width - b.shape[1]), value=-1)
    return (a.unsqueeze(1) == b.unsqueeze(0)).all(dim=-1)


def duplicate_target_mask(
    target_index: torch.Tensor | None,
    item_input_ids: torch.Tensor,
    item_attention_mask: torch.Tensor,
) -> torch.Tensor:
    """``(batch, batch)`` bool: True where column j holds the same item as row i's target, j != i.

    Items are the same when their catalogue indices are equal (``target_index``) or, when no
    indices are given, when their tokens are identical (same text -> same item).
    """
    same = same_item_mask(
        target_index, item_input_ids, item_attention_mask,
        target_index, item_input_ids, item_attention_mask,
    )  # fmt: skip
    eye = torch.eye(same.shape[0], dtype=torch.bool, device=same.device)
    return same & ~eye


def in_batch_loss(
    scores: torch.Tensor, duplicates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of each row's own item (column i) against the other candidate items.

    Args:
        scores: ``(batch, batch + n_neg)`` user-item similarities; the first ``batch`` columns
            are the rows' own targets, any further columns shared sampled negatives.
        duplicates: Same shape; columns to leave out of row i's softmax (other copies of
            row i's target).
        temperature: Divides the scores before the softmax.

    Returns:
        Mean loss over rows.
    """
    logits = (scores / temperature).masked_fill(duplicates, float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(logits, labels)


@functools.cache
def _forward_accepts(cls: type, name: str) -> bool:
    params = inspect.signature(cls.forward).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _make_head(hidden: int, out: int, cfg: ModelConfig) -> nn.Module:
    head = _make_projection(hidden, out, cfg)
    if cfg.head_norm and cfg.task != "next_item":
        return nn.Sequential(nn.LayerNorm(hidden, elementwise_affine=False), head)
    return head


def _make_projection(hidden: int, out: int, cfg: ModelConfig) -> nn.Module:
    if cfg.head_hidden == 0:
        linear = nn.Linear(hidden, out)
        if cfg.task == "next_item":
            # Start as the identity: the initial user/item embedding *is* the backbone's
            # pooled vector, so a pretrained sentence encoder's similarity is kept at step 0.
            with torch.no_grad():
                linear.weight.copy_(torch.eye(out, hidden))
                linear.bias.zero_()
        return linear
    return nn.Sequential(
        nn.Linear(hidden, cfg.head_hidden),
        nn.GELU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.head_hidden, out),
    )


class PriorHead(nn.Module):
    """Logit (or rating offset) from behaviour features: a linear branch plus a small MLP.

    The MLP's output layer starts at zero, so the head starts as a linear model of the
    (standardised) features, i.e. a logistic regression trained jointly with the adapter.

    Args:
        n_features: Width of the feature vector (:data:`petrec.data.features.FEATURE_NAMES`).
        hidden: Width of the MLP branch; 0 = linear only.
        stacked: Hold the two numbers of stacked fusion (``fusion_weight``, ``fusion_bias``).
        collab: Stacked only: also hold the ID model's weight in the mix (``fusion_collab_weight``,
            ``model.collab_in_fusion``).
    """

    def __init__(self, n_features: int, hidden: int, *, stacked: bool = False, collab: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        # Stacked fusion (petrec.fusion): the language model's weight and a shift, fitted on
        # the validation split, never by the optimizer (the training loss does not read them).
        self.fusion_weight: nn.Parameter | None = None
        self.fusion_bias: nn.Parameter | None = None
        self.fusion_collab_weight: nn.Parameter | None = None
        if stacked:
            self.fusion_weight = nn.Parameter(torch.zeros(()))
            self.fusion_bias = nn.Parameter(torch.zeros(()))
            if collab:
                self.fusion_collab_weight = nn.Parameter(torch.zeros(()))
            # ``model.lm_target: residual``: the training loss's fixed offset, prior + w * id + b,
            # fitted on the training examples by the recipe (:meth:`set_residual`). Training only,
            # so not saved: inference reads the fusion numbers above.
            self.register_buffer("residual_collab_weight", torch.zeros(()), persistent=False)
            self.register_buffer("residual_bias", torch.zeros(()), persistent=False)
        self.mlp: nn.Module | None = None
        if hidden:
            last = nn.Linear(hidden, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), last)

    @torch.no_grad()
    def warm_start(self, features: np.ndarray, targets: np.ndarray, task: str) -> None:
        """Stage one of two: set the linear branch to a regression fitted on the training features.

        ``ctr``: an L2 logistic regression (scikit-learn, C=1); ``rating``: ridge regression
        (alpha=1). Joint training with the adapter then starts from the count model and learns
        the residual, instead of racing an adapter that can memorise a few hundred examples.
        """
        from sklearn.linear_model import LogisticRegression, Ridge

        if task == "ctr":
            if len(np.unique(targets)) < 2:
                return  # one class only: nothing to fit, keep the zero-informed start
            fitted = LogisticRegression(C=1.0, max_iter=1000).fit(features, targets)
            coef, intercept = fitted.coef_.reshape(-1), float(fitted.intercept_[0])
        else:
            fitted = Ridge(alpha=1.0).fit(features, targets)
            coef, intercept = np.asarray(fitted.coef_).reshape(-1), float(fitted.intercept_)
        self.linear.weight.copy_(torch.as_tensor(coef, dtype=self.linear.weight.dtype).reshape(1, -1))
        self.linear.bias.fill_(intercept)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` prior logits of ``(batch, n_features)`` features."""
        out = self.linear(features)
        if self.mlp is not None:
            out = out + self.mlp(features)
        return out.squeeze(-1)

    def freeze_fit(self) -> None:
        """Stacked fusion: keep the fitted count model as it is; only the two fusion numbers stay
        trainable parameters (so the loop's best-weights snapshot and the saved adapter carry them),
        and they are set by :meth:`set_fusion`, never by a gradient."""
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith("fusion_"))

    @torch.no_grad()
    def set_fusion(self, weight: float, bias: float, collab_weight: float | None = None) -> None:
        """Store the stacked-fusion numbers (:func:`petrec.fusion.fit_fusion` / ``fit_fusion_weights``)."""
        if self.fusion_weight is None or self.fusion_bias is None:
            raise PetrecModelError("set_fusion: this prior head was built without stacked fusion")
        if collab_weight is not None and self.fusion_collab_weight is None:
            raise PetrecModelError("set_fusion: collab_weight needs a head built with model.collab_in_fusion")
        self.fusion_weight.fill_(weight)
        self.fusion_bias.fill_(bias)
        if self.fusion_collab_weight is not None:
            # None = a mix fitted without the ID model's logit (stage 1 of a two-stage schedule).
            self.fusion_collab_weight.fill_(0.0 if collab_weight is None else collab_weight)

    @torch.no_grad()
    def set_residual(self, collab_weight: float, bias: float) -> None:
        """Store the offset a residual language model trains beside (``model.lm_target: residual``)."""
        if self.fusion_weight is None:
            raise PetrecModelError("set_residual: this prior head was built without stacked fusion")
        self.residual_collab_weight.fill_(collab_weight)
        self.residual_bias.fill_(bias)

    def residual_offset(self, prior_logits: torch.Tensor, id_logits: torch.Tensor | None) -> torch.Tensor:
        """``prior + w * id + b`` with the numbers of :meth:`set_residual`, detached (a fixed offset)."""
        offset = prior_logits + self.residual_bias.float()
        if id_logits is not None:
            offset = offset + self.residual_collab_weight.float() * id_logits.float()
        return offset.detach()

    def fusion_numbers(self) -> list[nn.Parameter]:
        """The stacked-fusion parameters this head holds (empty for joint fusion)."""
        return [p for p in (self.fusion_weight, self.fusion_bias, self.fusion_collab_weight) if p is not None]


class BehaviourModel(nn.Module):
    """Backbone (``.backbone``, a HF base model without LM/classification head) + pooling + ``.head``.

    Args:
        backbone: A Hugging Face base model (``AutoModel``), encoder or decoder.
        cfg: The model config (task, pooling, head, dropout, temperature).
        is_decoder: Whether the backbone is a causal decoder; decides ``pooling="auto"``.
        collab: With ``cfg.collab_tokens``: the ID vocabulary and shape of the collaborative tokens.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, *, is_decoder: bool = False,
                 collab: CollabSpec | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.is_decoder = is_decoder
        self.pooling = resolve_pooling(cfg.pooling, backbone, is_decoder=is_decoder)
        hidden = int(backbone.config.hidden_size)
        self.hidden_size = hidden
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.scoring == "answer":
            if not is_decoder:
                raise PetrecModelError(
                    "model.scoring='answer' needs a decoder backbone (it reads next-token scores)"
                )
            # Rows start at zero here; build_model copies the checkpoint's LM-head rows in, and a
            # reloaded run loads its trained head. With a prior, the LM's answer starts switched
            # off (scale 0) so the model starts as the prior, as the linear head does below.
            joint = cfg.behaviour_prior and cfg.prior_fusion == "joint"
            self.head: nn.Module = AnswerHead(hidden, cfg.task, scale=0.0 if joint else 1.0)
        else:
            self.head = _make_head(hidden, hidden if cfg.task == "next_item" else 1, cfg)
        if cfg.behaviour_prior:
            from petrec.data.features import FEATURE_NAMES

            stacked = cfg.prior_fusion == "stacked"
            self.prior = PriorHead(len(FEATURE_NAMES), cfg.prior_hidden, stacked=stacked,
                                   collab=cfg.collab_in_fusion)
            # Stacked: the language model trains on its own, from its usual start (weight 0 = the
            # model starts as the prior all the same).
            if cfg.scoring == "head" and not stacked:
                # The language model's head starts at zero: the model starts as the prior alone
                # (the count model, once warm-started) and the adapter learns the residual.
                last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        if cfg.collab_tokens:
            if collab is None:
                raise PetrecModelError("model.collab_tokens: pass the run's CollabSpec (petrec.models.collab), "
                                       "which sizes the ID model")
            embed_std = float(backbone.get_input_embeddings().weight.detach().float().std())
            self.collab = CollabTokens(collab, hidden, embed_std, tune=cfg.collab_tune)
            # False while a two-stage schedule trains the language model on the text alone.
            self.collab_active = True
        elif collab is not None:
            raise PetrecModelError("a CollabSpec was given to a model built without model.collab_tokens")
        # Accelerate's FSDP transformer-based auto-wrap reads this from the top-level model.
        self._no_split_modules = list(getattr(backbone, "_no_split_modules", None) or [])

    # ------------------------------------------------------------------ shared trunk
    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               soft_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone states pooled to ``(batch, hidden)`` (before dropout and head).

        Under left padding, position ids are derived from the mask (when the backbone takes
        them) so a left-padded sequence gets the same positions as an unpadded one; under
        right padding (the default) nothing extra is passed. Exception: with petrec's soft
        prompt attached (method ``prompt``, which prepends virtual tokens and refuses explicit
        position ids) none are passed, so left padding changes positions there: use right
        padding (the default) with ``prompt``.

        ``soft_tokens`` (``(batch, k, hidden)``, collaborative tokens) are inserted into each row's
        embeddings, after an encoder's first real token or before a decoder's
        (:func:`petrec.models.collab.insert_tokens`), and the mask grows with them.
        """
        if input_ids.shape != attention_mask.shape:
            raise PetrecModelError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask "
                f"{tuple(attention_mask.shape)} must have the same shape"
            )
        kwargs: dict[str, torch.Tensor | bool] = {}
        backbone_cls = type(self.backbone)
        if self.is_decoder and _forward_accepts(backbone_cls, "use_cache"):
            kwargs["use_cache"] = False
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
        if soft_tokens is not None:
            embeds = self.backbone.get_input_embeddings()(input_ids)
            embeds, attention_mask = insert_tokens(embeds, attention_mask, soft_tokens,
                                                   after_first=not self.is_decoder)
            inputs = {"inputs_embeds": embeds}
        left_padded = bool((attention_mask[:, 0] == 0).any())
        if (
            left_padded
            and _forward_accepts(backbone_cls, "position_ids")
            and getattr(self.backbone, PROMPT_ATTR, None) is None
        ):
            kwargs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        out = self.backbone(**inputs, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, attention_mask, self.pooling)

    def _head_out(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  soft_tokens: torch.Tensor | None = None) -> torch.Tensor:
        h = self.pooled(input_ids, attention_mask, soft_tokens)
        weight = next(self.head.parameters())
        return self.head(self.dropout(h.to(weight.dtype)))

    # ------------------------------------------------------------------ next-item API
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised ``(batch, hidden)`` embeddings of user histories or item texts (next_item)."""
        if self.cfg.task != "next_item":
            raise PetrecModelError(
                f"encode() is for task 'next_item'; this model's task is {self.cfg.task!r}"
            )
        return F.normalize(self._head_out(input_ids, attention_mask).float(), dim=-1)

    @torch.no_grad()
    def embed_items(self, item_batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """Embed the whole catalogue once (no gradients), batches concatenated in order.

        Args:
            item_batches: Batches with ``input_ids`` and ``attention_mask``, in item-index order.

        Returns:
            ``(n_items, hidden)`` normalised item embeddings.
        """
        chunks = [self.encode(b["input_ids"], b["attention_mask"]) for b in item_batches]
        if not chunks:
            raise PetrecModelError("embed_items: the item catalogue is empty")
        return torch.cat(chunks)

    @staticmethod
    def score_all(user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """``(n_users, n_items)`` dot products (cosine similarities of the normalised embeddings)."""
        return user_emb @ item_emb.to(user_emb.dtype).T

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        item_input_ids: torch.Tensor | None = None,
        item_attention_mask: torch.Tensor | None = None,
        target_index: torch.Tensor | None = None,
        history_index: torch.Tensor | None = None,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        negative_index: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        collab_history_ids: torch.Tensor | None = None,
        collab_history_feedback: torch.Tensor | None = None,
        collab_item_ids: torch.Tensor | None = None,
    ) -> BehaviourOutput:
        """Score a batch and, when targets are given, compute the task loss.

        Args:
            input_ids: ``(batch, seq)`` rendered user/context tokens.
            attention_mask: ``(batch, seq)``.
            labels: ``ctr``: 0/1 clicks; ``rating``: ratings; ``(batch,)``. Not used by next_item.
            item_input_ids: ``next_item``: ``(batch, item_seq)`` tokens of each row's target item.
            item_attention_mask: ``next_item``: mask of ``item_input_ids``.
            target_index: ``next_item``: catalogue index of each target, used to mask duplicate
                targets (without it duplicates are found by identical item tokens).
            history_index: Accepted so a collated next-item batch can be passed as ``**batch``;
                not used (history items stay valid in-batch negatives).
            negative_input_ids: ``next_item``, optional: ``(n_neg, neg_seq)`` tokens of sampled
                negative items shared by the whole batch (extra softmax columns).
            negative_attention_mask: Mask of ``negative_input_ids``.
            negative_index: Catalogue indices of the negatives; a negative equal to a row's
                target is masked for that row (found by tokens when indices are missing).
            features: ``(batch, n_features)`` behaviour features; required with
                ``cfg.behaviour_prior`` (their prior logit is added), refused without it.
            collab_history_ids: With ``cfg.collab_tokens``: ``(batch, history_len)`` ID tokens of
                the history (:meth:`petrec.models.collab.CollabSpec.columns`); required then.
            collab_history_feedback: Their like / dislike tokens.
            collab_item_ids: ``(batch,)`` the candidates' ID tokens.

        Returns:
            :class:`BehaviourOutput` (``loss`` is None without targets).
        """
        del history_index
        soft, id_logits = self._soft_tokens(collab_history_ids, collab_history_feedback, collab_item_ids)
        if self.cfg.task == "next_item":
            negatives = None
            if negative_input_ids is not None:
                if negative_attention_mask is None:
                    raise PetrecModelError(
                        "negative_input_ids given without negative_attention_mask"
                    )
                negatives = (negative_input_ids, negative_attention_mask, negative_index)
            return self._forward_next_item(
                input_ids, attention_mask, labels, item_input_ids, item_attention_mask, target_index,
                negatives,
            )  # fmt: skip
        lm_logits = self._head_out(input_ids, attention_mask, soft).squeeze(-1).float()
        logits, prior_logits = self._add_prior(lm_logits, features, id_logits)
        stacked = prior_logits is not None and self.prior.fusion_weight is not None
        loss = None
        if labels is not None:
            # Stacked fusion trains the language model on the text alone (or, lm_target: residual,
            # beside the stacked parts' fixed offset); joint, on the sum.
            if not stacked:
                trained = logits
            elif self.cfg.lm_target == "residual":
                trained = lm_logits + self.prior.residual_offset(prior_logits, id_logits)
            else:
                trained = lm_logits
            target = labels.reshape(-1).to(trained.dtype)
            if target.shape[0] != trained.shape[0]:
                raise PetrecModelError(
                    f"labels: {target.shape[0]} values for a batch of {trained.shape[0]} examples"
                )
            if self.cfg.task == "ctr":
                loss = F.binary_cross_entropy_with_logits(trained, target)
            else:
                loss = F.mse_loss(trained, target)
            if stacked and self.prior.fusion_weight.requires_grad:
                # A zero gradient, not none: DDP expects every trainable parameter in the backward
                # pass; AdamW leaves a parameter whose gradients are all zero where it is.
                loss = loss + 0.0 * sum(self.prior.fusion_numbers())
        if not stacked:
            return BehaviourOutput(loss=loss, logits=logits)
        return BehaviourOutput(loss=loss, logits=logits, lm_logits=lm_logits.detach(),
                               prior_logits=prior_logits.detach(),
                               collab_logits=None if id_logits is None else id_logits.detach().float())

    def _soft_tokens(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The batch's collaborative tokens and, with ``model.collab_in_fusion``, the ID model's
        logits (None for a model without them, or while a two-stage schedule leaves them out)."""
        collab = getattr(self, "collab", None)
        given = [name for name, value in zip(COLLAB_COLUMNS, inputs, strict=True) if value is not None]
        if collab is None:
            if given:
                raise PetrecModelError(f"{', '.join(given)} given to a model built without model.collab_tokens")
            return None, None
        if len(given) != len(COLLAB_COLUMNS):
            missing = [name for name in COLLAB_COLUMNS if name not in given]
            raise PetrecModelError(
                f"this model reads collaborative tokens (model.collab_tokens): pass {', '.join(missing)} "
                "(petrec.models.collab.CollabSpec.columns)"
            )
        if not self.collab_active:
            return None, None
        if not self.cfg.collab_prompt_tokens:  # the ID model's logit in the mix, no tokens in the prompt
            return None, collab.logits(*inputs)
        if self.cfg.collab_in_fusion:
            return collab.tokens_and_logits(*inputs)
        return collab(*inputs), None

    def collab_stage(self, stage: int) -> None:
        """Set up one stage of the two-stage collaborative schedule (recipe ``collab_schedule: two_stage``).

        Stage 1 trains the language model on the text alone: the tokens are left out and the
        token model (projector, role vectors, ID model) is frozen. Stage 2 trains the token
        model only (the ID model only with ``collab_tune``): the adapter and head stay as stage 1
        left them, and so does a stacked prior's fitted count model (its fusion numbers stay
        settable, as :meth:`PriorHead.freeze_fit` leaves them). Call :meth:`restore_trainable`
        afterwards to get the attach-time trainable set back (for reports and saving).

        Raises:
            PetrecModelError: A model without collaborative tokens, or a stage other than 1 or 2.
        """
        collab = getattr(self, "collab", None)
        if collab is None or stage not in (1, 2):
            raise PetrecModelError(f"collab_stage({stage!r}): needs a model with model.collab_tokens and stage 1 or 2")
        if not hasattr(self, "_trainable_before_stages"):
            self._trainable_before_stages = {n: p.requires_grad for n, p in self.named_parameters()}
        before = self._trainable_before_stages
        self.collab_active = stage == 2
        for name, param in self.named_parameters():
            # Names may carry peft's "modules_to_save.<adapter>." wrapper inside a head.
            in_collab = name.startswith("collab.")
            if stage == 1:
                param.requires_grad_(before[name] and not in_collab)
            else:
                tokens = in_collab and (self.cfg.collab_tune or ".id_model." not in name)
                fusion = name.startswith("prior.") and name.rsplit(".", 1)[-1].startswith("fusion_")
                param.requires_grad_(before[name] and (tokens or fusion))

    def restore_trainable(self) -> None:
        """Undo :meth:`collab_stage`: the trainable set of before the first stage, tokens on."""
        before = getattr(self, "_trainable_before_stages", None)
        if before is not None:
            for name, param in self.named_parameters():
                param.requires_grad_(before[name])
            del self._trainable_before_stages
        if getattr(self, "collab", None) is not None:
            self.collab_active = True

    def _add_prior(self, logits: torch.Tensor, features: torch.Tensor | None, id_logits: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(model scores, prior scores)``: the language model's ``logits`` combined with the prior's."""
        prior = getattr(self, "prior", None)
        if prior is None:
            if features is not None:
                raise PetrecModelError("features given to a model built without model.behaviour_prior")
            return logits, None
        if features is None:
            raise PetrecModelError(
                "this model has a behaviour prior (model.behaviour_prior): pass the examples' "
                "features (petrec.data.features.BehaviourStats.features)"
            )
        if features.shape != (logits.shape[0], prior.linear.in_features):
            raise PetrecModelError(
                f"features: expected shape ({logits.shape[0]}, {prior.linear.in_features}), "
                f"got {tuple(features.shape)}"
            )
        prior_logits = prior(features.to(prior.linear.weight.dtype)).float()
        if prior.fusion_weight is not None:  # stacked: prior + weight * lm (+ w_id * id) + bias
            fused = prior_logits + prior.fusion_weight.float() * logits + prior.fusion_bias.float()
            if prior.fusion_collab_weight is not None and id_logits is not None:
                fused = fused + prior.fusion_collab_weight.float() * id_logits.float()
            return fused, prior_logits
        return logits + prior_logits, prior_logits

    def _forward_next_item(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        item_input_ids: torch.Tensor | None,
        item_attention_mask: torch.Tensor | None,
        target_index: torch.Tensor | None,
        negatives: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
    ) -> BehaviourOutput:
        if labels is not None:
            raise PetrecModelError(
                "next_item models take the target item as item_input_ids / item_attention_mask "
                "(and target_index), not labels"
            )
        users = self.encode(input_ids, attention_mask)
        if item_input_ids is None:
            return BehaviourOutput(user_embeddings=users)
        if item_attention_mask is None:
            raise PetrecModelError("item_input_ids given without item_attention_mask")
        if item_input_ids.shape[0] != users.shape[0]:
            raise PetrecModelError(
                f"item_input_ids has {item_input_ids.shape[0]} rows for {users.shape[0]} users"
            )
        items = self.encode(item_input_ids, item_attention_mask)
        scores = self.score_all(users, items)
        duplicates = duplicate_target_mask(target_index, item_input_ids, item_attention_mask)
        if negatives is not None:
            neg_ids, neg_mask, neg_index = negatives
            scores = torch.cat(
                [scores, self.score_all(users, self.encode(neg_ids, neg_mask))], dim=1
            )
            clash = same_item_mask(
                target_index, item_input_ids, item_attention_mask, neg_index, neg_ids, neg_mask
            )
            duplicates = torch.cat([duplicates, clash], dim=1)
        loss = in_batch_loss(scores, duplicates, self.cfg.temperature)
        return BehaviourOutput(
            loss=loss, logits=scores, user_embeddings=users, item_embeddings=items
        )
