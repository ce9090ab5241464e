"""The layout shows the architecture: floors, no import cycles, no module over 600 lines.

The import graph is built from the source (every ``import`` and ``from ... import`` of a tinydan
module, at module level or inside a function), so an import added anywhere is seen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinydan"
MAX_LINES = 600

# floor of each top-level part of the package (a module or a sub-package), bottom up
FLOORS = {
    0: {"tensor", "autograd", "ops", "testing", "compiler", "viz"},
    1: {"nn", "optim", "meta", "tasks", "datasets", "continual", "checkpoint", "plots", "parallel"},
    2: {"experiments", "regression", "ucil", "bench", "coursework"},
}
ENTRY = {"__init__", "__main__"}          # the package's own front door may import any floor


def _modules() -> dict:
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set:
    """The tinydan modules ``name`` imports (resolved, relative imports included)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the sub-module; `from mod import name`, the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(name: str) -> int | None:
    part = _part(name)
    for floor, names in FLOORS.items():
        if part in names:
            return floor
    return None


def test_every_part_of_the_package_has_a_floor():
    unknown = sorted({_part(m) for m in _graph()} - set().union(*FLOORS.values()) - ENTRY)
    assert not unknown, f"give these parts of tinydan a floor in tests/test_layout.py: {unknown}"


def test_nothing_lower_imports_anything_higher():
    wrong = []
    for name, deps in _graph().items():
        if _part(name) in ENTRY:
            continue
        for dep in deps:
            if dep == "tinydan" and _floor(name) < 2:     # the root imports every floor
                wrong.append(f"{name} imports the package root")
            elif _floor(dep) is not None and _floor(name) is not None and _floor(dep) > _floor(name):
                wrong.append(f"{name} (floor {_floor(name)}) imports {dep} (floor {_floor(dep)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_experiments_do_not_import_the_tools():
    wrong = [f"{n} imports {d}" for n, deps in _graph().items() if _part(n) == "experiments"
             for d in deps if _part(d) in ("bench", "coursework")
             and not n.endswith("ucil_cli")]              # `python -m tinydan.ucil bench`
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    state: dict = {}
    for start in graph:                              # iterative depth-first search
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            elif not state.get(dep):
                state[dep] = 1
                path.append(dep)
                stack.append((dep, iter(sorted(graph.get(dep, ())))))


def test_no_module_over_600_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The graph sees a function-level import, so a test of it can fail."""
    mod = tmp_path / "tinydan"
    (mod / "nn").mkdir(parents=True)
    (mod / "__init__.py").write_text("")
    (mod / "tensor.py").write_text("def f():\n    from .nn import layer\n")
    (mod / "nn" / "__init__.py").write_text("")
    (mod / "nn" / "layer.py").write_text("from ..tensor import f\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", mod)
    graph = _graph()
    assert "tinydan.nn.layer" in graph["tinydan.tensor"]
    with pytest.raises(AssertionError, match="imports tinydan.nn"):
        test_nothing_lower_imports_anything_higher()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()


def test_public_api():
    import tinydan as td
    assert td.nn.Linear and td.nn.Sequential and td.optim.Adam and td.testing.check_grad
    assert isinstance(td.nn.PlainMLP((1, 4, 1)), td.nn.Module)
