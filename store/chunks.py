"""Chunk files written without zarr's per-chunk machinery.

Ingest writes tens of thousands of chunks on the same cores as the model's forward pass.
zarr's write path (an event loop, a thread pool, buffer wrappers) costs more CPU per chunk
than the compression itself and holds the GIL the forward pass needs between its ops, so
the writer encodes each chunk here, with the codecs the array's own metadata names, and puts
the file where zarr would. A test checks that the bytes equal zarr's for the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import BytesCodec, ZstdCodec

from warehouse.store.files import atomic_write_bytes

Step = Callable[[bytes | memoryview], bytes]


def _step(codec: object) -> Step | None:
    """A bytes -> bytes function equal to one of zarr's codecs, or None if not known (every
    array this tool writes, then and now, is zstd; any other goes through zarr)."""
    if isinstance(codec, ZstdCodec):
        return Zstd(level=codec.level, checksum=codec.checksum).encode
    return None


class ChunkEncoder:
    """Encodes whole chunks of one zarr v3 array and writes them atomically."""

    def __init__(self, array: zarr.Array, root: Path, steps: Sequence[Step]) -> None:
        self.root = root
        # Optional running sha256 over "<prefix>/<key>\0<bytes>" of every chunk written, in
        # write order; the ingest writer seeds it so the array's manifest checksum needs no
        # second pass over the files (see ChunkBuffer).
        self.digest: Any = None
        self.digest_prefix = ""
        self.chunks = tuple(array.chunks)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill_value = array.fill_value
        self.key = array.metadata.chunk_key_encoding.encode_chunk_key
        self.steps = list(steps)
        self.bytes_written = 0
        self._dirs: set[Path] = set()

    @classmethod
    def for_array(cls, array: zarr.Array, root: Path) -> ChunkEncoder | None:
        """An encoder for `array` stored at folder `root`, or None when its codecs are not
        ones this module reproduces (the caller then writes through zarr)."""
        codecs = array.metadata.codecs
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return None
        if np.dtype(array.dtype).itemsize > 1 and codecs[0].endian is None:
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        steps = [_step(c) for c in codecs[1:]]
        if any(s is None for s in steps):
            return None
        return cls(array, root, steps)  # type: ignore[arg-type]

    def write(self, index: tuple[int, ...], chunk: np.ndarray) -> None:
        """Encode one whole chunk (shape == the array's chunk shape) and put it in place."""
        self._account(index, self._encode_put(index, chunk))

    def _encode_put(self, index: tuple[int, ...], chunk: np.ndarray) -> bytes | memoryview:
        """The part of a write that may run on any thread; returns the bytes written."""
        if chunk.shape != self.chunks:
            raise ValueError(f"chunk shape {chunk.shape} is not the array's {self.chunks}")
        data: bytes | memoryview = np.ascontiguousarray(chunk, dtype=self.dtype).data
        for step in self.steps:
            data = step(data)
        path = self.root / self.key(index)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        self._put(path, data)
        return data

    def _account(self, index: tuple[int, ...], data: bytes | memoryview) -> None:
        """Count and checksum one written chunk, in chunk order (one thread only)."""
        self.bytes_written += len(data)
        if self.digest is not None:
            self.digest.update(f"{self.digest_prefix}/{self.key(index)}".encode() + b"\0")
            self.digest.update(data)

    @staticmethod
    def _put(path: Path, data: bytes | memoryview) -> None:
        # Temp-then-rename, as every warehouse file: a crash leaves the old file or the new
        # one, never half of one (and the temp name is one `verify` knows).
        atomic_write_bytes(path, data, make_parents=False)

    def write_rows(self, row_chunk: int, rows: np.ndarray, pool: Executor | None = None) -> None:
        """Write every chunk of one row of chunks. `rows` holds its first len(rows) rows over
        the array's whole extent in the other dimensions; what a chunk has beyond them is the
        fill value, as zarr pads edge chunks. With a `pool`, chunks are encoded and written
        in parallel; they are counted and checksummed in order all the same."""
        items = list(self._row_parts(row_chunk, rows))
        if pool is None:
            for index, part in items:
                self.write(index, part)
            return
        written = list(pool.map(lambda item: self._encode_put(*item), items))
        for (index, _), data in zip(items, written, strict=True):
            self._account(index, data)

    def _row_parts(
        self, row_chunk: int, rows: np.ndarray
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        rest = self.chunks[1:]
        grid = [range(-(-s // c)) for s, c in zip(rows.shape[1:], rest, strict=True)]
        for idx in np.ndindex(*(len(g) for g in grid)):
            sel = (slice(None),) + tuple(
                slice(i * c, (i + 1) * c) for i, c in zip(idx, rest, strict=True)
            )
            part = rows[sel]
            if part.shape != self.chunks:
                edge = np.full(self.chunks, self.fill_value, dtype=rows.dtype)
                edge[tuple(slice(0, s) for s in part.shape)] = part
                part = edge
            yield (row_chunk, *idx), part
