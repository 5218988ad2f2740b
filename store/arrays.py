"""Zarr v3 arrays of a warehouse: per-token activations and pooled per-prompt responses.

Layout: one array per site with a layer axis, ``[row, layer, neuron]``, chunked
``(rows_per_chunk, 1, neurons_per_chunk)``. One chunk holds one layer's neuron block for a
block of rows, so "all rows of one neuron" touches one column of chunks and "all neurons of
a row block" one row of chunks (bench/layout.py compares this with one array per layer).

Each row of chunks is one file, a zarr v3 shard (the `sharding_indexed` codec: the chunks'
bytes and an index of where each starts). Reads touch single chunks (a shard is read by byte
ranges), but a run writes one file per row block instead of one per chunk: file creation was
half of the writer's CPU on the cores the forward pass needs (docs/performance.md), and a
million-token warehouse keeps thousands of files, not hundreds of thousands.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from warehouse.store.errors import FormatError, MissingChunkError
from warehouse.store.format import (
    ACTIVATIONS,
    RESPONSES,
    ROW_DIMS,
    ROW_TABLES,
    array_key,
    array_path,
    unit_dim,
)
from warehouse.store.location import Location, plain_local_store

if TYPE_CHECKING:  # zarr is imported where an array is opened (a query need not)
    import zarr
    from zarr.abc.codec import BytesBytesCodec

    from warehouse.store.sections import ModelInfo

# Storage dtypes. numpy (and so plain zarr) has no bfloat16: it is stored as its raw 16 bits
# (uint16), and the attribute "warehouse_dtype" says how to view them.
STORAGE_DTYPES = {"float16": "float16", "float32": "float32", "bfloat16": "uint16"}

# Every activation and response array: blosc (zstd level 1 after a byte shuffle of the
# stored values, so that their sign/exponent bytes lie together and compress, where float16
# mantissas are noise; the whole chunk one block, so zstd also finds the repeated rows of
# shared prompt prefixes), then zarr's `crc32c` codec after each chunk, so a flipped byte is a
# read error, not a wrong number (a blosc frame has no checksum of its own). On SmolLM2's
# activations of a whole relation: 2.54x per token where zstd -10 gave 2.24x, and pooled
# responses 1.12-1.33x where fast zstd levels gave 1.00-1.10x; it encodes at ~1.2 GB/s per
# core (zstd -10: 1.6) (bench/codecs.py, bench/warehouse_bytes.py, docs/performance.md).
# Earlier builds wrote activations at zstd -10 (or -1, 1) with zstd's checksum and responses
# raw with a crc32c (or at zstd -10, -50); each array's zarr.json names its codecs, so those
# warehouses read, and resume, as they are.
BLOSC_CNAME = "zstd"
BLOSC_LEVEL = 1


TOKEN_CHUNK = 1024  # rows per chunk of per-token arrays
PROMPT_CHUNK = 256  # rows per chunk of pooled response arrays
NEURON_CHUNK = 512  # neurons per chunk


@dataclass(frozen=True)
class ArraySpec:
    """Where an array lives and what it holds."""

    key: str  # e.g. "activations/ffn.act" or "responses/ffn.act/mean"
    path: str  # relative zarr path, e.g. "activations.zarr/ffn.act"
    shape: tuple[int, int, int]  # (rows, layers, neurons)
    chunks: tuple[int, int, int]
    dtype: str  # logical dtype: float16 | bfloat16 | float32
    layers: tuple[int, ...]  # model layer number of each index on the layer axis
    shards: tuple[int, int, int]  # shape of one file: a zarr shard of whole chunks
    # A derived response (store/derived_pooling.py): the per-token array it is read from.
    # None for a stored array, the only kind the manifest's `arrays` lists.
    source: ArraySpec | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": self.dtype,
            "layers": list(self.layers),
            "shards": list(self.shards),
        }

    @property
    def chunks_per_shard(self) -> int:
        """Chunks in one shard file."""
        return int(np.prod([f // c for f, c in zip(self.shards, self.chunks, strict=True)]))

    @classmethod
    def from_json(cls, key: str, d: dict[str, Any]) -> ArraySpec:
        return cls(
            key=key,
            path=d["path"],
            shape=tuple(d["shape"]),
            chunks=tuple(d["chunks"]),
            dtype=d["dtype"],
            layers=tuple(d["layers"]),
            shards=tuple(d["shards"]),
        )


def _chunks(n_rows: int, rows: int, units: int) -> tuple[int, int, int]:
    return (min(rows, max(n_rows, 1)), 1, min(NEURON_CHUNK, units))


def _row_shard(chunks: tuple[int, int, int], n_layers: int, units: int) -> tuple[int, int, int]:
    """One shard per row of chunks: every layer and every neuron (rounded up to whole
    chunks, as zarr pads the last) of a chunk's rows."""
    return (chunks[0], max(n_layers, 1), -(-units // chunks[2]) * chunks[2])


def activation_spec(
    site: str, n_rows: int, layers: list[int], units: int, dtype: str, rows: int = TOKEN_CHUNK
) -> ArraySpec:
    chunks = _chunks(n_rows, rows, units)
    return ArraySpec(
        key=array_key(ACTIVATIONS, site),
        path=array_path(array_key(ACTIVATIONS, site)),
        shape=(n_rows, len(layers), units),
        chunks=chunks,
        dtype=dtype,
        layers=tuple(layers),
        shards=_row_shard(chunks, len(layers), units),
    )


def response_spec(
    site: str,
    pooling: str,
    n_rows: int,
    layers: list[int],
    units: int,
    dtype: str,
    rows: int = PROMPT_CHUNK,
) -> ArraySpec:
    chunks = _chunks(n_rows, rows, units)
    return ArraySpec(
        key=array_key(RESPONSES, site, pooling),
        path=array_path(array_key(RESPONSES, site, pooling)),
        shape=(n_rows, len(layers), units),
        chunks=chunks,
        dtype=dtype,
        layers=tuple(layers),
        shards=_row_shard(chunks, len(layers), units),
    )


def compressors(spec: ArraySpec) -> list[BytesBytesCodec]:
    """The codecs after `bytes` that a new array is written with (its zarr.json records them,
    so a resumed array keeps the ones it has): blosc with a byte shuffle of the stored values'
    width (2 bytes for float16 and bfloat16), one block per chunk, then crc32c."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [
        BloscCodec(
            cname=BLOSC_CNAME,
            clevel=BLOSC_LEVEL,
            shuffle="shuffle",
            typesize=np.dtype(STORAGE_DTYPES[spec.dtype]).itemsize,
            blocksize=chunk_bytes(spec),
        ),
        Crc32cCodec(),
    ]


def chunk_bytes(spec: ArraySpec) -> int:
    """Bytes of one uncompressed chunk: blosc's block size, so that each chunk is shuffled
    and compressed as one block (blosc's automatic blocks, a few tens of KB at level 1, cut
    a chunk where zstd would find the repeated rows of shared prompt prefixes: 1.88x
    instead of 2.54x on whole-relation activations, and half the encode speed)."""
    return int(np.prod(spec.chunks)) * np.dtype(STORAGE_DTYPES[spec.dtype]).itemsize


COORD_CHUNK = 1 << 20  # values per chunk file of a coordinate array (8 MB of int64)


def dims(spec: ArraySpec) -> tuple[str, str, str]:
    """Dimension names of an array: its row axis, `layer`, and its unit axis (`neuron`, or
    `d_model` for a residual-width site)."""
    kind, site = spec.key.split("/")[:2]
    return (ROW_DIMS[kind], "layer", unit_dim(site))


# The attributes of an array that describe its site (ingest/sites.py's `site_description`).
SITE_ATTRIBUTES = ("module", "io", "transformer_lens_hook")


def array_attributes(
    model: ModelInfo, spec: ArraySpec, site_description: dict[str, Any]
) -> dict[str, Any]:
    """What an array holds, for its zarr.json (and `Warehouse.array`): the site, its module
    and TransformerLens hook (`site_description`, from the model's site table:
    ingest/sites.py's `site_description`), units per layer, the model and the table its rows
    index."""
    kind, site = spec.key.split("/")[:2]
    attrs: dict[str, Any] = {"site": site}
    if kind == RESPONSES:
        attrs["pooling"] = spec.key.split("/")[2]
    attrs.update(site_description)
    attrs.update(
        units=spec.shape[2],
        model=model.name,
        weights_hash=model.weights_hash,
        row_table=ROW_TABLES[kind],
        row_column=ROW_DIMS[kind],
    )
    return attrs


def coord_values(specs: Iterable[ArraySpec]) -> dict[str, tuple[str, np.ndarray]]:
    """The 1-D coordinate arrays beside these arrays, path -> (dimension, values): in each
    array's group, one per dimension (row numbers, model layer numbers, unit numbers), so
    that plain xarray can `.sel(layer=12, neuron=42)`."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for spec in specs:
        group = spec.path.rsplit("/", 1)[0]
        values = (np.arange(spec.shape[0]), np.array(spec.layers), np.arange(spec.shape[2]))
        for dim, v in zip(dims(spec), values, strict=True):
            out[f"{group}/{dim}"] = (dim, v.astype(np.int64))
    return dict(sorted(out.items()))


def coord_files(path: str, n: int) -> list[str]:
    """The files of a coordinate array of n values: zarr.json and its chunks, in order."""
    return [f"{path}/zarr.json", *(f"{path}/c/{i}" for i in range(max(1, -(-n // COORD_CHUNK))))]


def write_coord(root: Path, path: str, dim: str, values: np.ndarray) -> None:
    """Write one coordinate array (int64, each chunk followed by its crc32c)."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec

    arr = zarr.create_array(
        store=str(root / path),
        shape=values.shape,
        chunks=(max(1, min(COORD_CHUNK, len(values))),),
        dtype="int64",
        serializer=BytesCodec(),
        compressors=[Crc32cCodec()],
        fill_value=0,
        zarr_format=3,
        overwrite=True,
        config={"write_empty_chunks": True},
        dimension_names=[dim],
    )
    arr[:] = values


def create_array(
    root: Path, spec: ArraySpec, attributes: dict[str, Any] | None = None
) -> zarr.Array:
    import zarr
    from zarr.codecs import BytesCodec

    if spec.dtype not in STORAGE_DTYPES:
        raise FormatError(f"unsupported dtype {spec.dtype!r}; use one of {sorted(STORAGE_DTYPES)}")
    parts = Path(spec.path).parts
    for i in range(1, len(parts)):  # the groups above, so plain zarr can walk the hierarchy
        zarr.open_group(str(root.joinpath(*parts[:i])), mode="a", zarr_format=3)
    arr = zarr.create_array(
        store=str(root / spec.path),
        shape=spec.shape,
        chunks=spec.chunks,
        shards=spec.shards,
        dtype=STORAGE_DTYPES[spec.dtype],
        serializer=BytesCodec(),
        compressors=compressors(spec),
        fill_value=0,
        zarr_format=3,
        overwrite=True,
        # Every chunk is written, even an all-zero one, so a missing chunk is always damage.
        config={"write_empty_chunks": True},
        dimension_names=list(dims(spec)),
        attributes={
            "warehouse_dtype": spec.dtype,
            "layers": list(spec.layers),
            **(attributes or {}),
        },
    )
    return arr


@functools.cache
def strict_store() -> type:
    from zarr.abc.store import SuffixByteRequest

    from warehouse.store.chunks import absent_chunks

    class StrictStore(plain_local_store()):  # type: ignore[misc]
        """A read-only LocalStore for which an absent chunk is an error, not the fill value.

        A warehouse writes every chunk (`write_empty_chunks`), so a missing one is damage; plain
        zarr would hand back zeros for it, i.e. silently wrong numbers. In a shard a chunk is
        absent when the shard's index marks it so: every index this store hands to zarr is
        checked for such entries first.
        """

        def __init__(self, root: Path, index_bytes: int, **kw: Any) -> None:
            super().__init__(root, **kw)
            self.index_bytes = index_bytes  # size of a shard's index + crc32c

        async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
            value = await super().get(key, prototype, byte_range)
            if not key.startswith("c/"):
                return value
            if value is None:
                raise MissingChunkError(f"chunk file {self.root / key} is missing")
            n = self.index_bytes
            if byte_range is None or (
                isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == n
            ):
                # Only the index's bytes are copied out, not the whole shard a full read returns.
                if absent_chunks(value[len(value) - n : len(value) - 4].to_bytes()):
                    raise MissingChunkError(
                        f"chunk file {self.root / key}: its index marks chunks as absent"
                    )
            return value

    return StrictStore


def open_array(root: Path | Location, spec: ArraySpec, mode: str = "r") -> zarr.Array:
    """Open an array of a local folder (reads refuse missing chunks), or read-only of a
    remote warehouse (a `Location`). A derived response (`spec.source`) opens its per-token
    source array, read-only: `DerivedArray` reads like a zarr array."""
    import zarr

    if spec.source is not None:
        from warehouse.store.derived_pooling import DerivedArray

        if mode != "r":
            raise FormatError(f"{spec.key} is derived from {spec.source.key}: it is never written")
        return DerivedArray(root, spec)  # type: ignore[return-value]

    if isinstance(root, Location) and root.remote:
        if mode != "r":
            root.require_local("writing an array")
        store: Any = root.zarr_store(spec.path)
    else:
        local = Path(str(root)) / spec.path
        store = (
            strict_store()(local, _index_bytes(spec), read_only=True) if mode == "r" else str(local)
        )
    try:
        arr = zarr.open_array(store=store, mode=mode, zarr_format=3)
    except (
        FileNotFoundError,
        zarr.errors.NodeTypeValidationError,
        zarr.errors.NodeNotFoundError,
        KeyError,
    ) as e:
        raise FormatError(f"array {spec.path} is missing or unreadable ({e})") from None
    if tuple(arr.shape) != spec.shape:
        raise FormatError(
            f"array {spec.path} has shape {tuple(arr.shape)}, manifest says {spec.shape}; "
            f"run `warehouse verify {root}`"
        )
    if spec.dtype not in STORAGE_DTYPES or str(arr.dtype) != STORAGE_DTYPES[spec.dtype]:
        raise FormatError(
            f"array {spec.path} stores {arr.dtype}, manifest says {spec.dtype}; "
            f"run `warehouse verify {root}`"
        )
    return arr


def _index_bytes(spec: ArraySpec) -> int:
    """Bytes of a shard's index and its crc32c."""
    from warehouse.store.chunks import index_size  # the writer's module, with zarr

    return index_size(spec.chunks_per_shard)


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """Convert float32 values to the stored representation (bfloat16 as raw uint16 bits)."""
    if dtype == "bfloat16":
        import torch

        return (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            .to(torch.bfloat16)
            .view(torch.int16)
            .numpy()
            .view(np.uint16)
        )
    return x.astype(STORAGE_DTYPES[dtype], copy=False)


def from_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values as numpy floats (bfloat16 widened exactly to float32)."""
    if dtype == "bfloat16":
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x


def chunk_keys(spec: ArraySpec) -> list[str]:
    """Relative paths of every chunk file of an array (zarr v3 default "c/i/j/k" keys): one
    per shard."""
    grid = [range(-(-s // c)) for s, c in zip(spec.shape, spec.shards, strict=True)]
    return [f"{spec.path}/c/{i}/{j}/{k}" for i in grid[0] for j in grid[1] for k in grid[2]]
