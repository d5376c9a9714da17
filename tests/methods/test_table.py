"""The table: every PEFT method × every model family, with exact expectations.

Per cell: the base is frozen; the trainable count equals the formula for the architecture;
outputs at init equal the base (methods that start as the identity) or do so once the adapter is
disabled (prompt, prefix, qlora); one optimiser step changes only adapter and head parameters;
save → load into a fresh base gives identical outputs; merge matches within 1e-5 and leaves a
plain model whose state-dict keys are the base's — or is refused naming the method.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import petrec
from petrec.methods import MergeError, PetrecMethodError, disable_adapter
from tests.methods.families import BATCH, OPTIONS, families

FAMILIES = {f.name: f for f in families()}
IDENTITY_AT_INIT = ("full", "head", "bitfit", "lora", "dora", "ia3", "adapter")
CASES = [(f, m) for f in FAMILIES for m in OPTIONS]
ADAPTER_CLASSES = ("BaseTunerLayer", "ModulesToSaveWrapper", "NamedAdapterModule", "AdapterWrapped")


def _out(fam, model, batch):
    with torch.no_grad():
        return fam.call(model, batch)


@pytest.mark.parametrize(("family", "method"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_method_on_family(family: str, method: str, tmp_path) -> None:
    fam = FAMILIES[family]
    batch = BATCH()
    model = fam.fresh()
    base_out = _out(fam, model, batch)
    original = list(model.named_parameters())
    expected = fam.counts[method]

    if isinstance(expected, type):  # this method cannot apply to this family: one clear error
        with pytest.raises(PetrecMethodError, match=method):
            petrec.attach(model, method, head=fam.head, **OPTIONS[method])
        assert getattr(model, "petrec_state", None) is None
        assert all(p.requires_grad for _, p in original), "a failed attach must leave the model as it was"
        return

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        petrec.attach(model, method, head=fam.head, **OPTIONS[method])
    record = model.petrec_state.adapters["default"]
    heads = record.head

    # 1. the base is frozen (bitfit: only its biases train; full: everything)
    live = {id(p) for p in model.parameters()}
    for name, p in original:
        if id(p) not in live:  # replaced by a quantized layer (qlora)
            continue
        in_head = any(name == h or name.startswith(h + ".") for h in heads)
        if method == "full":
            want = True
        elif method == "bitfit":
            want = name.endswith("bias") and not in_head
        else:
            want = False
        assert p.requires_grad == want, f"{name}: requires_grad={p.requires_grad}"

    # 2. trainable count equals the formula
    report = petrec.trainable_report(model)
    assert report.trainable == (report.total if method == "full" else expected)
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.method == method and str(report).startswith(f"method: {method}")

    # 3. outputs at init
    out0 = _out(fam, model, batch)
    if method in IDENTITY_AT_INIT:
        torch.testing.assert_close(out0, base_out, atol=1e-6, rtol=0)
    if method in ("prompt", "prefix", "qlora", "lora", "adapter", "ia3"):
        with disable_adapter(model):
            disabled = _out(fam, model, batch)
        if method == "qlora":  # LoRA starts at zero on the quantized base
            torch.testing.assert_close(out0, disabled, atol=1e-6, rtol=0)
        else:
            torch.testing.assert_close(disabled, base_out, atol=1e-6, rtol=0)

    # 4. one training step changes only adapter (and head) parameters
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = (fam.call(model, batch) - 1.0).pow(2).mean()
    loss.backward()
    opt.step()
    model.eval()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "the step changed nothing"
    assert changed <= set(record.trainable), f"frozen parameters changed: {sorted(changed - set(record.trainable))[:5]}"
    if heads and method != "full":
        assert any(".modules_to_save." in n for n in changed), "the head did not train"
    if method not in ("head", "full", "bitfit"):
        assert any(".modules_to_save." not in n for n in changed), "the adapter did not train"
    trained_out = _out(fam, model, batch)

    # 5. save → load into a fresh base: identical outputs
    petrec.save_adapter(model, tmp_path / "ad")
    reloaded = petrec.load_adapter(fam.fresh(), tmp_path / "ad")
    torch.testing.assert_close(_out(fam, reloaded, batch), trained_out, atol=0, rtol=0)

    # 6. merge: equal within 1e-5 and a plain model — or a refusal naming the method
    if petrec.METHODS[method].mergeable:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            merged = petrec.merge(model)
        if method == "qlora":
            assert any("de-quantized" in str(w.message) for w in caught)
        torch.testing.assert_close(_out(fam, merged, batch), trained_out, atol=1e-5, rtol=0)
        assert getattr(merged, "petrec_state", None) is None
        kinds = {c.__name__ for m in merged.modules() for c in type(m).__mro__}
        assert not kinds & set(ADAPTER_CLASSES)
        assert set(merged.state_dict()) == set(fam.fresh().state_dict())
    else:
        with pytest.raises(MergeError, match=f"'{method}'"):
            petrec.merge(model)
