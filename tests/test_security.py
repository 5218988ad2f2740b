"""Safe sharing: no code path unpickles, a warehouse is inert data confined to its folder, and
`warehouse query` cannot be turned into a file reader or writer by a warehouse's contents."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import small_warehouse

from warehouse.store.errors import FormatError, ModelError, WarehouseError

REPO = Path(__file__).resolve().parents[1]

# What must not appear in the project's Python code. (The patterns are assembled from pieces
# so that this file does not match itself.)
_P = "pic" + "kle"
FORBIDDEN = [
    (re.compile(rf"\b(c?{_P}|dill|cloudpickle|joblib|shelve|marshal)\b"), "a pickle module"),
    (re.compile(r"read_" + _P + r"|to_" + _P), "pandas pickle IO"),
    (re.compile(r"allow_" + _P + r"\s*=\s*True"), "numpy loading pickles"),
    (re.compile(r"trust_remote_code\s*=\s*True"), "running a model repository's code"),
    (re.compile(r"yaml\.load\((?![^)]*SafeLoader)"), "unsafe YAML"),
    (re.compile(r"\b(eval|exec)\(\s*(?!\))"), "eval/exec of a string"),
]
TORCH_LOAD = re.compile(r"torch\.load\(")


# Where the project's Python lives, for a copy that is not a git checkout (an unpacked sdist).
PROJECT_FOLDERS = ("warehouse", "ingest", "store", "queries", "analysis", "tests", "bench", "tools")


def python_files(root: Path = REPO) -> list[Path]:
    """The project's own Python files: the ones git tracks, so that a virtual environment or a
    build folder inside the clone is never scanned. Outside a git checkout of `root`, the
    project's folders."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
        )
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve():
            out = subprocess.run(
                ["git", "ls-files", "--cached", "-z", "--", "*.py"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return [root / p for p in out.split("\0") if p and (root / p).is_file()]
    except OSError:  # no git on this machine
        pass
    return sorted(p for d in PROJECT_FOLDERS for p in (root / d).rglob("*.py"))


def findings(path: Path, text: str) -> list[str]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        for pattern, what in FORBIDDEN:
            if pattern.search(code):
                out.append(f"{path}:{i}: {what}: {line.strip()}")
        for m in TORCH_LOAD.finditer(code):
            # The call's arguments, up to the closing parenthesis (also over lines).
            rest = "\n".join(text.splitlines()[i - 1 : i + 5])[m.end() - 1 :]
            depth, end = 0, len(rest)
            for j, ch in enumerate(rest):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0:
                    end = j
                    break
            if not re.search(r"weights_only\s*=\s*True", rest[:end]):
                out.append(f"{path}:{i}: torch.load without weights_only=True: {line.strip()}")
    return out


def test_no_pickle_or_remote_code_in_the_project():
    files = python_files()
    assert len(files) > 30 and REPO / "ingest" / "models.py" in files
    found = [f for p in files if p != Path(__file__) for f in findings(p, p.read_text())]
    assert not found, "\n".join(found)


def _project_copy(root: Path) -> Path:
    """A project tree with one clean module, and a virtual environment inside it whose
    packages use pickle, as a user's `python -m venv venv` in the clone would hold."""
    (root / "store").mkdir(parents=True)
    (root / "store" / "files.py").write_text("x = 1\n")
    venv = root / "venv" / "lib" / "python3.11" / "site-packages"
    venv.mkdir(parents=True)
    (venv / "joblib.py").write_text("import " + _P + "\n")
    return root


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_scan_reads_only_tracked_files(tmp_path):
    root = _project_copy(tmp_path / "clone")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "store/files.py"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "m"], cwd=root, check=True)
    assert python_files(root) == [root / "store" / "files.py"]


def test_outside_git_the_scan_reads_the_project_folders(tmp_path):
    root = _project_copy(tmp_path / "unpacked")
    assert python_files(root) == [root / "store" / "files.py"]


@pytest.mark.parametrize(
    "sample",
    [
        "import " + _P,
        "data = " + _P + ".loads(blob)",
        "x = torch.load(f)",
        "x = torch.load(\n    f, map_location='cpu'\n)",
        "m = AutoModel.from_pretrained(p, trust_remote_code=True)",
        "np.load(f, allow_" + _P + "=True)",
        "df = pd.read_" + _P + "(f)",
        "eval(user_text)",
    ],
)
def test_the_scan_finds_each_forbidden_thing(sample):
    assert findings(Path("sample.py"), sample)


def test_the_scan_accepts_safe_forms():
    ok = "x = torch.load(f, weights_only=True)\nmodel.eval()\ny = 1  # " + _P + " in a comment"
    assert findings(Path("sample.py"), ok) == []


# ------------------------------------------------------------------- a warehouse is data


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama_dir, module_cache) -> Path:
    """Two relations × three subjects, ingested, with stats and a selection `cap`."""
    return small_warehouse(tmp_path_factory, tiny_llama_dir)


@pytest.fixture
def w(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w"


def test_every_file_is_inert_data(built):
    """JSON, Parquet or Zarr shards of blosc frames, each chunk followed by its crc32c
    (activations and responses), or of raw int64 and a crc32c (the 1-D coordinate arrays):
    nothing a reader would execute."""
    kinds = {}
    for p in sorted(built.rglob("*")):
        if not p.is_file():
            continue
        head = p.read_bytes()[:4]
        if p.suffix == ".json":
            json.loads(p.read_text())
            kind = "json"
        elif p.suffix == ".parquet":
            assert head == b"PAR1" and p.read_bytes()[-4:] == b"PAR1", p
            kind = "parquet"
        else:
            rel = str(p.relative_to(built)).replace(os.sep, "/")
            assert "/c/" in rel, p
            arr = zarr.open_array(p.parent.parent, mode="r") if p.parent.name == "c" else None
            if arr is not None and arr.ndim == 1:  # a coordinate array: int64, then a crc32c
                values = min(arr.chunks[0], arr.shape[0] - int(p.name) * arr.chunks[0])
                assert p.stat().st_size == arr.chunks[0] * 8 + 4 and values > 0, p
                kind = "coordinate chunk"
            else:
                assert rel.split("/")[0] in ("activations.zarr", "responses.zarr"), p
                _assert_blosc_chunks(p)
                kind = "chunk"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == {"json", "parquet", "chunk", "coordinate chunk"}


def _assert_blosc_chunks(shard: Path) -> None:
    """Every chunk of a shard is one blosc frame (format 2, byte shuffle, 2-byte items, the
    chunk's float16 bytes once decoded; its length in its header) and the frame's crc32c."""
    import google_crc32c
    from conftest import shard_chunks

    arr = zarr.open_array(shard.parents[3], mode="r")
    data = shard.read_bytes()
    for offset, length in shard_chunks(shard).values():
        chunk = data[offset : offset + length]
        frame, crc = chunk[:-4], chunk[-4:]
        assert google_crc32c.value(frame).to_bytes(4, "little") == crc, shard
        version, _, flags, typesize = frame[:4]
        raw, _, compressed = np.frombuffer(frame[4:16], dtype="<u4")
        assert (version, flags & 1, typesize) == (2, 1, 2), shard  # bit 0: byte shuffle
        assert raw == np.prod(arr.chunks) * 2 and compressed == len(frame), shard


def test_manifest_paths_stay_inside(w, tmp_path):
    from warehouse.api import Warehouse
    from warehouse.store.checksums import verify
    from warehouse.store.manifest import load_manifest

    m = json.loads((w / "manifest.json").read_text())
    for bad in ("../outside.parquet", "/etc/passwd", "a/../../b", "..", "prompts.parquet/../.."):
        edited = json.loads(json.dumps(m))
        edited["tables"]["prompts"]["path"] = bad
        (w / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(FormatError, match="not a relative path inside the warehouse"):
            load_manifest(w)
        with pytest.raises(FormatError):
            Warehouse.open(w)
        report = verify(w)  # verify names it instead of stopping
        assert any(f"table prompts: manifest path {bad!r}" in p for p in report.problems)
    (w / "manifest.json").write_text(json.dumps(m))
    assert verify(w).ok


def test_symlinked_array_folder_is_refused(w, tmp_path):
    """An array folder replaced by a link to a copy elsewhere: nothing reads through it."""
    from warehouse.api import Warehouse
    from warehouse.store.checksums import verify

    elsewhere = tmp_path / "elsewhere"
    shutil.move(w / "responses.zarr", elsewhere)
    (w / "responses.zarr").symlink_to(elsewhere)
    with pytest.raises(FormatError, match="(is a symbolic link|leads outside the warehouse)"):
        Warehouse.open(w)
    problems = verify(w).problems
    assert any(p.startswith("symbolic link responses.zarr -> ") for p in problems)
    assert any("responses/ffn.act/mean: manifest path" in p for p in problems)


def test_symlink_inside_pointing_inside_is_still_reported(w):
    from warehouse.store.checksums import verify

    (w / "stats" / "again.parquet").symlink_to(w / "prompts.parquet")
    assert any("symbolic link stats/again.parquet" in p for p in verify(w).problems)


# --------------------------------------------------------------------------- SQL sandbox


def _tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (links and special files by their kind)."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            out[rel] = f"special {os.lstat(p).st_mode}"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _escapes(w: Path, tmp: Path) -> list[str]:
    """Queries that would read or write a file other than the views (in either engine)."""
    secret, fifo = tmp / "secret.csv", tmp / "fifo.csv"
    secret.write_text("secret\n42\n")
    if not fifo.exists():
        os.mkfifo(fifo)
    return [
        # Polars table functions however spelled, quoted or commented
        f"select * from read_csv('{secret}')",
        f"select * from \"read_csv\"('{secret}')",
        f"select * from read_csv/**/('{secret}')",
        f"select * /* ' */ from read_csv('{secret}') -- '",
        f"select * from READ_CSV ('{secret}')",
        f"select * from read_parquet('{w / 'prompts.parquet'}')",
        f"select * from read_ipc('{secret}')",
        f"select * from read_json('{secret}')",
        f"select * from read_ndjson('{secret}')",
        f"select * from read_csv('{fifo}')",  # refused before it is opened: never blocks
        f"with read_csv as (select * from prompts) select * from read_csv('{secret}')",
        f"select (select count(*) from read_csv('{secret}')) as n from prompts",
        f"select * from U&\"read\\005fcsv\"('{secret}')",
        # DuckDB file access, statements other than one SELECT
        f"select * from '{secret}'",
        f"select * from read_text('{secret}')",
        "select * from read_blob('/etc/hostname')",
        "select * from sniff_csv('/etc/hostname')",
        "select * from glob('/etc/*')",
        f"select * from query_table('{secret}')",
        "select getenv('HOME')",
        "select * from 'https://example.org/x.parquet'",
        f"explain analyze copy (select 1) to '{w / 'prompts.parquet'}' (format parquet)",
        f"copy (select 1) to '{tmp / 'written.csv'}'",
        f"copy (select 1) to '{w / 'inside.csv'}'",
        f"export database '{tmp / 'exported'}'",
        f"attach '{tmp / 'x.duckdb'}' as x",
        "install httpfs",
        "load httpfs",
        "set enable_external_access = true",
        "pragma enable_profiling",
        "call pragma_version()",
        "select 1; select 2",
        f"create table t as select * from read_csv('{secret}')",
    ]


# Statements other than one query, refused by both engines' parsers (in Polars they would
# only plan, in a context discarded after the query, but a warehouse query is one query).
STATEMENTS = [
    "explain analyze select 1",
    "explain select * from prompts",
    "create table t as select 1",
    "show tables",
    "drop table prompts",
    "truncate prompts",
    "delete from prompts where prompt_id > 0",
    "insert into prompts select * from prompts",
    "describe prompts",
]
# DuckDB's parser makes these SELECTs over its catalog, which lists the registered views
# only: they read nothing else, and run.
DUCKDB_CATALOG = ["show tables", "describe prompts"]


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_queries_read_only_the_views(w, tmp_path, engine, monkeypatch):
    """Every escape is refused by the API with a WarehouseError, and changes no byte of
    the warehouse or of the working directory (DuckDB's spill folder is private)."""
    from warehouse.api import Warehouse

    monkeypatch.chdir(tmp_path)
    before = _tree_hash(w)
    wh = Warehouse.open(w)
    statements = [q for q in STATEMENTS if engine == "polars" or q not in DUCKDB_CATALOG]
    for sql in _escapes(w, tmp_path) + statements:
        with pytest.raises(WarehouseError) as e:
            wh.sql(sql, engine=engine)
        assert "secret" not in str(e.value).replace(str(tmp_path / "secret.csv"), ""), sql
    assert _tree_hash(w) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.csv", "secret.csv", "w"]
    # the views themselves work, joins included
    df = wh.sql(
        "select p.relation, count(*) as n from prompts p join tokens t "
        "on t.prompt_id = p.prompt_id group by p.relation order by p.relation",
        engine=engine,
    )
    assert df["relation"].to_list() == ["capital", "coin"]
    assert wh.sql("select count(*) as n from selections", engine=engine)["n"].item() == 4
    assert wh.sql("select 'read_csv(x)' as s from prompts limit 1")["s"].item() == "read_csv(x)"
    # queries of every form still run: VALUES, WITH, set operations, a trailing ';'
    for q in [
        "values (1), (2)",
        "with x as (select 1 as a) select * from x",
        "select 1 as a union all select 2 as a",
        "(select 1 as a)",
        "select 1 as a;",
    ]:
        assert sorted(wh.sql(q, engine=engine).to_series().to_list())[0] == 1, q
    if engine == "duckdb":  # a catalog of the views the query names
        assert "prompt_id" in wh.sql("describe prompts", engine=engine)["column_name"].to_list()


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_query_cli_refuses_escapes_with_one_error_line(w, tmp_path, engine, capsys):
    from conftest import run_cli

    before = _tree_hash(w)
    for sql in _escapes(w, tmp_path)[:: 3 if engine == "polars" else 4]:
        code, out, err = run_cli(capsys, "query", str(w), sql, "--engine", engine)
        assert code == 2, sql
        assert out == "" and err.startswith("error: ") and err.count("\n") == 1, (sql, err)
    assert _tree_hash(w) == before


def test_cross_join_count_runs_in_both_engines(w):
    from warehouse.api import Warehouse

    wh = Warehouse.open(w)
    n = wh.sql("select count(*) as n from activations")["n"].item()
    q = "select count(*) as n from activations a cross join activations b"
    assert wh.sql(q)["n"].item() == wh.sql(q, engine="duckdb")["n"].item() == n * n


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_timeout_stops_a_runaway_query(w, engine):
    import time

    from warehouse.api import Warehouse
    from warehouse.queries.limits import QueryLimits
    from warehouse.store.errors import QueryLimitError

    wh = Warehouse.open(w)
    # ~n^2 products: over a second here, so a 20 ms timeout always cuts it short (the
    # worker process that ran it is then killed: see the test after next)
    runaway = "select sum(a.value * b.value) as s from activations a cross join activations b"
    start = time.monotonic()
    with pytest.raises(QueryLimitError, match="timeout of 0.02 s"):
        wh.sql(runaway, engine=engine, limits=QueryLimits(timeout_s=0.02))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_limits_stop_the_zarr_reader_at_its_next_block(w, engine, monkeypatch):
    """In-process (isolate=False) DuckDB collects a Zarr view's frame outside its own
    accounting, and Polars cannot be cancelled: past a limit the reader itself stops, one
    block later."""
    import time

    from warehouse.api import Warehouse
    from warehouse.queries import views
    from warehouse.queries.limits import QueryLimits
    from warehouse.store.errors import QueryLimitError

    reads: list[float] = []  # when each block read began
    real = views.ZarrView._read

    def slow(self, *a):
        reads.append(time.monotonic())
        time.sleep(0.2)
        return real(self, *a)

    monkeypatch.setattr(views.ZarrView, "_read", slow)
    wh = Warehouse.open(w)
    q = (
        "select sum(value) as s from (select value from activations where layer = 0 "
        "union all select value from activations where layer = 1 "
        "union all select value from activations where value > 0)"
    )
    wh.sql(q, engine=engine, isolate=False)  # in this process, where the patch applies
    every = len(reads)
    assert every >= 4  # one block per layer and scan
    reads.clear()
    with pytest.raises(QueryLimitError, match="timeout of 0.05 s"):
        wh.sql(q, engine=engine, limits=QueryLimits(timeout_s=0.05), isolate=False)
    stopped = time.monotonic()
    time.sleep(0.6)  # what a reader that did not stop would go on reading meanwhile
    assert len(reads) < every
    assert all(t < stopped + 0.05 for t in reads)  # no block read began after the stop


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_memory_limit_stops_a_runaway_query(w, engine):
    from warehouse.api import Warehouse
    from warehouse.queries.limits import QueryLimits

    wh = Warehouse.open(w)
    # materialises every pair: ~n^2 values, far beyond 30 MB
    hungry = (
        "select a.value as x, b.value as y from activations a cross join activations b "
        "order by x * y limit 100000000"
    )
    with pytest.raises(WarehouseError, match=r"(?i)memory"):
        wh.sql(hungry, engine=engine, limits=QueryLimits(memory_bytes=30_000_000, timeout_s=60))


# A child that, once ready, sleeps, grows to 300 MB, or aborts: what the watcher must stop.
_CHILDREN = {
    "sleeps": "time.sleep(30)",
    "grows": "x = bytearray(300 * 10**6); x[::4096] = b'1' * len(x[::4096]); time.sleep(30)",
    "aborts": "os.abort()",
}


@pytest.mark.parametrize("kind", sorted(_CHILDREN))
def test_the_parent_stops_a_query_process_from_outside(kind):
    """The hard stop does not rely on the child: one that runs past the timeout or the
    memory limit is killed, and one that dies by itself is one WarehouseError."""
    import sys
    import time

    from warehouse.queries.limits import QueryLimits
    from warehouse.store.errors import QueryLimitError
    from warehouse.worker import await_answer

    code = f"import os, sys, time; os.write(1, b's'); {_CHILDREN[kind]}"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    limits = QueryLimits(memory_bytes=100 * 10**6, timeout_s=3 if kind == "grows" else 0.3)
    expected = {
        "sleeps": (QueryLimitError, "timeout of 0.3 s"),
        "grows": (QueryLimitError, "memory limit of 100,000,000 bytes"),
        "aborts": (WarehouseError, "stopped before it answered: it was killed by SIGABRT"),
    }[kind]
    start = time.monotonic()
    try:
        with pytest.raises(expected[0], match=expected[1]):
            await_answer(proc.pid, proc.stdout.fileno(), limits)
        assert time.monotonic() - start < 2.5
    finally:
        proc.kill()
        proc.wait()


def test_a_query_stopped_in_the_worker_leaves_no_process_running(w):
    """After a limit, the worker that ran the query is gone (its Polars computation with
    it); the next query starts a new one."""
    from warehouse import worker
    from warehouse.api import Warehouse
    from warehouse.queries.limits import QueryLimits
    from warehouse.store.errors import QueryLimitError

    wh = Warehouse.open(w)
    assert wh.sql("select count(*) as n from prompts")["n"].item() == 6
    first = worker._WORKER[0]
    runaway = "select sum(a.value * b.value) as s from activations a cross join activations b"
    with pytest.raises(QueryLimitError, match="timeout"):
        wh.sql(runaway, limits=QueryLimits(timeout_s=0.05))
    assert first.poll() is not None and not worker._WORKER
    assert wh.sql("select count(*) as n from prompts")["n"].item() == 6
    assert worker._WORKER[0].pid != first.pid


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_the_cli_kills_a_runaway_query_and_leaves_nothing(w, tmp_path, engine):
    """`warehouse query` in its own process: past the limit one error line, exit 2, no
    --output temp file, no DuckDB spill folder, the warehouse unchanged."""
    import sys

    before = _tree_hash(w)
    spill = tmp_path / "tmpdir"  # the command's own temp folder: DuckDB spills there
    spill.mkdir()
    runaway = (
        "select a.value * b.value * c.value as x from activations a "
        "cross join activations b cross join activations c"
    )
    out = tmp_path / "o.csv"
    cmd = [sys.executable, "-m", "warehouse", "query", str(w), runaway, "--engine", engine]
    p = subprocess.run(
        [*cmd, "--timeout", "3s", "--format", "csv", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(spill)},
    )
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == "error: the query ran past its timeout of 3 s and was stopped (--timeout)\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["tmpdir", "w"]
    assert list(spill.iterdir()) == []
    assert _tree_hash(w) == before


def test_hostile_files_are_refused_before_any_read(w):
    """A FIFO among the Parquet files, a link or FIFO as a chunk, a shape of 10^12 rows:
    refused at open or before the read, in milliseconds, never blocking."""
    import time

    from warehouse.api import Warehouse

    os.mkfifo(w / "stats" / "x.parquet")
    with pytest.raises(FormatError, match="not a plain file"):
        Warehouse.open(w)
    (w / "stats" / "x.parquet").unlink()

    chunk = next((w / "activations.zarr").rglob("c/0/0/0"))
    chunk.unlink()
    os.mkfifo(chunk)
    wh = Warehouse.open(w)
    with pytest.raises(FormatError, match="not a plain file"):
        wh.sql("select sum(value) as s from activations")
    chunk.unlink()
    chunk.symlink_to(w / "prompts.parquet")
    with pytest.raises(
        WarehouseError, match="is a symbolic link, not a plain file"
    ):  # DuckDB names the cause
        wh.sql("select sum(value) as s from activations", engine="duckdb")

    m = json.loads((w / "manifest.json").read_text())
    key = next(k for k in m["arrays"] if k.startswith("activations/"))
    m["arrays"][key]["shape"][0] = 10**12
    (w / "manifest.json").write_text(json.dumps(m))
    meta_path = w / m["arrays"][key]["path"] / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] = 10**12
    meta_path.write_text(json.dumps(meta))
    start = time.monotonic()
    with pytest.raises(FormatError, match="row chunk folders, its rows need 1"):
        Warehouse.open(w)
    assert time.monotonic() - start < 2
    meta["shape"][0] = 7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"has shape \(7, 2, 48\) .* in its zarr.json"):
        Warehouse.open(w)


def test_query_text_in_a_selection_is_never_run(w):
    """A selection's sidecar records the SQL it was made with; reading, listing, copying and
    evaluating selections never executes that text."""
    from warehouse.analysis.selections import list_selections, random_like, read_selection

    side = w / "selections" / "cap.json"
    meta = json.loads(side.read_text())
    meta["sql"] = f"copy (select 1) to '{w.parent / 'pwned.csv'}'"
    side.write_text(json.dumps(meta))
    read_selection(w, "cap")
    list_selections(w)
    random_like(w, "ctl", "cap", seed=1)
    assert not (w.parent / "pwned.csv").exists()


# ------------------------------------------------------------------ models and folders


def test_pickled_checkpoints_are_refused(tiny_llama_dir, tmp_path):
    """A model folder with a pickled pytorch_model.bin only: not loaded, and told why."""
    import torch
    from transformers import LlamaForCausalLM

    from warehouse.ingest.models import load_model

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_llama_dir / name).exists():
            shutil.copy(tiny_llama_dir / name, folder / name)
    # The way old checkpoints were saved; written here, never loaded by the project.
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="never pickled"):
        load_model(str(folder))


def test_read_only_warehouse_cannot_be_written(w, monkeypatch):
    """Writers need the lock file; on a read-only folder (a shared mount) they stop with a
    clear message before anything else, and readers work as before."""
    from warehouse.analysis.selections import select
    from warehouse.api import Warehouse
    from warehouse.store import lock as lock_mod

    real_open = os.open

    def ro_open(path, flags, *a, **kw):
        if str(path).endswith(lock_mod.LOCK) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(lock_mod.os, "open", ro_open)
    with pytest.raises(WarehouseError, match="is read-only here"):
        select(w, "new", "capital", top=2)
    assert not (w / "selections" / "new.json").exists()
    assert Warehouse.open(w).sql("select count(*) as n from prompts")["n"].item() == 6
