"""Functions stay short (about 60 lines at most) in the package, its benches and its tools.
A longer one would have to be listed here by name; the list is empty and only shrinks: a
listed function that got short fails too, so its entry goes."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("ingest", "store", "queries", "analysis", "warehouse", "bench", "tools")
MAX_LINES = 60
# file:function -> lines, for a function allowed to stay longer than MAX_LINES (none today).
LONG: dict[str, int] = {}


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method (decorators excluded) by name; the longest of
    several of one name."""
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            out[node.name] = max(n, out.get(node.name, 0))
    return out


def long_functions() -> dict[str, int]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for name, n in function_lengths(path.read_text()).items():
                if n > MAX_LINES:
                    found[f"{rel}:{name}"] = n
    return found


def test_no_new_long_function():
    found = long_functions()
    assert {k: v for k, v in found.items() if k not in LONG} == {}


def test_listed_long_functions_are_still_long():
    found = long_functions()
    assert sorted(k for k in LONG if k not in found) == []


def test_the_counter_counts_lines():
    source = "def f():\n" + "    x = 1\n" * 70 + "\n\nclass A:\n    def g(self):\n        pass\n"
    assert function_lengths(source) == {"f": 71, "g": 2}
