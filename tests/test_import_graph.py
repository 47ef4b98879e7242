"""The product modules import each other without a cycle.

A cycle among ``maskd.*`` modules works only while the import order happens to suit it (a module
half-initialised when the other one reads it) and ties two concepts into one. Only module-level
imports count: an import inside a function is a deliberate lazy import (it keeps ``maskd --help``
and the editors' start fast) and runs after both modules exist.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["core", "server", "plugins", "installers"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["maskd", *parts])


def product_modules() -> dict[str, Path]:
    """Every module of the installed packages (not the editor plugin folders' own top-level
    packages, e.g. plugins/krita/maskd/, which Krita imports as ``maskd``)."""
    modules = {"maskd": ROOT / "__init__.py"}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            if all((d / "__init__.py").is_file() for d in path.parents if ROOT in d.parents):
                modules[_module_name(path)] = path
    return modules


def _top_level_imports(tree: ast.Module, name: str, is_package: bool):
    """Imports executed when the module is imported: its body's, and those under module-level
    ``if``/``try`` (not inside functions or classes' methods)."""
    package = name if is_package else name.rpartition(".")[0]
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"  # ``from maskd.core import pipeline`` imports a module
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
        elif isinstance(node, ast.ClassDef):
            stack.extend(n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for imported in _top_level_imports(tree, name, path.name == "__init__.py"):
            # importing a.b.c runs a and a.b first: each known prefix is an edge, except the
            # importer's own packages (already being imported) unless it names one itself
            parts = imported.split(".")
            known = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]
            for prefix in known:
                own_package = name.startswith(prefix + ".")
                if prefix != name and (not own_package or prefix == known[-1]):
                    targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_covers_the_product():
    graph = import_graph()
    assert {"maskd.core.pipeline", "maskd.server.daemon", "maskd.plugins.maskd_client"} <= set(graph)
    assert "maskd.core.layered" in graph["maskd.core.layered.kra"]


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_product_modules_import_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)
