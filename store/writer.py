"""Streaming writer: a thread that takes batches of rows from a bounded queue and writes them
to zarr in whole chunks, so compression and disk I/O overlap the model's forward passes and
memory stays bounded by (queue depth + one chunk) per array."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import zarr
from zarr.storage import LocalStore

from warehouse.store.arrays import STORAGE_DTYPES, ArraySpec
from warehouse.store.checksums import ARRAY_ALGORITHM, array_files
from warehouse.store.chunks import ChunkEncoder, put_rows
from warehouse.store.errors import WarehouseError
from warehouse.store.files import digest_of, new_digest


class CountingStore(LocalStore):
    """A LocalStore that counts the (compressed) bytes it writes, for the progress bar."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_written = 0

    async def set(self, key, value) -> None:  # type: ignore[override]
        self.bytes_written += len(value)
        await super().set(key, value)


class ChunkBuffer:
    """Rows of one array, gathered until they fill a whole chunk of rows.

    Writing only whole chunks means no chunk is ever read back and merged, and a chunk file,
    once renamed into place, is final: a crash can only lose rows after the last full chunk.
    The rows are gathered chunk by chunk (chunks.put_rows), so the encoder takes each chunk
    as it lies.
    """

    def __init__(self, root: Path, spec: ArraySpec, start_row: int) -> None:
        if start_row % spec.chunks[0] and start_row != spec.shape[0]:
            raise WarehouseError(f"{spec.path}: resume row {start_row} is not chunk-aligned")
        self.spec = spec
        self.store = CountingStore(root / spec.path)
        self.array = zarr.open_array(store=self.store, mode="r+", zarr_format=3)
        # Chunks go straight to files when their codecs are ones ChunkEncoder reproduces (all
        # this tool writes); an array with others is written through zarr.
        self.encoder = ChunkEncoder.for_array(self.array, root / spec.path)
        if self.encoder is not None:
            self._start_digest(root, start_row)
        self.start = start_row  # first row not yet on disk
        self.pool: Executor | None = None  # set by the Writer that owns this buffer
        self.fill = 0
        dtype = np.dtype(STORAGE_DTYPES[spec.dtype])
        self.buf = (
            self.encoder.new_blocks(spec.shape[1:], dtype)
            if self.encoder is not None
            else np.empty((spec.chunks[0], *spec.shape[1:]), dtype=dtype)
        )

    def add(self, row0: int, data: np.ndarray) -> None:
        """Append rows [row0, row0 + len(data)); rows already on disk (from a resumed batch)
        are dropped."""
        expected = self.start + self.fill
        skip = expected - row0
        if skip < 0:
            raise WarehouseError(f"{self.spec.path}: rows {expected}..{row0} were never written")
        data = data[skip:]
        rows = self.spec.chunks[0]
        while len(data):
            take = min(len(data), rows - self.fill)
            if self.encoder is not None:
                put_rows(self.buf, self.fill, data[:take], self.pool)
            else:
                self.buf[self.fill : self.fill + take] = data[:take]
            self.fill += take
            data = data[take:]
            if self.fill == rows:
                self._flush()

    def finish(self) -> None:
        if self.fill:
            self._flush()

    def _start_digest(self, root: Path, start_row: int) -> None:
        """Seed the encoder's running checksum with the files already there: the metadata,
        and on a resume the chunks of the rows on disk (the same bytes, in the same order, as
        checksums.array_files, so the end of the run needs no second pass over the files)."""
        h = new_digest(ARRAY_ALGORITHM)
        done = start_row // self.spec.chunks[0]
        for rel in array_files(self.spec):
            if rel.endswith("/zarr.json") or int(rel.rsplit("/c/", 1)[1].split("/")[0]) < done:
                h.update(rel.encode() + b"\0")
                h.update((root / rel).read_bytes())
        self.encoder.digest = h
        self.encoder.digest_prefix = self.spec.path

    def checksum(self) -> str | None:
        """The array's manifest checksum, once every chunk went through the encoder."""
        if self.encoder is None or self.encoder.digest is None or self.start != self.spec.shape[0]:
            return None
        return digest_of(ARRAY_ALGORITHM, self.encoder.digest)

    @property
    def bytes_written(self) -> int:
        return self.store.bytes_written + (self.encoder.bytes_written if self.encoder else 0)

    def _flush(self) -> None:
        end = self.start + self.fill
        if self.encoder is not None:
            row_chunk = self.start // self.spec.chunks[0]
            self.encoder.write_blocks(row_chunk, self.buf, self.fill, self.pool)
        else:
            self.array[self.start : end] = self.buf[: self.fill]
        self.start, self.fill = end, 0


def encode_threads(background: bool = True) -> int:
    """Chunk encoders. On a thread beside the forward pass: none extra on a 2-core machine
    (the forward uses both), up to 4 where cores are to spare. In line, between forward
    passes: every core, up to 4 (the forward waits for them)."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 2)) if background else min(4, cores)


Batch = Mapping[str, tuple[int, np.ndarray]]  # array key -> (first row, rows)


class Ready(Protocol):
    """What a batch's rows wait on before they are read (a torch.cuda.Event: the rows are
    still being copied from the GPU when they are handed over)."""

    def synchronize(self) -> None: ...


class Writer:
    """Writes batches of rows to their chunk buffers, on a thread of its own or in line.

    background=True (an accelerator's forward): a thread takes batches from a bounded
    queue, so compression and disk I/O overlap the forward; `put` blocks when `depth`
    batches are waiting (back-pressure). background=False (a CPU forward, which uses every
    core): `put` writes the batch on the caller's thread between forward passes, with every
    core encoding. A thread beside a CPU forward preempts one of its OpenMP threads, and the
    others spin at the next barrier: a per-token ingest of 1,344 prompts on 2 cores ran 1.14x
    the bare forward with the thread and 1.21x in line (`bench/ingest.py --writer-thread`,
    docs/performance.md).
    """

    def __init__(
        self,
        buffers: Mapping[str, ChunkBuffer],
        on_commit: Callable[[dict[str, int]], None],
        depth: int = 2,
        threads: int | None = None,
        background: bool = True,
    ) -> None:
        self.buffers = dict(buffers)
        self.on_commit = on_commit
        self.last = self.committed()
        self.error: BaseException | None = None
        self.open = True
        if threads is None:
            threads = encode_threads(background)
        # Chunks of one flush are encoded and written by a pool (zstd and file writes release
        # the GIL): on a GPU host the forward pass outruns any single thread's compression.
        self.pool: ThreadPoolExecutor | None = None
        if threads > 1:
            self._use_pool(threads)
        self.thread: threading.Thread | None = None
        if background:
            self.queue: queue.Queue[tuple[Batch, Ready | None] | bool] = queue.Queue(depth)
            self.thread = threading.Thread(target=self._run, name="warehouse-writer", daemon=True)
            self.thread.start()

    def _use_pool(self, threads: int) -> None:
        """Encode and write each flush's chunks with `threads` threads from now on."""
        self.pool = ThreadPoolExecutor(threads, "warehouse-encode")
        for b in self.buffers.values():
            b.pool = self.pool

    @property
    def bytes_written(self) -> int:
        return sum(b.bytes_written for b in self.buffers.values())

    def committed(self) -> dict[str, int]:
        return {k: b.start for k, b in self.buffers.items()}

    def put(self, batch: Batch, ready: Ready | None = None) -> None:
        """Write or queue a batch; `ready.synchronize()` is called (on the writing thread)
        before its rows are read."""
        self._raise_if_failed()
        if self.thread is None:
            self._keep_error(self._add, batch, ready)
            self._raise_if_failed()
            return
        while True:
            try:
                self.queue.put((batch, ready), timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self, finish: bool = True) -> None:
        """Write what is queued, wait for the thread, and re-raise any write error.

        finish=True also writes the last, partial chunk (the run is complete); finish=False
        (the run was interrupted) leaves it out, so what is on disk ends at a chunk boundary
        where a resumed run can continue, and raises nothing (the caller is already on its way
        out with an exception of its own). A second close does nothing.
        """
        if not self.open:
            return
        self.open = False
        if self.thread is None:
            if finish and self.error is None:
                self._keep_error(self._finish)
        elif self.thread.is_alive():
            if finish and self.pool is None and (os.cpu_count() or 1) > 1:
                # The forward pass is over: what is still queued, and the last partial chunks,
                # may use every core (the run's wall time waits on this drain).
                self._use_pool(2)
            self.queue.put(finish)
            self.thread.join()
        if self.pool is not None:
            self.pool.shutdown()
        if finish:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            err = self.error
            if isinstance(err, OSError):
                raise WarehouseError(
                    f"writing the warehouse failed: {err.strerror or err} "
                    f"({getattr(err, 'filename', '') or 'zarr chunk'}); everything up to the "
                    "last committed batch is kept, re-run the same command to resume"
                ) from err
            raise err

    def _keep_error(self, step: Callable[..., None], *args: object) -> None:
        """Run a write step in line; its error is kept, and raised as the thread's would be
        (`_raise_if_failed`)."""
        try:
            step(*args)
        except BaseException as e:
            self.error = e

    def _add(self, batch: Batch, ready: Ready | None) -> None:
        if ready is not None:
            ready.synchronize()
        for key, (row0, rows) in batch.items():
            self.buffers[key].add(row0, rows)
        self._commit()

    def _finish(self) -> None:
        for b in self.buffers.values():
            b.finish()
        self.last = self.committed()
        self.on_commit(self.last)

    def _commit(self) -> None:
        """Tell on_commit the rows on disk, when they changed."""
        now = self.committed()
        if now != self.last:
            self.on_commit(now)
            self.last = now

    def _run(self) -> None:
        try:
            while not isinstance(item := self.queue.get(), bool):
                self._add(*item)
                # Let go of the batch before waiting for the next one: a batch held here
                # while the main thread captures more is one more in memory.
                item = None
            if item:
                self._finish()
        except BaseException as e:  # handed to the main thread by put/close
            self.error = e
            # Drain so a producer blocked on a full queue wakes up and sees the error.
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
