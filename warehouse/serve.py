"""`warehouse serve W`: one local warehouse over HTTP, read-only, with byte ranges, so that
others open it with `Warehouse.open("http://HOST:PORT")` and fetch only the chunks and row
groups their queries need (a plain `python -m http.server` ignores ranges and sends whole
files).

What it sends: plain files and folders under W, nothing else. A path is taken apart into
names; a name that is empty, `.`, `..`, hidden (`.lock`, an unfinished export's temp
folder) or holds a backslash or NUL is not found; every folder on the way must be a real
folder and the file a plain file (no symbolic link, FIFO or device is followed or opened;
`open_regular`), so no request reaches a file outside W. GET and HEAD only: it has no
method that writes. Directory listings (HTML, as fsspec reads them) name the plain files and
folders only. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import email.utils
import html
import os
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from warehouse.store.errors import WarehouseError
from warehouse.store.version import __version__

BLOCK = 1 << 20  # bytes written per send


@dataclass(frozen=True)
class ServeConfig:
    warehouse: str | Path
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    log: bool = False  # one line per request on stderr


class WarehouseServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int], log: bool) -> None:
        self.root, self.log = root, log
        self.sent = 0  # body bytes sent, all requests together
        self.requests = 0
        self.counter_lock = threading.Lock()
        super().__init__(address, _Handler)

    def count(self, n: int) -> None:
        with self.counter_lock:
            self.sent += n

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(cfg: ServeConfig) -> WarehouseServer:
    """A server for the warehouse folder `cfg.warehouse`, bound and listening; a URL, a zip
    file or a folder without a warehouse manifest is refused."""
    from warehouse.store.location import Location, is_remote
    from warehouse.store.manifest import load_manifest

    if is_remote(str(cfg.warehouse)):
        raise WarehouseError(
            f"{cfg.warehouse} is a URL or a zip file; `warehouse serve` serves a local "
            "warehouse folder (unzip it first)"
        )
    root = Path(cfg.warehouse).resolve()
    load_manifest(Location.of(root))  # names what is wrong with a folder that is not one
    try:
        return WarehouseServer(root, (cfg.host, cfg.port), cfg.log)
    except OSError as e:
        raise WarehouseError(
            f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}; choose another --port "
            "(0 picks a free one)"
        ) from None


def _say(line: str) -> None:
    print(line, flush=True)


def serve(cfg: ServeConfig, say: Callable[[str], None] = _say) -> None:
    """Serve until interrupted (Ctrl-C), then say how much was sent."""
    server = make_server(cfg)
    say(f"serving {cfg.warehouse} read-only at {server.url} (Ctrl-C stops)")
    say(f'  open it with: warehouse info {server.url}   or   Warehouse.open("{server.url}")')
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    say(f"stopped: {server.requests} requests, {server.sent:,} bytes sent")


def request_names(raw_path: str) -> list[str] | None:
    """The names of a request path, or None when one may not be served (empty, `.`, `..`,
    hidden, or holding a backslash or NUL)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    names = [n for n in path.split("/") if n]
    if any(n.startswith(".") or "\\" in n or "\0" in n for n in names):
        return None
    return names


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end) exclusive of one `Range: bytes=…` request; None to send the whole file
    (no header, or one this server does not take: several ranges, other units, bad syntax);
    "unsatisfiable" for a range that starts past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header.removeprefix("bytes=").strip().partition("-")
    if not sep:
        return None
    if not first:  # bytes=-n: the last n bytes
        if not last.isdigit():
            return None
        n = int(last)
        return (max(size - n, 0), size) if n > 0 and size > 0 else "unsatisfiable"
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last) + 1, size) if last else size


class _Handler(BaseHTTPRequestHandler):
    server: WarehouseServer
    server_version = f"relation-warehouse/{__version__}"
    protocol_version = "HTTP/1.1"  # keep-alive: many small range reads on one connection
    timeout = 120  # seconds a connection may sit idle before its thread lets it go

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def log_message(self, format: str, *args: object) -> None:
        if self.server.log:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _respond(self, body: bool) -> None:
        with self.server.counter_lock:
            self.server.requests += 1
        names = request_names(self.path)
        target = self._walk(names) if names is not None else None
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        mode = os.lstat(target).st_mode
        if stat.S_ISDIR(mode):
            if not urllib.parse.urlsplit(self.path).path.endswith("/"):
                self._redirect_to_folder()
            else:
                self._listing(target, names or [], body)
        elif stat.S_ISREG(mode):
            self._file(target, body)
        else:
            self.send_error(HTTPStatus.FORBIDDEN, "not a plain file")

    def _walk(self, names: list[str]) -> Path | None:
        """The path of `names` under the root, when every folder on the way is a real folder
        and the last name exists; None otherwise."""
        path = self.server.root
        for i, name in enumerate(names):
            path = path / name
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                return None
            if i < len(names) - 1 and not stat.S_ISDIR(mode):
                return None
        return path

    def _redirect_to_folder(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", urllib.parse.urlunsplit(parts._replace(path=parts.path + "/")))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _listing(self, folder: Path, names: list[str], body: bool) -> None:
        entries = []
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                kind = e.stat(follow_symlinks=False).st_mode
                if e.name.startswith(".") or not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
                    continue
                name = e.name + ("/" if stat.S_ISDIR(kind) else "")
                entries.append(f'<li><a href="{urllib.parse.quote(name)}">{html.escape(name)}</a>')
        title = html.escape("/" + "/".join(names))
        page = f"<!DOCTYPE html><title>{title}</title><ul>\n" + "\n".join(entries) + "\n</ul>\n"
        data = page.encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
            self.server.count(len(data))

    def _file(self, path: Path, body: bool) -> None:
        from warehouse.store.location import open_regular

        try:
            f = open_regular(path)
        except (OSError, WarehouseError):
            self.send_error(HTTPStatus.FORBIDDEN, "not a plain file")
            return
        with f:
            st = os.fstat(f.fileno())
            want = byte_range(self.headers.get("Range"), st.st_size)
            if want == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = want if isinstance(want, tuple) else (0, st.st_size)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if want else HTTPStatus.OK)
            if want:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{st.st_size}")
            self.send_header("Content-Type", _content_type(path.name))
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.end_headers()
            if body:
                self._copy(f, start, end)

    def _copy(self, f, start: int, end: int) -> None:
        f.seek(start)
        left = end - start
        while left > 0:
            block = f.read(min(BLOCK, left))
            if not block:  # the file shrank while it was sent: the client sees a short body
                break
            self.wfile.write(block)
            self.server.count(len(block))
            left -= len(block)


def _content_type(name: str) -> str:
    return "application/json" if name.endswith(".json") else "application/octet-stream"
