"""A second hostile set: cases that no other test or issue lists, tried as a colleague who
shares a warehouse (or a query) on purpose to break it would.

Every case runs one `warehouse` command and must end with exactly one `error:` line on
stderr, nothing on stdout, exit code 2, and not one changed byte under the test's folder
(the warehouse, the secret beside it, the working directory: every entry hashed before and
after) nor a DuckDB spill folder left in the temp directory. The SQL cases run in both
engines and through the Python API too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli, small_warehouse

from warehouse.store.errors import WarehouseError

NINES = "9" * 400  # a number no float holds


@dataclass
class Ctx:
    tmp: Path
    w: Path
    secret: Path
    model: Path


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`; links, FIFOs and folders by what they are."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "folder"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = f"special {os.lstat(p).st_mode:o}"
    return out


def spill_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("warehouse-duckdb-*"))


@pytest.fixture(scope="module", autouse=True)
def private_temp_folder(tmp_path_factory):
    """A temp folder of this module's own (for it and the query worker it starts), so that
    DuckDB spill folders of other processes on the machine are not counted."""
    from warehouse.worker import stop_worker

    folder = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(folder))
        mp.setattr(tempfile, "tempdir", str(folder))
        stop_worker()
        yield folder
        stop_worker()


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama_dir, module_cache) -> Path:
    """Two relations × three subjects, ingested, with stats and a selection `cap`."""
    return small_warehouse(tmp_path_factory, tiny_llama_dir)


@pytest.fixture
def ctx(built, tmp_path, tiny_llama_dir, monkeypatch) -> Ctx:
    monkeypatch.chdir(tmp_path)  # DuckDB's default spill folder would be ./.tmp
    w = Path(shutil.copytree(built, tmp_path / "w"))
    secret = tmp_path / "secret.csv"
    secret.write_text("secret\n42\n")
    return Ctx(tmp_path, w, secret, tiny_llama_dir)


# ------------------------------------------------------------------------------ SQL


def sql_cases(c: Ctx) -> dict[str, str]:
    """Queries that would read a file other than the views, or write, or run a statement
    other than one query, in forms the other sandbox tests do not try."""
    s, w = c.secret, c.w
    return {
        "function_in_a_join": f"select * from prompts join read_csv('{s}') on true",
        "function_in_a_where_subquery": (
            f"select * from prompts where prompt_id in (select * from read_parquet('{w}/x'))"
        ),
        "function_in_a_union": f"select 1 as a union all select * from read_csv('{s}')",
        "cte_named_like_a_view": f"with prompts as (select * from read_csv('{s}')) "
        "select * from prompts",
        "list_of_files": f"select * from read_csv(['{s}', '{s}'])",
        "from_first": f"from '{s}'",
        "summarize_a_file": f"summarize read_csv('{s}')",
        "describe_a_file": f"describe select * from read_csv('{s}')",
        "copy_a_view_over_a_table": f"copy prompts to '{w}/prompts.parquet'",
        "create_view_over_a_view": "create or replace view prompts as select 1 as x",
        "insert_into_a_view": "insert into prompts select * from prompts",
        "set_the_spill_folder": f"set temp_directory = '{w}'",
        "pragma_memory": "pragma memory_limit = '1TB'",
        "checkpoint": "checkpoint",
        "detach_and_attach": f"attach '{w}/stats.duckdb' as s",
        "update_a_view": "update prompts set subject = 'x'",
    }


SQL_NAMES = sorted(sql_cases(Ctx(Path("t"), Path("w"), Path("s"), Path("m"))))


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
@pytest.mark.parametrize("name", SQL_NAMES)
def test_sql_escapes_through_the_cli(ctx, capsys, name, engine):
    sql = sql_cases(ctx)[name]
    _refused(ctx, capsys, ["query", str(ctx.w), sql, "--engine", engine], None)


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_sql_escapes_through_the_api(ctx, engine, isolate):
    from warehouse.api import Warehouse

    before, spill = snapshot(ctx.tmp), spill_folders()
    wh = Warehouse.open(ctx.w)
    for name, sql in sql_cases(ctx).items():
        with pytest.raises(WarehouseError) as e:
            wh.sql(sql, engine=engine, isolate=isolate)
        assert "42" not in str(e.value) and "\n" not in str(e.value), name
    assert snapshot(ctx.tmp) == before and spill_folders() == spill


# ------------------------------------------------------------------- every other case


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _link_to_copy(path: Path, tmp: Path) -> None:
    """`path` replaced by a link to a copy of itself outside the warehouse."""
    copy = tmp / f"copy-of-{path.name}"
    shutil.copy(path, copy)
    path.unlink()
    path.symlink_to(copy)


def _deep_json(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)


def _auto_map_model(c: Ctx) -> Path:
    folder = Path(shutil.copytree(c.model, c.tmp / "model-with-code"))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(c.tmp / 'ran')!r}, 'w').write('ran')\n")
    return folder


def _q(c: Ctx, sql: str, *more: str) -> list[str]:
    return ["query", str(c.w), sql, *more]


STATS_JSON = "stats/ffn.act__mean__all.json"
STATS_PARQUET = "stats/ffn.act__mean__all.parquet"
CROSS3 = (
    "select a.value * b.value * c.value as x from activations a "
    "cross join activations b cross join activations c"
)
# Polars plans a cross join of more than 2^32 rows as an instant error (32-bit row index), so
# its runaway query stays below that: 6,432² × 64 rows, far past 1 s and 20 MB either way.
CROSS_POLARS = (
    "select sum(a.value * b.value * c.value) as x from activations a cross join activations b "
    "cross join (select value from activations limit 64) c"
)

# name -> (set-up, the command, a fragment of its error line)
CASES: dict[str, tuple[Callable[[Ctx], object], Callable[[Ctx], list[str]], str]] = {
    # links and special files, in every command that reads them
    "manifest_is_a_fifo_query": (
        lambda c: _fifo(c.w / "manifest.json"),
        lambda c: _q(c, "select 1"),
        "is a FIFO, not a plain file",
    ),
    "manifest_is_a_fifo_info": (
        lambda c: _fifo(c.w / "manifest.json"),
        lambda c: ["info", str(c.w)],
        "is a FIFO, not a plain file",
    ),
    "manifest_is_a_fifo_export": (
        lambda c: _fifo(c.w / "manifest.json"),
        lambda c: ["export", str(c.w), str(c.tmp / "share"), "--quiet"],
        "is a FIFO, not a plain file",
    ),
    "manifest_is_a_link_query": (
        lambda c: _link_to_copy(c.w / "manifest.json", c.tmp),
        lambda c: _q(c, "select 1"),
        "is a symbolic link",
    ),
    "stats_folder_is_a_link": (
        lambda c: (
            shutil.move(c.w / "stats", c.tmp / "elsewhere"),
            (c.w / "stats").symlink_to(c.tmp / "elsewhere"),
        ),
        lambda c: _q(c, "select count(*) from stats"),
        "symbolic link",
    ),
    "sidecar_is_a_fifo": (
        lambda c: _fifo(c.w / STATS_JSON),
        lambda c: _q(c, "select count(*) from stats"),
        "is a FIFO, not a plain file",
    ),
    "sidecar_is_a_link": (
        lambda c: _link_to_copy(c.w / STATS_JSON, c.tmp),
        lambda c: _q(c, "select count(*) from stats", "--engine", "duckdb"),
        "is a symbolic link",
    ),
    "sidecar_is_not_an_object": (
        lambda c: (c.w / STATS_JSON).write_text("[1, 2]"),
        lambda c: _q(c, "select count(*) from stats"),
        "is not a JSON object",
    ),
    "sidecar_nested_too_deeply": (
        lambda c: _deep_json(c.w / STATS_JSON),
        lambda c: _q(c, "select count(*) from stats"),
        "nested too deeply to read",
    ),
    "manifest_nested_too_deeply": (
        lambda c: _deep_json(c.w / "manifest.json"),
        lambda c: ["info", str(c.w)],
        "nested too deeply to read",
    ),
    "selection_sidecar_missing_select_sql": (
        lambda c: (c.w / "selections" / "cap.json").unlink(),
        lambda c: _q(c, "select * from selections"),
        "has no sidecar cap.json",
    ),
    "stats_table_emptied": (
        lambda c: (c.w / STATS_PARQUET).write_bytes(b""),
        lambda c: _q(c, "select count(*) from stats", "--engine", "duckdb"),
        "does not match the crc32c its sidecar records",
    ),
    "zarr_json_is_a_fifo": (
        lambda c: _fifo(c.w / "activations.zarr" / "ffn.act" / "zarr.json"),
        lambda c: _q(c, "select count(*) from activations"),
        "is a FIFO, not a plain file",
    ),
    "tokens_table_is_a_fifo": (
        lambda c: _fifo(c.w / "tokens.parquet"),
        lambda c: _q(c, "select count(*) from tokens"),
        "is a FIFO, not a plain file",
    ),
    # writes into inputs, by other ways in
    "export_through_a_link_into_itself": (
        lambda c: (c.tmp / "door").symlink_to(c.w / "stats"),
        lambda c: ["export", str(c.w), str(c.tmp / "door" / "share"), "--quiet"],
        "inside it",
    ),
    "query_output_through_dotdot_into_itself": (
        lambda c: (c.tmp / "other").mkdir(),
        lambda c: _q(
            c,
            "select 1 as x",
            "--format",
            "csv",
            "--output",
            str(c.tmp / "other" / ".." / "w" / "x.csv"),
        ),
        "inside it",
    ),
    "query_output_over_the_manifest": (
        lambda c: None,
        lambda c: _q(
            c, "select 1 as x", "--format", "json", "--output", str(c.w / "manifest.json")
        ),
        "inside it",
    ),
    # code from data
    "model_with_its_own_code": (
        lambda c: None,
        lambda c: ["ingest", "--out", str(c.tmp / "new"), "--model", str(_auto_map_model(c))],
        "asks to run its own Python code",
    ),
    # resource exhaustion: stopped by the limits, in both engines
    "cross_join_cubed_polars": (
        lambda c: None,
        lambda c: _q(c, CROSS_POLARS, "--timeout", "1s"),
        "ran past its timeout of 1 s",
    ),
    "cross_join_cubed_duckdb": (
        lambda c: None,
        lambda c: _q(c, CROSS3, "--timeout", "1s", "--engine", "duckdb"),
        "ran past its timeout of 1 s",
    ),
    "cross_join_into_memory": (
        lambda c: None,
        lambda c: _q(c, f"{CROSS_POLARS} order by x", "--memory-limit", "20MB", "--timeout", "60s"),
        "memory limit of 20,000,000 bytes",
    ),
    # bad numbers
    "memory_limit_beyond_any_float": (
        lambda c: None,
        lambda c: _q(c, "select 1", "--memory-limit", NINES),
        "give a positive size",
    ),
    "timeout_beyond_any_float": (
        lambda c: None,
        lambda c: _q(c, "select 1", "--timeout", NINES),
        "give a positive duration",
    ),
    "negative_timeout": (
        lambda c: None,
        lambda c: _q(c, "select 1", "--timeout", "-5s"),
        "is not a number with a unit",
    ),
    "dataset_nested_too_deeply": (
        lambda c: (c.tmp / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n"),
        lambda c: [
            "ingest",
            "--out",
            str(c.tmp / "new"),
            "--model",
            str(c.model),
            "--dataset",
            str(c.tmp / "deep.jsonl"),
        ],
        "deep.jsonl",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(ctx, capsys, name):
    setup, command, fragment = CASES[name]
    setup(ctx)
    _refused(ctx, capsys, command(ctx), fragment)
    assert not (ctx.tmp / "ran").exists()  # no model code ran


def _refused(c: Ctx, capsys, args: list[str], fragment: str | None) -> None:
    before, spill = snapshot(c.tmp), spill_folders()
    code, out, err = run_cli(capsys, *args)
    assert (code, out) == (2, ""), (args, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    if fragment is not None:
        assert fragment in err, err
    assert "42" not in err  # the secret's value never shows
    assert snapshot(c.tmp) == before, "a byte changed"
    assert spill_folders() == spill, "a DuckDB spill folder was left"


# ------------------------------------------------------------- kills during writing


def _stats_and_select(w: Path) -> list[list[str]]:
    return [
        ["stats", str(w), "--quiet", "--split", "all"],
        ["select", str(w), "--name", "cap2", "--relation", "capital", "--top", "4"],
    ]


def _ok(args: list[str], env: dict[str, str]) -> None:
    import subprocess

    p = subprocess.run(args, env=env, capture_output=True, text=True)
    assert p.returncode == 0, (args, p.stderr)


def _results(w: Path) -> dict[str, object]:
    """The derived files' bytes, sidecars less their times (a rerun differs only there)."""
    out: dict[str, object] = {}
    folders = [w / "stats", w / "selections"]
    for p in sorted(p for f in folders if f.is_dir() for p in f.iterdir()):
        if p.suffix == ".json":
            side = json.loads(p.read_text())
            out[p.name] = {k: v for k, v in side.items() if k not in ("created", "seconds")}
        else:
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("step", [0, 1], ids=["stats", "select"])
def test_a_killed_stats_or_select_leaves_a_warehouse_the_rerun_completes(
    built, tmp_path, step, module_cache
):
    """SIGKILL `warehouse stats` / `warehouse select` at two moments of its run: verify
    then reports nothing but the killed run's lock and temp files, and a rerun of the same
    command gives the bytes of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from warehouse.store.checksums import verify

    env = {**os.environ, "WAREHOUSE_CACHE": str(module_cache)}
    ref, w = tmp_path / "ref", tmp_path / "w"
    for folder in (ref, w):
        shutil.copytree(built, folder)
        shutil.rmtree(folder / "stats")
        shutil.rmtree(folder / "selections")
        if step == 1:  # select needs the stats first
            _ok([sys.executable, "-m", "warehouse", *_stats_and_select(folder)[0]], env)
    command = lambda folder: [sys.executable, "-m", "warehouse", *_stats_and_select(folder)[step]]  # noqa: E731
    start = time.monotonic()
    _ok(command(ref), env)
    took = time.monotonic() - start
    for fraction in (0.5, 0.85):
        proc = subprocess.Popen(
            command(w), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(took * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        allowed = ("stale writer lock", "leftover temp")
        assert all(any(a in p for a in allowed) for p in verify(w).problems), verify(w).problems
    if not (step == 1 and (w / "selections" / "cap2.json").exists()):  # a finished select
        _ok(command(w), env)  # refuses to make its selection again; stats says it is current
    assert verify(w).ok
    assert _results(w) == _results(ref)


def test_the_docs_count_these_cases():
    """docs/errors.md, docs/reliability.md and the README say how many cases this set has."""
    n = 2 * len(SQL_NAMES) + 4 + len(CASES)  # CLI in two engines, the API four ways, the rest
    assert (n, len(SQL_NAMES), len(CASES)) == (61, 16, 25)
    root = Path(__file__).parents[1]
    for doc in ("docs/errors.md", "docs/reliability.md", "README.md"):
        assert re.search(r"\b61\b", (root / doc).read_text()), doc
