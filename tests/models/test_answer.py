"""Answer-token scoring: the head reads the LM's own next-token scores of the answer words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import petrec
from petrec.data import DataError
from petrec.data.frame import answer_token_ids, get_frame, prompt_frame, set_frame
from petrec.methods import PetrecMethodError
from petrec.models import BehaviourModel, ModelConfig, PetrecModelError, build_model, load_tokenizer
from petrec.models.build import load_backbone
from tests.methods.families import OPTIONS
from tests.models.conftest import word_tokenizer

PROMPT = "The user liked: Heat, Fargo. The user disliked: Twister. Will the user like Casino?"


def _encode(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    frame = get_frame(tok)
    return tok([frame.wrap(t) for t in texts], add_special_tokens=frame.add_special_tokens, padding=True,
               return_tensors="pt", return_token_type_ids=False)


def _lm_answer(folder: Path, enc: dict[str, torch.Tensor], ids: list[int], task: str) -> torch.Tensor:
    """The full causal LM's answer on the last real token of each row: the reference."""
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = lm(**enc).logits
    last = enc["attention_mask"].sum(1) - 1  # right padding
    rows = logits[torch.arange(len(last)), last][:, ids]
    if task == "ctr":
        return rows[:, 0] - rows[:, 1]
    return rows.softmax(-1) @ torch.arange(1.0, 6.0)


@pytest.mark.parametrize(("fixture", "task"), [("tiny_llama_lm", "ctr"), ("tiny_llama_lm_tied", "rating"),
                                               ("tiny_llama_lm", "rating"), ("tiny_llama_lm_tied", "ctr")])
def test_an_untrained_answer_model_is_the_language_model(fixture: str, task: str,
                                                         request: pytest.FixtureRequest) -> None:
    # Untied head (rows read from the causal LM's lm_head) and tied head (from the embeddings),
    # chat template and plain frame: step 0 scores exactly what the pretrained LM answers.
    folder = request.getfixturevalue(fixture)
    cfg = ModelConfig(backbone=str(folder), task=task, scoring="answer", method="lora")
    tok = load_tokenizer(cfg)
    model = build_model(cfg).eval()
    enc = _encode(tok, [PROMPT, "Will the user like Heat?"])
    with torch.no_grad():
        got = model(**enc).logits
    want = _lm_answer(folder, enc, answer_token_ids(tok, get_frame(tok), task), task)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if task == "rating":
        assert ((got > 1) & (got < 5)).all()


def test_the_frame_puts_the_answer_right_after_the_prompt(tiny_llama_lm: Path, tiny_llama_lm_tied: Path) -> None:
    chat = load_tokenizer(ModelConfig(backbone=str(tiny_llama_lm), task="ctr", scoring="answer"))
    frame = get_frame(chat)
    assert not frame.add_special_tokens and frame.prefix.startswith("<|user|>")
    assert frame.suffix.endswith("<|assistant|>\n") and "Yes or No" in frame.suffix
    plain = load_tokenizer(ModelConfig(backbone=str(tiny_llama_lm), task="ctr", scoring="answer",
                                       prompt_format="plain"))
    assert get_frame(plain).suffix.endswith("\nAnswer:")
    # MiniLM's tokenizer appends [SEP]; the plain frame keeps [CLS] first and nothing after "Answer:".
    ids = _encode(plain, [PROMPT])["input_ids"][0].tolist()
    assert ids[0] == plain.cls_token_id and plain.convert_ids_to_tokens(ids[-1]) == ":"
    with pytest.raises(DataError, match="no chat template"):
        load_tokenizer(ModelConfig(backbone=str(tiny_llama_lm_tied), task="ctr", scoring="answer",
                                   prompt_format="chat"))
    # A tokenizer without the scoring frame is left as it was (the head path).
    assert get_frame(load_tokenizer(ModelConfig(backbone=str(tiny_llama_lm), task="ctr"))) is None


def test_answer_words_must_be_single_distinct_tokens() -> None:
    tok = word_tokenizer(with_pad=True)  # knows w0..w89 only: "Yes" and "No" both become <unk>
    frame = prompt_frame(tok, "ctr", "plain")
    with pytest.raises(DataError, match="share a token"):
        answer_token_ids(tok, frame, "ctr")
    with pytest.raises(DataError, match=r"not .next_item"):
        prompt_frame(tok, "next_item")
    set_frame(tok, frame)
    assert get_frame(tok) is frame
    set_frame(tok, None)
    assert get_frame(tok) is None


def test_answer_scoring_refuses_what_it_cannot_do(minilm_dir: Path) -> None:
    with pytest.raises(PetrecModelError, match="not next_item"):
        ModelConfig(task="next_item", scoring="answer")
    with pytest.raises(PetrecModelError, match="head_hidden / head_norm"):
        ModelConfig(task="ctr", scoring="answer", head_hidden=16)
    with pytest.raises(PetrecModelError, match="scoring"):
        ModelConfig(task="ctr", scoring="logits")
    with pytest.raises(PetrecModelError, match="needs a decoder"):
        build_model(ModelConfig(backbone=str(minilm_dir), task="ctr", scoring="answer"))


def test_a_trained_answer_model_saves_and_reloads_exactly(tiny_llama_lm: Path, tmp_path: Path) -> None:
    cfg = ModelConfig(backbone=str(tiny_llama_lm), task="ctr", scoring="answer", method="lora")
    tok = load_tokenizer(cfg)
    model = build_model(cfg)
    enc = _encode(tok, [PROMPT, "Will the user like Heat?"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert model.head.weight.requires_grad and model.head.scale.requires_grad
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(3):
        loss = model(**enc, labels=torch.tensor([1.0, 0.0])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        before = model(**enc).logits
    petrec.save_adapter(model, tmp_path / "adapter")
    with torch.no_grad():
        assert not torch.allclose(build_model(cfg).eval()(**enc).logits, before)  # training moved it
    backbone, is_decoder = load_backbone(cfg)  # the plain base, as petrec.runs reloads a run
    reloaded = petrec.load_adapter(BehaviourModel(backbone, cfg, is_decoder=is_decoder), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, before)


def test_the_prior_starts_the_answer_switched_off(tiny_llama_lm: Path) -> None:
    cfg = ModelConfig(backbone=str(tiny_llama_lm), task="ctr", scoring="answer", behaviour_prior=True)
    model = build_model(cfg)
    assert model.head.scale.item() == 0.0
    with pytest.raises(PetrecModelError, match="built for ctr"):
        ModelConfig(task="rating", scoring="answer", behaviour_prior=True)


IDENTITY_AT_INIT = ("full", "head", "bitfit", "lora", "dora", "ia3", "adapter")


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_every_method_trains_and_reloads_an_answer_model(method: str, tiny_llama_lm: Path, tmp_path: Path) -> None:
    """Each PEFT method on an answer-scoring decoder: zero-shot at init (where the method starts
    as the identity), one step changes the score, save → load into the plain base is exact."""
    cfg = ModelConfig(backbone=str(tiny_llama_lm), task="ctr", scoring="answer", method=method,
                      method_kwargs=OPTIONS[method])
    tok = load_tokenizer(cfg)
    enc = _encode(tok, [PROMPT, "Will the user like Heat?"])
    if method == "bitfit":  # Llama (SmolLM2 too) has no bias terms: one clear error, no silent no-op
        with pytest.raises(PetrecMethodError, match="no bias parameters"):
            build_model(cfg)
        return
    model = build_model(cfg)
    with torch.no_grad():
        start = model.eval()(**enc).logits
    if method in IDENTITY_AT_INIT:
        want = _lm_answer(tiny_llama_lm, enc, answer_token_ids(tok, get_frame(tok), "ctr"), "ctr")
        torch.testing.assert_close(start, want, rtol=1e-4, atol=1e-5)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**enc, labels=torch.tensor([1.0, 0.0])).loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(**enc).logits
    assert not torch.allclose(after, start), "one step did not move the score"
    petrec.save_adapter(model, tmp_path / "adapter")
    backbone, is_decoder = load_backbone(cfg)
    reloaded = petrec.load_adapter(BehaviourModel(backbone, cfg, is_decoder=is_decoder), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**enc).logits, after)
