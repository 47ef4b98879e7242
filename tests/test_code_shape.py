"""The shape of the product's code: no function over 80 lines, one reason to change each.

A long function is split into named steps (``core/compose.py:finish`` is the model: frame →
place → background → shadow → subject → alpha). Run this file as a script to list every product
function over the limit with its length.

A function that is only a data table (a long literal, a list of declarations) is named in
``DATA_TABLES`` with why; nothing else is let off.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python tests/test_code_shape.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import REPO, product_files

MAX_LINES = 80

DATA_TABLES: dict[str, str] = {
    "server/options.py::add_finishing": "argparse declarations of 11 options",
}


def function_lengths(tree: ast.AST) -> dict[str, int]:
    """``Qualified.name`` → length in lines of every function in ``tree`` (methods and nested
    functions included, named through their classes and functions)."""
    found = {}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree)
    return found


def long_functions(limit: int = MAX_LINES) -> dict[str, int]:
    """``path::Qualified.name`` → length in lines, for every product function longer than ``limit``."""
    found = {}
    for path in product_files():
        rel = path.relative_to(REPO).as_posix()
        for name, length in function_lengths(ast.parse(path.read_text(encoding="utf-8"))).items():
            if length > limit:
                found[f"{rel}::{name}"] = length
    return found


def test_no_product_function_is_over_the_limit():
    over = {name: n for name, n in long_functions().items() if name not in DATA_TABLES}
    assert over == {}, f"functions over {MAX_LINES} lines (split them into named steps): {over}"


def test_the_allow_list_names_only_functions_still_over_the_limit():
    """So that it shrinks: a function brought under the limit leaves the list."""
    stale = set(DATA_TABLES) - set(long_functions())
    assert stale == set(), f"no longer over {MAX_LINES} lines (remove from the allow-list): {stale}"


SAMPLE = """
def top():
    return 1


class Outer:
    async def method(self):
        def inner():
            a = 1
            return a

        return inner
"""


def test_the_counter_sees_nested_and_method_functions():
    assert function_lengths(ast.parse(SAMPLE)) == {"top": 2, "Outer.method": 6, "Outer.method.inner": 3}


def test_the_product_is_read():
    """The limit is checked against real files: the plug-ins and the core are among them."""
    found = long_functions(limit=20)
    assert any(name.startswith("plugins/krita/maskd/runner.py::") for name in found)
    assert any(name.startswith("core/compose.py::") for name in found)


if __name__ == "__main__":
    for name, length in sorted(long_functions().items(), key=lambda item: -item[1]):
        note = f" (data table: {DATA_TABLES[name]})" if name in DATA_TABLES else ""
        print(f"{length:4d}  {name}{note}")
