"""Strict YAML → dataclass configs and dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from petrec.config import ConfigError, load_config, parse_overrides, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    method: Literal["lora", "dora"] = "lora"
    targets: list[str] | None = None
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 3
    name: str = "run"
    flag: bool = False


def test_yaml_and_overrides_fill_nested_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 3e-4\n  targets: [q, v]\nsteps: 5\n")
    cfg = load_config(Outer, path, ["--inner.method", "dora", "--flag=true", "--inner.kwargs", "{r: 4}"])
    assert cfg.inner.lr == 3e-4 and isinstance(cfg.inner.lr, float)  # YAML 1.1 reads 3e-4 as a string
    assert cfg.inner.targets == ["q", "v"] and cfg.inner.method == "dora"
    assert cfg.steps == 5 and cfg.flag is True and cfg.inner.kwargs == {"r": 4}
    assert to_dict(cfg)["inner"] == {"lr": 3e-4, "method": "dora", "targets": ["q", "v"], "kwargs": {"r": 4}}


def test_yaml11_boolean_words_stay_words_where_a_word_is_expected(tmp_path: Path) -> None:
    @dataclass
    class Precision:
        mixed_precision: Literal["no", "bf16"] = "bf16"
        name: str = "x"

    path = tmp_path / "p.yaml"
    path.write_text("mixed_precision: no\n")
    assert load_config(Precision, path).mixed_precision == "no"
    assert load_config(Precision, None, ["--mixed_precision", "no", "--name", "off"]) == Precision("no", "off")
    assert parse_overrides(["--a", "true", "--b", "False"]) == {"a": True, "b": False}


def test_defaults_used_without_a_file() -> None:
    assert load_config(Outer) == Outer()


def test_a_partial_section_keeps_the_parents_default_for_that_section() -> None:
    @dataclass
    class Recipe:
        inner: Inner = field(default_factory=lambda: Inner(lr=0.5, targets=["q"]))

    cfg = load_config(Recipe, None, ["--inner.method", "dora"])
    assert cfg.inner == Inner(lr=0.5, method="dora", targets=["q"])


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("inner:\n  lrr: 1\n", [], r"unknown key 'inner\.lrr' in Inner; accepted keys: kwargs, lr, method, targets"),
        ("steps: many\n", [], r"steps: expected an integer, got 'many'"),
        ("steps: 2.5\n", [], r"steps: expected an integer"),
        ("inner:\n  lr: 3e-4x\n", [], r"inner\.lr: expected a number, got '3e-4x'"),
        ("", ["--inner.method", "ia4"], r"inner\.method: got 'ia4'; accepted values: 'lora' \| 'dora'"),
        ("", ["--inner.lr", "-1"], r"inner: lr must be > 0"),
        ("flag: yes-please\n", [], r"flag: expected true or false"),
        ("- a\n- b\n", [], r"the top level must be a mapping"),
        ("inner: [1]\n", [], r"inner: expected a mapping of Inner fields"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Outer, path, overrides)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_malformed_overrides() -> None:
    with pytest.raises(ConfigError, match=r"config file 'nope\.yaml' not found"):
        load_config(Outer, "nope.yaml")
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--steps"])
    with pytest.raises(ConfigError, match="unexpected argument 'steps'"):
        parse_overrides(["steps", "3"])
