"""BehaviourModel on tiny random BERT / GPT-2 / Llama / Qwen2: shapes, pooling, losses, scores."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from petrec.models import (
    BehaviourModel,
    ModelConfig,
    PetrecModelError,
    duplicate_target_mask,
    in_batch_loss,
)
from tests.models.conftest import DECODERS, FAMILIES, batch, tiny_backbone

ROWS = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33], [41]]


def make(family: str, task: str = "ctr", dropout: float = 0.1, **kw: object) -> BehaviourModel:
    backbone = tiny_backbone(family, dropout=dropout)
    cfg = ModelConfig(backbone=family, task=task, method="full", dropout=dropout, **kw)  # type: ignore[arg-type]
    torch.manual_seed(1)
    return BehaviourModel(backbone, cfg, is_decoder=family in DECODERS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["ctr", "rating", "next_item"])
def test_output_shapes(family: str, task: str) -> None:
    model = make(family, task).eval()
    ids, mask = batch(ROWS)
    if task == "next_item":
        item_ids, item_mask = batch([[50, 51], [52], [53, 54, 55], [56]])
        out = model(ids, mask, item_input_ids=item_ids, item_attention_mask=item_mask)
        assert out.logits.shape == (4, 4)
        assert out.user_embeddings.shape == (4, 32)
        assert out.item_embeddings.shape == (4, 32)
        assert torch.allclose(out.user_embeddings.norm(dim=-1), torch.ones(4))
        assert out.loss.ndim == 0
    else:
        out = model(ids, mask, labels=torch.tensor([0.0, 1.0, 1.0, 0.0]))
        assert out.logits.shape == (4,)
        assert out.loss.ndim == 0
        assert model(ids, mask).loss is None


@pytest.mark.parametrize(
    ("family", "expected"), [("bert", "cls"), ("gpt2", "last"), ("llama", "last")]
)
def test_auto_pooling_and_override(family: str, expected: str) -> None:
    assert make(family).pooling == expected
    assert make(family, pooling="mean").pooling == "mean"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["cls", "mean", "last"])
def test_pooled_equals_hand_pooling_of_backbone_states(family: str, mode: str) -> None:
    model = make(family, pooling=mode).eval()
    ids, mask = batch(ROWS)
    states = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    lengths = mask.sum(1).tolist()
    if mode == "cls":
        expected = states[:, 0]
    elif mode == "last":
        expected = torch.stack([states[i, n - 1] for i, n in enumerate(lengths)])
    else:
        expected = torch.stack([states[i, :n].mean(0) for i, n in enumerate(lengths)])
    assert torch.allclose(model.pooled(ids, mask), expected, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["cls", "mean", "last"])
def test_left_and_right_padding_give_the_same_pooled_vector(family: str, mode: str) -> None:
    model = make(family, pooling=mode).eval()
    right = model.pooled(*batch(ROWS, "right"))
    left = model.pooled(*batch(ROWS, "left"))
    single = torch.cat([model.pooled(*batch([r])) for r in ROWS])  # no padding at all
    assert torch.allclose(right, single, atol=1e-5)
    assert torch.allclose(left, single, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_ctr_and_rating_losses_equal_hand_computation(family: str) -> None:
    ids, mask = batch(ROWS)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    model = make(family, "ctr").eval()
    out = model(ids, mask, labels=y)
    z = model.head(model.pooled(ids, mask)).squeeze(-1)
    assert torch.allclose(out.logits, z)
    hand = (
        -sum(
            yi * math.log(1 / (1 + math.exp(-zi)))
            + (1 - yi) * math.log(1 - 1 / (1 + math.exp(-zi)))
            for yi, zi in zip(y.tolist(), z.tolist(), strict=True)
        )
        / 4
    )
    assert out.loss.item() == pytest.approx(hand, rel=1e-5)

    r = torch.tensor([1.0, 5.0, 3.0, 4.0])
    model = make(family, "rating").eval()
    out = model(ids, mask, labels=r)
    pred = model.head(model.pooled(ids, mask)).squeeze(-1)
    assert torch.allclose(out.logits, pred)
    hand = sum((p - t) ** 2 for p, t in zip(pred.tolist(), r.tolist(), strict=True)) / 4
    assert out.loss.item() == pytest.approx(hand, rel=1e-5)


def _hand_in_batch_ce(scores: torch.Tensor, targets: list[int], temperature: float) -> float:
    """Row i: -log softmax over columns j with targets[j] != targets[i] or j == i."""
    total = 0.0
    for i in range(len(targets)):
        cols = [j for j in range(len(targets)) if j == i or targets[j] != targets[i]]
        logz = math.log(sum(math.exp(scores[i, j].item() / temperature) for j in cols))
        total += logz - scores[i, i].item() / temperature
    return total / len(targets)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_next_item_scores_and_in_batch_loss_with_duplicates(family: str) -> None:
    model = make(family, "next_item", temperature=0.5).eval()
    ids, mask = batch(ROWS)
    # rows 0 and 2 share target 7 (same text); the duplicate must not be a negative
    targets = [7, 3, 7, 9]
    texts = {7: [60, 61], 3: [62], 9: [63, 64, 65]}
    item_ids, item_mask = batch([texts[t] for t in targets])
    out = model(
        ids, mask, item_input_ids=item_ids, item_attention_mask=item_mask,
        target_index=torch.tensor(targets),
    )  # fmt: skip
    users = model.encode(ids, mask)
    items = model.encode(item_ids, item_mask)
    assert torch.allclose(out.logits, users @ items.T, atol=1e-6)
    assert torch.allclose(model.score_all(users, items), users @ items.T)
    assert out.loss.item() == pytest.approx(_hand_in_batch_ce(out.logits, targets, 0.5), rel=1e-5)
    unmasked = _hand_in_batch_ce(out.logits, [0, 1, 2, 3], 0.5)  # duplicates counted as negatives
    assert out.loss.item() != pytest.approx(unmasked, rel=1e-5)
    # without target_index, duplicates are found from identical item tokens: same loss
    same = model(ids, mask, item_input_ids=item_ids, item_attention_mask=item_mask)
    assert same.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_duplicate_mask_and_loss_helpers() -> None:
    ids, mask = batch([[5, 6], [7], [5, 6], [5]])
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True
    assert torch.equal(duplicate_target_mask(None, ids, mask), expected)
    assert torch.equal(duplicate_target_mask(torch.tensor([1, 2, 1, 3]), ids, mask), expected)
    scores = torch.eye(3)
    assert in_batch_loss(scores, torch.zeros(3, 3, dtype=torch.bool), 1.0).item() == pytest.approx(
        -math.log(math.e / (math.e + 2))
    )


def test_next_item_head_starts_as_identity_and_embed_items_is_ordered() -> None:
    model = make("bert", "next_item").eval()
    ids, mask = batch(ROWS)
    assert torch.allclose(
        model.encode(ids, mask), F.normalize(model.pooled(ids, mask), dim=-1), atol=1e-6
    )
    catalogue = [[50 + i, 60 + i] if i % 2 else [50 + i] for i in range(7)]
    batches = [
        dict(zip(("input_ids", "attention_mask"), batch(catalogue[s : s + 3]), strict=True))
        for s in (0, 3, 6)
    ]
    emb = model.embed_items(batches)
    assert emb.shape == (7, 32)
    assert not emb.requires_grad
    assert torch.allclose(emb, torch.cat([model.encode(*batch([c])) for c in catalogue]), atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_dropout_off_in_eval_on_in_train(family: str) -> None:
    model = make(family, "ctr", dropout=0.5, head_hidden=16)
    ids, mask = batch(ROWS)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, mask).logits, model(ids, mask).logits)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(ids, mask).logits, model(ids, mask).logits)


def test_bad_inputs_raise_model_errors() -> None:
    model = make("bert", "ctr")
    ids, mask = batch(ROWS)
    with pytest.raises(PetrecModelError, match="labels: 3 values for a batch of 4"):
        model(ids, mask, labels=torch.ones(3))
    with pytest.raises(PetrecModelError, match="must have the same shape"):
        model(ids, mask[:, :2])
    with pytest.raises(PetrecModelError, match="encode\\(\\) is for task 'next_item'"):
        model.encode(ids, mask)
    nxt = make("bert", "next_item")
    with pytest.raises(PetrecModelError, match="not labels"):
        nxt(ids, mask, labels=torch.ones(4))


def _hand_ce_with_allowed(
    scores: torch.Tensor, allowed: list[list[int]], temperature: float
) -> float:
    total = 0.0
    for i, cols in enumerate(allowed):
        logz = math.log(sum(math.exp(scores[i, j].item() / temperature) for j in cols))
        total += logz - scores[i, i].item() / temperature
    return total / len(allowed)


@pytest.mark.parametrize("use_index", [True, False])
def test_sampled_negatives_add_columns_and_clashes_are_masked(use_index: bool) -> None:
    model = make("gpt2", "next_item", temperature=0.2).eval()
    ids, mask = batch(ROWS)
    targets = [7, 3, 7, 9]
    texts = {7: [60, 61], 3: [62], 9: [63, 64, 65], 4: [66], 5: [67, 68]}
    item_ids, item_mask = batch([texts[t] for t in targets])
    negatives = [4, 3, 5]  # item 3 is row 1's target: masked for row 1 only
    neg_ids, neg_mask = batch([texts[n] for n in negatives], side="left")  # other padding side
    out = model(
        ids, mask, item_input_ids=item_ids, item_attention_mask=item_mask,
        target_index=torch.tensor(targets) if use_index else None,
        negative_input_ids=neg_ids, negative_attention_mask=neg_mask,
        negative_index=torch.tensor(negatives) if use_index else None,
    )  # fmt: skip
    users = model.encode(ids, mask)
    cands = torch.cat([model.encode(item_ids, item_mask), model.encode(neg_ids, neg_mask)])
    assert out.logits.shape == (4, 7)
    assert torch.allclose(out.logits, users @ cands.T, atol=1e-6)
    cand_items = targets + negatives
    allowed = [[j for j in range(7) if j == i or cand_items[j] != targets[i]] for i in range(4)]
    assert allowed[1] == [0, 1, 2, 3, 4, 6]
    assert allowed[0] == [0, 1, 3, 4, 5, 6]
    assert out.loss.item() == pytest.approx(
        _hand_ce_with_allowed(out.logits, allowed, 0.2), rel=1e-5
    )


@pytest.mark.parametrize(
    ("family", "layer"), [("bert", "BertLayer"), ("llama", "LlamaDecoderLayer")]
)
def test_no_split_modules_forwarded_for_fsdp_auto_wrap(family: str, layer: str) -> None:
    model = make(family)
    assert layer in model._no_split_modules
    assert model._no_split_modules == list(model.backbone._no_split_modules)


@pytest.mark.parametrize(("flags", "expected"), [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode_max_tokens": True}, "cls"),  # not a petrec pooling: the encoder default
    (None, "cls"),  # no sentence-transformers config beside the weights
])
def test_auto_pooling_follows_a_sentence_transformers_checkpoint(tmp_path, flags, expected) -> None:
    from petrec.models.pooling import resolve_pooling

    backbone = make("bert").backbone
    backbone.config.name_or_path = str(tmp_path)
    if flags is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    assert resolve_pooling("auto", backbone, is_decoder=False) == expected
    assert resolve_pooling("last", backbone, is_decoder=False) == "last"  # explicit always wins


def test_the_packaged_minilm_pools_by_mean_as_it_was_trained() -> None:
    from petrec.models.build import load_backbone

    cfg = ModelConfig(backbone="minilm", method="head")
    backbone, is_decoder = load_backbone(cfg)
    assert BehaviourModel(backbone, cfg, is_decoder=is_decoder).pooling == "mean"


def test_head_norm_makes_the_score_blind_to_the_pooled_scale() -> None:
    model = make("bert", head_norm=True, dropout=0.0).eval()
    assert not [n for n, _ in model.head.named_parameters() if n.startswith("0.")]  # LN has no weights
    h = torch.randn(4, model.hidden_size) * 0.3  # var 0.09 >> LayerNorm's eps
    assert torch.allclose(model.head(h), model.head(h * 100.0), atol=1e-4)
    plain = make("bert", dropout=0.0).eval()
    assert not torch.allclose(plain.head(h), plain.head(h * 100.0), atol=1e-4)
    with pytest.raises(PetrecModelError, match="head_norm applies to ctr / rating"):
        ModelConfig(task="next_item", head_norm=True)


def test_head_norm_model_saves_and_reloads_its_adapter(tmp_path) -> None:
    import petrec

    def base() -> BehaviourModel:
        torch.manual_seed(0)
        return make("bert", head_norm=True, dropout=0.0)

    def build() -> BehaviourModel:
        return petrec.attach(base(), "lora", r=4, alpha=8, head=["head"])

    trained = build()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    petrec.save_adapter(trained, tmp_path / "ad")
    reloaded = petrec.load_adapter(base(), tmp_path / "ad").eval()
    ids, mask = batch([[5, 6, 7, 8], [9, 10]])
    trained.eval()
    out = trained(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out, reloaded(input_ids=ids, attention_mask=mask).logits)
    assert not torch.equal(out, build().eval()(input_ids=ids, attention_mask=mask).logits)
