"""Chunk files written without zarr's per-chunk machinery.

Ingest writes tens of thousands of chunks on the same cores as the model's forward pass.
zarr's write path (an event loop, a thread pool, buffer wrappers) costs more CPU per chunk
than the compression itself and holds the GIL the forward pass needs between its ops, so
the writer encodes each chunk here, with the codecs the array's own metadata names, and puts
the file where zarr would. A test checks that the bytes equal zarr's for the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.indexing import morton_order_iter

from warehouse.store.files import Bytes, atomic_write_bytes

# A chunk's bytes: one buffer (its raw bytes are a 1-D uint8 array, so len() counts bytes and
# google_crc32c, hashlib and file writes all take it), or parts written one after another.
Part = Bytes | np.ndarray
Encoded = Part | list[Part]
Step = Callable[[Part], Encoded]


def _step(codec: object) -> Step | None:
    """A bytes -> bytes function equal to one of zarr's codecs, or None if not known (every
    array this tool writes, then and now, is blosc, zstd or crc32c; any other goes through
    zarr)."""
    if isinstance(codec, BloscCodec):
        return _blosc(codec)
    if isinstance(codec, ZstdCodec):
        return Zstd(level=codec.level, checksum=codec.checksum).encode
    if isinstance(codec, Crc32cCodec):
        return _with_crc32c
    return None


_SHUFFLES = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def _blosc(codec: BloscCodec) -> Step:
    """zarr's blosc codec: numcodecs' Blosc with the codec's typesize, as zarr passes it on
    (numcodecs >= 0.16, which pyproject.toml requires). Blosc's internal threads stay off, as
    zarr sets them: the writer's pool is the parallelism."""
    return Blosc(
        cname=codec.cname.value,
        clevel=codec.clevel,
        shuffle=_SHUFFLES[codec.shuffle.value],
        blocksize=codec.blocksize,
        typesize=codec.typesize,
    ).encode


def _with_crc32c(data: Part) -> list[Part]:
    """zarr's crc32c codec: the bytes, then their crc32c, little-endian. As two parts:
    appending the four bytes would copy the chunk."""
    return [data, google_crc32c.value(data).to_bytes(4, "little")]


def _size(data: Encoded) -> int:
    return sum(len(p) for p in data) if isinstance(data, list) else len(data)


class ChunkEncoder:
    """Encodes whole chunks of one zarr v3 array and writes them atomically."""

    def __init__(
        self,
        array: zarr.Array,
        root: Path,
        steps: Sequence[Step],
        chunks: tuple[int, ...],
    ) -> None:
        """`chunks`: the inner chunk shape of the sharded array (whose shards each hold one
        whole row of chunks)."""
        self.root = root
        # Optional running checksum (hashlib-like) over "<prefix>/<key>\0<bytes>" of every
        # chunk written, in write order; the ingest writer seeds it so the array's manifest
        # checksum needs no second pass over the files (see ChunkBuffer).
        self.digest: Any = None
        self.digest_prefix = ""
        self.chunks = tuple(chunks)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill_value = array.fill_value
        self.key = array.metadata.chunk_key_encoding.encode_chunk_key
        self.steps = list(steps)
        self.bytes_written = 0
        self._dirs: set[Path] = set()

    @classmethod
    def for_array(cls, array: zarr.Array, root: Path) -> ChunkEncoder | None:
        """An encoder for `array` stored at folder `root`, or None when it is not sharded by
        whole rows of chunks or its codecs are not ones this module reproduces (the caller
        then writes through zarr)."""
        codecs = array.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        shard = codecs[0]
        inner = tuple(shard.chunk_shape)
        outer = tuple(array.metadata.chunk_grid.chunk_shape)
        index = shard.index_codecs
        whole_rows = outer[0] == inner[0] and all(
            o == -(-n // c) * c
            for o, n, c in zip(outer[1:], array.shape[1:], inner[1:], strict=True)
        )
        if not (
            whole_rows
            and shard.index_location == ShardingCodecIndexLocation.end
            and len(index) == 2
            and isinstance(index[0], BytesCodec)
            and getattr(index[0].endian, "value", None) == "little"
            and isinstance(index[1], Crc32cCodec)
        ):
            return None
        codecs = shard.codecs
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return None
        if np.dtype(array.dtype).itemsize > 1 and codecs[0].endian is None:
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        steps = [_step(c) for c in codecs[1:]]
        if any(s is None for s in steps):
            return None
        return cls(array, root, steps, inner)  # type: ignore[arg-type]

    def _encode(self, chunk: np.ndarray) -> Encoded:
        """One chunk's bytes, as zarr encodes it (may run on any thread). Unencoded bytes are
        a view of `chunk`: they must be written before it changes (write_blocks does)."""
        if chunk.shape != self.chunks:
            raise ValueError(f"chunk shape {chunk.shape} is not the array's {self.chunks}")
        data: Encoded = np.ascontiguousarray(chunk, dtype=self.dtype).reshape(-1).view(np.uint8)
        for step in self.steps:
            if isinstance(data, list):  # a step after crc32c (none this tool writes)
                data = b"".join(data)
            data = step(data)
        return data

    def _put_file(self, index: tuple[int, ...], data: Encoded) -> Encoded:
        path = self.root / self.key(index)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        self._put(path, data)
        return data

    def _account(self, index: tuple[int, ...], data: Encoded) -> None:
        """Count and checksum one written file, in chunk order (one thread only)."""
        parts = data if isinstance(data, list) else [data]
        self.bytes_written += _size(data)
        if self.digest is not None:
            self.digest.update(f"{self.digest_prefix}/{self.key(index)}".encode() + b"\0")
            for part in parts:
                self.digest.update(part)

    @staticmethod
    def _put(path: Path, data: Encoded) -> None:
        # Temp-then-rename, as every warehouse file: a crash leaves the old file or the new
        # one, never half of one (and the temp name is one `verify` knows).
        atomic_write_bytes(path, data, make_parents=False)

    def write_rows(self, row_chunk: int, rows: np.ndarray, pool: Executor | None = None) -> None:
        """Write every chunk of one row of chunks. `rows` holds its first len(rows) rows over
        the array's whole extent in the other dimensions; what a chunk has beyond them is the
        fill value, as zarr pads edge chunks."""
        blocks = self.new_blocks(rows.shape[1:], rows.dtype)
        put_rows(blocks, 0, rows)
        self.write_blocks(row_chunk, blocks, len(rows), pool)

    def new_blocks(self, extent: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A row of chunks of an array whose other dimensions are `extent`, chunk by chunk
        (put_rows). Only what lies beyond `extent` in edge chunks, which put_rows never writes,
        holds the fill value; rows past the data are padded by write_blocks (filling the whole
        row of chunks first was a non-overlapped memset of up to ~100 MB at ingest start)."""
        blocks = np.empty(blocks_shape(extent, self.chunks), dtype=dtype)
        nd = len(extent)
        for d, (e, c) in enumerate(zip(extent, self.chunks[1:], strict=True)):
            if e % c:
                edge: list[int | slice] = [slice(None)] * blocks.ndim
                edge[d] = -1  # the last chunk along d
                edge[nd + 1 + d] = slice(e % c, None)
                blocks[tuple(edge)] = self.fill_value
        return blocks

    def write_blocks(
        self, row_chunk: int, blocks: np.ndarray, rows: int, pool: Executor | None = None
    ) -> None:
        """Write one row of chunks held chunk by chunk (`blocks[j, k]` is chunk (row_chunk,
        j, k), each contiguous, so none is gathered), whose first `rows` rows hold data: the
        rest get the fill value first, as zarr pads the last row of chunks. With a `pool`,
        chunks are encoded and written in parallel; they are counted and checksummed in order
        all the same."""
        nd = len(self.chunks) - 1
        if rows < self.chunks[0]:
            blocks[(slice(None),) * nd + (slice(rows, None),)] = self.fill_value
        items = [((row_chunk, *idx), blocks[idx]) for idx in np.ndindex(*blocks.shape[:nd])]
        mapped = map if pool is None else pool.map
        encoded = list(mapped(lambda item: self._encode(item[1]), items))
        index = (row_chunk,) + (0,) * nd
        data = self._put_file(index, _shard_parts([i for i, _ in items], encoded))
        self._account(index, data)


def blocks_shape(extent: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one row of chunks held chunk by chunk: the chunk grid of the other
    dimensions (`extent`), then the chunk shape."""
    grid = tuple(-(-s // c) for s, c in zip(extent, chunks[1:], strict=True))
    return (*grid, *chunks)


def put_rows(blocks: np.ndarray, at: int, rows: np.ndarray, pool: Executor | None = None) -> None:
    """Copy `rows` (n, *extent) into rows [at, at + n) of a row of chunks held chunk by chunk
    (blocks_shape). The writer gathers its rows this way as they come, so that a full row of
    chunks is encoded with no further copy (a gather per chunk was 12 % of its CPU). With a
    `pool`, the chunks along the first other dimension are copied in parallel (numpy lets go
    of the GIL while it copies)."""
    nd = rows.ndim - 1
    grid, chunk = blocks.shape[:nd], blocks.shape[nd + 1 :]
    n = len(rows)
    if all(g * c == e for g, c, e in zip(grid, chunk, rows.shape[1:], strict=True)):
        # No edge chunk: one copy through a view of the blocks in the rows' axis order.
        order = [nd, *(a for d in range(nd) for a in (d, nd + 1 + d))]
        split = [x for d in range(nd) for x in (grid[d], chunk[d])]
        dst, src = blocks.transpose(order)[at : at + n], rows.reshape(n, *split)
        if pool is None or grid[0] == 1:
            dst[...] = src
            return

        def copy(i: int) -> None:
            dst[:, i] = src[:, i]

        list(pool.map(copy, range(grid[0])))
        return
    for idx in np.ndindex(*grid):
        sel = (slice(i * c, (i + 1) * c) for i, c in zip(idx, chunk, strict=True))
        src = rows[(slice(None), *sel)]
        blocks[idx][(slice(at, at + n), *(slice(0, e) for e in src.shape[1:]))] = src


def _shard_parts(indices: list[tuple[int, ...]], encoded: list[Encoded]) -> list[Part]:
    """One shard of a row of chunks as zarr's sharding codec writes it, as the parts to write
    one after another (joining them cost a copy of the shard: 14 % of the writer's CPU): the
    chunks in Morton order of their place in the shard, then the index (C order) and its
    crc32c."""
    pos = {idx[1:]: n for n, idx in enumerate(indices)}  # place in the shard (row is 0)
    grid = tuple(max(i[d] for i in indices) + 1 for d in range(1, len(indices[0])))
    table = np.empty((len(indices), 2), dtype="<u8")
    parts, offset = [], 0
    for coords in morton_order_iter(grid):
        n = pos[coords]
        size = _size(encoded[n])
        table[n] = (offset, size)
        parts += encoded[n] if isinstance(encoded[n], list) else [encoded[n]]
        offset += size
    index = table.tobytes()
    return [*parts, index, google_crc32c.value(index).to_bytes(4, "little")]


def index_size(n_chunks: int) -> int:
    """Bytes of a shard's index and its crc32c: 16 per chunk, then 4."""
    return 16 * n_chunks + 4


def absent_chunks(index: bytes) -> int:
    """How many entries of a shard's index (without its crc32c) mark a chunk absent (offset
    and length 2**64 - 1), which zarr silently reads as the fill value."""
    table = np.frombuffer(index, dtype="<u8").reshape(-1, 2)
    return int((table == np.iinfo(np.uint64).max).all(1).sum())


def shard_index(data: bytes, n_chunks: int) -> np.ndarray:
    """The (offset, length) of each chunk of a shard file, C order; raises
    ValueError when the file is too short, its index fails its crc32c, a chunk is marked
    absent, or an entry points outside the data."""
    size = index_size(n_chunks)
    if len(data) < size:
        raise ValueError(f"{len(data)} bytes, shorter than its index ({size} bytes)")
    index = data[-size:-4]
    if google_crc32c.value(index).to_bytes(4, "little") != data[-4:]:
        raise ValueError("its index fails its crc32c")
    if absent := absent_chunks(index):
        raise ValueError(f"{absent} of its {n_chunks} chunks are absent")
    table = np.frombuffer(index, dtype="<u8").reshape(n_chunks, 2)
    if (table.sum(1) > len(data) - size).any():
        raise ValueError("its index points past the chunk data (truncated?)")
    return table
