"""Benchmark: bytes a share sends for the same queries from a plain static server
(`python -m http.server`, no byte ranges) and from `warehouse serve` (byte ranges).

    python bench/query.py          # builds /tmp/relation-warehouse-bench-query-300 once
    python bench/share_bytes.py /tmp/relation-warehouse-bench-query-300 --layer 1 --neuron 42

Both servers run in this process on 127.0.0.1 and count the body bytes they send; each query
runs on a fresh `Warehouse.open(URL)` against a server that has sent nothing yet, and is
checked equal to the same query on the local folder.
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from warehouse.api import Warehouse
from warehouse.serve import ServeConfig, make_server

QUERIES = {
    "top tokens": (
        "select a.token_row, t.token, p.text, a.value from activations a "
        "join tokens t on t.token_row = a.token_row join prompts p on p.prompt_id = t.prompt_id "
        "where a.site = 'ffn.act' and a.layer = {layer} and a.neuron = {neuron} "
        "order by a.value desc limit 10"
    ),
    "one neuron's responses": (
        "select prompt_row, value from responses where site = 'ffn.act' and pooling = 'mean' "
        "and layer = {layer} and neuron = {neuron} order by prompt_row limit 10"
    ),
}


class _Counted(http.server.SimpleHTTPRequestHandler):
    sent = 0

    def log_message(self, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:  # what http.server sends of a file
        data = source.read()
        type(self).sent += len(data)
        outputfile.write(data)


@contextmanager
def plain_server(w: Path) -> Iterator[tuple[str, object]]:
    """`python -m http.server` in the warehouse's parent folder, in a thread."""

    def handler(*a, **kw):
        return _Counted(*a, directory=str(w.parent), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    _Counted.sent = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{w.name}", lambda: _Counted.sent
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def warehouse_server(w: Path) -> Iterator[tuple[str, object]]:
    server = make_server(ServeConfig(w, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.url, lambda: server.sent
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--neuron", type=int, default=42)
    args = ap.parse_args()
    w = args.warehouse.resolve()
    local = Warehouse.open(w)
    print(f"{'query':<24} {'server':<18} {'bytes sent':>14} {'seconds':>8}")
    for name, template in QUERIES.items():
        q = template.format(layer=args.layer, neuron=args.neuron)
        expect = local.sql(q)
        for label, start in (("http.server", plain_server), ("warehouse serve", warehouse_server)):
            with start(w) as (url, sent):
                t = time.perf_counter()
                got = Warehouse.open(url).sql(q)
                seconds = time.perf_counter() - t
                assert got.equals(expect), (name, label)
                print(f"{name:<24} {label:<18} {sent():>14,} {seconds:>8.2f}")


if __name__ == "__main__":
    main()
