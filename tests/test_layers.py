"""Imports go one way (docs/design.md, "Import layers"): each folder imports only the folders
below it, and no module imports another folder's private (underscored) names. The imports are
read with `ast`, so lazy imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("store", "ingest", "queries", "analysis", "warehouse")
# Which folders each folder's modules may import (its own included). `warehouse/` is the top:
# the CLI, the Python API and the orchestrators that compose the stages.
MAY_IMPORT = {
    "store": {"store"},
    "ingest": {"store", "ingest"},
    "queries": {"store", "queries"},
    "analysis": {"store", "ingest", "queries", "analysis"},
    "warehouse": set(FOLDERS),
}
# Imports that break a layer, each named: (importing file, imported module). None today; an
# entry here needs its reason beside it, and `test_no_stale_exception` drops it once unused.
EXCEPTIONS: set[tuple[str, str]] = set()


def folder_of(module: str) -> str | None:
    """The repository folder of an import name (`warehouse.store.files` -> store), or None for
    a module outside the project."""
    parts = module.split(".")
    if parts[0] != "warehouse":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS[:-1]:
        return parts[1]
    return "warehouse"


def imports(source: str) -> list[tuple[str, str]]:
    """(module, name) of every project import in `source`; name is "" for `import x`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "") for a in node.names if folder_of(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and folder_of(node.module):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if node.module == "warehouse" and folder_of(sub) != "warehouse":
                    out.append((node.lineno, sub, ""))  # `from warehouse import store`
                else:
                    out.append((node.lineno, node.module, a.name))
    return [(module, name) for _, module, name in sorted(out)]


def violations(rel: str, source: str) -> list[str]:
    """What `source`, the file at `rel` (e.g. "ingest/run.py"), imports against the layers."""
    here = rel.split("/")[0]
    found = []
    for module, name in imports(source):
        there = folder_of(module)
        assert there is not None
        if there not in MAY_IMPORT[here] and (rel, module) not in EXCEPTIONS:
            found.append(f"{rel}: imports {module} ({here}/ may not import {there}/)")
        if there != here and name.startswith("_") and not name.startswith("__"):
            found.append(f"{rel}: imports the private {module}.{name}")
    return found


def project_files() -> list[Path]:
    return sorted(p for f in FOLDERS for p in (REPO / f).rglob("*.py"))


def test_imports_follow_the_layers():
    found = []
    for path in project_files():
        rel = path.relative_to(REPO).as_posix()
        found += violations(rel, path.read_text())
    assert found == []


def test_checker_finds_each_kind_of_violation():
    source = (
        "from warehouse.store.errors import WarehouseError\n"
        "from warehouse.analysis.evaluate import EvalConfig\n"
        "def f():\n"
        "    from warehouse.ingest.run import _resume_batch\n"
        "    import warehouse.cli\n"
        "from warehouse import __version__, api\n"
    )
    assert violations("ingest/x.py", source) == [
        "ingest/x.py: imports warehouse.analysis.evaluate (ingest/ may not import analysis/)",
        "ingest/x.py: imports warehouse.cli (ingest/ may not import warehouse/)",
        "ingest/x.py: imports warehouse (ingest/ may not import warehouse/)",
        "ingest/x.py: imports warehouse (ingest/ may not import warehouse/)",
    ]
    assert violations("analysis/x.py", source) == [
        "analysis/x.py: imports the private warehouse.ingest.run._resume_batch",
        "analysis/x.py: imports warehouse.cli (analysis/ may not import warehouse/)",
        "analysis/x.py: imports warehouse (analysis/ may not import warehouse/)",
        "analysis/x.py: imports warehouse (analysis/ may not import warehouse/)",
    ]
    assert violations("warehouse/x.py", source) == [
        "warehouse/x.py: imports the private warehouse.ingest.run._resume_batch",
    ]


def test_every_project_file_is_checked():
    rels = {p.relative_to(REPO).as_posix() for p in project_files()}
    assert {"store/errors.py", "ingest/generation.py", "warehouse/cli.py"} <= rels
    assert all(rel.split("/")[0] in MAY_IMPORT for rel in rels)


def test_no_stale_exception():
    used = set()
    for path in project_files():
        rel = path.relative_to(REPO).as_posix()
        used |= {(rel, module) for module, _ in imports(path.read_text())}
    assert EXCEPTIONS <= used


def test_scripts_use_public_names_only():
    """bench/ and tools/ stand outside the package and may import any folder, but, like the
    folders themselves, only names the package does not mark private."""
    found = []
    for path in sorted((REPO / "bench").rglob("*.py")) + sorted((REPO / "tools").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        found += [
            f"{rel}: imports the private {module}.{name}"
            for module, name in imports(path.read_text())
            if name.startswith("_") and not name.startswith("__")
        ]
    assert found == []
