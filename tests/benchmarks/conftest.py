"""Fixtures for the benchmark-script tests: scripts under benchmarks/ imported as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def check_readme() -> ModuleType:
    """benchmarks/check_readme.py imported as a module."""
    spec = importlib.util.spec_from_file_location("petrec_bench_check_readme",
                                                  ROOT / "benchmarks" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
