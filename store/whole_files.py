"""Whole remote files, fetched once each and kept in memory: for a server that ignores byte
ranges (plain `python -m http.server`), where every read of a file costs the whole file.

One process-wide cache, keyed by the file's full URL. A per-key lock makes concurrent readers
of one file (zarr asks for a shard's index and its chunks at once) wait for the first fetch
instead of starting their own; the least recently used files are dropped past `CAP_BYTES`,
and a file larger than the cap is passed through without being kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

CAP_BYTES = 512 * 2**20


class WholeFiles:
    """url -> bytes, each fetched once while it is kept."""

    def __init__(self, cap_bytes: int = CAP_BYTES) -> None:
        self.cap_bytes = cap_bytes
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0  # how many times `fetch` ran, for tests and benchmarks

    def get(self, url: str, fetch: Callable[[], bytes]) -> bytes:
        """The bytes of `url`: kept ones, or `fetch()` (once, whoever asks at the same time).
        An exception from `fetch` reaches the caller and nothing is kept."""
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            kept = self._lookup(url)
            if kept is not None:
                return kept
            data = bytes(fetch())
            with self._guard:
                self.fetches += 1
            self.put(url, data)
            return data

    def put(self, url: str, data: bytes) -> None:
        """Keep `data` as the bytes of `url` (not when larger than the cap)."""
        if len(data) > self.cap_bytes:
            return
        with self._guard:
            self._kept[url] = data
            self._kept.move_to_end(url)
            total = sum(len(v) for v in self._kept.values())
            while total > self.cap_bytes:
                _, dropped = self._kept.popitem(last=False)
                total -= len(dropped)

    def _lookup(self, url: str) -> bytes | None:
        with self._guard:
            data = self._kept.get(url)
            if data is not None:
                self._kept.move_to_end(url)
            return data

    def clear(self) -> None:
        with self._guard:
            self._kept.clear()
            self._locks.clear()


WHOLE_FILES = WholeFiles()
