"""The package's layout rules (docs/ARCHITECTURE.md), checked on the source with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from petrec.methods.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "petrec"

#: The layers of docs/ARCHITECTURE.md, lowest first: a module imports only from its own layer
#: or lower ones. An area is a sub-package or a top-level module of petrec; the bare
#: ``import petrec`` is the methods API (``petrec.attach`` ...).
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"config", "paths", "checkpoints", "files", "debias", "collate", "metrics", "evaluation", "fusion"}),
    ("data", {"data"}),
    ("methods", {"methods", ""}),
    ("models", {"models"}),
    ("train", {"train"}),
    ("recipes", {"recipes"}),
    ("runs", {"runs", "explain"}),
    ("bench and deploy", {"bench", "deploy"}),
    ("serve", {"serve"}),
    ("command line", {"cli", "__main__", "train_cli"}),
]
RANK = {area: rank for rank, (_, areas) in enumerate(LAYERS) for area in areas}
#: Modules allowed to import upward, with the reason (each is a known move still to make).
UPWARD_EXCEPTIONS: dict[str, str] = {
    "models/sequential/run.py": "the next-item recipe (uses petrec.train); belongs in petrec/recipes",
    "models/sequential/suite.py": "the next-item suite runner (uses petrec.bench.system); belongs in petrec/bench",
}

#: Modules outside petrec/methods allowed to name several methods, with the reason.
METHOD_LIST_EXCEPTIONS: dict[str, str] = {
    # SeqModelConfig.method: the next-item models implement full, lora and adapter only;
    # it moves with the sequential recipe (issue 15).
    "models/sequential/run.py": "the next-item models' own subset",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [(path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted(PACKAGE.rglob("*.py"))]


def _area(module: str) -> str:
    """``petrec.models.build`` → ``models``; ``petrec.train`` → ``train``; ``petrec`` → ``""``."""
    return module.split(".")[1] if "." in module else ""


def _imported_modules(name: str, tree: ast.Module) -> list[tuple[int, str]]:
    """Every petrec module ``name`` (e.g. ``models/build.py``) imports, at any depth of the file."""
    package = ["petrec", *Path(name).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            if module == "petrec":  # from petrec import metrics → petrec.metrics
                found += [(node.lineno, f"petrec.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, module) for line, module in found if module == "petrec" or module.startswith("petrec.")]


def test_every_area_has_a_layer() -> None:
    areas = {_area("petrec." + name.removesuffix(".py").replace("/", ".")) for name, _ in _modules()}
    areas.discard("__init__")
    assert areas <= set(RANK), f"place these in LAYERS (and docs/ARCHITECTURE.md): {sorted(areas - set(RANK))}"


def test_no_module_imports_upward() -> None:
    """data → methods → models → train → recipes → runs → bench / deploy → serve → command line."""
    offenders, excepted = [], set()
    for name, tree in _modules():
        own = _area("petrec." + name.removesuffix(".py").replace("/", "."))
        own = "" if own == "__init__" else own
        for line, module in _imported_modules(name, tree):
            if RANK[_area(module)] <= RANK[own]:
                continue
            if name in UPWARD_EXCEPTIONS:
                excepted.add(name)
            else:
                offenders.append(f"petrec/{name}:{line} ({LAYERS[RANK[own]][0]}) imports {module} "
                                 f"({LAYERS[RANK[_area(module)]][0]})")
    assert not offenders, "imports that run upward:\n" + "\n".join(offenders)
    assert excepted == set(UPWARD_EXCEPTIONS), f"no longer upward, drop: {set(UPWARD_EXCEPTIONS) - excepted}"


def test_the_import_scan_resolves_relative_and_package_imports() -> None:
    tree = ast.parse("from . import tasks\nfrom ..methods import attach\nfrom petrec import metrics\n"
                     "def f():\n    import petrec.serve.app\n")
    assert [m for _, m in _imported_modules("data/readers.py", tree)] == [
        "petrec.data", "petrec.methods", "petrec.metrics", "petrec.serve.app"]


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


def test_the_readme_layout_matches_the_tree() -> None:
    """Every path README.md's Layout block names exists, and it names every part of petrec/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"(?:petrec|recipes|docs|benchmarks|tests|\.ci)/[\w./-]*", block))
    assert named, "no paths found in the README's Layout block"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README names paths that do not exist: {missing}"
    parts = {f"petrec/{p.name}" + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
             if p.name not in ("__init__.py", "__main__.py", "py.typed", "__pycache__")}
    assert parts <= named, f"README's Layout block does not name: {sorted(parts - named)}"
