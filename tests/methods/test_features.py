"""peft interoperability, refusals on load, multiple adapters, option errors, the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import petrec
from petrec.methods import (
    AdapterLoadError,
    PetrecMethodError,
    active_adapter,
    add_adapter,
    disable_adapter,
    list_adapters,
    set_adapter,
)
from tests.methods.families import BATCH, FAMILIES_BY_NAME, OPTIONS

PEFT_CASES = [(f, m) for f in ("bert_cls", "qwen2_cls", "wrapped_bert", "wrapped_gpt2") for m in ("lora", "dora", "ia3")]


def _randomise_adapters(model: torch.nn.Module) -> None:
    """Give every trainable tensor random values (so a wrong load cannot pass by accident)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _out(model: torch.nn.Module, fam_name: str) -> torch.Tensor:
    fam = FAMILIES_BY_NAME[fam_name]
    with torch.no_grad():
        return fam.call(model, BATCH())


@pytest.mark.parametrize(("family", "method"), PEFT_CASES, ids=[f"{f}-{m}" for f, m in PEFT_CASES])
def test_saved_peft_native_adapter_loads_in_plain_peft(family: str, method: str, tmp_path) -> None:
    from peft import PeftModel

    fam = FAMILIES_BY_NAME[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = petrec.attach(fam.fresh(), method, head=fam.head, **OPTIONS[method])
    _randomise_adapters(model)
    expected = _out(model, family)
    petrec.save_adapter(model, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(fam.fresh(), tmp_path).eval()
    torch.testing.assert_close(_out(peft_model, family), expected, atol=0, rtol=0)


def _saved(tmp_path, family: str = "bert_cls", method: str = "lora"):
    fam = FAMILIES_BY_NAME[family]
    model = petrec.attach(fam.fresh(), method, head=fam.head, **OPTIONS[method])
    petrec.save_adapter(model, tmp_path / "ad")
    return tmp_path / "ad"


def test_load_refuses_other_base_shape(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    folder = _saved(tmp_path)
    other = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64, num_labels=2))
    with pytest.raises(AdapterLoadError, match=r"base model does not match.*hidden_size: saved 32 vs given 48"):
        petrec.load_adapter(other, folder)
    assert getattr(other, "petrec_state", None) is None


def test_load_refuses_other_method_and_targets(tmp_path) -> None:
    folder = _saved(tmp_path)
    with pytest.raises(AdapterLoadError, match="adapter method is 'lora', expected 'dora'"):
        petrec.load_adapter(FAMILIES_BY_NAME["bert_cls"].fresh(), folder, method="dora")
    meta = json.loads((folder / "petrec_adapter.json").read_text())
    meta["targets"] = [*meta["targets"], "bert.encoder.layer.9.attention.self.query"]
    (folder / "petrec_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterLoadError, match=r"target modules differ: missing in base \['bert.encoder.layer.9"):
        petrec.load_adapter(FAMILIES_BY_NAME["bert_cls"].fresh(), folder)


def test_load_refuses_wrong_tensors_and_pickles(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _saved(tmp_path, method="adapter")
    tensors = load_file(folder / "adapter_model.safetensors")
    key = sorted(tensors)[0]
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterLoadError, match=f"wrong shape.*{key}"):
        petrec.load_adapter(FAMILIES_BY_NAME["bert_cls"].fresh(), folder)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(AdapterLoadError, match="never unpickles"):
        petrec.load_adapter(FAMILIES_BY_NAME["bert_cls"].fresh(), folder)
    with pytest.raises(AdapterLoadError, match=r"petrec_adapter\.json is missing"):
        petrec.load_adapter(FAMILIES_BY_NAME["bert_cls"].fresh(), tmp_path)


def test_save_writes_only_trained_tensors_and_no_temp_files(tmp_path) -> None:
    folder = _saved(tmp_path, family="wrapped_bert", method="adapter")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_model.safetensors", "petrec_adapter.json"]
    meta = json.loads((folder / "petrec_adapter.json").read_text())
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    assert sum(torch.Size(s).numel() for s in meta["tensors"].values()) == fam.counts["adapter"]
    assert {"head.0.weight", "head.2.bias"} <= set(meta["tensors"])  # the head is never lost


def test_multiple_adapters_switch_disable_and_save(tmp_path) -> None:
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    model = fam.fresh()
    base = _out(model, fam.name)
    petrec.attach(model, "lora", head=["head"], adapter_name="a", r=4)
    _randomise_adapters(model)
    out_a = _out(model, fam.name)
    add_adapter(model, "b", "adapter", head=["head"], reduction_factor=4)
    _randomise_adapters(model)
    add_adapter(model, "c", "prefix", head=["head"], num_virtual_tokens=3)
    assert list_adapters(model) == ["a", "b", "c"] and active_adapter(model) == "c"
    # only the active adapter (and its head copy) trains
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".c." in n or n.endswith(".c") or ".adapters.c." in n for n in trainable)
    set_adapter(model, "b")
    out_b = _out(model, fam.name)
    set_adapter(model, "a")
    torch.testing.assert_close(_out(model, fam.name), out_a, atol=0, rtol=0)
    assert not torch.allclose(out_a, out_b)
    with disable_adapter(model):
        torch.testing.assert_close(_out(model, fam.name), base, atol=0, rtol=0)
        assert active_adapter(model) is None
    assert active_adapter(model) == "a"
    petrec.save_adapter(model, tmp_path / "b", adapter_name="b")
    again = petrec.load_adapter(fam.fresh(), tmp_path / "b")
    torch.testing.assert_close(_out(again, fam.name), out_b, atol=0, rtol=0)
    with pytest.raises(PetrecMethodError, match="already attached"):
        add_adapter(model, "a", "lora", head=["head"])
    with pytest.raises(PetrecMethodError, match="no adapter named 'zz'"):
        set_adapter(model, "zz")


def test_in_place_methods_refuse_sharing() -> None:
    fam = FAMILIES_BY_NAME["bert_cls"]
    model = petrec.attach(fam.fresh(), "bitfit")
    with pytest.raises(PetrecMethodError, match="bitfit"):
        add_adapter(model, "x", "lora")
    with pytest.raises(PetrecMethodError, match="bitfit"), disable_adapter(model):
        pass


def test_unknown_method_option_and_head_errors() -> None:
    fam = FAMILIES_BY_NAME["bert_cls"]
    with pytest.raises(PetrecMethodError, match=r"unknown PEFT method 'lorra'; known methods: \['adapter'"):
        petrec.attach(fam.fresh(), "lorra")
    with pytest.raises(PetrecMethodError, match=r"unknown option\(s\) \['rank'\]; it accepts \['r', 'alpha', 'dropout'\]"):
        petrec.attach(fam.fresh(), "lora", rank=4)
    with pytest.raises(PetrecMethodError, match="r must be a positive int"):
        petrec.attach(fam.fresh(), "lora", r=0)
    with pytest.raises(PetrecMethodError, match=r"head module\(s\) \['nope'\] not found"):
        petrec.attach(fam.fresh(), "lora", head=["nope"])
    with pytest.raises(PetrecMethodError, match="no target modules found"):
        petrec.attach(fam.fresh(), "lora", targets=["no_such_layer"])
    with pytest.raises(PetrecMethodError, match="variant must be 'houlsby' or 'pfeiffer'"):
        petrec.attach(fam.fresh(), "adapter", variant="x")


def test_pfeiffer_places_one_adapter_per_layer_and_targets_override() -> None:
    fam = FAMILIES_BY_NAME["bert_cls"]
    model = petrec.attach(fam.fresh(), "adapter", variant="pfeiffer", reduction_factor=4)
    assert model.petrec_state.adapters["default"].targets == [
        f"bert.encoder.layer.{i}.output.dense" for i in range(2)
    ]
    model = petrec.attach(fam.fresh(), "lora", targets=["key"], r=2)
    assert model.petrec_state.adapters["default"].targets == [
        f"bert.encoder.layer.{i}.attention.self.key" for i in range(2)
    ]


def test_prompt_keeps_sequence_length_and_pooling_positions() -> None:
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    model = petrec.attach(fam.fresh(), "prompt", num_virtual_tokens=4)
    batch = BATCH()
    hidden = model.backbone(**batch).last_hidden_state
    assert hidden.shape[:2] == batch["input_ids"].shape


def test_cli_prints_every_method(capsys) -> None:
    from petrec.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in petrec.METHODS)
    assert set(petrec.METHODS) == {"full", "head", "bitfit", "lora", "dora", "ia3", "prompt", "prefix", "adapter", "qlora"}


def test_prefix_reparameterisation_count_and_training() -> None:
    from tests.methods.families import FF, H, L  # noqa: F401  (sizes of the tiny families)

    fam = FAMILIES_BY_NAME["wrapped_bert"]
    model = petrec.attach(fam.fresh(), "prefix", head=["head"], num_virtual_tokens=3, projection=True, projection_dim=16)
    mlp = (H * 16 + 16) + (16 * L * 2 * H + L * 2 * H)
    assert petrec.trainable_report(model).trainable == 3 * H + mlp + fam.head_params
    fam.call(model, BATCH()).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["dora", "ia3", "adapter", "prefix", "prompt", "bitfit", "head"])
def test_every_method_trains_on_a_4bit_base(method: str, tmp_path) -> None:
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = petrec.attach(fam.fresh(), method, head=["head"], quantize="nf4", **OPTIONS[method])
    assert petrec.trainable_report(model).quantized_ratio is not None
    model.train()
    fam.call(model, BATCH()).pow(2).mean().backward()
    # (the BERT pooler is unused by CLS pooling of last_hidden_state: its bias gets no gradient)
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and ".pooler." not in n]
    assert grads and all(g is not None for g in grads)
    _randomise_adapters(model)
    model.eval()
    expected = _out(model, fam.name)
    petrec.save_adapter(model, tmp_path)
    torch.testing.assert_close(_out(petrec.load_adapter(fam.fresh(), tmp_path), fam.name), expected, atol=0, rtol=0)


def test_failed_save_leaves_previous_adapter_intact(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    fam = FAMILIES_BY_NAME["bert_cls"]
    folder = _saved(tmp_path, method="lora")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    model = petrec.attach(fam.fresh(), "adapter", reduction_factor=4)

    def boom(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        petrec.save_adapter(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    monkeypatch.undo()
    petrec.save_adapter(model, folder)  # a method switch also drops the stale peft config
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_model.safetensors", "petrec_adapter.json"]
