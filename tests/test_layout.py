"""The package's layout rules (docs/ARCHITECTURE.md), checked on the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

from petrec.methods.registry import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "petrec"

#: Modules outside petrec/methods allowed to name several methods, with the reason.
METHOD_LIST_EXCEPTIONS: dict[str, str] = {
    # SeqModelConfig.method: the next-item models implement full, lora and adapter only;
    # it moves with the sequential recipe (issue 15).
    "models/sequential/run.py": "the next-item models' own subset",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [(path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted(PACKAGE.rglob("*.py"))]


def _method_name_lists(tree: ast.Module) -> list[tuple[int, list[str]]]:
    """Tuple / list / set literals and dict keys made only of two or more registry method names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [k for k in node.keys if k is not None]
        else:
            continue
        names = [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if len(names) >= 2 and len(names) == len(elements) and set(names) <= set(METHODS):
            found.append((node.lineno, names))
    return found


def test_no_module_outside_methods_keeps_its_own_list_of_method_names() -> None:
    """Method facts live in the registry (MethodSpec fields); a list of names elsewhere goes stale
    the day a method is added (deploy/manifest.py once refused every method it did not list)."""
    offenders = [f"petrec/{name}:{line}: {names}"
                 for name, tree in _modules()
                 if not name.startswith("methods/") and name not in METHOD_LIST_EXCEPTIONS
                 for line, names in _method_name_lists(tree)]
    assert not offenders, "read the method registry instead:\n" + "\n".join(offenders)


def test_the_method_name_scan_finds_a_list() -> None:
    tree = ast.parse('PRIVATE = ("full", "bitfit")\nOK = ("full", "something-else")\nONE = ("lora",)')
    assert _method_name_lists(tree) == [(1, ["full", "bitfit"])]
