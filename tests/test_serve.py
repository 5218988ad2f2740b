"""`warehouse serve`: read-only, byte ranges, plain files under the folder only; and what a
share costs over it against a plain static server (`python -m http.server`)."""

from __future__ import annotations

import http.client
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_share import source  # noqa: F401  (the module's warehouse fixture)

from warehouse.api import Warehouse
from warehouse.serve import ServeConfig, byte_range, make_server, request_names
from warehouse.store.errors import WarehouseError
from warehouse.store.whole_files import WHOLE_FILES, WholeFiles

TOP_TOKENS = (
    "select a.token_row, t.token, p.text, a.value from activations a "
    "join tokens t on t.token_row = a.token_row join prompts p on p.prompt_id = t.prompt_id "
    "where a.site = 'ffn.act' and a.layer = 1 and a.neuron = 42 order by a.value desc limit 10"
)


@pytest.fixture
def copy(source: Path, tmp_path: Path) -> Path:  # noqa: F811
    return Path(shutil.copytree(source, tmp_path / "w"))


@pytest.fixture
def served(copy: Path):
    server = make_server(ServeConfig(copy, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def fetch(server, path: str, method: str = "GET", **headers: str):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_request_names_and_byte_ranges():
    assert request_names("/a/b%20c/zarr.json?x=1") == ["a", "b c", "zarr.json"]
    assert request_names("/") == []
    bad = ("/../x", "/a/%2e%2e/b", "/.lock", "/a/.w.tmp-1/x", "/a%5cb", "/a%00")
    assert [request_names(p) for p in bad] == [None] * 6
    size = 100
    assert [
        byte_range(h, size)
        for h in (None, "bytes=0-9", "bytes=90-", "bytes=-5", "bytes=95-200", "bytes=-500")
    ] == [None, (0, 10), (90, 100), (95, 100), (95, 100), (0, 100)]
    assert [
        byte_range(h, size)
        for h in ("bytes=100-", "bytes=-0", "bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=x-")
    ] == ["unsatisfiable", "unsatisfiable", None, None, None, None]


def test_gets_heads_and_ranges(served, copy: Path):
    data = (copy / "manifest.json").read_bytes()
    status, headers, body = fetch(served, "/manifest.json")
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
    status, headers, body = fetch(served, "/manifest.json", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
    status, headers, body = fetch(served, "/manifest.json", Range="bytes=10-19")
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert fetch(served, "/manifest.json", Range="bytes=-7")[2] == data[-7:]
    status, headers, _ = fetch(served, "/manifest.json", Range=f"bytes={len(data)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    assert fetch(served, "/manifest.json", Range="bytes=0-1,4-5")[::2] == (200, data)
    assert fetch(served, "/responses.zarr")[0] == 301
    status, _, listing = fetch(served, "/responses.zarr/")
    assert status == 200 and b'href="ffn.act/"' in listing
    for method in ("PUT", "POST", "DELETE"):
        assert fetch(served, "/manifest.json", method)[0] == 501
    assert (copy / "manifest.json").read_bytes() == data


def test_refuses_links_hidden_files_and_paths_out(served, copy: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (copy / "stats").mkdir(exist_ok=True)
    (copy / "stats" / "leak.parquet").symlink_to(secret)
    (copy / "linked").symlink_to(tmp_path)
    (copy / ".lock").write_text("123")
    os.mkfifo(copy / "pipe")
    for path, status in [
        ("/stats/leak.parquet", 403),
        ("/linked/secret.txt", 404),
        ("/.lock", 404),
        ("/pipe", 403),  # answered at once: a FIFO is never opened
        ("/../secret.txt", 404),
        ("/%2e%2e/secret.txt", 404),
        ("/nothing.json", 404),
    ]:
        got, _, body = fetch(served, path)
        assert (path, got) == (path, status) and b"private" not in body
    listing = fetch(served, "/")[2] + fetch(served, "/stats/")[2]
    assert b"leak" not in listing and b"linked" not in listing and b".lock" not in listing
    assert b"pipe" not in listing and b'href="manifest.json"' in listing


def test_refuses_what_is_not_a_local_warehouse(tmp_path: Path, served):
    with pytest.raises(WarehouseError, match="serves a local warehouse folder"):
        make_server(ServeConfig("http://example.org/w"))
    with pytest.raises(WarehouseError, match="no such warehouse"):
        make_server(ServeConfig(tmp_path / "nothing"))
    with pytest.raises(WarehouseError, match="cannot listen on 127.0.0.1:"):
        make_server(ServeConfig(served.root, port=served.server_address[1]))


def test_queries_over_warehouse_serve_equal_local(served, copy: Path):
    from test_share import QUERIES

    remote, local = Warehouse.open(served.url), Warehouse.open(copy)
    for q in [*QUERIES, TOP_TOKENS]:
        got = remote.sql(q)
        assert got.height > 0 and got.equals(local.sql(q)), q


class _Counted(http.server.SimpleHTTPRequestHandler):
    """Plain http.server (no byte ranges), counting the bytes and the GETs it answers."""

    sent = listed = 0
    gets: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).gets.append(self.path)
        super().do_GET()

    def copyfile(self, file, outputfile) -> None:
        data = file.read()
        type(self).sent += len(data)
        if isinstance(file, io.BytesIO):  # a folder's listing
            type(self).listed += len(data)
        outputfile.write(data)


def test_bytes_of_the_top_tokens_query_on_both_servers(served, copy: Path, monkeypatch):
    """A plain static server sends each file the query touches whole, once (no file twice,
    existence checks by HEAD); `warehouse serve` sends shard indexes and chunks, less."""
    plain = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: _Counted(*a, directory=str(copy.parent), **kw)
    )
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    _Counted.sent, _Counted.listed, _Counted.gets = 0, 0, []
    try:
        url = f"http://127.0.0.1:{plain.server_address[1]}/{copy.name}"
        fetches = WHOLE_FILES.fetches
        got = Warehouse.open(url).sql(TOP_TOKENS, isolate=False)  # all reads in this process
    finally:
        plain.shutdown()
        plain.server_close()
    expect = Warehouse.open(copy).sql(TOP_TOKENS)
    assert got.equals(expect) and got.height == 10
    files = [g.removeprefix(f"/{copy.name}/") for g in _Counted.gets]
    files = [f for f in files if (copy / f).is_file()]  # not the folders' listings
    assert len(files) == len(set(files)) == WHOLE_FILES.fetches - fetches + 1  # + the probe
    assert {"manifest.json", "prompts.parquet", "tokens.parquet"} <= set(files)
    shards = sorted(f for f in files if "/c/" in f)
    assert shards == sorted(
        str(p.relative_to(copy))
        for p in (copy / "activations.zarr/ffn.act/c").rglob("*")
        if p.is_file()
    )
    assert _Counted.sent - _Counted.listed == sum((copy / f).stat().st_size for f in files)

    from warehouse import serve

    seen: list[tuple[str, str, str | None]] = []
    respond = serve._Handler._respond

    def logged(self, body: bool) -> None:
        seen.append((self.command, self.path, self.headers.get("Range")))
        respond(self, body)

    monkeypatch.setattr(serve._Handler, "_respond", logged)
    before = served.sent
    assert Warehouse.open(served.url).sql(TOP_TOKENS, isolate=False).equals(expect)
    ranged = served.sent - before
    whole = [p for m, p, r in seen if m == "GET" and not r and (copy / p[1:]).is_file()]
    assert len(whole) == len(set(whole)) and not any("/c/" in p for p in whole), seen
    assert any("/c/" in p and r for _, p, r in seen)  # shards are read by range
    assert 0 < ranged < _Counted.sent
    print(f"top tokens: http.server {_Counted.sent:,} bytes, warehouse serve {ranged:,} bytes")


def test_whole_files_fetch_once_under_concurrency():
    cache = WholeFiles()
    calls: list[str] = []

    def slow(url: str) -> bytes:
        calls.append(url)
        time.sleep(0.05)
        return url.encode()

    threads = [
        threading.Thread(target=cache.get, args=(u, lambda u=u: slow(u)))
        for u in ("a", "a", "a", "bb", "bb")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["a", "bb"] and cache.fetches == 2


def test_whole_files_drop_the_least_recently_used_past_the_cap():
    cache = WholeFiles(cap_bytes=10)
    for url in ("a", "bb", "a"):
        assert cache.get(url, lambda url=url: url.encode()) == url.encode()
    cache.get("c" * 8, lambda: b"c" * 8)  # 1 + 2 + 8 > 10: "bb", used least recently, goes
    assert list(cache._kept) == ["a", "c" * 8] and cache.fetches == 3
    assert cache.get("big", lambda: b"x" * 11) == b"x" * 11  # over the cap: not kept
    assert list(cache._kept) == ["a", "c" * 8] and cache.fetches == 4


def test_serve_command_line(copy: Path):
    p = subprocess.Popen(
        [sys.executable, "-m", "warehouse", "serve", str(copy), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = p.stdout.readline()
        assert first.startswith(f"serving {copy} read-only at http://127.0.0.1:"), first
        url = first.split(" at ")[1].split()[0]
        assert Warehouse.open(url).sql("select count(*) as n from prompts").item() == 5
    finally:
        p.send_signal(2)  # Ctrl-C
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and err == "", err
    assert out.splitlines()[-1].startswith("stopped: ") and "bytes sent" in out


def test_existence_checks_send_no_body(served, monkeypatch):
    """fsspec's http `exists`/`isfile` GET the whole file; a warehouse's send a HEAD."""
    from warehouse import serve
    from warehouse.store.location import Location

    seen: list[str] = []
    respond = serve._Handler._respond

    def logged(self, body: bool) -> None:
        seen.append(f"{self.command} {self.path}")
        respond(self, body)

    monkeypatch.setattr(serve._Handler, "_respond", logged)
    loc = Location.of(served.url)
    before = served.sent
    assert [loc.isfile("prompts.parquet"), loc.exists("tokens.parquet")] == [True, True]
    assert [loc.isfile("nothing.parquet"), loc.exists("nothing")] == [False, False]
    assert loc.fs.exists(f"{served.url}/manifest.json")  # pyarrow and zarr ask fs directly
    assert served.sent == before and all(s.startswith("HEAD ") for s in seen), seen


def test_array_reads_only_its_chunks_over_http(served, copy: Path, monkeypatch):
    """`Warehouse.array` over `warehouse serve`: each shard's index and the one chunk that
    holds the layer and neuron, nothing of other sites or arrays."""
    from conftest import shard_chunks

    from warehouse import serve

    seen: list[tuple[str, str | None]] = []
    respond = serve._Handler._respond

    def logged(self, body: bool) -> None:
        seen.append((self.path, self.headers.get("Range")))
        respond(self, body)

    w = Warehouse.open(served.url)
    monkeypatch.setattr(serve._Handler, "_respond", logged)
    got = w.array("ffn.act", layer=1, neurons=42)
    assert got.identical(Warehouse.open(copy).array("ffn.act", layer=1, neurons=42))
    shards = sorted((copy / "activations.zarr/ffn.act/c").rglob("*"))
    want = []
    for shard in (s for s in shards if s.is_file()):
        offset, length = shard_chunks(shard)[(1, 0)]
        index = len(shard_chunks(shard)) * 16 + 4
        url = "/" + str(shard.relative_to(copy))
        want += [(url, f"bytes=-{index}"), (url, f"bytes={offset}-{offset + length - 1}")]
    chunk_reads = [(p, r) for p, r in seen if "/c/" in p]
    assert sorted(chunk_reads) == sorted(want)
