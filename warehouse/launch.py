"""The console script `warehouse`: start a query's child early, then run the CLI.

A `warehouse query` spends most of its wall time importing: the CLI (typer, which validates
options through pydantic) in this process, the engines (Polars, PyArrow, NumPy) in the child
that runs the query. Forked here, before the CLI is imported, the child imports the engines
while this process imports the CLI, so the two overlap on two cores (`warehouse.worker.prefork`).
Every other command goes straight to the CLI.
"""

from __future__ import annotations

import sys


def command_of(argv: list[str]) -> str | None:
    """The command named in `argv` (the first word that is not an option), or None.
    The app's own options (`--debug`, `--version`, `--help`) take no value."""
    return next((a for a in argv if not a.startswith("-")), None)


def main() -> None:
    if command_of(sys.argv[1:]) == "query":
        from warehouse.worker import prefork

        prefork()
    from warehouse.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # python -m warehouse.launch
    main()
