"""4-bit bases on both bitsandbytes CPU paths, on any machine.

bitsandbytes 0.50.2 runs no-grad 4-bit inference on CPUs with avx512_bf16 through a packed bf16
kernel, and everything else through its plain (dequantize + matmul) path. Each test here runs on
both paths: ``plain`` is petrec's default; ``packed`` turns the kernel on and, on a CPU without
avx512_bf16, stands in for the native kernel with :func:`_emulated_packed_gemv` (same packed
layout, bf16 numerics), so a machine of either kind checks what breaks on the other.

What bitsandbytes does without petrec's guard (minimal reproduction, on an avx512_bf16 CPU)::

    import bitsandbytes as bnb, torch
    lin = bnb.nn.Linear4bit(32, 32, quant_type="nf4")   # in_features below the 64 block size
    lin.weight = bnb.nn.Params4bit(torch.randn(32, 32), requires_grad=False, quant_type="nf4")
    lin = lin.to("cpu").eval()
    with torch.no_grad():
        lin(torch.randn(2, 32))      # RuntimeError: shape '[32, 0]' is invalid for input of size 16

    lin = bnb.nn.Linear4bit(128, 64, quant_type="nf4")  # a packable shape
    lin.weight = bnb.nn.Params4bit(torch.randn(64, 128), requires_grad=False, quant_type="nf4")
    lin = lin.to("cpu").eval()
    with torch.no_grad():
        lin(torch.randn(2, 128))     # packs the weight for the bf16 kernel
    lin.train()
    lin(torch.randn(2, 128, requires_grad=True)).sum().backward()
    # RuntimeError: a view of a leaf Variable that requires grad is being used in an in-place
    # operation (matmul_4bit's packed branch: result += bias); and lin.weight.quant_state now
    # holds the bf16 re-quantized scales of the lossy inverse once it is unpacked
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import petrec
from petrec.methods import PetrecMethodError
from petrec.methods import quantization as Q
from tests.methods.families import BATCH, FAMILIES_BY_NAME

PATHS = ("plain", "packed")


def _native_kernel() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def _emulated_packed_gemv(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, state: object = None, **_: object
) -> torch.Tensor:
    """Stand-in for bitsandbytes' packed avx512_bf16 CPU kernel on machines without it.

    Reads the packed layout back with bitsandbytes' own inverse (on copies, block scales taken
    as the bf16 values the kernel uses) and computes in bf16 as the kernel does.
    """
    import bitsandbytes.functional as F

    qs = copy.copy(state)
    qs.original_nested = False  # keep the bf16 scales; do not re-quantize them
    codes, qs = F._convert_weight_packed_for_cpu_inverse(b.clone(), qs)
    qs.absmax = state.absmax.t().reshape(-1).float()
    qs.dtype = torch.float32
    weight = F.dequantize_4bit(codes, qs)
    result = a.to(torch.bfloat16) @ weight.to(torch.bfloat16).t()
    return result.to(a.dtype)


@pytest.fixture(params=PATHS)
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on bitsandbytes' plain CPU path, then on its packed one."""
    import bitsandbytes.functional as F

    monkeypatch.setenv(Q.CPU_4BIT_KERNEL_ENV, request.param)
    if request.param == "packed" and not _native_kernel():
        monkeypatch.setattr(F, "has_avx512bf16", lambda: True)
        monkeypatch.setattr(F, "gemv_4bit", _emulated_packed_gemv)
    return request.param


def _packed_layers(model: torch.nn.Module) -> int:
    return sum(1 for m in model.modules() if getattr(m, "_petrec_4bit_hook", False) and Q._is_packed(m))


def _codes(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base's exact stored state (4-bit codes, scales, fp32 weights), as saved."""
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.clone() for k, v in model.state_dict().items() if k not in trained}


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)


def _qlora(minilm) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return petrec.attach(copy.deepcopy(minilm), "qlora", r=4)


def _enc() -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _eval_logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**_enc()).logits


def test_validate_train_validate_save_reload_is_exact(cpu_path: str, minilm, tmp_path) -> None:
    model = _qlora(minilm)
    base_state = _codes(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    y = torch.tensor([0, 1, 1, 0])
    for _ in range(3):  # validate -> train, three times
        _eval_logits(model)
        # the packed kernel served every 4-bit layer (MiniLM's 36 block layers and its pooler)
        assert _packed_layers(model) == (37 if cpu_path == "packed" else 0)
        model.train()
        loss = model(**_enc(), labels=y).loss
        loss.backward()
        # every lora_B, block 0's too, gets gradient through the frozen 4-bit layers above it
        grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
        assert len(grads) == 12 and all(g is not None and g.abs().sum() > 0 for g in grads)
        opt.step()
        opt.zero_grad()
    expected = _eval_logits(model)
    state_after = _codes(model)
    assert state_after.keys() == base_state.keys()
    for key, value in base_state.items():  # the frozen base did not drift
        assert torch.equal(state_after[key], value), key
    petrec.save_adapter(model, tmp_path)
    reloaded = petrec.load_adapter(copy.deepcopy(minilm), tmp_path)
    torch.testing.assert_close(_eval_logits(reloaded), expected, atol=0, rtol=0)


def test_packed_kernel_serves_inference_close_to_plain(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(Q.CPU_4BIT_KERNEL_ENV, "plain")
    plain = _eval_logits(_qlora(minilm))
    results = {}
    kernels = {"emulated": _emulated_packed_gemv}
    if _native_kernel():
        import bitsandbytes.functional as F

        kernels["native"] = F.gemv_4bit
    import bitsandbytes.functional as F

    for name, kernel in kernels.items():
        with monkeypatch.context() as m:
            m.setenv(Q.CPU_4BIT_KERNEL_ENV, "packed")
            m.setattr(F, "has_avx512bf16", lambda: True)
            m.setattr(F, "gemv_4bit", kernel)
            model = _qlora(minilm)
            results[name] = _eval_logits(model)
            assert _packed_layers(model) == 37
    for name, logits in results.items():
        assert not torch.equal(logits, plain), name  # bf16 arithmetic: the packed path did run
        torch.testing.assert_close(logits, plain, atol=0.05, rtol=0), name
    if "native" in results:  # the stand-in computes what the native kernel computes
        torch.testing.assert_close(results["emulated"], results["native"], atol=0.02, rtol=0)


def test_layers_the_kernel_cannot_take_run_plain(cpu_path: str) -> None:
    # hidden size 32, below bitsandbytes' 64-wide blocks: of the 13 linear layers only the two
    # 64 -> 32 FFN outputs have a shape the packed kernel takes
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = petrec.attach(fam.fresh(), "lora", head=["head"], quantize="nf4")
    model.eval()
    with torch.no_grad():
        out = fam.call(model, BATCH())
    assert torch.isfinite(out).all()
    report = petrec.trainable_report(model)
    if cpu_path == "packed":
        assert report.cpu_4bit_paths == {"packed": 2, "plain_by_shape": 11, "layers": 13}
        assert _packed_layers(model) == 2
        assert "packed for 2 layers, plain for 11 (shape the packed kernel cannot take)" in str(report)
    else:
        assert report.cpu_4bit_paths == {"packed": 0, "plain_by_shape": 0, "layers": 13}
        assert "plain for all 13 layers" in str(report)
    model.train()
    fam.call(model, BATCH()).pow(2).mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)


def test_state_dict_saves_the_exact_plain_layout(cpu_path: str, minilm) -> None:
    model = _qlora(minilm)
    before = _codes(model)
    _eval_logits(model)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert _packed_layers(model) == 0  # saving put the plain layout back
    torch.testing.assert_close(_eval_logits(model), _eval_logits(model), atol=0, rtol=0)


def test_report_measures_the_plain_layout_while_packed(cpu_path: str, minilm) -> None:
    model = _qlora(minilm)
    fresh = petrec.trainable_report(model)
    _eval_logits(model)
    after = petrec.trainable_report(model)
    assert (after.weight_bytes, after.quantized_bytes) == (fresh.weight_bytes, fresh.quantized_bytes)


def test_unknown_kernel_choice_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(Q.CPU_4BIT_KERNEL_ENV, "fast")
    fam = FAMILIES_BY_NAME["wrapped_bert"]
    with pytest.raises(PetrecMethodError, match="PETREC_CPU_4BIT_KERNEL must be 'plain' or 'packed', got 'fast'"):
        petrec.attach(fam.fresh(), "lora", head=["head"], quantize="nf4")
