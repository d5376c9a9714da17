"""Fixtures for the server tests: tiny trained runs (ctr, next_item), their exports, a client."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from petrec.serve.app import create_app
from petrec.serve.auth import parse_keys
from petrec.serve.config import ServeConfig
from tests.recipes.conftest import finetune, tiny_bert  # noqa: F401  (fixtures)

FAST = ["--train.progress", "false", "--train.trackers", "[]", "--train.eval_batch_size", "256",
        "--evaluate_test", "false"]
ADMIN_KEY = "adm-7f3c1e9a2b5d4c6e8f0a1b2c3d4e5f60"
TEAM_KEY = "team-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
KEYS_JSON = json.dumps({"keys": [
    {"name": "ops", "key": ADMIN_KEY, "adapters": ["*"], "admin": True},
    {"name": "team-a", "key_sha256": __import__("hashlib").sha256(TEAM_KEY.encode()).hexdigest(),
     "adapters": ["ctr-a"]},
]})
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEAM = {"X-API-Key": TEAM_KEY}


@pytest.fixture(scope="session")
def serve_runs(finetune: ModuleType, tiny_bert: Path,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny runs (2 training steps each) on the synthetic world: ctr, rating, next_item."""
    root = tmp_path_factory.mktemp("serve-runs")
    runs = {}
    for task in ("ctr", "rating", "next_item"):
        out = root / task
        finetune.main(["--model.backbone", str(tiny_bert), "--train.output_dir", str(out),
                       "--train.max_steps", "2", "--train.epochs", "1", "--data.max_train_examples", "32",
                       "--data.task", task, "--model.task", task, *FAST])
        runs[task] = out
    return runs


@pytest.fixture(scope="session")
def exports(serve_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapters directory: ctr-a, ctr-b (the same ctr export twice) and next-a."""
    from petrec.deploy.export import export_run

    root = tmp_path_factory.mktemp("adapters")
    export_run(serve_runs["ctr"], root / "ctr-a")
    export_run(serve_runs["next_item"], root / "next-a")
    shutil.copytree(root / "ctr-a", root / "ctr-b")
    return root


@pytest.fixture(scope="session")
def rating_exports(serve_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapters directory with the rating run as ``rate-a``."""
    from petrec.deploy.export import export_run

    root = tmp_path_factory.mktemp("rating-adapters")
    export_run(serve_runs["rating"], root / "rate-a")
    return root


def serve_config(base: Path, adapters: Path, **overrides: object) -> ServeConfig:
    """Small limits so limit tests stay cheap; batching on (2 ms)."""
    kwargs = {"max_history": 40, "max_candidates": 20, "max_k": 400, "max_body_bytes": 64 * 1024,
              "max_batch_wait_ms": 2.0, "max_batch_size": 16, **overrides}
    return ServeConfig(base=str(base), adapters_dir=str(adapters), **kwargs)  # type: ignore[arg-type]


def make_client(cfg: ServeConfig) -> TestClient:
    """A test client (use as a context manager: the lifespan loads the models)."""
    return TestClient(create_app(cfg, keys=parse_keys(KEYS_JSON, "test keys")))


@pytest.fixture(scope="module")
def client(tiny_bert: Path, exports: Path) -> Iterator[TestClient]:  # noqa: F811
    """A running app over ``exports`` (read-only use: tests that change adapters copy the folder)."""
    with make_client(serve_config(tiny_bert, exports)) as c:
        yield c


@pytest.fixture
def own_exports(exports: Path, tmp_path: Path) -> Path:
    """A private copy of the adapters directory (for tests that load / delete / corrupt)."""
    shutil.copytree(exports, tmp_path / "adapters")
    return tmp_path / "adapters"
