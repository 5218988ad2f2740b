"""The console script `warehouse`: start a query's child early, then run the CLI.

A `warehouse query` spends most of its wall time importing: the CLI (typer, which validates
options through pydantic) in this process, the engines (Polars, PyArrow, NumPy) in the child
that runs the query. Forked here, before the CLI is imported, the child imports the engines
while this process imports the CLI, so the two overlap on two cores (`warehouse.worker.prefork`).
A command that runs a model (`MODEL_COMMANDS`) imports torch and transformers first
(`preload`), with Python's cyclic garbage collector off and the objects they built frozen
after (`store/collector.py`): ~0.6 s less to its first batch, and ~0.8 s less at its exit.
`ingest` also caps oneDNN's cache of compiled kernels first (`limit_onednn_cache`).
Every other command goes straight to the CLI.
"""

from __future__ import annotations

import os
import sys

from warehouse.store.collector import frozen_imports

MODEL_COMMANDS = ("ingest", "eval", "study", "demo")

# oneDNN runs ingest's linear layers (ingest/prepacked.py) and keeps a compiled kernel (a
# "primitive") for every input shape it meets, up to 1,024 by default. An ingest runs its
# batches in order of length, so a row count it has moved past seldom comes back, and the
# cache only grows: it was most of what a per-token ingest of 4x the prompts held more at the
# same largest batch (docs/performance.md, "Peak RSS"). 64 holds the kernels of at least the
# last 9 passes (a pass needs one per weight shape, at most 7), made on its first layer and
# reused on the others. oneDNN reads the variable when it makes its first kernel, so it is set
# before torch is imported. `eval`, `study` and `demo` keep oneDNN's default: they run the
# same prompts under each condition, so their shapes repeat, and the cap has not been measured
# on them.
ONEDNN_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


def command_of(argv: list[str]) -> str | None:
    """The command named in `argv` (the first word that is not an option), or None.
    The app's own options (`--debug`, `--version`, `--help`) take no value."""
    return next((a for a in argv if not a.startswith("-")), None)


def preload() -> None:
    """Import torch and transformers' model machinery, as a model command would later."""
    with frozen_imports():
        import torch  # noqa: F401
        import transformers.modeling_utils  # noqa: F401


def limit_onednn_cache() -> None:
    """Cap oneDNN's kernel cache for this process (`ONEDNN_CACHE`), unless the environment
    already sets it."""
    os.environ.setdefault(*ONEDNN_CACHE)


def main() -> None:
    argv = sys.argv[1:]
    command = command_of(argv)
    if command == "ingest":
        limit_onednn_cache()
    if command == "query":
        from warehouse.worker import prefork

        prefork()
    elif command in MODEL_COMMANDS and not {"--help", "-h"} & set(argv):
        preload()
    from warehouse.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # python -m warehouse.launch
    main()
