"""YAML → typed dataclass configs, with strict keys and types and dotted command-line overrides.

YAML only *fills* dataclasses (DESIGN.md convention 1): every key must be a field, every
value must have the field's type, and a mistake fails before any model loads with one
line naming the key and what was accepted. Dotted overrides (``--train.lr 3e-4`` or
``--train.lr=3e-4``) reach any nested field.

Written here rather than taken from a library: OmegaConf/Hydra would bring string-keyed
config grab-bags and ``_target_`` lookups that DESIGN.md rules out, and dacite does not
parse command-line overrides; this module is ~150 lines of plain typing introspection.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

#: What YAML 1.1 meant by a bare boolean word, for fields that expect that word.
_YAML11_WORD = {False: "no", True: "yes"}


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and what is accepted."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against ``tp`` (converting int → float and lists → tuples); raise on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if isinstance(value, bool) and _YAML11_WORD[value] in get_args(tp):
            return _YAML11_WORD[value]  # YAML 1.1 reads a bare `no` as false
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: got {value!r}; accepted values: {_type_name(tp)}")
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}); expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads `3e-4` without a dot as a string
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: A dataclass type (fields may be nested dataclasses).
        data: The values, e.g. parsed YAML.
        prefix: Dotted path of ``data`` inside the whole config, for messages.

    Returns:
        An instance of ``cls`` (its ``__post_init__`` validation has run).

    Raises:
        ConfigError: Unknown key, wrong type, or a value the dataclass rejects.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix + unknown[0]!r} in {cls.__name__}; accepted keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        default = _default_of(fields[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            # A partial section starts from the field's own default (e.g. a recipe's
            # TrainConfig(epochs=2)), not from the nested class's bare defaults.
            value = merge_dicts(to_dict(default), value)
        kwargs[name] = _convert(value, hints[name], f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(obj: Any) -> Any:
    """Plain-data form of a (nested) dataclass, suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``--a.b value`` / ``--a.b=value`` pairs into a nested dict (values read as YAML scalars).

    Raises:
        ConfigError: An argument is not of that form.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --train.lr 3e-4")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override {arg!r} has no value")
            key, raw = arg[2:], argv[i + 1]
            i += 2
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw  # keep yes/no/on/off as words; only true/false are booleans
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return out


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Load ``cls`` from ``defaults`` ← YAML file ← overrides, strictly typed.

    Args:
        cls: Top-level config dataclass.
        path: YAML file, or None for ``defaults`` alone.
        overrides: ``["--train.lr", "3e-4"]`` style arguments or an already nested dict.
        defaults: Values used when no file is given (e.g. an embedded quick-start config).

    Returns:
        The validated config.
    """
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = merge_dicts(data, read_yaml(path))
    if overrides:
        extra = overrides if isinstance(overrides, Mapping) else parse_overrides(list(overrides))
        data = merge_dicts(data, extra)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


__all__ = [
    "ConfigError",
    "from_dict",
    "load_config",
    "merge_dicts",
    "parse_overrides",
    "read_yaml",
    "to_dict",
]
