"""Zarr v3 arrays of a warehouse: per-token activations and pooled per-prompt responses.

Layout: one array per site with a layer axis, ``[row, layer, neuron]``, chunked
``(rows_per_chunk, 1, neurons_per_chunk)``. One chunk holds one layer's neuron block for a
block of rows, so "all rows of one neuron" touches one column of chunks and "all neurons of
a row block" one row of chunks (bench/layout.py compares this with one array per layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.storage import LocalStore

from warehouse.errors import FormatError
from warehouse.store.location import Location

# Storage dtypes. numpy (and so plain zarr) has no bfloat16: it is stored as its raw 16 bits
# (uint16), and the attribute "warehouse_dtype" says how to view them.
STORAGE_DTYPES = {"float16": "float16", "float32": "float32", "bfloat16": "uint16"}

# zstd at level -10 (one of its fast levels): on whole relations of SmolLM2 activations it
# compresses float16 2.2x (prompts of one template share prefix tokens, whose identical
# activations zstd's long matches find), the same as levels -1..-5 and about level 1 (2.3x),
# and encodes ~1.5 GB/s per core with the checksum, 30 % faster than -1 and twice level 1;
# ingest compresses on the cores the forward pass runs on, so CPU is what counts
# (bench/codecs.py, docs/performance.md). The checksum flag makes every decode verify the
# chunk, so a flipped byte is an error, not a wrong number.
ZSTD_LEVEL = -10


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

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": self.dtype,
            "layers": list(self.layers),
        }

    @classmethod
    def from_json(cls, key: str, d: dict[str, Any]) -> ArraySpec:
        return cls(
            key=key,
            path=d["path"],
            shape=tuple(d["shape"]),
            chunks=tuple(d["chunks"]),
            dtype=d["dtype"],
            layers=tuple(d["layers"]),
        )


def activation_spec(
    site: str, n_rows: int, layers: list[int], units: int, dtype: str, rows: int = TOKEN_CHUNK
) -> ArraySpec:
    return ArraySpec(
        key=f"activations/{site}",
        path=f"activations.zarr/{site}",
        shape=(n_rows, len(layers), units),
        chunks=(min(rows, max(n_rows, 1)), 1, min(NEURON_CHUNK, units)),
        dtype=dtype,
        layers=tuple(layers),
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
    return ArraySpec(
        key=f"responses/{site}/{pooling}",
        path=f"responses.zarr/{site}/{pooling}",
        shape=(n_rows, len(layers), units),
        chunks=(min(rows, max(n_rows, 1)), 1, min(NEURON_CHUNK, units)),
        dtype=dtype,
        layers=tuple(layers),
    )


def create_array(root: Path, spec: ArraySpec) -> zarr.Array:
    if spec.dtype not in STORAGE_DTYPES:
        raise FormatError(f"unsupported dtype {spec.dtype!r}; use one of {sorted(STORAGE_DTYPES)}")
    parts = Path(spec.path).parts
    for i in range(1, len(parts)):  # the groups above, so plain zarr can walk the hierarchy
        zarr.open_group(str(root.joinpath(*parts[:i])), mode="a", zarr_format=3)
    arr = zarr.create_array(
        store=str(root / spec.path),
        shape=spec.shape,
        chunks=spec.chunks,
        dtype=STORAGE_DTYPES[spec.dtype],
        serializer=BytesCodec(),
        compressors=[ZstdCodec(level=ZSTD_LEVEL, checksum=True)],
        fill_value=0,
        zarr_format=3,
        overwrite=True,
        # Every chunk is written, even an all-zero one, so a missing chunk is always damage.
        config={"write_empty_chunks": True},
        dimension_names=["row", "layer", "neuron"],
        attributes={"warehouse_dtype": spec.dtype, "layers": list(spec.layers)},
    )
    return arr


class MissingChunkError(FormatError):
    """A chunk file that must exist is absent (zarr would read it as zeros)."""


class StrictStore(LocalStore):
    """A read-only LocalStore for which an absent chunk is an error, not the fill value.

    A warehouse writes every chunk (`write_empty_chunks`), so a missing one is damage; plain
    zarr would hand back zeros for it, i.e. silently wrong numbers.
    """

    async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
        value = await super().get(key, prototype, byte_range)
        if value is None and key.startswith("c/"):
            raise MissingChunkError(f"chunk file {self.root / key} is missing")
        return value


def open_array(root: Path | Location, spec: ArraySpec, mode: str = "r") -> zarr.Array:
    """Open an array of a local folder (reads refuse missing chunks), or read-only of a
    remote warehouse (a `Location`)."""
    if isinstance(root, Location) and root.remote:
        if mode != "r":
            root.require_local("writing an array")
        store: Any = root.zarr_store(spec.path)
    else:
        local = Path(str(root)) / spec.path
        store = StrictStore(local, read_only=True) if mode == "r" else str(local)
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
    """Relative paths of every chunk file of an array (zarr v3 default "c/i/j/k" keys)."""
    grid = [range(-(-s // c)) for s, c in zip(spec.shape, spec.chunks, strict=True)]
    return [f"{spec.path}/c/{i}/{j}/{k}" for i in grid[0] for j in grid[1] for k in grid[2]]
