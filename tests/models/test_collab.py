"""Collaborative tokens: insertion into the prompt, the ID spec's files and columns, the module's training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from petrec.collate import COLLAB_COLUMNS
from petrec.data.errors import DataError
from petrec.models import PetrecModelError
from petrec.models.collab import COLLAB_FILE, CollabSpec, CollabTokens, insert_tokens

EXAMPLES = {
    "history_item_ids": [["a", "b", "c"], ["b"], []],
    "history_labels": [[1, 0, 1], [0], []],
    "item_id": ["c", "z", "a"],
    "label": [1, 0, 1],
}


def spec(**kw) -> CollabSpec:
    return CollabSpec(**{"items": ["a", "b", "c"], "encoder": "gru4rec", "hidden": 8, "history_len": 2, **kw})


def test_insert_tokens_after_an_encoders_first_token_under_right_padding() -> None:
    embeds = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # row 1 has one pad at the end
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    tokens = torch.full((2, 2, 1), -1.0)
    out, out_mask = insert_tokens(embeds, mask, tokens, after_first=True)
    assert out[:, :, 0].tolist() == [[0, -1, -1, 1, 2, 3], [4, -1, -1, 5, 6, 7]]
    assert out_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]


def test_insert_tokens_before_a_decoders_first_real_token_under_left_padding() -> None:
    embeds = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3, 1)
    mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    tokens = torch.full((2, 2, 1), -1.0)
    out, out_mask = insert_tokens(embeds, mask, tokens, after_first=False)
    # the padding stays in front, the prompt's last token stays last
    assert out[:, :, 0].tolist() == [[-1, -1, 0, 1, 2], [3, 4, -1, -1, 5]]
    assert out_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]


def test_columns_read_only_the_examples_inputs() -> None:
    cols = spec().columns(EXAMPLES)
    assert list(cols) == list(COLLAB_COLUMNS)
    # tokens: 0 pad, 1 OOV, a=2, b=3, c=4; the 2 most recent history items, left-padded
    assert cols["collab_history_ids"] == [[3, 4], [0, 3], [0, 0]]
    assert cols["collab_history_feedback"] == [[1, 2], [0, 1], [0, 0]]
    assert cols["collab_item_ids"] == [4, 1, 2]
    flipped = dict(EXAMPLES, label=[1 - v for v in EXAMPLES["label"]])
    assert spec().columns(flipped) == cols


def test_columns_name_the_bad_row() -> None:
    bad = dict(EXAMPLES, history_labels=[[1, 0, 1], [0, 1], []])
    with pytest.raises(DataError, match="row 1: 1 history items but 2 history labels"):
        spec().columns(bad)
    with pytest.raises(DataError, match="need the example columns \\['history_labels'\\]"):
        spec().columns({k: v for k, v in EXAMPLES.items() if k != "history_labels"})


def test_spec_round_trip_and_clear_errors(tmp_path: Path) -> None:
    s = spec(fitted_on=120, id_metrics={"auc": 0.7})
    s.save(tmp_path)
    assert CollabSpec.load(tmp_path) == s
    with pytest.raises(DataError, match="not found"):
        CollabSpec.load(tmp_path / "nowhere")
    path = tmp_path / COLLAB_FILE
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "version": 99}))
    with pytest.raises(DataError, match="version 99"):
        CollabSpec.load(tmp_path)
    path.write_text(json.dumps({**raw, "items": ["a", "a"]}))
    with pytest.raises(DataError, match="distinct item ids"):
        CollabSpec.load(tmp_path)
    path.write_text("{")
    with pytest.raises(DataError, match="not readable JSON"):
        CollabSpec.load(tmp_path)


def _inputs(s: CollabSpec) -> list[torch.Tensor]:
    cols = s.columns(EXAMPLES)
    return [torch.tensor(cols[name]) for name in COLLAB_COLUMNS]


@pytest.mark.parametrize("tune", [False, True])
def test_frozen_id_model_gets_no_gradient_and_stays_in_eval_mode(tune: bool) -> None:
    s = spec()
    module = CollabTokens(s, lm_hidden=16, embed_std=0.05, tune=tune)
    module.freeze_id_model()
    module.train()
    assert module.id_model.training is tune
    tokens = module(*_inputs(s))
    assert tokens.shape == (3, s.n_soft_tokens, 16)
    # the LayerNorm's gain starts at the backbone's embedding spread: tokens of a real token's size
    assert float(tokens.detach().std()) == pytest.approx(0.05, rel=0.1)
    tokens.square().sum().backward()
    id_grads = [p.grad for p in module.id_model.parameters()]
    assert all(g is None for g in id_grads) is (not tune)
    assert module.proj[0].weight.grad is not None and module.role.grad is not None


def test_roles_and_positions_give_distinct_tokens() -> None:
    s = spec()
    module = CollabTokens(s, lm_hidden=16, embed_std=0.05).eval()
    tokens = module(*_inputs(s))
    # row 0: two history items, the user state and the candidate: four different vectors
    flat = tokens[0].detach().numpy()
    assert len({tuple(np.round(v, 6)) for v in flat}) == 4


@pytest.mark.parametrize(("family", "side"), [("bert", "right"), ("llama", "left"), ("llama", "right")])
def test_a_rows_score_does_not_depend_on_its_batchs_padding(tiny_dirs: dict[str, Path], family: str,
                                                             side: str) -> None:
    from petrec.models import ModelConfig, build_model
    from tests.models.conftest import batch

    s = spec()
    cfg = ModelConfig(backbone=str(tiny_dirs[family]), collab_tokens=True, collab_dim=8, dropout=0.0,
                      padding_side=side)
    model = build_model(cfg, collab=s).eval()
    inputs = _inputs(s)
    rows = [[5, 6, 7, 8, 9], [5, 6], [7, 8, 9]]
    ids, mask = batch(rows, side)
    with torch.no_grad():
        together = model(input_ids=ids, attention_mask=mask, **dict(zip(COLLAB_COLUMNS, inputs, strict=True))).logits
        for i, row in enumerate(rows):
            one = [t[i:i + 1] for t in inputs]
            alone = model(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                          **dict(zip(COLLAB_COLUMNS, one, strict=True))).logits
            torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=1e-4)
        # the tokens change the score (the model reads them), and missing ones are refused
        other = [inputs[0], inputs[1], torch.tensor([2, 2, 2])]
        moved = model(input_ids=ids, attention_mask=mask, **dict(zip(COLLAB_COLUMNS, other, strict=True))).logits
        assert not torch.allclose(moved, together)
        with pytest.raises(PetrecModelError, match="pass collab_item_ids"):
            model(input_ids=ids, attention_mask=mask, collab_history_ids=inputs[0], collab_history_feedback=inputs[1])


def test_collab_inputs_are_refused_by_a_model_without_tokens(tiny_dirs: dict[str, Path]) -> None:
    from petrec.models import ModelConfig, build_model

    model = build_model(ModelConfig(backbone=str(tiny_dirs["bert"]))).eval()
    with pytest.raises(PetrecModelError, match=r"collab_item_ids given to a model built without model\.collab_tokens"):
        model(input_ids=torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 2, dtype=torch.long),
              collab_item_ids=torch.tensor([2]))


def test_answer_scoring_reads_the_tokens_at_the_prompts_last_position(tiny_llama_lm: Path) -> None:
    from petrec.models import ModelConfig, build_model
    from tests.models.conftest import batch

    s = spec()
    cfg = ModelConfig(backbone=str(tiny_llama_lm), scoring="answer", collab_tokens=True, collab_dim=8,
                      dropout=0.0, padding_side="left")
    model = build_model(cfg, collab=s).eval()
    inputs = {k: v[:2] for k, v in zip(COLLAB_COLUMNS, _inputs(s), strict=True)}
    ids, mask = batch([[5, 6, 7, 8], [5, 6]], "left")
    with torch.no_grad():
        both = model(input_ids=ids, attention_mask=mask, **inputs).logits
        second = model(input_ids=ids[1:, 2:], attention_mask=mask[1:, 2:],
                       **{k: v[1:2] for k, v in inputs.items()}).logits
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-4)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"backbone", "head", "collab"}


def test_collab_in_fusion_mixes_the_id_models_own_logit(tiny_dirs: dict[str, Path]) -> None:
    from petrec.data.features import FEATURE_NAMES
    from petrec.models import ModelConfig, build_model

    s = spec()
    cfg = ModelConfig(backbone=str(tiny_dirs["bert"]), collab_tokens=True, collab_dim=8, dropout=0.0,
                      behaviour_prior=True, prior_fusion="stacked", collab_in_fusion=True)
    model = build_model(cfg, collab=s).eval()
    inputs = dict(zip(COLLAB_COLUMNS, _inputs(s), strict=True))
    features = torch.randn(3, len(FEATURE_NAMES))
    ids, mask = torch.tensor([[2, 5, 6, 3]] * 3), torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        own = model.collab.id_model(*_inputs(s)).logits  # the ID model alone, on the same rows
        model.prior.set_fusion(0.5, -0.1, 2.0)
        out = model(input_ids=ids, attention_mask=mask, features=features, **inputs)
    torch.testing.assert_close(out.collab_logits, own.float())
    torch.testing.assert_close(out.logits, out.prior_logits + 0.5 * out.lm_logits + 2.0 * own.float() - 0.1)
    model.prior.set_fusion(0.5, 0.0)  # a mix fitted without the ID logit (two-stage's stage 1) zeroes its weight
    assert float(model.prior.fusion_collab_weight) == 0.0
    cfg_plain = ModelConfig(backbone=str(tiny_dirs["bert"]), collab_tokens=True, collab_dim=8,
                            behaviour_prior=True, prior_fusion="stacked")
    with pytest.raises(PetrecModelError, match=r"collab_weight needs a head built with model\.collab_in_fusion"):
        build_model(cfg_plain, collab=s).prior.set_fusion(0.5, 0.0, 1.0)
    with pytest.raises(PetrecModelError, match="collab_in_fusion adds the ID model's logit"):
        ModelConfig(collab_tokens=True, collab_in_fusion=True)


def test_logit_only_keeps_the_prompt_as_text_and_freezes_the_projector(tiny_dirs: dict[str, Path]) -> None:
    from petrec.data.features import FEATURE_NAMES
    from petrec.models import ModelConfig, build_model

    s = spec()
    common = {"backbone": str(tiny_dirs["bert"]), "collab_dim": 8, "dropout": 0.0, "behaviour_prior": True,
              "prior_fusion": "stacked"}
    model = build_model(ModelConfig(**common, collab_tokens=True, collab_in_fusion=True,
                                    collab_prompt_tokens=False), collab=s).eval()
    text_only = build_model(ModelConfig(**common), collab=None).eval()
    text_only.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("collab.")},
                              strict=False)
    inputs = dict(zip(COLLAB_COLUMNS, _inputs(s), strict=True))
    features = torch.randn(3, len(FEATURE_NAMES))
    ids, mask = torch.tensor([[2, 5, 6, 3]] * 3), torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        own = model.collab.id_model(*_inputs(s)).logits
        out = model(input_ids=ids, attention_mask=mask, features=features, **inputs)
        plain = text_only(input_ids=ids, attention_mask=mask, features=features)
    # the language model reads the same text as a model without collaborative inputs ...
    torch.testing.assert_close(out.lm_logits, plain.lm_logits)
    # ... and the ID model's logit is there for the mix
    torch.testing.assert_close(out.collab_logits, own.float())
    assert not any(p.requires_grad for p in model.collab.parameters())
    with pytest.raises(PetrecModelError, match="collab_prompt_tokens: false keeps the ID model"):
        ModelConfig(collab_tokens=True, collab_prompt_tokens=False)
    with pytest.raises(PetrecModelError, match="collab_tune trains the ID model through the soft tokens"):
        ModelConfig(**common, collab_tokens=True, collab_in_fusion=True, collab_prompt_tokens=False,
                    collab_tune=True)


def test_residual_target_trains_the_lm_beside_the_fixed_offset(tiny_dirs: dict[str, Path]) -> None:
    import torch.nn.functional as F

    from petrec.data.features import FEATURE_NAMES
    from petrec.models import ModelConfig, build_model

    s = spec()
    common = {"backbone": str(tiny_dirs["bert"]), "collab_dim": 8, "dropout": 0.0, "behaviour_prior": True,
              "prior_fusion": "stacked", "collab_tokens": True, "collab_in_fusion": True,
              "collab_prompt_tokens": False}
    model = build_model(ModelConfig(**common, lm_target="residual"), collab=s)
    model.prior.freeze_fit()
    model.prior.set_fusion(0.5, -0.1, 2.0)  # the validation mix: not what the training loss reads
    model.prior.set_residual(0.8, 0.3)
    inputs = dict(zip(COLLAB_COLUMNS, _inputs(s), strict=True))
    features = torch.randn(3, len(FEATURE_NAMES))
    ids, mask = torch.tensor([[2, 5, 6, 3]] * 3), torch.ones(3, 4, dtype=torch.long)
    labels = torch.tensor([1.0, 0.0, 1.0])
    out = model(input_ids=ids, attention_mask=mask, features=features, labels=labels, **inputs)
    offset = out.prior_logits + 0.8 * out.collab_logits + 0.3
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.lm_logits + offset, labels))
    out.loss.backward()
    # the offset is fixed: no gradient reaches the count model or the ID model
    assert model.prior.linear.weight.grad is None and not any(p.requires_grad for p in model.collab.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if not n.startswith(("prior.", "collab.")))
    # lm_target: text (the default) fits the label from the text alone, whatever the offset
    text = build_model(ModelConfig(**common), collab=s)
    text.load_state_dict(model.state_dict())
    text.prior.set_residual(0.8, 0.3)
    plain = text(input_ids=ids, attention_mask=mask, features=features, labels=labels, **inputs)
    torch.testing.assert_close(plain.loss, F.binary_cross_entropy_with_logits(plain.lm_logits, labels))
    with pytest.raises(PetrecModelError, match="lm_target: residual trains the language model beside"):
        ModelConfig(behaviour_prior=True, lm_target="residual")
    with pytest.raises(PetrecModelError, match="set_residual: this prior head was built without stacked"):
        build_model(ModelConfig(backbone=str(tiny_dirs["bert"]), behaviour_prior=True)).prior.set_residual(1.0, 0.0)
