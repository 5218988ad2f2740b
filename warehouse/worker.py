"""The hard stop: a query runs in a child process, which is killed past its limits.

Neither engine can be stopped from inside the process that runs it (Polars' `cancel()` does
not stop a running computation; an allocation that fails aborts the process), so
`Warehouse.sql` and `warehouse query` run the query in a child and watch it from outside:
its elapsed time and its resident memory (Linux `/proc/<pid>/statm`), every 10 ms. Past
either limit the child gets SIGKILL, its leftovers (a half-written `--output` temp file,
DuckDB's spill folder) are removed, and the caller gets a `QueryLimitError`; a child that
dies by itself (out of memory, a crash in an engine) becomes one `WarehouseError`.

Two kinds of child, one protocol:
- **fork**: the `warehouse query` command forks itself before any engine is imported (a
  process with one thread forks safely); the child imports, runs and answers, then exits.
  The console script forks this child first of all (`prefork`), so that its imports run
  while the parent imports the CLI and parses the arguments; it then waits for its request.
- **worker**: elsewhere (a Python process where the engines' threads already run), one
  `python -m warehouse.worker` per process, started at the first query and reused
  while its queries end normally; a killed one is replaced at the next query.
A `memory://` warehouse lives in the caller's memory only, so it is queried in-process, with
the in-process limits of `warehouse.queries.limits`.

`Warehouse.sql` sends the manifest it was opened with (`as_of`), so the child reads the rows
that snapshot had committed (a warehouse read during an ingest), not newer ones.

Protocol: a request is 4 bytes of length and a JSON object. The child writes b"s" once it is
ready to run (imports done; memory is counted from here), b"d" when the result is computed
(the limits stop applying: sending it is not the query), then one frame: a kind byte, 8
bytes of length, the payload (Arrow IPC of a frame, text, or a JSON error).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from warehouse.queries.limits import (
    POLL_S,
    QueryLimits,
    memory_message,
    resident_bytes,
    timeout_message,
)
from warehouse.store import errors
from warehouse.store.collector import frozen_imports
from warehouse.store.errors import QueryLimitError, WarehouseError

READY, DONE = b"s", b"d"
FRAME = 9  # kind byte + 8 bytes of length


# ------------------------------------------------------------------------------ the child


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(8, "big") + payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def answer(request: dict[str, Any], fd: int) -> None:
    """Run one request in this process and write the marks and the answer to `fd`."""
    try:
        from warehouse.api import Warehouse
        from warehouse.query import run_query

        limits = QueryLimits(int(request["memory_bytes"]), float(request["timeout_s"]))
        _write_all(fd, READY)
        if request["op"] == "sql":
            df = Warehouse.open(request["root"], as_of=request.get("as_of")).sql(
                request["sql"], engine=request["engine"], limits=limits, isolate=False
            )
            _write_all(fd, DONE)
            buf = io.BytesIO()
            df.write_ipc_stream(buf)
            out = _frame(b"A", buf.getvalue())
        else:
            output = Path(request["output"]) if request.get("output") else None
            args = (request["root"], request["sql"], request["fmt"], output)
            text = run_query(*args, engine=request["engine"], limits=limits)
            _write_all(fd, DONE)
            out = _frame(b"N", b"") if text is None else _frame(b"T", text.encode())
    except Exception as e:  # every failure goes back to the caller, which raises it there
        kind = b"E" if isinstance(e, WarehouseError) else b"X"
        out = _frame(kind, json.dumps({"type": _type_name(e), "message": str(e)}).encode())
    _write_all(fd, out)


def _type_name(e: Exception) -> str:
    """The error's class name, or for another library's error the nearest built-in class
    it derives from (pyarrow's ArrowInvalid is a ValueError), which the caller can raise."""
    if isinstance(e, WarehouseError):
        return type(e).__name__
    return next(c.__name__ for c in type(e).__mro__ if getattr(builtins, c.__name__, None) is c)


def _request_frame(request: dict[str, Any]) -> bytes:
    """A request as it goes down a pipe: 4 bytes of length, then JSON (`_read_request`)."""
    body = json.dumps(request).encode()
    return len(body).to_bytes(4, "big") + body


def _read_request(fd: int) -> dict[str, Any] | None:
    """The next request on `fd` (`_request_frame`), or None at its end."""
    head = _read_exact(fd, 4)
    return json.loads(_read_exact(fd, int.from_bytes(head, "big"))) if head else None


def _read_exact(fd: int, n: int) -> bytes:
    """`n` bytes from `fd` (a pipe may hand a long request over in parts); b"" at its end."""
    buf = bytearray()
    while len(buf) < n and (data := os.read(fd, n - len(buf))):
        buf += data
    return bytes(buf)


def serve() -> None:
    """`python -m warehouse.worker`: answer requests on stdin until it closes."""
    fd_in, fd_out = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    while (request := _read_request(fd_in)) is not None:
        answer(request, fd_out)


def _serve_warm(fd_in: int, fd_out: int) -> NoReturn:
    """The warm child (see `prefork`): import the engines, then answer at most one request."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, as for the worker
        # Off the parent's stdout, which it never writes to: a shell's `$(warehouse query …)`
        # then ends with the parent, not with an unused child's imports.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        # a failed import is reported by `answer` itself
        with frozen_imports(), contextlib.suppress(Exception):
            import warehouse.query  # noqa: F401  (Polars, PyArrow, the views: the wait's reason)
        request = _read_request(fd_in)
        if request is not None:
            answer(request, fd_out)
    finally:
        os._exit(0)  # never the parent's exit code, whatever happened here


# ----------------------------------------------------------------------------- the parent


@dataclass
class _Watch:
    pid: int
    limits: QueryLimits
    start: float
    base: int | None = None
    ready: bool = False
    done: bool = False

    def mark(self, byte: int) -> None:
        if byte == READY[0]:
            self.ready, self.base = True, resident_bytes(self.pid)
        elif byte == DONE[0]:
            self.done = True

    def over(self) -> str | None:
        if self.done:
            return None
        if time.monotonic() - self.start > self.limits.timeout_s:
            return timeout_message(self.limits)
        rss = resident_bytes(self.pid) if self.ready else None
        if self.base is not None and rss is not None and rss - self.base > self.limits.memory_bytes:
            return memory_message(self.limits)
        return None


def await_answer(pid: int, fd: int, limits: QueryLimits) -> tuple[bytes, bytes]:
    """Read the child's marks and answer from `fd`, watching it meanwhile: (kind, payload).
    Raises QueryLimitError past a limit (the caller then kills the child), or
    WarehouseError when the child ends without an answer."""
    watch, buf = _Watch(pid, limits, time.monotonic()), bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if ready:
            data = os.read(fd, 1 << 20)
            if not data:
                raise _died(pid)
            buf += data
            while buf[:1] in (READY, DONE):
                watch.mark(buf.pop(0))
            if len(buf) >= FRAME and len(buf) >= FRAME + int.from_bytes(buf[1:FRAME], "big"):
                return bytes(buf[:1]), bytes(buf[FRAME:])
        reason = watch.over()
        if reason is not None:
            raise QueryLimitError(reason)


def _died(pid: int) -> WarehouseError:
    """The error for a child that closed its pipe without an answer (it died)."""
    status = None
    for _ in range(100):
        with contextlib.suppress(ChildProcessError):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        time.sleep(POLL_S)
    how = "it ended without an answer"
    if status is not None and os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        oom = sig in ("SIGKILL", "SIGABRT")
        how = f"it was killed by {sig}" + (" (out of memory?)" if oom else "")
    return WarehouseError(f"the query's process stopped before it answered: {how}")


def raise_answer(kind: bytes, payload: bytes) -> Any:
    """The value of an answer, or its error raised here."""
    if kind == b"A":
        import polars as pl

        return pl.read_ipc_stream(io.BytesIO(payload))
    if kind == b"T":
        return payload.decode()
    if kind == b"N":
        return None
    info = json.loads(payload)
    cls = getattr(errors if kind == b"E" else builtins, info["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = WarehouseError if kind == b"E" else RuntimeError
    try:
        err = cls(info["message"])
    except TypeError:  # an exception type that takes other arguments
        err = RuntimeError(f"{info['type']}: {info['message']}")
    raise err


def remove_leftovers(pid: int, output: str | None) -> None:
    """What a killed child may leave: its `--output` temp file and DuckDB's spill folder."""
    if output:
        out = Path(output)
        for tmp in out.parent.glob(f"{out.name}.tmp-{pid}-*"):
            tmp.unlink(missing_ok=True)
    for tmp in Path(tempfile.gettempdir()).glob(f"warehouse-duckdb-{pid}-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# ----------------------------------------------------------------------------- the choice


def single_threaded() -> bool:
    """Whether this process may fork safely: one thread, so no engine's pool runs yet."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


_WARM: list[tuple[int, int, int]] = []  # the warm child: (pid, request fd, answer fd)


def prefork() -> None:
    """Fork the child of this process's coming query now, while it has one thread and has
    imported nothing heavy: the child imports the engines while this process imports its
    CLI and parses the arguments (on two cores the two overlap), then it waits for one
    request. Unused, it ends when this process's end closes the request pipe."""
    if _WARM or not single_threaded():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    req_r, req_w = os.pipe()
    ans_r, ans_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(req_w)
        os.close(ans_r)
        _serve_warm(req_r, ans_w)
    os.close(req_r)
    os.close(ans_w)
    _WARM.append((pid, req_w, ans_r))


def _send_warm(request: dict[str, Any]) -> tuple[int, int] | None:
    """Hand `request` to the warm child: (its pid, the answer fd), or None without one."""
    if not _WARM:
        return None
    pid, w, r = _WARM.pop()
    try:
        _write_all(w, _request_frame(request))
    except OSError:  # it died before its request: a new fork answers instead
        _kill(pid)
        os.close(r)
        return None
    finally:
        os.close(w)
    return pid, r


def _fork(request: dict[str, Any]) -> tuple[int, int]:
    """A new child that answers `request`: (its pid, the answer fd)."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer, then leave without running the parent's exit code
        os.close(r)
        try:
            answer(request, w)
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def run_forked(request: dict[str, Any]) -> Any:
    """Answer `request` in a forked child, the warm one if `prefork` made one (see the
    module doc)."""
    pid, r = _send_warm(request) or _fork(request)
    try:
        kind, payload = await_answer(pid, r, _limits(request))
    except BaseException:
        _kill(pid)
        remove_leftovers(pid, request.get("output"))
        raise
    finally:
        os.close(r)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return raise_answer(kind, payload)


_LOCK = threading.Lock()
_WORKER: list[subprocess.Popen] = []  # the process's one worker, while it lives


def _worker() -> subprocess.Popen:
    if _WORKER and _WORKER[0].poll() is None:
        return _WORKER[0]
    _WORKER[:] = [
        subprocess.Popen(
            [sys.executable, "-m", "warehouse.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
    ]
    return _WORKER[0]


def stop_worker() -> None:
    """End this process's worker, if one runs (the next isolated query starts a new one,
    with the environment of that moment)."""
    with _LOCK:
        for proc in _WORKER:
            _kill(proc.pid)
        _WORKER.clear()


def run_in_worker(request: dict[str, Any]) -> Any:
    """Answer `request` in this process's worker (see the module doc)."""
    with _LOCK:
        proc = _worker()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(_request_frame(request))
            kind, payload = await_answer(proc.pid, proc.stdout.fileno(), _limits(request))
        except BaseException:
            _kill(proc.pid)
            _WORKER.clear()
            remove_leftovers(proc.pid, request.get("output"))
            raise
        if kind == b"E" and json.loads(payload)["type"] == QueryLimitError.__name__:
            # stopped by its own watchdog: a Polars computation may still run in it
            _kill(proc.pid)
            _WORKER.clear()
            remove_leftovers(proc.pid, request.get("output"))
    return raise_answer(kind, payload)


def _limits(request: dict[str, Any]) -> QueryLimits:
    return QueryLimits(int(request["memory_bytes"]), float(request["timeout_s"]))


def isolated(request: dict[str, Any]) -> Any:
    """Answer `request` in a child process: forked when this process has one thread,
    otherwise in the worker."""
    return run_forked(request) if _WARM or single_threaded() else run_in_worker(request)


def request(op: str, root: str, sql: str, engine: str, limits: QueryLimits, **more: Any) -> dict:
    return {
        "op": op,
        "root": root,
        "sql": sql,
        "engine": engine,
        "memory_bytes": limits.memory_bytes,
        "timeout_s": limits.timeout_s,
        **more,
    }


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches both
    serve()
