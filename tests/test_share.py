"""Sharing: open a warehouse over HTTP / memory:// / zip read-only, and `warehouse export`."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pytest

from warehouse.analysis.evaluate import EvalConfig, run_eval
from warehouse.analysis.selections import select
from warehouse.analysis.stats import run_stats
from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.checksums import verify
from warehouse.store.errors import WarehouseError
from warehouse.store.export import ExportOptions, export

FACTS = [
    ("country_capital", "en", "France", "Paris", ["The capital city of {subject} is"]),
    ("country_capital", "en", "Japan", "Tokyo", ["The capital city of {subject} is"]),
    ("country_capital", "de", "Frankreich", "Paris", ["Die Hauptstadt von {subject} ist"]),
    ("person_mother", "en", "Barack Obama", "Ann Dunham", ["The mother of {subject} is"]),
    ("person_mother", "en", "Ada Lovelace", "Anne Milbanke", ["Who is the mother of {subject}?"]),
]

QUERIES = [
    "select count(*) as n, sum(value) as s from responses where layer = 1 and neuron < 10",
    "select token_row, value from activations where neuron_id = 50 order by token_row",
    "select relation, count(*) as n from prompts group by relation order by relation",
    "select relation, language, site, rank, neuron_id, ap from stats where rank <= 3 "
    "order by relation, language, site, rank",
    "select selection, count(*) as n from evals group by selection order by selection",
]


def write_facts(path: Path, facts=FACTS) -> Path:
    path.write_text(
        "".join(
            json.dumps(dict(relation=r, language=lg, subject=s, object=o, templates=t)) + "\n"
            for r, lg, s, o, t in facts
        )
    )
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_llama_dir) -> Path:
    """A complete warehouse with two sites, stats, a selection, a baseline and an eval."""
    tmp = tmp_path_factory.mktemp("share")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAREHOUSE_CACHE", str(tmp / "cache"))
        w = tmp / "w"
        ingest(
            IngestConfig(
                out=w,
                model=str(tiny_llama_dir),
                dataset=str(write_facts(tmp / "facts.jsonl")),
                sites="ffn.act,ffn.up",
                batch_size=2,
                token_chunk=8,
                prompt_chunk=2,
            ),
            show_progress=False,
        )
        run_stats(w, split="all", show_progress=False)
        select(w, "cc", "country_capital", "all", "ffn.act", "mean", "all", top=5)
        run_eval(w, EvalConfig(selection="cc", controls=1, split="all"), show_progress=False)
    return w


class _Logged(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # quiet, but remember what was fetched
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


class _Ranged(_Logged):
    """A server that answers `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` with 206, as S3,
    nginx or Apache do (plain http.server sends the whole file)."""

    ranges: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        want = self.headers.get("Range")
        type(self).ranges.append((self.path, want))
        path = Path(self.translate_path(self.path))
        if not want or not path.is_file():
            super().do_GET()
            return
        type(self).requests.append(self.path)
        data = path.read_bytes()
        a, b = want.removeprefix("bytes=").split("-")
        start, end = (len(data) - int(b), len(data)) if not a else (int(a), int(b or -1) + 1)
        end = len(data) if end <= 0 else min(end, len(data))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self.wfile.write(data[start:end])


def _serve(source: Path, handler_cls: type):
    def handler(*a, **kw):
        return handler_cls(*a, directory=str(source.parent), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Logged.requests = []
    _Ranged.ranges = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{source.name}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(source: Path):
    """The warehouse's parent folder served over HTTP on 127.0.0.1 (a random free port) by
    plain http.server, which ignores range requests."""
    yield from _serve(source, _Logged)


@pytest.fixture
def served_ranges(source: Path):
    """The same, by a server that answers range requests."""
    yield from _serve(source, _Ranged)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "warehouse", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


# ------------------------------------------------------------------------------ open anywhere


def test_http_query_from_fresh_process_equals_local(source: Path, served: str):
    local = Warehouse.open(source)
    for q in QUERIES[:2]:
        out = _cli("query", served, q, "--format", "json")
        assert out.returncode == 0, out.stderr
        remote = pl.DataFrame(json.loads(out.stdout))
        expect = local.sql(q)
        assert remote.height == expect.height > 0
        np.testing.assert_allclose(
            remote.to_numpy().astype(float), expect.to_numpy().astype(float), rtol=1e-6
        )
    info = _cli("info", served)
    assert info.returncode == 0 and "complete" in info.stdout
    check = _cli("verify", served)
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr


def test_parquet_views_over_a_server_without_range_requests(source: Path, served: str):
    """`python -m http.server` answers a byte-range request with the whole file; the Parquet
    views are then read whole instead of failing in fsspec's seekable file."""
    from warehouse.store.location import Location

    assert Location.of(served).supports_ranges() is False
    q = "select relation, count(*) as n from prompts group by relation order by relation"
    for engine in ("polars", "duckdb"):
        got = Warehouse.open(served).sql(q, engine=engine)
        assert got.equals(Warehouse.open(source).sql(q, engine=engine)) and got.height > 0
    joined = "select count(*) as n from tokens t join prompts p on p.prompt_id = t.prompt_id"
    assert Warehouse.open(served).sql(joined).item() == Warehouse.open(source).sql(joined).item()


def test_http_reads_only_the_chunks_a_query_needs(source: Path, served: str):
    w = Warehouse.open(served)
    _Logged.requests.clear()
    got = w.sql(
        "select value from responses where site = 'ffn.act' and pooling = 'mean' "
        "and layer = 1 and prompt_row < 2"
    )
    assert got.height == 2 * 48
    chunks = [p for p in _Logged.requests if "/c/" in p]
    # responses are chunked (2 prompts, 1 layer, 48 neurons) and a shard holds both layers of
    # 2 prompts: one chunk is needed, and a server without ranges sends its shard once
    assert chunks == [f"/{source.name}/responses.zarr/ffn.act/mean/c/0/0/0"]
    assert not any("activations.zarr" in p or "ffn.up" in p for p in _Logged.requests)
    expect = Warehouse.open(source).sql(
        "select value from responses where site = 'ffn.act' and pooling = 'mean' "
        "and layer = 1 and prompt_row < 2"
    )
    assert got.equals(expect)


def test_http_ranges_fetch_one_chunk_of_a_shard(source: Path, served_ranges: str):
    """With range requests, a query fetches the shard's index and the one chunk it needs,
    not the shard."""
    from conftest import shard_chunks

    w = Warehouse.open(served_ranges)
    _Ranged.ranges.clear()
    q = (
        "select value from responses where site = 'ffn.act' and pooling = 'mean' "
        "and layer = 1 and prompt_row < 2"
    )
    got = w.sql(q)
    assert got.equals(Warehouse.open(source).sql(q))
    shard = source / "responses.zarr/ffn.act/mean/c/0/0/0"
    offset, length = shard_chunks(shard)[(1, 0)]
    index_size = 2 * 16 + 4  # 2 chunks (layers) per shard
    url = f"/{source.name}/responses.zarr/ffn.act/mean/c/0/0/0"
    reads = sorted(r for p, r in _Ranged.ranges if "/c/" in p and p == url)
    assert reads == sorted([f"bytes=-{index_size}", f"bytes={offset}-{offset + length - 1}"])
    assert not any("/c/" in p and p != url for p, _ in _Ranged.ranges)


def test_memory_and_duckdb_equal_local(source: Path):
    fs = fsspec.filesystem("memory")
    for path in source.rglob("*"):
        if path.is_file():
            fs.pipe(f"/shared/w/{path.relative_to(source).as_posix()}", path.read_bytes())
    try:
        remote, local = Warehouse.open("memory://shared/w"), Warehouse.open(source)
        assert remote.remote and remote.tables() == local.tables()
        for q in QUERIES:
            assert remote.sql(q).equals(local.sql(q)), q
        q = "select relation, count(*) as n from prompts group by relation order by relation"
        assert remote.sql(q, engine="duckdb").equals(local.sql(q, engine="duckdb"))
        assert verify("memory://shared/w").ok
        fs.pipe("/shared/w/prompts.parquet", b"damaged")
        report = verify("memory://shared/w")
        assert any("prompts.parquet does not match" in p for p in report.problems)
    finally:
        fs.rm("/shared", recursive=True)


def test_writing_commands_refuse_remote(source: Path, served: str, tmp_path: Path):
    for args in (
        ["stats", served],
        ["eval", served, "--baseline"],
        ["select", served, "--name", "x", "--relation", "country_capital", "--top", "1"],
        ["ingest", "--out", "s3://bucket/w"],
    ):
        out = _cli(*args)
        assert out.returncode != 0
        assert "read-only" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    with pytest.raises(WarehouseError, match="not a warehouse or not reachable"):
        Warehouse.open(served + "-missing")


# ------------------------------------------------------------------------------ export


def test_export_folder_is_verified_and_equal(source: Path, tmp_path: Path):
    dest = tmp_path / "copy"
    m = export(source, dest, ExportOptions(), show_progress=False)
    assert verify(dest).ok
    assert m.fingerprint == json.loads((source / "manifest.json").read_text())["fingerprint"]
    assert sorted(m.files) == sorted(
        str(p.relative_to(source))
        for d in ("stats", "selections", "evals")
        for p in (source / d).iterdir()
    )
    for q in QUERIES:
        assert Warehouse.open(dest).sql(q).equals(Warehouse.open(source).sql(q)), q
    # a damaged derived file in the copy is found by verify
    victim = dest / next(iter(sorted(m.files)))
    victim.write_bytes(victim.read_bytes() + b"x")
    assert any("does not match its checksum" in p for p in verify(dest).problems)


def test_export_zip_pooled_subset(source: Path, tmp_path: Path):
    dest = tmp_path / "share.zip"
    m = export(
        source,
        dest,
        ExportOptions(sites=["ffn.act"], pooled_only=True, zip=True),
        show_progress=False,
    )
    assert zipfile.is_zipfile(dest)
    assert sorted(m.arrays) == [f"responses/ffn.act/{p}" for p in ("last", "max", "mean")]
    assert m.capture.mode == "pooled" and m.capture.sites == ["ffn.act"]
    assert not any("ffn.up" in f for f in m.files)
    report = verify(dest)
    assert report.ok, report.problems
    w = Warehouse.open(dest)
    assert w.tables() == ["evals", "prompts", "responses", "selections", "stats", "tokens"]
    q = "select prompt_id, neuron_id, value from responses where site = 'ffn.act' and layer = 0"
    assert w.sql(q).equals(Warehouse.open(source).sql(q))
    # the same export again gives the same bytes (fixed zip timestamps and order)
    again = tmp_path / "again.zip"
    export(
        source,
        again,
        ExportOptions(sites=["ffn.act"], pooled_only=True, zip=True),
        show_progress=False,
    )
    a, b = zipfile.ZipFile(dest), zipfile.ZipFile(again)
    assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
    assert all(a.read(n) == b.read(n) for n in a.namelist() if n != "manifest.json")
    # zip:// URL form opens it too
    assert Warehouse.open(f"zip://::{dest}").sql(q).equals(w.sql(q))
    out = _cli("verify", str(dest))
    assert out.returncode == 0 and "OK" in out.stdout


def test_export_refusals(source: Path, tmp_path: Path):
    with pytest.raises(WarehouseError, match="ffn.gate not in this warehouse"):
        export(source, tmp_path / "a", ExportOptions(sites=["ffn.gate"]), show_progress=False)
    with pytest.raises(WarehouseError, match="unknown table"):
        export(source, tmp_path / "a", ExportOptions(tables=["nope"]), show_progress=False)
    with pytest.raises(WarehouseError, match="already exists"):
        export(source, tmp_path, ExportOptions(), show_progress=False)
    with pytest.raises(WarehouseError, match="ending in .zip"):
        export(source, tmp_path / "a", ExportOptions(zip=True), show_progress=False)
    with pytest.raises(WarehouseError, match="read-only"):
        export(source, "memory://x/y", ExportOptions(), show_progress=False)
    # a damaged source is refused and leaves nothing behind
    bad = Path(shutil.copytree(source, tmp_path / "bad"))
    chunk = bad / "responses.zarr/ffn.act/mean/c/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\0")
    with pytest.raises(WarehouseError, match="does not match its checksum"):
        export(bad, tmp_path / "out", ExportOptions(), show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_export_and_merge_from_the_command_line(source: Path, tmp_path: Path):
    dest = tmp_path / "share.zip"
    out = _cli("export", str(source), str(dest), "--zip", "--pooled-only", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "verify it with" in out.stdout and zipfile.is_zipfile(dest)
    again = _cli("export", str(source), str(dest), "--zip", "--quiet")
    assert again.returncode != 0 and "already exists" in again.stderr
    merged = _cli("merge", str(dest), str(source), "--out", str(tmp_path / "m"), "--quiet")
    assert merged.returncode != 0 and "cannot merge" in merged.stderr, merged.stderr
