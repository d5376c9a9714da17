"""benchmarks/debias_training.py: the IPS arm differs from the plain one only by its weights, and the
script writes its record and report; every benchmark script at least imports."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from petrec.data.synthetic import exposure_world

from .conftest import ROOT, _script


def test_uniform_weights_reproduce_the_plain_arm(debias_training: ModuleType) -> None:
    world = exposure_world(0, n_users=60, n_items=50)
    train, valid = world.impressions(10, seed=1), world.impressions(5, seed=2)
    kw = {"seed": 0, "steps": 15, "lr": 0.05, "l2": 10.0, "dim": 4}
    plain, step_p = debias_training.fit(train, valid, 60, 50, weights=None, valid_weights=np.ones(len(valid)), **kw)
    ips, step_i = debias_training.fit(train, valid, 60, 50, weights=np.full(len(train), 3.0),
                                      valid_weights=np.full(len(valid), 2.0), **kw)
    assert step_p == step_i
    for a, b in zip(plain.parameters(), ips.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Unequal weights change the fit (the weighting reaches the loss).
    skewed, _ = debias_training.fit(train, valid, 60, 50, weights=np.where(train["item"] < 10, 20.0, 1.0),
                                    valid_weights=np.ones(len(valid)), **kw)
    assert not torch.allclose(plain.item_bias, skewed.item_bias)


def test_script_writes_record_and_report(debias_training: ModuleType, tmp_path: Path) -> None:
    assert debias_training.main(["--seeds", "2", "--steps", "5", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "ips_training.json").read_text())
    assert record["command"].startswith("python benchmarks/debias_training.py --seeds 2")
    assert len(record["rows"]) == 2 * 2 * 3  # worlds x seeds x arms
    assert {r["arm"] for r in record["rows"]} == {"plain", "ips", "ips_logistic"}
    assert all(0.0 <= r["unbiased_auc"] <= 1.0 and 1 <= r["best_step"] <= 5 for r in record["rows"])
    text = (tmp_path / "IPS_TRAINING.md").read_text()
    assert text.count("| popularity |") == 4 and text.count("| taste |") == 4


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_every_benchmark_script_imports(path: Path) -> None:
    """A script whose imports broke in a refactor fails here, not at measurement time."""
    module = _script(path.stem)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
