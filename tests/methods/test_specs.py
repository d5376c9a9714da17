"""Each fact a :class:`~petrec.methods.registry.MethodSpec` states holds for its method.

Other modules act on these facts instead of lists of names (a server keeps a private base for
``writes_base``, loading re-attaches ``takes_targets`` methods to the saved modules, building a
model quantizes the base for ``quantize``), so a wrong fact is a wrong export or server.
"""

from __future__ import annotations

import warnings

import pytest

import petrec
from petrec.methods import PetrecMethodError, disable_adapter
from petrec.methods.io import read_meta
from petrec.methods.registry import METHODS
from tests.methods.families import FAMILIES_BY_NAME, OPTIONS


@pytest.mark.parametrize("method", list(METHODS))
def test_spec_facts_hold_on_a_bert(method: str, tmp_path) -> None:
    spec, fam = METHODS[method], FAMILIES_BY_NAME["bert_cls"]
    if not spec.takes_targets:
        with pytest.raises(PetrecMethodError, match="takes no targets="):
            petrec.attach(fam.fresh(), method, head=fam.head, targets=["query"], **OPTIONS[method])
    model = fam.fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        petrec.attach(model, method, head=fam.head, **OPTIONS[method])
    record = model.petrec_state.adapters["default"]
    assert record.quantize == spec.quantize
    if spec.takes_targets:  # what loading does: attach again to exactly the recorded modules
        again = fam.fresh()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            petrec.attach(again, method, head=fam.head, targets=record.targets, **OPTIONS[method])
        assert again.petrec_state.adapters["default"].targets == record.targets

    # writes_base: some trained tensor is one of the base model's own (found by name, not by the spec)
    base_names = {n for n, _ in fam.fresh().named_parameters()}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert bool(trained & base_names) == spec.writes_base, sorted(trained & base_names)[:3]
    if spec.writes_base:
        with pytest.raises(PetrecMethodError, match="in place"), disable_adapter(model):
            pass
    # quantize: the frozen base really holds 4-bit layers
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules()) == (spec.quantize == "nf4")

    petrec.save_adapter(model, tmp_path / "ad")
    assert read_meta(tmp_path / "ad")["quantize"] == spec.quantize
