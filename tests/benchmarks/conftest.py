"""Fixtures for the benchmark-script tests: scripts under benchmarks/ imported as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    """benchmarks/<name>.py imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"petrec_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def check_readme() -> ModuleType:
    """benchmarks/check_readme.py imported as a module."""
    return _script("check_readme")


@pytest.fixture(scope="session")
def explain_examples() -> ModuleType:
    """benchmarks/explain_examples.py imported as a module."""
    return _script("explain_examples")


@pytest.fixture(scope="session")
def debias_training() -> ModuleType:
    """benchmarks/debias_training.py imported as a module."""
    return _script("debias_training")


@pytest.fixture(scope="session")
def serve_load() -> ModuleType:
    """benchmarks/serve_load.py imported as a module."""
    return _script("serve_load")
