"""The command line as every click CLI behaves, in real processes: usage errors in click's
form (`Usage:`, `Try … --help`, `Error:`) with exit 2 and no traceback, `--version`, and
`python -m warehouse.cli`. tools/check_cli_range.sh runs this file on the oldest and the
newest typer the pins allow, so nothing here depends on how one typer release words its
metavars (`SQL` or `{sql}`)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def warehouse(*args: str, module: str = "warehouse") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def usage_error(p: subprocess.CompletedProcess[str], command: str) -> str:
    """The `Error:` line of click's usage-error form, after checking the rest of it."""
    assert (p.returncode, p.stdout) == (2, ""), p
    lines = p.stderr.split("\n")
    assert len(lines) == 5 and lines[4] == "", p.stderr
    assert lines[0].startswith(f"Usage: {command} [OPTIONS]"), p.stderr
    assert lines[1:3] == [f"Try '{command} --help' for help.", ""], p.stderr
    assert lines[3].startswith("Error: "), p.stderr
    return lines[3]


@pytest.mark.parametrize(
    ("args", "command", "error"),
    [
        (["query", "W"], "warehouse query", "error: missing argument 'sql'."),
        (["stats"], "warehouse stats", "error: missing argument 'warehouse'."),
        (["info", "W", "--colour"], "warehouse info", "error: no such option"),
        (["inspect", "W"], "warehouse", "error: no such command 'inspect'."),
        (["--debug", "query", "W"], "warehouse query", "error: missing argument 'sql'."),
    ],
)
def test_usage_errors_in_clicks_form(args, command, error):
    line = usage_error(warehouse(*args), command)
    assert line.lower().startswith(error), line
    assert "--colour" in line or "--colour" not in args, line


def test_a_value_of_the_wrong_type():
    line = usage_error(warehouse("ingest", "--batch-size", "x"), "warehouse ingest")
    assert line.startswith("Error: Invalid value for '--batch-size': "), line


def test_version_and_python_m_warehouse_cli():
    expected = f"relation-warehouse {version('relation-warehouse')}\n"
    for module in ("warehouse", "warehouse.cli"):
        p = warehouse("--version", module=module)
        assert (p.returncode, p.stdout, p.stderr) == (0, expected, "")
    p = warehouse("query", "W", module="warehouse.cli")
    assert usage_error(p, "warehouse query").lower() == "error: missing argument 'sql'."


def test_bare_warehouse_prints_the_help(tmp_path):
    p = warehouse()
    assert p.returncode == 2 and "Usage: warehouse [OPTIONS] COMMAND" in p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    missing = str(tmp_path / "missing")  # a named error keeps its one `error:` line
    p = warehouse("info", missing)
    assert (p.returncode, p.stderr) == (2, f"error: {missing}: no such warehouse folder\n")
