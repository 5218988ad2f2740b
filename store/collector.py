"""Python's cyclic garbage collector around the large, garbage-free steps: the one home of
every collector setting the tool makes.

Importing torch and transformers, or loading a model, builds 10^5-10^6 long-lived objects and
almost no garbage, yet each full collection walks every object built so far, and the last
one at the interpreter's exit walks them again. Measured on 2 cores (docs/performance.md,
"Fixed costs"): ~0.5 s of a ~3.1 s import of torch and transformers, 0.6-0.9 s of a first
model load, ~0.8 s at a model command's exit, 0.3-0.4 s per full collection during an ingest.

- `frozen_imports`: a process's start (the console script before a model command, the
  query's child): imports with the collector off, then everything alive frozen for good.
- `few_middle_collections`: a model load inside any process (the Python API too): the older
  generations collected rarely for the block, then the thresholds as they were.
- `skips_older_objects`: an ingest run: what exists before it is frozen for the run and
  unfrozen after; for good where the process started with `frozen_imports` (the model and
  the prompts join the imports); unchanged where someone else froze objects.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Young-generation collections between two of the middle generation while a model loads
# (Python's default is 10).
LOAD_GC_THRESHOLD1 = 1000
# Set by `frozen_imports`: this process's own start froze objects for good (the CLI).
_FROZEN_AT_START = False


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (imports) with the collector off; then freeze every object alive and
    turn the collector back on, whether the block succeeded or not."""
    global _FROZEN_AT_START
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
        _FROZEN_AT_START = True


@contextlib.contextmanager
def few_middle_collections() -> Iterator[None]:
    """The older generations are collected rarely for the block, then as before. Young
    collections still run as before, so short-lived cycles are freed as usual."""
    old = gc.get_threshold()
    gc.set_threshold(old[0], max(old[1], LOAD_GC_THRESHOLD1), old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@contextlib.contextmanager
def skips_older_objects() -> Iterator[None]:
    """The collector ignores the objects that exist now until the block ends: a collection
    looks only at what the block made, and cycles among older objects wait for the next
    collection after it. A process that started with `frozen_imports` keeps them frozen;
    where a caller of the API froze objects itself, nothing is changed (unfreezing would
    undo theirs)."""
    if _FROZEN_AT_START:
        gc.freeze()
        yield
        return
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
