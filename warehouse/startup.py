"""Imports at a process's start, with Python's cyclic garbage collector off.

The large imports (torch and transformers before a model runs, Polars and PyArrow before a
query) build 10^5-10^6 objects and make no garbage, yet each full collection on the way walks
every object built so far: ~0.5 s of a ~3.1 s import of torch and transformers on 2 cores.
After the imports, `gc.freeze()` moves what they built out of every later collection's
reach, the last one at the interpreter's exit included (another ~0.8 s after a model
command), and the collector runs again for the command's own work.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (imports) with the collector off; then freeze every object alive and
    turn the collector back on, whether the block succeeded or not."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
