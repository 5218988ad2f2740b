"""Pooled responses that a per-token warehouse does not store: `last` and `max`, derived
from its per-token activations when read.

A per-token ingest stores `activations/<site>` (every token's values, in the storage dtype)
and, of the pooled responses, only those its per-token rows cannot give (`mean`: ingest
averages the unrounded float32 values). The manifest's `capture.derived_pooling` names the
others, each with its rule (format.DERIVED_POOLING_RULES), over prompt row p's token rows
`token_offset[p] .. token_offset[p] + n_tokens[p] - 1` (prompts.parquet):

- `last`: the prompt's last token row, the row ingest pooled, bit for bit;
- `max`: the largest of its token rows' stored values. Ingest took the max in float32 and
  then rounded it; rounding to float16 or bfloat16 is monotonic, so the rounded max is the
  max of the rounded values. Values are compared as numbers with -0 below +0 (what the
  rounding of a tiny positive float32 max gives), and a prompt with a NaN among its tokens
  gets NaN (the first one, as ingest's max propagates it).

Warehouses written before (capture without `derived_pooling`) store every pooling and are
read as stored. `DerivedArray` reads like the zarr array it replaces (`arr[...]`,
`get_orthogonal_selection`), so every reader of responses (stats, the `responses` view,
`Warehouse.array`) opens it through `arrays.open_array`; it reads the per-token array in
blocks of at most `BLOCK_VALUES` values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from warehouse.store.arrays import (
    PROMPT_CHUNK,
    STORAGE_DTYPES,
    ArraySpec,
    open_array,
    response_spec,
)
from warehouse.store.errors import FormatError
from warehouse.store.format import ACTIVATIONS, DERIVED_POOLING_RULES, PROMPTS_FILE, array_key
from warehouse.store.location import Location
from warehouse.store.manifest import Manifest, array_specs

BLOCK_VALUES = 1 << 23  # stored values of the per-token array read at once (16 MB of float16)


def derived_poolings(manifest: Manifest) -> dict[str, str]:
    """The manifest's derived poolings (pooling -> rule; empty for a warehouse that stores
    them all), refused when one is not a rule this tool knows or has no per-token source."""
    cap = manifest.capture
    derived = cap.derived_pooling
    if not derived:
        return {}
    if not isinstance(derived, dict):
        raise FormatError(f"manifest capture.derived_pooling is not an object: {derived!r}")
    for pool, rule in derived.items():
        if DERIVED_POOLING_RULES.get(pool) != rule:
            raise FormatError(
                f"manifest capture.derived_pooling: {pool!r} by rule {rule!r} is not one "
                f"this tool derives ({DERIVED_POOLING_RULES}); upgrade relation-warehouse"
            )
    missing = [s for s in cap.sites if array_key(ACTIVATIONS, s) not in manifest.arrays]
    if missing:
        raise FormatError(
            f"manifest capture.derived_pooling derives {sorted(derived)} from per-token "
            f"arrays, but lists none for site(s) {missing}"
        )
    return dict(derived)


def derived_specs(manifest: Manifest) -> dict[str, ArraySpec]:
    """The derived response arrays, key -> spec (its `source` the per-token array's), laid
    out as ingest lays out a stored response array."""
    derived = derived_poolings(manifest)
    if not derived:
        return {}
    stored = array_specs(manifest)
    cap, out = manifest.capture, {}
    for site in cap.sites:
        source = stored[array_key(ACTIVATIONS, site)]
        for pool in cap.pooling:
            if pool in derived:
                spec = response_spec(
                    site,
                    pool,
                    int(manifest.counts.prompts or 0),
                    list(source.layers),
                    source.shape[2],
                    source.dtype,
                    cap.prompt_chunk or PROMPT_CHUNK,
                )
                out[spec.key] = ArraySpec(**{**spec.__dict__, "source": source})
    return out


def readable_specs(manifest: Manifest) -> dict[str, ArraySpec]:
    """Every array a reader may open: the stored ones and the derived responses."""
    return {**array_specs(manifest), **derived_specs(manifest)}


def prompt_tokens(root: Path | Location, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """(token_offset, n_tokens) of each prompt row, from prompts.parquet."""
    from warehouse.store.tables import read_table_at

    t = read_table_at(root, PROMPTS_FILE, ["prompt_row", "token_offset", "n_tokens"])
    rows = t.column("prompt_row").to_numpy().astype(np.int64)
    if len(rows) != n_prompts or not np.array_equal(np.sort(rows), np.arange(n_prompts)):
        raise FormatError(f"{root}/{PROMPTS_FILE}: prompt_row is not 0..{n_prompts - 1}")
    start = np.empty(len(rows), np.int64)
    length = np.empty(len(rows), np.int64)
    start[rows] = t.column("token_offset").to_numpy()
    length[rows] = t.column("n_tokens").to_numpy()
    if n_prompts and length.min() < 1:
        raise FormatError(f"{root}/{PROMPTS_FILE}: a prompt has no token rows")
    if not np.array_equal(start, np.cumsum(length) - length):
        raise FormatError(
            f"{root}/{PROMPTS_FILE}: token_offset does not tile the token rows in prompt order"
        )
    return start, length


def _order_keys(bits: np.ndarray) -> np.ndarray:
    """Stored floats' bits as signed integers in the floats' order, -0 just below +0 (the
    map is its own inverse): sign-magnitude to two's complement."""
    s = bits.view(np.int16 if bits.itemsize == 2 else np.int32)
    mask = np.array(0x7FFF if bits.itemsize == 2 else 0x7FFFFFFF, s.dtype)
    return s ^ ((s >> (8 * bits.itemsize - 1)) & mask)


_NAN_ABOVE = {"float16": 0x7C00, "bfloat16": 0x7F80, "float32": 0x7F800000}  # |bits| > is NaN


def pool_max(values: np.ndarray, starts: np.ndarray, dtype: str) -> np.ndarray:
    """The max over consecutive segments of token rows (`starts`: each segment's first row;
    each runs to the next start, the last to the end) of stored values (rows, ...) in the
    storage `dtype`, bit for bit what ingest's float32 max stored after rounding."""
    keys = _order_keys(values)
    out = np.maximum.reduceat(keys, starts, axis=0)
    out = _order_keys(out).view(values.dtype)
    magnitude = values.view(keys.dtype) & (np.iinfo(keys.dtype).max)
    nan = magnitude > _NAN_ABOVE[dtype]
    if nan.any():  # rare: a segment with a NaN gets its first NaN, as ingest's max
        row = np.arange(len(values)).reshape(-1, *[1] * (values.ndim - 1))
        first = np.minimum.reduceat(np.where(nan, row, len(values)), starts, axis=0)
        has = first < len(values)
        out = np.where(has, np.take_along_axis(values, np.where(has, first, 0), axis=0), out)
    return out


def _axis(sel: Any, n: int) -> tuple[np.ndarray | slice, bool]:
    """A selection on one axis as (indices or a slice, whether an int dropped the axis)."""
    if isinstance(sel, slice):
        return sel, False
    if isinstance(sel, int | np.integer):
        i = int(sel) + (n if int(sel) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {int(sel)} is out of bounds for an axis of {n}")
        return np.array([i], np.int64), True
    return np.asarray(sel, dtype=np.int64).reshape(-1), False


class DerivedArray:
    """A derived response array, read like a zarr array [prompt_row, layer, unit]: each
    read takes its prompts' token rows from the per-token array, in blocks."""

    def __init__(self, root: Path | Location, spec: ArraySpec) -> None:
        assert spec.source is not None
        if isinstance(root, Location) and not root.remote:
            root = root.local
        self.spec = spec
        self.pooling = spec.key.split("/")[2]
        self.source = open_array(root, spec.source)
        self.shape = spec.shape
        self.ndim = 3
        self.dtype = np.dtype(STORAGE_DTYPES[spec.dtype])
        self.start, self.length = prompt_tokens(root, spec.shape[0])
        end = self.start + self.length
        if len(end) and end.max() > spec.source.shape[0]:
            raise FormatError(
                f"{root}/{PROMPTS_FILE}: token rows past the {spec.source.shape[0]} of "
                f"{spec.source.path}"
            )

    def token_span(self, runs: np.ndarray) -> np.ndarray:
        """The token rows, as [start, end) runs, that runs of prompt rows are read from."""
        runs = np.asarray(runs, np.int64).reshape(-1, 2)
        first, last = runs[:, 0], runs[:, 1] - 1
        return np.stack([self.start[first], self.start[last] + self.length[last]], axis=1)

    def __getitem__(self, sel: Any) -> np.ndarray:
        return self.get_orthogonal_selection(sel)

    def get_orthogonal_selection(self, sel: Any) -> np.ndarray:
        """Values at (rows, layers, units), each an int, a slice or indices (orthogonal, as
        zarr's); an int drops its axis."""
        sel = sel if isinstance(sel, tuple) else (sel,)
        sel = sel + (slice(None),) * (3 - len(sel))
        rows, drop_row = _axis(sel[0], self.shape[0])
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]), dtype=np.int64)
        layers, drop_layer = _axis(sel[1], self.shape[1])
        units, drop_unit = _axis(sel[2], self.shape[2])
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"prompt rows outside 0..{self.shape[0] - 1}")
        out = self._read(rows, layers, units)
        drop = tuple(i for i, d in enumerate((drop_row, drop_layer, drop_unit)) if d)
        return out.squeeze(drop) if drop else out

    def _read(
        self, rows: np.ndarray, layers: np.ndarray | slice, units: np.ndarray | slice
    ) -> np.ndarray:
        """(rows, layers, units) pooled values, a block of prompts at a time."""
        width = tuple(
            len(range(*a.indices(n))) if isinstance(a, slice) else len(a)
            for a, n in ((layers, self.shape[1]), (units, self.shape[2]))
        )
        out = np.empty((len(rows), *width), self.dtype)
        tokens = self.length[rows] if self.pooling == "max" else np.ones(len(rows), np.int64)
        ends = np.cumsum(tokens)  # token rows read up to and with each prompt
        per_block = max(1, BLOCK_VALUES // max(1, width[0] * width[1]))
        i = 0
        while i < len(rows):
            # Prompts of up to per_block token rows in all (always at least one).
            done = int(ends[i - 1]) if i else 0
            j = max(i + 1, int(np.searchsorted(ends, done + per_block, "right")))
            out[i:j] = self._block(rows[i:j], layers, units)
            i = j
        return out

    def _block(
        self, rows: np.ndarray, layers: np.ndarray | slice, units: np.ndarray | slice
    ) -> np.ndarray:
        start, length = self.start[rows], self.length[rows]
        if self.pooling == "last":
            return self.source.get_orthogonal_selection((start + length - 1, layers, units))
        seg = np.cumsum(length) - length
        if np.all(start[1:] == start[:-1] + length[:-1]):  # one run of token rows
            tok: np.ndarray | slice = slice(int(start[0]), int(start[-1] + length[-1]))
        else:
            tok = np.repeat(start - seg, length) + np.arange(int(length.sum()))
        values = np.asarray(self.source.get_orthogonal_selection((tok, layers, units)))
        return pool_max(values, seg, self.spec.dtype)
