"""The console script forks a query's child before it imports the CLI (`warehouse.launch`,
`warehouse.worker.prefork`): that child answers the query, and an unused one ends with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_warehouse

from warehouse.launch import command_of


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama_dir) -> Path:
    return small_warehouse(tmp_path_factory, tiny_llama_dir)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["query", "W", "select 1"], "query"),
        (["--debug", "query", "W", "select 1"], "query"),
        (["ingest", "--out", "query"], "ingest"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option(argv, command):
    assert command_of(argv) == command


# A fresh process (pytest's own has threads, so it never forks early): prefork, then the
# query through `isolated`, printing the warm child's pid and whether it was used.
_SCRIPT = """
import os, sys
from warehouse import worker
from warehouse.queries.limits import QueryLimits
worker.prefork()
pid = worker._WARM[0][0]
sql = "select count(*) as n from prompts" + " --" + "x" * int(sys.argv[2])
answer = worker.isolated(worker.request("query", sys.argv[1], sql, "polars", QueryLimits(),
                                        fmt="csv", output=None))
print(pid, worker._WARM, repr(answer))
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie that nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.parametrize("pad", [0, 300_000])  # a request longer than one pipe read
def test_the_warm_child_answers_the_query_and_is_gone(built, pad):
    p = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(built), str(pad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pid, rest = p.stdout.split(" ", 1)
    assert rest == "[] 'n\\n6\\n'\n"  # the answer, and no warm child left
    assert int(pid) != 0 and not _alive(int(pid))


# Prefork, then print the warm child's pid once its stdout is /dev/null (so that a caller
# reading this process's stdout to its end does not wait for the child).
_UNUSED = """
import os, time
from warehouse import worker
worker.prefork()
pid = worker._WARM[0][0]
deadline = time.monotonic() + 60
while os.readlink(f"/proc/{pid}/fd/1") != os.devnull and time.monotonic() < deadline:
    time.sleep(0.01)
print(pid, os.readlink(f"/proc/{pid}/fd/1"))
"""


def test_an_unused_warm_child_ends_with_its_parent():
    p = subprocess.run([sys.executable, "-c", _UNUSED], capture_output=True, text=True, check=True)
    pid, stdout = p.stdout.split()
    assert stdout == "/dev/null"
    pid = int(pid)
    deadline = time.monotonic() + 60  # its imports finish first, then it reads the pipe's end
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_the_console_script_answers_and_refuses_as_before(built):
    """Through `python -m warehouse` (the launch path): a query's answer, and a bad
    option's one error line (its unused warm child ends by itself: the test above)."""
    run = [sys.executable, "-m", "warehouse", "query", str(built)]
    ok = subprocess.run(
        [*run, "select count(*) as n from prompts", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "n\n6\n", "")
    bad = subprocess.run(
        [*run, "select 1", "--format", "xml"], capture_output=True, text=True, timeout=120
    )
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "error: unknown format 'xml'; choose from table, csv, json, parquet\n"


# A fresh process: `main` with the CLI replaced, printing what it imported, the state of
# the garbage collector and oneDNN's cache capacity when the command would run.
_PRELOAD = """
import gc, os, sys
from warehouse import cli, launch
cli.main = lambda: print(
    gc.isenabled(), gc.get_freeze_count() > 0, "torch" in sys.modules,
    "transformers.modeling_utils" in sys.modules,
    os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"),
)
sys.argv = ["warehouse", *sys.argv[1:]]
launch.main()
"""


def _launched(argv: list[str], **env: str) -> str:
    """What `_PRELOAD` prints for `argv`, with `env` added to an environment that does not
    set oneDNN's cache."""
    base = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    done = subprocess.run(
        [sys.executable, "-c", _PRELOAD, *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**base, **env},
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("argv", "preloaded"),
    [
        (["ingest", "--out", "W"], True),
        (["--debug", "eval", "W"], True),
        (["study", "--out", "W"], True),
        (["ingest", "--help"], False),
        (["stats", "W"], False),
        (["info", "W"], False),
    ],
)
def test_a_model_command_imports_torch_and_transformers_first_and_freezes_them(argv, preloaded):
    """A model command's imports run with the collector off, their objects are frozen, and
    the collector is on again when the command runs; other commands import neither."""
    cache = "64" if argv[0] == "ingest" else "None"
    assert _launched(argv) == f"True {preloaded} {preloaded} {preloaded} {cache}"


def test_ingest_caps_onednn_s_cache_unless_the_environment_sets_it():
    """Only `ingest` caps oneDNN's kernel cache, and a capacity the user set is kept."""
    assert _launched(["ingest", "--out", "W"]).endswith(" 64")
    kept = _launched(["ingest", "--out", "W"], ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")
    assert kept == "True True True True 1024"
