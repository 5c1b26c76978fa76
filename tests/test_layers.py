"""The package's layers, read from its source: a lower layer never imports a higher one, and no import cycles.

docs/architecture.md draws the layers; this test is the rule's check. Every import counts, also those inside
functions (a lazy import is still a dependency of the design); imports under ``if TYPE_CHECKING:`` are annotations.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dcasenet_hub"

#: Layer of each top-level module or sub-package, lowest first (docs/architecture.md gives the reasons).
LAYERS: dict[str, int] = {
    "_io": 0, "_env": 0, "_options": 0, "_process": 0, "_progress": 0, "labels": 0, "errors": 0, "config": 1, "devices": 1,
    "metrics": 1,
    "audio": 2,
    "models": 3,
    "hub": 4,
    "export": 5,
    "inference": 6,
    "batch": 7,
    "finetuning": 8, "train": 8, "integrations": 8, "hear": 9,
    "cli": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every dcasenet_hub import in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for b in node.body for n in ast.walk(b))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return [(t, line) for t, line in found if t == "dcasenet_hub" or t.startswith("dcasenet_hub.")]


def _layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package root: only __version__ is imported from it
    top = parts[1]
    return (top, LAYERS[top]) if top in LAYERS else None


def _files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
    unknown = sorted({_module_name(p).split(".")[1] for p in _files() if p.parent != PACKAGE or p.stem != "__init__"}
                     - set(LAYERS) - {"__init__"})
    assert not unknown, f"modules without a layer (add them to LAYERS and docs/architecture.md): {unknown}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: _module_name(p))
def test_no_module_imports_a_higher_layer(path: Path):
    own = _layer_of(_module_name(path))
    if own is None:
        return  # dcasenet_hub/__init__.py: the lazy public face may name every layer
    upward = []
    for target, line in _imports(path):
        other = _layer_of(target)
        if other is not None and other[1] > own[1]:
            upward.append(f"line {line}: {target} ({other[0]}, layer {other[1]} > {own[0]}, layer {own[1]})")
    assert not upward, f"{_module_name(path)} imports a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    modules = {_module_name(p): p for p in _files()}

    def owner(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    edges = {m: {o for t, _ in _imports(p) if (o := owner(t)) and o != m} for m, p in modules.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in modules:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_catch_an_upward_and_a_cyclic_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a models module importing inference is reported."""
    fake = tmp_path / "dcasenet_hub" / "models"
    fake.mkdir(parents=True)
    bad = fake / "bad.py"
    bad.write_text("def f():\n    from dcasenet_hub.inference import embed\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "dcasenet_hub")
    with pytest.raises(AssertionError, match="imports a higher layer"):
        test_no_module_imports_a_higher_layer(bad)
