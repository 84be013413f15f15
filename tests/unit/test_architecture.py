"""The shape of the tree: no import cycles among hacontrol/ modules, no oversized module.

Imports are read with `ast`, not by importing, so imports guarded by `TYPE_CHECKING` and
imports inside functions count too: a cycle hidden behind either still ties the two
modules together for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hacontrol"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The hacontrol modules `name` imports (the most specific module each import names)."""
    known = set(known)
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        # `from pkg import thing`: thing may be a module or a name defined in pkg.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hacontrol"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("hacontrol"):
                base = node.module
            else:
                continue
            for alias in node.names:
                add(f"{base}.{alias.name}")
    return out


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {name: imports_of(name, path, mods) for name, path in mods.items()}
    # A package's __init__ re-exporting its own modules is not a cycle a reader trips on:
    # drop edges from a package to its own submodules.
    for name, targets in graph.items():
        if mods[name].name == "__init__.py":
            graph[name] = {t for t in targets if not t.startswith(name + ".")}
    return graph


def test_cycle_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_type_checking_imports_are_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "hacontrol" / "x"
    pkg.mkdir(parents=True)
    src = pkg / "a.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
                   "def f():\n    from hacontrol.y import z\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "hacontrol"
    try:
        found = imports_of("hacontrol.x.a", src, {"hacontrol.x.b", "hacontrol.y.z"})
    finally:
        PACKAGE = saved
    assert found == {"hacontrol.x.b", "hacontrol.y.z"}


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles among hacontrol modules: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_no_module_over_the_size_limit() -> None:
    too_big = {name: n for name, path in modules().items()
               if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert too_big == {}, f"modules over {MAX_LINES} lines: {too_big}"


DOC = PACKAGE.parent / "docs" / "architecture.md"


def documented_modules(text: str) -> set[str]:
    """Module paths (relative to hacontrol/) named in the doc's "Every module" list: a
    bullet "- `folder/`: ... `name.py` ..." names folder/name.py; "- `name.py`: ..." names
    a top-level module."""
    section = text.split("### Every module", 1)[1].split("\n#", 1)[0]
    # A bullet continues on the indented lines below it.
    bullets = section.replace("\n  ", " ").splitlines()
    found: set[str] = set()
    for line in bullets:
        if not line.startswith("- `"):
            continue
        head = line[3:line.index("`", 3)]
        names = [t for t in line.split("`")[1::2] if t.endswith(".py")]
        if head.endswith("/"):
            found |= {head + n for n in names}
        else:
            found.add(head)
    return found


def test_the_architecture_doc_names_every_module() -> None:
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py"}
    named = documented_modules(DOC.read_text())
    assert sorted(actual - named) == [], "modules docs/architecture.md does not list"
    assert sorted(named - actual) == [], "docs/architecture.md lists modules that are gone"
