"""The views a user queries: Parquet tables as Polars scans, Zarr arrays as lazy IO sources.

`responses` and `activations` are Polars IO plugins over the Zarr arrays. Polars hands each
scan the projected columns and the filter it pushed down; `constraints` turns the simple
parts of that filter (==, IN, <, <=, >, >=, BETWEEN under AND/OR on the index columns) into
allowed values per column, `ZarrView.scan` maps those to index runs along the row, layer and
neuron axes, and reads only the chunk blocks they touch, one bounded DataFrame at a time.
The whole filter is applied again to every block, so a condition the parser does not
understand narrows nothing but is never wrong.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

from warehouse.queries.limits import Stop
from warehouse.store.arrays import ArraySpec, from_storage, open_array
from warehouse.store.derived import check_derived
from warehouse.store.derived_pooling import prompt_tokens
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import loads_json
from warehouse.store.format import (
    ACTIVATIONS,
    ACTIVATIONS_VIEW_SCHEMA,
    DERIVED_DIRS,
    PROMPTS,
    PROMPTS_FILE,
    RESPONSES,
    RESPONSES_VIEW_SCHEMA,
    TOKENS,
)
from warehouse.store.format import DERIVED_VIEWS as FORMAT_DERIVED_VIEWS
from warehouse.store.location import Location, require_regular
from warehouse.store.manifest import Manifest
from warehouse.store.tables import read_table_at

if TYPE_CHECKING:  # zarr is imported when an array is opened, not for every query
    import zarr

# Parquet views written by later stages: folder -> the command that creates it.
DERIVED_VIEWS = {name: f"warehouse {DERIVED_DIRS[name]}" for name in FORMAT_DERIVED_VIEWS}


def _polars_schema(schema: Any) -> dict[str, pl.DataType]:
    """A Polars schema from an Arrow one (`Table.from_batches`: `Schema.empty_table` would
    import pandas, ~0.25 s of every query's start)."""
    return dict(pl.from_arrow(pa.Table.from_batches([], schema=schema)).schema)  # type: ignore[union-attr]


# The Polars schemas of the two array views (store/format.py's Arrow schemas).
ACTIVATIONS_SCHEMA = _polars_schema(ACTIVATIONS_VIEW_SCHEMA)
RESPONSES_SCHEMA = _polars_schema(RESPONSES_VIEW_SCHEMA)

# Values per yielded DataFrame (~1M rows, ~30 MB with every column): big enough that the
# per-frame overhead of Polars and zarr is negligible, small enough that a full scan of a
# 13B warehouse streams in bounded memory. One chunk is always read whole, so a frame may
# reach one chunk's size (512k values at the default layout) when it is above this.
BLOCK_VALUES = 1 << 20

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------
# Allowed values per column, from a predicate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ints:
    """Allowed integers: the closed interval [lo, hi], further restricted to `values` if set."""

    lo: int = _I64_MIN
    hi: int = _I64_MAX
    values: tuple[int, ...] | None = None  # sorted, unique, inside [lo, hi]

    @staticmethod
    def of(values: list[int]) -> Ints:
        v = tuple(sorted(set(values)))
        return Ints(v[0], v[-1], v) if v else Ints(1, 0, ())

    def __and__(self, other: Ints) -> Ints:
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        if self.values is None and other.values is None:
            return Ints(lo, hi)
        sets = [set(s.values) for s in (self, other) if s.values is not None]
        kept = set.intersection(*sets)
        return Ints.of([v for v in kept if lo <= v <= hi])

    def __or__(self, other: Ints) -> Ints:
        # A superset is enough (the predicate is re-applied): values if both list them,
        # else the interval that covers both.
        if self.values is not None and other.values is not None:
            return Ints.of([*self.values, *other.values])
        if self.empty:
            return other
        if other.empty:
            return self
        return Ints(min(self.lo, other.lo), max(self.hi, other.hi))

    @property
    def empty(self) -> bool:
        return self.lo > self.hi or self.values == ()

    def shift(self, d: int) -> Ints:
        if self.empty:
            return self
        lo = self.lo + d if self.lo != _I64_MIN else _I64_MIN
        hi = self.hi + d if self.hi != _I64_MAX else _I64_MAX
        vals = None if self.values is None else tuple(v + d for v in self.values)
        return Ints(lo, hi, vals)

    def runs(self, n: int) -> np.ndarray:
        """Allowed indices within [0, n) as disjoint sorted [start, stop) runs, shape (k, 2)."""
        lo, hi = max(self.lo, 0), min(self.hi, n - 1)
        if self.empty or lo > hi:
            return np.zeros((0, 2), np.int64)
        if self.values is None:
            return np.array([[lo, hi + 1]], np.int64)
        v = np.array([x for x in self.values if lo <= x <= hi], np.int64)
        return _runs_of(v)

    def __contains__(self, x: int) -> bool:
        return self.lo <= x <= self.hi and (self.values is None or x in self.values)

    def mask(self, x: np.ndarray) -> np.ndarray:
        m = (x >= self.lo) & (x <= self.hi)
        if self.values is not None:
            m &= np.isin(x, np.array(self.values, np.int64))
        return m


@dataclass(frozen=True)
class Strs:
    """Allowed strings."""

    values: frozenset[str]

    def __and__(self, other: Strs) -> Strs:
        return Strs(self.values & other.values)

    def __or__(self, other: Strs) -> Strs:
        return Strs(self.values | other.values)


Constraint = Ints | Strs
INT_COLUMNS = ("layer", "neuron", "neuron_id", "token_row", "prompt_row", "prompt_id")
STR_COLUMNS = ("site", "pooling")
# Casts that keep every value of an integer column exact, so a bound on the cast column
# is a bound on the column (an overflowing cast to a narrower type would not be).
_EXACT_INT_CASTS = {"Int64", "Float64"}


def constraints(predicate: pl.Expr | None) -> dict[str, Constraint]:
    """Allowed values per index column that every row passing `predicate` satisfies.

    Columns absent from the result are unconstrained. Anything not understood (functions,
    NOT, arithmetic on columns, ...) constrains nothing, so the result is always a superset.
    """
    if predicate is None:
        return {}
    try:
        node = json.loads(predicate.meta.serialize(format="json"))
        return _constraints(predicate, node)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, pl.exceptions.PolarsError):
        # Polars' serialized expression format is not a stable API: a shape this parser does
        # not know must cost speed (a full scan, filtered), never a wrong or failed query.
        return {}


def _and(a: dict[str, Constraint], b: dict[str, Constraint]) -> dict[str, Constraint]:
    return {c: (a[c] & b[c]) if c in a and c in b else a.get(c, b.get(c)) for c in a | b}


def _constraints(expr: pl.Expr, node: dict) -> dict[str, Constraint]:
    """Walk the expression (for its sub-expressions) and its JSON (for operators) together."""
    kind = next(iter(node))
    body = node[kind]
    if kind == "BinaryExpr":
        left, right = expr.meta.pop()[::-1]  # pop() lists inputs last-first
        op = body["op"]
        if op in ("And", "LogicalAnd"):
            return _and(_constraints(left, body["left"]), _constraints(right, body["right"]))
        if op in ("Or", "LogicalOr"):
            a, b = _constraints(left, body["left"]), _constraints(right, body["right"])
            return {c: a[c] | b[c] for c in a.keys() & b.keys()}
        return _comparison(op, left, body["left"], right, body["right"])
    if kind == "Function":
        func = body["function"]
        boolean = func.get("Boolean", {}) if isinstance(func, dict) else {}
        inputs, nodes = expr.meta.pop()[::-1], body["input"]
        if isinstance(boolean, dict) and "IsIn" in boolean and len(inputs) == 2:
            return _is_in(inputs[0], nodes[0], inputs[1], nodes[1])
        if isinstance(boolean, dict) and "IsBetween" in boolean and len(inputs) == 3:
            closed = boolean["IsBetween"]["closed"]
            lo_op = "GtEq" if closed in ("Both", "Left") else "Gt"
            hi_op = "LtEq" if closed in ("Both", "Right") else "Lt"
            return _and(
                _comparison(lo_op, inputs[0], nodes[0], inputs[1], nodes[1]),
                _comparison(hi_op, inputs[0], nodes[0], inputs[2], nodes[2]),
            )
    return {}


def _column(node: dict) -> str | None:
    """The index column a node reads, if it is that column or an exact cast of it."""
    if "Column" in node:
        name = node["Column"]
        return name if name in INT_COLUMNS or name in STR_COLUMNS else None
    if "Cast" in node:
        inner = node["Cast"]["expr"]
        name = _column(inner)
        dtype = node["Cast"]["dtype"]
        target = dtype.get("Literal") if isinstance(dtype, dict) else None
        if name in INT_COLUMNS and _exact_int_cast(target):
            return name
        if name in STR_COLUMNS and target == "String":
            return name
    return None


def _exact_int_cast(target: object) -> bool:
    if isinstance(target, str):
        return target in _EXACT_INT_CASTS
    # SQL compares an integer with a decimal literal by casting both to Decimal(38, 0)
    if isinstance(target, dict) and "Decimal" in target:
        precision, scale = target["Decimal"]
        return precision - scale >= 19  # every int64 fits
    return False


def _is_constant(node: dict) -> bool:
    if "Literal" in node:
        return True
    return "Cast" in node and _is_constant(node["Cast"]["expr"])


def _constant(expr: pl.Expr, node: dict) -> list:
    lit = node.get("Literal")
    # Fast path for the common scalar literals; anything else is evaluated by Polars.
    if isinstance(lit, dict) and len(lit) == 1:
        ((tag, value),) = lit.items()
        if tag == "Dyn" and isinstance(value, dict) and set(value) <= {"Int", "Float"}:
            return list(value.values())
        if tag == "Scalar" and isinstance(value, dict) and len(value) == 1:
            ((dtype, v),) = value.items()
            if dtype == "String" or dtype.startswith(("Int", "UInt", "Float")):
                return [v] if isinstance(v, str | int | float) else _evaluate(expr)
    return _evaluate(expr)


def _evaluate(expr: pl.Expr) -> list:
    s = pl.select(expr).to_series()
    if isinstance(s.dtype, pl.List | pl.Array):
        s = s.explode()
    return s.drop_nulls().to_list()


_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq"}


def _comparison(op: str, left: pl.Expr, lnode: dict, right: pl.Expr, rnode: dict) -> dict:
    if op not in _FLIP:
        return {}
    if _column(rnode) and _is_constant(lnode):  # `3 < layer` is `layer > 3`
        left, lnode, right, rnode, op = right, rnode, left, lnode, _FLIP[op]
    name = _column(lnode)
    if name is None or not _is_constant(rnode):
        return {}
    values = _constant(right, rnode)
    if len(values) != 1:
        return {}
    v = values[0]
    if name in STR_COLUMNS:
        return {name: Strs(frozenset([v]))} if op == "Eq" and isinstance(v, str) else {}
    if isinstance(v, bool) or not isinstance(v, int | float | Decimal) or not _finite(v):
        return {}
    if op == "Eq":
        return {name: Ints.of([int(v)]) if v == int(v) else Ints.of([])}
    if op == "Lt":
        return {name: Ints(hi=math.ceil(v) - 1)}
    if op == "LtEq":
        return {name: Ints(hi=math.floor(v))}
    if op == "Gt":
        return {name: Ints(lo=math.floor(v) + 1)}
    return {name: Ints(lo=math.ceil(v))}  # GtEq


def _finite(v: int | float | Decimal) -> bool:
    return v.is_finite() if isinstance(v, Decimal) else math.isfinite(v)


def _is_in(col: pl.Expr, cnode: dict, values: pl.Expr, vnode: dict) -> dict:
    name = _column(cnode)
    if name is None or not _is_constant(vnode):
        return {}
    items = _constant(values, vnode)
    if name in STR_COLUMNS:
        if all(isinstance(v, str) for v in items):
            return {name: Strs(frozenset(items))}
        return {}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return {name: Ints.of(items)}
    if all(isinstance(v, int | float | Decimal) and _finite(v) for v in items):
        return {name: Ints.of([int(v) for v in items if v == int(v)])}
    return {}


# --------------------------------------------------------------------------------------------
# Index runs -> blocks of whole chunks
# --------------------------------------------------------------------------------------------


def _runs_of(idx: np.ndarray) -> np.ndarray:
    """Sorted unique indices as [start, stop) runs, shape (k, 2)."""
    if len(idx) == 0:
        return np.zeros((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.r_[0, breaks]]
    stops = idx[np.r_[breaks - 1, len(idx) - 1]] + 1
    return np.stack([starts, stops], 1)


def _file_indices(runs: np.ndarray, size: int) -> list[int]:
    """Indices of the files (of `size` indices each) that the runs touch."""
    return sorted({k for a, b in runs.tolist() for k in range(a // size, (b - 1) // size + 1)})


def _intersect_runs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i, 0], b[j, 0]), min(a[i, 1], b[j, 1])
        if lo < hi:
            out.append((lo, hi))
        if a[i, 1] < b[j, 1]:
            i += 1
        else:
            j += 1
    return np.array(out, np.int64).reshape(-1, 2)


def _clip_runs(runs: np.ndarray, lo: int, hi: int) -> np.ndarray:
    keep = runs[(runs[:, 1] > lo) & (runs[:, 0] < hi)]
    return np.stack([np.maximum(keep[:, 0], lo), np.minimum(keep[:, 1], hi)], 1)


def _count_below(runs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many selected indices lie below each x (runs sorted and disjoint)."""
    lengths = np.concatenate([[0], np.cumsum(runs[:, 1] - runs[:, 0])])
    i = np.searchsorted(runs[:, 0], x, side="left")  # runs starting below x
    partial = np.maximum(runs[np.maximum(i - 1, 0), 1] - x, 0) * (i > 0)
    return lengths[i] - partial


def _indices(runs: np.ndarray) -> np.ndarray:
    if len(runs) == 1:
        return np.arange(runs[0, 0], runs[0, 1], dtype=np.int64)
    return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in runs] or [[]]).astype(
        np.int64
    )


def _selector(runs: np.ndarray) -> slice | np.ndarray:
    """A zarr selector for the runs: a slice when contiguous (zarr's fastest path)."""
    if len(runs) == 1:
        return slice(int(runs[0, 0]), int(runs[0, 1]))
    return _indices(runs)


def chunk_blocks(runs: np.ndarray, chunk: int, per_index: int, budget: int) -> list[np.ndarray]:
    """Split selected runs into blocks of whole chunks holding at most `budget` values.

    `per_index` is how many values one selected index brings (the other axis's width). A
    block is the runs of consecutive touched chunks, so chunks with no selected index are
    never read, and no chunk is split between two blocks (so none is decoded twice).
    """
    if len(runs) == 0:
        return []
    first, last = runs[:, 0] // chunk, (runs[:, 1] - 1) // chunk
    touched = np.unique(
        np.concatenate([np.arange(f, e + 1) for f, e in zip(first, last, strict=True)])
    )
    sizes = np.diff(_count_below(runs, np.stack([touched, touched + 1]) * chunk), axis=0)[0]
    blocks, start, count = [], 0, 0
    for k, size in enumerate(sizes.tolist()):
        size *= per_index
        if count and count + size > budget:
            blocks.append(_clip_runs(runs, touched[start] * chunk, touched[k - 1] * chunk + chunk))
            start, count = k, 0
        count += size
    blocks.append(_clip_runs(runs, touched[start] * chunk, touched[-1] * chunk + chunk))
    return blocks


# --------------------------------------------------------------------------------------------
# Zarr-backed views
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySource:
    """One array of a Zarr view: its site (and pooling for responses)."""

    site: str
    pooling: str | None
    spec: ArraySpec
    units: int
    n_rows: int  # rows readable: all of them once the ingest completed


@dataclass
class ZarrView:
    """`activations` (rows are token rows) or `responses` (rows are prompt rows)."""

    name: str
    root: Path | Location
    sources: list[ArraySource]
    prompt_ids: np.ndarray | None = None  # prompt_row -> prompt_id, for responses
    _arrays: dict[str, zarr.Array] = field(default_factory=dict, repr=False)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return dict(RESPONSES_SCHEMA if self.name == RESPONSES else ACTIVATIONS_SCHEMA)

    def lazy(self, stop: Stop | None = None) -> pl.LazyFrame:
        """The view as a Polars IO plugin; once `stop` is set, its next block raises."""

        def scan(
            with_columns: list[str] | None,
            predicate: pl.Expr | None,
            n_rows: int | None,
            batch_size: int | None,
        ) -> Iterator[pl.DataFrame]:
            for block in self.scan(with_columns, predicate, n_rows, batch_size):
                if stop is not None:
                    stop.check()
                yield block

        return register_io_source(
            scan,
            schema=self.schema,
            is_pure=True,
            explain_name=f"zarr {self.name}",
            explain_detail=", ".join(s.spec.path for s in self.sources),
        )

    def scan(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        """The IO plugin callback: yield the rows that pass `predicate`, block by block."""
        columns = list(self.schema) if with_columns is None else list(with_columns)
        needed = set(columns) | set(predicate.meta.root_names() if predicate is not None else [])
        allowed = constraints(predicate)
        budget = max(BLOCK_VALUES, batch_size or 0)
        left = n_rows
        for block in self.blocks(allowed, needed, budget):
            if predicate is not None:
                block = block.filter(predicate)
            # select([]) would drop the rows too: a `count(*)` over a join needs them.
            block = block.select(columns) if columns else pl.DataFrame(height=block.height)
            if left is not None:
                block = block.head(left)
                left -= block.height
            if block.height:
                yield block
            if left == 0:
                return

    def blocks(
        self, allowed: dict[str, Constraint], needed: set[str], budget: int
    ) -> Iterator[pl.DataFrame]:
        """Unfiltered frames of every chunk block the constraints may need."""
        everything = Ints()
        for src in self.sources:
            if "site" in allowed and src.site not in allowed["site"].values:
                continue
            if src.pooling is not None and "pooling" in allowed:
                if src.pooling not in allowed["pooling"].values:
                    continue
            rows = self._row_runs(src, allowed)
            if len(rows) == 0:
                continue
            arr = self._array(src) if "value" in needed else None
            row_chunk, _, unit_chunk = src.spec.chunks
            for li, layer in enumerate(src.spec.layers):
                if layer not in allowed.get("layer", everything):
                    continue
                neurons = (
                    allowed.get("neuron", everything)
                    & allowed.get("neuron_id", everything).shift(-layer * src.units)
                ).runs(src.units)
                for nblock in chunk_blocks(neurons, unit_chunk, row_chunk, budget):
                    n_sel = int((nblock[:, 1] - nblock[:, 0]).sum())
                    for rblock in chunk_blocks(rows, row_chunk, n_sel, budget):
                        # Without `value` (e.g. `select distinct layer`) the indices say it all.
                        values = None
                        if "value" in needed:
                            values = self._read(arr, src, li, rblock, nblock)
                        yield self._frame(src, layer, rblock, nblock, values, needed)

    def read(self, src: ArraySource, li: int, rows: np.ndarray, units: np.ndarray) -> np.ndarray:
        """Stored values of layer index `li` at sorted row and unit indices (rows x units),
        through the checked reader: only the chunks they fall in are read."""
        return self._read(self._array(src), src, li, _runs_of(rows), _runs_of(units))

    def _read(
        self, arr: zarr.Array, src: ArraySource, li: int, rblock: np.ndarray, nblock: np.ndarray
    ) -> np.ndarray:
        self._check_chunk_files(src, li, rblock, nblock, arr)
        try:
            return arr.get_orthogonal_selection((_selector(rblock), li, _selector(nblock)))
        except Exception as e:  # zarr/numcodecs raise RuntimeError, ValueError, OSError, ...
            where = (
                f"rows {rblock[0, 0]}..{rblock[-1, 1] - 1}, layer index {li}, "
                f"neurons {nblock[0, 0]}..{nblock[-1, 1] - 1}"
            )
            raise FormatError(
                f"{src.spec.path}: a chunk of {where} could not be read ({e}); "
                f"run `warehouse verify {self.root}`"
            ) from e

    def _check_chunk_files(
        self, src: ArraySource, li: int, rblock: np.ndarray, nblock: np.ndarray, arr: Any
    ) -> None:
        """Refuse (lstat, before zarr opens anything) a chunk file of the read that is a
        FIFO, device or link: zarr would block on it or read through it. A missing file is
        left to the store, which names it. A derived response's files are those of its
        per-token source rows."""
        if isinstance(self.root, Location) and self.root.remote:
            return
        spec = src.spec
        if spec.source is not None:
            rblock, spec = arr.token_span(rblock), spec.source
        rows, layers, units = spec.shards
        for r in _file_indices(rblock, rows):
            for k in _file_indices(nblock, units):
                rel = f"{spec.path}/c/{r}/{li // layers}/{k}"
                if os.path.lexists(Path(str(self.root)) / rel):
                    require_regular(Path(str(self.root)) / rel)

    def _array(self, src: ArraySource) -> zarr.Array:
        # Opening reads zarr.json; the arrays are read-only, so once per view is enough.
        if src.spec.key not in self._arrays:
            self._arrays[src.spec.key] = open_array(self.root, src.spec)
        return self._arrays[src.spec.key]

    def _row_runs(self, src: ArraySource, allowed: dict[str, Constraint]) -> np.ndarray:
        row_col = "prompt_row" if self.name == RESPONSES else "token_row"
        runs = allowed.get(row_col, Ints()).runs(src.n_rows)
        if self.prompt_ids is not None and "prompt_id" in allowed:
            ok = allowed["prompt_id"].mask(self.prompt_ids[: src.n_rows])
            runs = _intersect_runs(runs, _runs_of(np.flatnonzero(ok).astype(np.int64)))
        return runs

    def _frame(
        self,
        src: ArraySource,
        layer: int,
        rblock: np.ndarray,
        nblock: np.ndarray,
        values: np.ndarray | None,
        needed: set[str],
    ) -> pl.DataFrame:
        rows, neurons = _indices(rblock), _indices(nblock)
        n_r, n_n = len(rows), len(neurons)
        n = n_r * n_n
        cols: dict[str, pl.Series] = {}
        # values is (rows, neurons) in C order: the frame is row-major, neuron fastest.
        for name, dtype in self.schema.items():
            if name not in needed:
                continue
            if name == "value":
                data = from_storage(np.asarray(values), src.spec.dtype).astype(
                    np.float32, copy=False
                )
                cols[name] = pl.Series(name, data.reshape(-1), dtype)
            elif name in ("token_row", "prompt_row"):
                cols[name] = pl.Series(name, np.repeat(rows, n_n), dtype)
            elif name == "prompt_id":
                cols[name] = pl.Series(name, np.repeat(self.prompt_ids[rows], n_n), dtype)
            elif name == "neuron":
                cols[name] = pl.Series(name, np.tile(neurons, n_r), dtype)
            elif name == "neuron_id":
                cols[name] = pl.Series(name, np.tile(neurons + layer * src.units, n_r), dtype)
            elif name == "layer":
                cols[name] = pl.repeat(layer, n, dtype=dtype, eager=True).alias(name)
            elif name == "site":
                cols[name] = pl.repeat(src.site, n, dtype=dtype, eager=True).alias(name)
            elif name == "pooling":
                cols[name] = pl.repeat(src.pooling, n, dtype=dtype, eager=True).alias(name)
        # A query that needs no column (`count(*)` over a join) still needs the rows.
        return pl.DataFrame(cols, height=n) if cols else pl.DataFrame(height=n)


ZARR_JSON_BYTES = 1 << 20  # an array's zarr.json is ~1 KB; anything far bigger is not one


def check_array_files(root: Path, spec: ArraySpec, n_rows: int) -> None:
    """Refuse an array before any read is planned when its zarr.json is not a plain file or
    disagrees with the manifest on shape or chunks, or when its folder holds fewer row-chunk
    entries than its `n_rows` readable rows need (so a hostile shape costs one listing,
    stopped at that number, not an allocation per claimed chunk)."""
    if not os.path.lexists(Path(root) / spec.path / "zarr.json"):
        raise FormatError(
            f"array {spec.path} is missing or unreadable (no zarr.json); "
            f"run `warehouse verify {root}`"
        )
    meta_path = Path(root) / spec.path / "zarr.json"
    require_regular(meta_path)
    if meta_path.stat().st_size > ZARR_JSON_BYTES:
        raise FormatError(f"{meta_path} is larger than any zarr.json; run `warehouse verify`")
    try:
        meta = loads_json(meta_path.read_bytes())
        grid = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        shape = tuple(meta["shape"])
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{meta_path} is not a zarr array's metadata ({e})") from None
    if shape != spec.shape or grid != spec.shards:
        raise FormatError(
            f"array {spec.path} has shape {shape} (files {grid}) in its zarr.json, manifest "
            f"says {spec.shape} (files {spec.shards}); run `warehouse verify {root}`"
        )
    chunk_dir = Path(root) / spec.path / "c"
    want = -(-n_rows // spec.shards[0])
    have = 0
    if chunk_dir.is_dir():
        with os.scandir(chunk_dir) as entries:  # counted up to `want`, no further
            have = sum(1 for _ in itertools.islice(entries, want))
    if have < want:
        raise FormatError(
            f"array {spec.path} has {have} row chunk folders, its rows need {want}; "
            f"run `warehouse verify {root}`"
        )


def _prompts_within(root: Path | Location, n_prompts: int, n: int, tokens: int) -> int:
    """Of the first `n` prompts, those whose token rows all lie below the committed token
    mark. A derived response is read from those rows, and the token and prompt marks of an
    unfinished ingest commit apart."""
    start, length = prompt_tokens(root, n_prompts)
    return int(np.searchsorted(start[:n] + length[:n], tokens, "right"))


def zarr_views(
    root: Path | Location, manifest: Manifest, specs: dict[str, ArraySpec]
) -> dict[str, ZarrView]:
    """The `activations` and `responses` views of a warehouse (each only if it has arrays)."""
    units = manifest.model.units
    state = manifest.state
    acts: list[ArraySource] = []
    resps: list[ArraySource] = []
    for key, spec in sorted(specs.items()):  # stored arrays, and derived responses
        parts = key.split("/")
        site = parts[1]
        if site not in units:
            raise WarehouseError(
                f"manifest array {key} names site {site!r} absent from model.units"
            )
        if parts[0] == ACTIVATIONS:
            # While an ingest runs, rows past the committed mark are not on disk yet.
            n = state.rows_on_disk(key, spec.shape[0])
            acts.append(ArraySource(site, None, spec, int(units[site]), n))
        elif parts[0] == RESPONSES:
            n = state.rows_on_disk(key, spec.shape[0])
            if spec.source is not None and not state.complete:
                n = _prompts_within(root, spec.shape[0], n, state.committed("tokens"))
            resps.append(ArraySource(site, parts[2], spec, int(units[site]), n))
    if not (isinstance(root, Location) and root.remote):
        for src in acts + resps:  # a derived response's source is among the activations
            if src.spec.source is None:
                check_array_files(Path(str(root)), src.spec, src.n_rows)
    views = {}
    if acts:
        views[ACTIVATIONS] = ZarrView(ACTIVATIONS, root, acts)
    if resps:
        # through Polars: pyarrow's to_numpy imports pandas (~0.25 s of a query's start)
        ids = pl.from_arrow(read_table_at(root, PROMPTS_FILE, ["prompt_row", "prompt_id"]))
        order = np.argsort(ids["prompt_row"].to_numpy())  # type: ignore[index]
        prompt_ids = ids["prompt_id"].to_numpy()[order].astype(np.int64)  # type: ignore[index]
        views[RESPONSES] = ZarrView(RESPONSES, root, resps, prompt_ids)
    return views


# --------------------------------------------------------------------------------------------
# Parquet views
# --------------------------------------------------------------------------------------------


def parquet_views(root: Path | Location) -> dict[str, list[Path]] | dict[str, list[str]]:
    """Parquet views present in the warehouse: name -> the files it reads (paths in the
    location's filesystem for a remote warehouse)."""
    if isinstance(root, Location) and root.remote:
        remote: dict[str, list[str]] = {}
        for name in (PROMPTS, TOKENS):
            if root.isfile(f"{name}.parquet"):
                remote[name] = [root.path(f"{name}.parquet")]
        for name in DERIVED_VIEWS:
            files = [f"{name}/{n}" for n in root.listdir(name) if n.endswith(".parquet")]
            if files:
                remote[name] = [root.path(f) for f in files]
        return remote
    root = Path(str(root))
    views: dict[str, list[Path]] = {}
    # Every file a view reads is a plain file inside the folder (lstat, before any open):
    # a FIFO would block the scan, a device or a link would read something else.
    for name in (PROMPTS, TOKENS):
        if os.path.lexists(root / f"{name}.parquet"):
            views[name] = [_plain_inside(root, root / f"{name}.parquet")]
    for name in DERIVED_VIEWS:
        files = sorted((root / name).glob("*.parquet")) if (root / name).is_dir() else []
        if files:
            views[name] = [_plain_inside(root, f) for f in files]
    return views


def check_view_files(root: Path | Location, name: str, files: list[str]) -> None:
    """Before a derived view is scanned: each of its files has its sidecar and matches the
    crc32c there (store/derived.py; a remote file is read whole, local ones are hashed once
    per process). Only the views a query names are checked, so damage in stats/ does not
    stop a query of prompts."""
    if name in DERIVED_VIEWS:
        loc = Location.of(root)
        for f in files:
            check_derived(loc, f"{name}/{f.replace(os.sep, '/').rsplit('/', 1)[-1]}")


def _plain_inside(root: Path, path: Path) -> Path:
    """A view's file: refused when it (or a folder above it) leads out of the warehouse, or
    when it is not a plain file (a link, FIFO, device)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise FormatError(
            f"{path} leads outside the warehouse (a symbolic link?); a warehouse holds plain "
            f"files only: remove it, then run `warehouse verify {root}`"
        ) from None
    require_regular(path)
    return path


def parquet_glob(root: Path, name: str) -> Path:
    """The path (or glob) a Parquet view reads, as Polars and DuckDB both accept it."""
    return root / f"{name}.parquet" if name in ("prompts", "tokens") else root / name / "*.parquet"


def remote_dataset(root: Location, files: list[str]):
    """A pyarrow dataset over remote Parquet files: scans read only the row groups and
    columns a query needs, through fsspec range requests."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if files and not root.supports_ranges():
        # A server without range requests (python -m http.server): each file is read whole,
        # once per process (`Location.whole`).
        tables = [pq.read_table(pa.BufferReader(root.whole(f))) for f in files]
        return ds.dataset(pa.concat_tables(tables, promote_options="default"))
    return ds.dataset(files, filesystem=root.arrow_fs(), format="parquet")


def scan_parquet_view(
    root: Path | Location, name: str, files: list[str] | None = None
) -> pl.LazyFrame:
    check_view_files(root, name, files or [])
    if isinstance(root, Location) and root.remote:
        # Polars pushes projections and simple filters into the pyarrow scan.
        return pl.scan_pyarrow_dataset(remote_dataset(root, files or []))
    if files:  # the files listed (and checked) when the warehouse was opened, not a new glob
        return pl.scan_parquet(files)
    return pl.scan_parquet(parquet_glob(Path(str(root)), name))
