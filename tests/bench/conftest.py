"""Fixtures of the harness tests: a tiny suite whose runs are tests/bench/fake_run.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from petrec.bench.suite import SuiteConfig
from petrec.config import from_dict

FAKE_RUN = Path(__file__).with_name("fake_run.py")


def fake_suite_dict(tmp_path: Path, **fake: Any) -> dict[str, Any]:
    """A suite of methods full / lora / head × seeds 1, 2 run by the fake script."""
    return {
        "name": "fake",
        "description": "fake runs for tests",
        "command": [sys.executable, str(FAKE_RUN)],
        "timeout_s": 20,
        "defaults": {"train": {"epochs": 1}, "fake": {"calls_file": str(tmp_path / "calls.txt"), **fake}},
        "methods": {"full": {"train": {"lr": 1e-4}}, "lora": {}, "head": {"train": {"lr": 1e-2}}},
        "experiments": [{"name": "E", "title": "fake experiment", "seeds": [1, 2], "metric": "auc"}],
    }


@pytest.fixture
def fake_suite(tmp_path: Path) -> SuiteConfig:
    """The fake suite with ``head`` failing."""
    return from_dict(SuiteConfig, fake_suite_dict(tmp_path, fail_methods=["head"]))


def calls(tmp_path: Path) -> list[str]:
    """Invocations the fake script recorded."""
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []
