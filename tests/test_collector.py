"""store/collector.py: every setting of Python's garbage collector, each checked in a fresh
process (freezing is for the whole process, so never in pytest's own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Objects made before the run; whether the run froze more of them, whether they stay frozen
# after it, whether nothing is frozen after it, and the collector's state; with or without
# the process's own frozen start, or with a caller's freeze. (A frozen object that dies
# leaves the count, so counts are compared, never matched.)
_RUN = """
import gc, sys
from warehouse.store import collector
start = sys.argv[1]
if start == "frozen-start":
    with collector.frozen_imports():
        kept = [[i] for i in range(1000)]
elif start == "caller":
    gc.freeze()
made = [[i] for i in range(1000)]
before = gc.get_freeze_count()
with collector.skips_older_objects():
    inside = gc.get_freeze_count()
after = gc.get_freeze_count()
print(before > 0, inside > before, after > before, after == 0, gc.isenabled())
"""


@pytest.mark.parametrize(
    ("start", "want"),
    [
        # nothing frozen before: frozen for the run, unfrozen after
        ("plain", "False True False True True"),
        # the CLI's start froze: the run freezes what it holds for good
        ("frozen-start", "True True True False True"),
        # a caller's own freeze: left exactly as it was
        ("caller", "True False False False True"),
    ],
)
def test_an_ingest_run_skips_older_objects(start, want):
    done = subprocess.run(
        [sys.executable, "-c", _RUN, start], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == want


def test_frozen_imports_turn_the_collector_back_on_after_a_failed_import():
    script = (
        "import gc\nfrom warehouse.store import collector\ntry:\n"
        "    with collector.frozen_imports():\n        import no_such_module_here\n"
        "except ImportError:\n    pass\nprint(gc.isenabled(), gc.get_freeze_count() > 0)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "True True"
