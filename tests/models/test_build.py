"""build_model / load_tokenizer / ModelConfig: offline loading, real petrec.attach, tokenizer padding."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, T5Config

from petrec.methods import METHODS
from petrec.models import (
    BehaviourModel,
    ModelConfig,
    PetrecModelError,
    build_model,
    is_decoder_config,
    load_tokenizer,
)
from tests.models.conftest import batch, tiny_config

ROWS = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33]]


def trainable(model: torch.nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("family", "decoder"), [("bert", False), ("gpt2", True), ("llama", True), ("qwen2", True)]
)
def test_is_decoder_config(family: str, decoder: bool) -> None:
    assert is_decoder_config(tiny_config(family)) is decoder


def test_encoder_decoder_backbones_are_rejected() -> None:
    with pytest.raises(PetrecModelError, match="'t5' is an encoder-decoder model"):
        is_decoder_config(T5Config())


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_build_full_and_head_with_real_attach(family: str, tiny_dirs: dict[str, Path]) -> None:
    full = build_model(ModelConfig(backbone=str(tiny_dirs[family]), method="full"))
    assert isinstance(full, BehaviourModel)
    assert not any("pooler" in n for n, _ in full.named_parameters())  # removed: never trained
    n_all = sum(p.numel() for p in full.parameters())
    assert sum(trainable(full).values()) == n_all
    head = build_model(ModelConfig(backbone=str(tiny_dirs[family]), method="head"))
    # only the linear head: 32 weights + 1 bias (names may gain a wrapper prefix)
    assert sum(trainable(head).values()) == 33
    assert all(n.startswith("head.") for n in trainable(head))
    # the same pretrained weights were loaded both times
    saved = AutoModel.from_pretrained(tiny_dirs[family])
    ids, mask = batch(ROWS)
    saved.eval()
    head.eval()
    ref = saved(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(head.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, ref)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_build_lora_trains_only_lora_and_head(family: str, tiny_dirs: dict[str, Path]) -> None:
    cfg = ModelConfig(
        backbone=str(tiny_dirs[family]), task="rating", method="lora", method_kwargs={"r": 4}
    )
    model = build_model(cfg)
    names = trainable(model)
    lora = {n: k for n, k in names.items() if "lora_" in n}
    rest = {n for n in names if n not in lora}
    assert lora, "no LoRA parameters were added"
    assert all(n.startswith("head.") for n in rest)
    assert sum(names[n] for n in rest) == 33
    for name, param in model.named_parameters():  # every LoRA matrix has rank 4
        if "lora_A" in name:
            assert param.shape[0] == 4
        if "lora_B" in name:
            assert param.shape[1] == 4
    # a backward pass reaches LoRA and head, nothing else
    ids, mask = batch(ROWS)
    model(ids, mask, labels=torch.tensor([1.0, 2.0, 3.0])).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(names)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("method", sorted(set(METHODS)))
def test_gradient_checkpointing_gives_the_same_gradients(family: str, method: str, tiny_dirs: dict[str, Path]) -> None:
    """Every method: the backward pass recomputes the layers and must see what the forward saw
    (prefix tuning's per-forward keys / values included)."""
    if method == "bitfit" and family == "llama":
        pytest.skip("Llama has no bias terms (petrec refuses bitfit on it)")
    grads = []
    for ckpt in (False, True):
        cfg = ModelConfig(
            backbone=str(tiny_dirs[family]), method=method, dropout=0.0, gradient_checkpointing=ckpt
        )
        torch.manual_seed(0)  # same head init both times
        model = build_model(cfg)
        assert model.backbone.is_activation_checkpointing is ckpt
        model.train()  # checkpointing is only active in training mode
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        ids, mask = batch(ROWS)
        model(ids, mask, labels=torch.tensor([1.0, 0.0, 1.0])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name
    copy.deepcopy(model)  # right after a training step (export and serve copy models)


def test_tokenizer_pad_falls_back_to_eos_and_padding_side(tiny_dirs: dict[str, Path]) -> None:
    tok = load_tokenizer(ModelConfig(backbone=str(tiny_dirs["gpt2"])))
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "right"
    left = load_tokenizer(ModelConfig(backbone=str(tiny_dirs["gpt2"]), padding_side="left"))
    enc = left(["w1 w2 w3", "w4"], padding=True, return_tensors="pt")
    assert enc["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert enc["input_ids"][1].tolist() == [1, 1, 14]  # eos id 1 pads on the left
    bert = load_tokenizer(ModelConfig(backbone=str(tiny_dirs["bert"])))
    assert bert.pad_token == "<pad>"


def test_left_padded_batches_score_like_right_padded_ones(tiny_dirs: dict[str, Path]) -> None:
    cfg = ModelConfig(backbone=str(tiny_dirs["gpt2"]), method="head")
    model = build_model(cfg).eval()
    texts = ["w1 w2 w3 w4", "w5", "w6 w7"]
    outs = []
    for side in ("right", "left"):
        tok = load_tokenizer(ModelConfig(backbone=str(tiny_dirs["gpt2"]), padding_side=side))
        enc = tok(texts, padding=True, return_tensors="pt")
        outs.append(model(enc["input_ids"], enc["attention_mask"]).logits)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_missing_backbone_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(PetrecModelError, match=r"could not load .*nope.*petrec runs offline"):
        build_model(ModelConfig(backbone=str(missing), method="head"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"task": "ranking"},
            r"model.task: got 'ranking'; accepted values: \['ctr', 'rating', 'next_item'\]",
        ),
        ({"pooling": "max"}, r"model.pooling: got 'max'"),
        ({"dropout": 1.0}, r"model.dropout: expected a value in \[0, 1\)"),
        ({"temperature": 0.0}, r"model.temperature: expected a value > 0"),
        ({"head_hidden": -1}, r"model.head_hidden: expected an integer >= 0"),
        ({"quantize": "fp8"}, r"model.quantize: got 'fp8'"),
        ({"method": "lorax"}, r"model.method: got 'lorax'; accepted values: \['full', 'head'"),
        (
            {"method": "lora", "method_kwargs": {"rank": 4}},
            r"model.method_kwargs: .*unknown option",
        ),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(PetrecModelError, match=match):
        ModelConfig(**kwargs)


def test_real_minilm(minilm_dir: Path) -> None:
    """The packaged all-MiniLM-L6-v2: 384-d, and its mean-pooled embeddings rank meaning."""
    cfg = ModelConfig(
        backbone="minilm", task="next_item", pooling="mean", method="head", dropout=0.0
    )
    model = build_model(cfg).eval()
    tok = load_tokenizer(cfg)
    assert model.hidden_size == 384
    assert model.pooling == "mean"
    texts = [
        "a science fiction film about astronauts travelling through space",
        "a movie about a space mission to another planet",
        "a recipe for baking a chocolate cake",
    ]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = model.encode(enc["input_ids"], enc["attention_mask"])
        states = model.backbone(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    hand = torch.nn.functional.normalize((states * m).sum(1) / m.sum(1), dim=-1)
    assert torch.allclose(emb, hand, atol=1e-5)  # identity head at init
    sims = model.score_all(emb, emb)
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert sims[1, 0] > sims[1, 2] + 0.2
    # in-batch training step: loss finite, only the head gets gradients
    model.train()
    out = model(
        enc["input_ids"], enc["attention_mask"],
        item_input_ids=enc["input_ids"], item_attention_mask=enc["attention_mask"],
    )  # fmt: skip
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(trainable(model))


def test_lora_with_gradient_checkpointing_reaches_lora_weights(tiny_dirs: dict[str, Path]) -> None:
    # frozen embeddings + checkpointing: non-reentrant checkpointing must still give LoRA grads
    cfg = ModelConfig(
        backbone=str(tiny_dirs["llama"]),
        method="lora",
        method_kwargs={"r": 2},
        gradient_checkpointing=True,
    )
    model = build_model(cfg).train()
    ids, mask = batch(ROWS)
    model(ids, mask, labels=torch.tensor([1.0, 0.0, 1.0])).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(trainable(model))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_peft_method_attaches_to_the_nested_backbone(
    family: str, method: str, tiny_dirs: dict[str, Path]
) -> None:
    model = build_model(ModelConfig(backbone=str(tiny_dirs[family]), method=method))
    names = trainable(model)
    total = sum(p.numel() for p in model.parameters())
    head_names = {n for n in names if n.startswith("head.")}
    assert sum(names[n] for n in head_names) == 33  # the head always trains
    if method == "full":
        assert sum(names.values()) == total
    else:
        assert sum(names.values()) < total / 2
    model.train()
    ids, mask = batch(ROWS)
    out = model(ids, mask, labels=torch.tensor([1.0, 0.0, 1.0]))
    out.loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(names)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, mask).logits, model(ids, mask).logits)


def test_bfloat16_backbone_keeps_a_float32_head(tiny_dirs: dict[str, Path]) -> None:
    cfg = ModelConfig(backbone=str(tiny_dirs["bert"]), method="head", dtype="bfloat16")
    model = build_model(cfg).eval()
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    assert model.head.weight.dtype == torch.float32
    ids, mask = batch(ROWS)
    out = model(ids, mask, labels=torch.tensor([1.0, 0.0, 1.0]))
    assert out.logits.dtype == torch.float32
    pooled = model.pooled(ids, mask)
    assert pooled.dtype == torch.bfloat16
    assert torch.allclose(out.logits, model.head(pooled.float()).squeeze(-1))


@pytest.mark.parametrize(
    ("family", "attrs"),
    [
        ("bert", ["hidden_dropout_prob", "attention_probs_dropout_prob"]),
        ("gpt2", ["resid_pdrop", "embd_pdrop", "attn_pdrop"]),
    ],
)
def test_backbone_dropout_override(
    family: str, attrs: list[str], tiny_dirs: dict[str, Path]
) -> None:
    ids, mask = batch(ROWS)
    for rate in (0.0, 0.5):
        cfg = ModelConfig(
            backbone=str(tiny_dirs[family]), method="full", dropout=0.0, backbone_dropout=rate
        )
        model = build_model(cfg).train()
        assert [getattr(model.backbone.config, a) for a in attrs] == [rate] * len(attrs)
        with torch.no_grad():
            same = torch.equal(model(ids, mask).logits, model(ids, mask).logits)
        assert same is (rate == 0.0)  # train mode: deterministic only without any dropout
    with pytest.raises(
        PetrecModelError, match=r"model.backbone_dropout: expected null or a value in \[0, 1\)"
    ):
        ModelConfig(backbone_dropout=1.5)


@pytest.mark.parametrize("task", ["ctr", "rating", "next_item"])
def test_lora_model_overfits_one_batch(task: str, tiny_dirs: dict[str, Path]) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=str(tiny_dirs["bert"]), task=task, method="lora", dropout=0.0, temperature=0.1
    )
    model = build_model(cfg).train()
    ids, mask = batch([[11, 12, 13], [21, 22], [31, 32, 33, 34], [41]])
    if task == "next_item":
        items = batch([[60], [61, 62], [63], [64, 65]])
        kwargs = {"item_input_ids": items[0], "item_attention_mask": items[1]}
    else:
        kwargs = {
            "labels": torch.tensor([1.0, 0.0, 1.0, 0.0] if task == "ctr" else [5.0, 1.0, 4.0, 2.0])
        }
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(25):
        loss = model(ids, mask, **kwargs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[:: len(losses) // 5]


def test_model_targets_choose_the_adapted_modules_and_survive_save_and_load(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """``model.targets`` reaches petrec.attach: LoRA on every linear layer of the blocks instead
    of the family default (query / value), and a reloaded adapter sits on the same modules."""
    import petrec

    every = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    def lora_modules(model: torch.nn.Module) -> set[str]:
        return {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}

    default = build_model(ModelConfig(backbone=str(tiny_dirs["llama"]), method="lora", method_kwargs={"r": 2}))
    assert lora_modules(default) == {"q_proj", "v_proj"}
    cfg = ModelConfig(backbone=str(tiny_dirs["llama"]), method="lora", method_kwargs={"r": 2}, targets=every)
    torch.manual_seed(0)
    wide = build_model(cfg).eval()
    assert lora_modules(wide) == set(every)
    with torch.no_grad():
        for n, p in wide.named_parameters():
            if "lora_B" in n:
                p.normal_()  # a trained-looking adapter (B starts at zero)
    petrec.save_adapter(wide, tmp_path / "a")
    from petrec.models.build import load_backbone

    torch.manual_seed(1)
    backbone, decoder = load_backbone(cfg)  # the plain base, as petrec.runs.load_run rebuilds it
    fresh = petrec.load_adapter(BehaviourModel(backbone, cfg, is_decoder=decoder), tmp_path / "a").eval()
    assert lora_modules(fresh) == set(every)  # the adapter file records its targets
    ids, mask = batch(ROWS)
    with torch.no_grad():
        assert torch.equal(wide(ids, mask).logits, fresh(ids, mask).logits)
    regex = ModelConfig(backbone=str(tiny_dirs["llama"]), method="lora", method_kwargs={"r": 2}, targets=r".*\.mlp\..*_proj")
    assert lora_modules(build_model(regex)) == {"gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize(
    ("targets", "method", "match"),
    [
        ([], "lora", r"model\.targets: expected null, a regex string or a non-empty list"),
        (["q_proj", ""], "lora", r"model\.targets: expected null"),
        (3, "lora", r"model\.targets: expected null.*got 3"),
        (["q_proj"], "prefix", r"model\.targets: method 'prefix' .* takes no targets; methods that do: .*lora"),
        (["q_proj"], "full", r"model\.targets: method 'full'"),
    ],
)
def test_model_targets_bad_values_are_refused_before_loading(targets: object, method: str, match: str) -> None:
    with pytest.raises(PetrecModelError, match=match):
        ModelConfig(backbone="/nonexistent", method=method, targets=targets)  # type: ignore[arg-type]
