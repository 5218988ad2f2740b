"""Memory and time limits of a query (`--memory-limit`, `--timeout`).

DuckDB enforces its own `memory_limit` (and as much spill space); a watchdog thread
interrupts it past the timeout, or when the process's resident memory grows past the limit
(the Zarr views it scans are Polars frames, collected outside DuckDB's accounting). Polars
has neither limit, and `InProcessQuery.cancel()` does not stop a running computation, so a
Polars query runs in the background while the caller polls its time and the process's
resident memory: past either limit the Zarr readers stop at their next block, cancellation
is requested, and the caller gets a `QueryLimitError` at once.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warehouse.store.errors import QueryLimitError, WarehouseError

POLL_S = 0.01
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
if TYPE_CHECKING:  # polars is imported by the engines, not by option parsing
    import polars as pl

_SECONDS = {"": 1, "S": 1, "MS": 1e-3, "M": 60, "MIN": 60, "H": 3600}


@dataclass(frozen=True)
class QueryLimits:
    memory_bytes: int = 4 * 10**9
    timeout_s: float = 300.0

    @classmethod
    def parse(cls, memory: str = "4GB", timeout: str = "300s") -> QueryLimits:
        return cls(parse_size(memory), parse_seconds(timeout))


def _number_unit(text: str, what: str) -> tuple[float, str]:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m:
        raise WarehouseError(f"{what} {text!r} is not a number with a unit")
    return float(m.group(1)), m.group(2).upper()


def parse_size(text: str) -> int:
    """'4GB', '512MiB', '1000000' (bytes) -> bytes."""
    value, unit = _number_unit(text, "--memory-limit")
    if unit not in _UNITS or not 0 < value * _UNITS.get(unit, 1) < 2**63:
        raise WarehouseError(f"--memory-limit {text!r}: give a positive size such as 4GB or 512MiB")
    return int(value * _UNITS[unit])


def parse_seconds(text: str) -> float:
    """'300s', '5m', '250ms', '2' (seconds) -> seconds."""
    value, unit = _number_unit(text, "--timeout")
    if unit not in _SECONDS or not 0 < value < math.inf:
        raise WarehouseError(f"--timeout {text!r}: give a positive duration such as 300s or 5m")
    return value * _SECONDS[unit]


def resident_bytes(pid: int | str = "self") -> int | None:
    """A process's resident memory now (Linux /proc; this one by default), or None where
    unknown."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Stop:
    """Set by a watchdog; the Zarr readers check it between blocks."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def check(self) -> None:
        if self.reason is not None:
            raise QueryLimitError(self.reason)


def timeout_message(limits: QueryLimits) -> str:
    return f"the query ran past its timeout of {limits.timeout_s:g} s and was stopped (--timeout)"


def _over(limits: QueryLimits, start: float, base: int | None) -> str | None:
    if time.monotonic() - start > limits.timeout_s:
        return timeout_message(limits)
    rss = resident_bytes()
    if base is not None and rss is not None and rss - base > limits.memory_bytes:
        return memory_message(limits)
    return None


def memory_message(limits: QueryLimits) -> str:
    return (
        f"the query used more than its memory limit of {limits.memory_bytes:,} bytes and was "
        "stopped (--memory-limit)"
    )


def collect_bounded(lf: pl.LazyFrame, limits: QueryLimits, stop: Stop) -> pl.DataFrame:
    """`lf.collect(engine="streaming")`, stopped past the limits (see the module doc)."""
    start, base = time.monotonic(), resident_bytes()
    query = lf.collect(engine="streaming", background=True)
    wait = POLL_S / 64  # short queries return within a millisecond of finishing
    while True:
        done = query.fetch()
        if done is not None:
            return done
        reason = _over(limits, start, base)
        if reason is not None:
            stop.reason = reason
            query.cancel()
            # Polars aborts the process if a background query ends after its handle is gone:
            # a daemon thread keeps the handle and collects (and drops) whatever comes back.
            threading.Thread(target=_drain, args=(query,), name="query-drain", daemon=True).start()
            raise QueryLimitError(reason)
        time.sleep(wait)
        wait = min(2 * wait, POLL_S)


def _drain(query: Any) -> None:
    try:
        query.fetch_blocking()
    except Exception:  # noqa: S110 - the caller already has its QueryLimitError
        pass


@contextmanager
def watchdog(limits: QueryLimits, stop: Stop, interrupt: Callable[[], Any]) -> Iterator[None]:
    """A thread that, once the query runs past either limit, sets `stop` (the Zarr readers
    raise at their next block) and calls `interrupt()` (DuckDB's `con.interrupt`)."""
    done = threading.Event()
    start, base = time.monotonic(), resident_bytes()

    def watch() -> None:
        while not done.wait(POLL_S):
            reason = _over(limits, start, base)
            if reason is not None:
                stop.reason = reason
                interrupt()
                return

    thread = threading.Thread(target=watch, name="query-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
