"""nf4 / int8 bases: CPU forward+backward, measured weight memory, LoRA training vs fp32, CUDA path."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import petrec
from petrec.methods import PetrecMethodError, load_quantized

#: nf4 LoRA must reach the fp32 LoRA run's held-out accuracy within this many points (absolute).
ACC_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_dir).eval()


@pytest.mark.parametrize(("kind", "limit"), [("nf4", 0.3), ("int8", 0.55)])
def test_minilm_quantized_memory_and_backward(minilm, kind: str, limit: float) -> None:
    model = copy.deepcopy(minilm)
    fp32 = petrec.trainable_report(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        petrec.attach(model, "lora", quantize=kind, r=8)
    report = petrec.trainable_report(model)
    # the 36 linear layers of the 6 blocks and the pooler are quantized; 4 bytes per fp32 weight
    assert report.quantized_fp32_bytes == (6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384) * 4
    assert report.quantized_ratio is not None and report.quantized_ratio <= limit
    assert report.weight_bytes < fp32.weight_bytes
    assert report.trainable == 2 * 6 * 2 * 384 * 8  # LoRA q,v at r=8, no head on AutoModel
    assert "quantized weights" in str(report)
    ids = torch.randint(1000, 2000, (2, 8))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # lora_B receives gradient through the quantized base


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 50, (n, 8), generator=g)
    return ids, ((ids == 7).any(1) | (ids == 8).any(1)).long()


def _train(quantize: str | None) -> tuple[float, float]:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg)
    petrec.attach(model, "lora", quantize=quantize, r=8, alpha=16, targets=["query", "key", "value", "dense"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    x, y = _task(1024, 1)
    for step in range(80):
        i = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(model(input_ids=x[i]).logits, y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = _task(512, 2)
    with torch.no_grad():
        logits = model(input_ids=xt).logits
    return (logits.argmax(1) == yt).float().mean().item(), F.cross_entropy(logits, yt).item()


def test_nf4_lora_training_matches_fp32() -> None:
    acc32, _ = _train(None)
    acc4, _ = _train("nf4")
    assert acc32 >= 0.9, f"the fp32 run did not learn the task (acc {acc32:.3f})"
    assert abs(acc4 - acc32) <= ACC_TOLERANCE, f"nf4 {acc4:.3f} vs fp32 {acc32:.3f}"


def test_qlora_implies_nf4_and_refuses_other_kind() -> None:
    from tests.methods.families import FAMILIES_BY_NAME

    fam = FAMILIES_BY_NAME["bert_cls"]
    with pytest.raises(PetrecMethodError, match="qlora"):
        petrec.attach(fam.fresh(), "qlora", quantize="int8")
    with pytest.raises(PetrecMethodError, match="quantize"):
        petrec.attach(fam.fresh(), "lora", quantize="fp8")
    with pytest.raises(PetrecMethodError, match="full"):
        petrec.attach(fam.fresh(), "full", quantize="nf4")


def test_int8_lora_save_load_and_merge(tmp_path) -> None:
    from tests.methods.families import BATCH, FAMILIES_BY_NAME

    fam, batch = FAMILIES_BY_NAME["wrapped_bert"], BATCH()
    model = petrec.attach(fam.fresh(), "lora", quantize="int8", head=["head"], r=4)
    model.train()  # a training-mode step must not disturb the frozen int8 base
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(**batch).pow(2).mean().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    petrec.save_adapter(model, tmp_path)
    again = petrec.load_adapter(fam.fresh(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), out, atol=0, rtol=0)
    with pytest.warns(UserWarning, match="de-quantized"):
        merged = petrec.merge(model)
    with torch.no_grad():
        # int8 matmul quantizes activations too; the merged fp32 model does not
        torch.testing.assert_close(merged(**batch), out, atol=5e-2, rtol=0)


def test_int8_bias_survives_bf16_autocast_training(tmp_path) -> None:
    """bitsandbytes casts an int8 layer's bias to its input dtype in place; training under bf16
    autocast must not round the frozen fp32 biases (the H200 run's 0.015 reload difference)."""
    from tests.methods.families import BATCH, FAMILIES_BY_NAME

    fam, batch = FAMILIES_BY_NAME["wrapped_bert"], BATCH()

    def fresh() -> torch.nn.Module:  # random init has zero biases, which bf16 stores exactly
        model, g = fam.fresh(), torch.Generator().manual_seed(0)
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.data = torch.randn(p.shape, generator=g) * 0.3
        return model

    model = petrec.attach(fresh(), "lora", quantize="int8", head=["head"], r=4)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    int8 = [m for m in model.modules() if type(m).__module__.startswith("bitsandbytes")]
    assert int8 and all(m.bias.dtype == torch.float32 for m in int8 if m.bias is not None)
    with torch.no_grad():
        out = model(**batch)
    petrec.save_adapter(model, tmp_path)
    again = petrec.load_adapter(fresh(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), out, atol=0, rtol=0)


def test_load_quantized_refuses_on_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with pytest.raises(PetrecMethodError, match="GPU"):
        load_quantized("minilm", "nf4")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_cuda_quantization_config_path(minilm_dir, kind: str) -> None:
    model = load_quantized(str(minilm_dir), kind, device_map={"": 0})
    petrec.attach(model, "lora", r=8)
    report = petrec.trainable_report(model)
    assert report.quantized_ratio is not None and report.quantized_ratio <= (0.3 if kind == "nf4" else 0.55)
    ids = torch.randint(1000, 2000, (2, 8), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    out.float().pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


@pytest.mark.gpu
def test_cuda_cpu_quantize_path_on_gpu() -> None:
    from tests.methods.families import BATCH, FAMILIES_BY_NAME

    fam = FAMILIES_BY_NAME["wrapped_bert"]
    model = fam.fresh().cuda()
    petrec.attach(model, "qlora", head=["head"], r=4)
    batch = {k: v.cuda() for k, v in BATCH().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**batch)
    out.float().sum().backward()
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)
