"""The controller's packages import in one direction: no module imports its importer
(also not under TYPE_CHECKING), and routes and the leader loop never import the Controller."""

from __future__ import annotations

import ast
from pathlib import Path

import hacontrol

ROOT = Path(hacontrol.__file__).parent
AREA = ("hacontrol.api", "hacontrol.scheduler", "hacontrol.controller", "hacontrol.server",
        "hacontrol.planted")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every hacontrol module `name` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_cycle_through_the_controller_packages() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    ours = [c for c in _cycles(graph) if any(m.startswith(AREA) for m in c)]
    assert ours == []


def test_routes_and_the_leader_loop_do_not_know_the_controller() -> None:
    known = _modules()
    for name, path in known.items():
        if name.startswith(("hacontrol.api", "hacontrol.scheduler")):
            assert "hacontrol.controller.replica" not in _imports(name, path, known), name
