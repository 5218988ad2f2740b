"""The console script `warehouse`: start a query's child early, then run the CLI.

A `warehouse query` spends most of its wall time importing: the CLI (typer, which validates
options through pydantic) in this process, the engines (Polars, PyArrow, NumPy) in the child
that runs the query. Forked here, before the CLI is imported, the child imports the engines
while this process imports the CLI, so the two overlap on two cores (`warehouse.worker.prefork`).
A command that runs a model (`MODEL_COMMANDS`) imports torch and transformers first
(`preload`), with Python's cyclic garbage collector off and the objects they built frozen
after (`store/collector.py`): ~0.6 s less to its first batch, and ~0.8 s less at its exit.
Every other command goes straight to the CLI.
"""

from __future__ import annotations

import sys

from warehouse.store.collector import frozen_imports

MODEL_COMMANDS = ("ingest", "eval", "study", "demo")


def command_of(argv: list[str]) -> str | None:
    """The command named in `argv` (the first word that is not an option), or None.
    The app's own options (`--debug`, `--version`, `--help`) take no value."""
    return next((a for a in argv if not a.startswith("-")), None)


def preload() -> None:
    """Import torch and transformers' model machinery, as a model command would later."""
    with frozen_imports():
        import torch  # noqa: F401
        import transformers.modeling_utils  # noqa: F401


def main() -> None:
    argv = sys.argv[1:]
    command = command_of(argv)
    if command == "query":
        from warehouse.worker import prefork

        prefork()
    elif command in MODEL_COMMANDS and not {"--help", "-h"} & set(argv):
        preload()
    from warehouse.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # python -m warehouse.launch
    main()
