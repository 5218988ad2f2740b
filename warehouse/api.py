"""The public Python API: open a warehouse, get its views as LazyFrames, query them with SQL.

    w = Warehouse.open("demo-warehouse")
    w.tables()                      # ['activations', 'prompts', 'responses', 'tokens']
    w.sql("select token_row, value from activations where layer = 12 and neuron = 42")
    w.lazy("responses").filter(pl.col("neuron_id") == 18474).collect()
    w.array("ffn.act", layer=12)    # an xarray.DataArray [token_row, neuron], as cache["post", 12]

Polars is the default engine: its SQL is planned over the lazy views, so the filters of a query
reach the Zarr readers (see `warehouse.queries.views`). DuckDB runs over the same views. Both
read the views only and run within memory and time limits (`warehouse.queries.sandbox`,
`warehouse.queries.limits`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import polars as pl

from warehouse.ingest.sites import site_description
from warehouse.queries.limits import (
    QueryLimits,
    Stop,
    collect_bounded,
)
from warehouse.queries.sandbox import (
    check_plan,
    duckdb_select,
    refuse_table_functions,
    require_one_query,
)
from warehouse.queries.views import (
    DERIVED_VIEWS,
    ArraySource,
    ZarrView,
    check_view_files,
    parquet_views,
    remote_dataset,
    scan_parquet_view,
    zarr_views,
)
from warehouse.store.arrays import array_attributes, dims, from_storage
from warehouse.store.derived_pooling import readable_specs
from warehouse.store.errors import SiteError, WarehouseError
from warehouse.store.format import ARRAY_KINDS
from warehouse.store.location import Location, require_regular
from warehouse.store.manifest import Manifest, load_manifest
from warehouse.store.tables import check_table

if TYPE_CHECKING:
    import torch
    import xarray as xr

Engine = Literal["polars", "duckdb"]
T = TypeVar("T")
# Which rows of `Warehouse.array`: ids (prompt_id for prompts, token_row for tokens), a Polars
# expression over the table, or the text of a SQL WHERE clause over it.
Rows = int | list[int] | np.ndarray | range | pl.Expr | str | None
Units = int | list[int] | np.ndarray | range | None


def _pinned(manifest: Manifest, as_of: dict[str, Any] | None) -> Manifest:
    """`manifest` with the committed state of `as_of`, an earlier read of the same warehouse
    (its manifest.json object). Rows are only ever appended, so the earlier state names rows
    that are still there."""
    if as_of is None:
        return manifest
    earlier = Manifest.from_json(as_of, "the manifest the caller opened", check_paths=False)
    if earlier.fingerprint != manifest.fingerprint:
        raise WarehouseError("the warehouse was replaced since it was opened; open it again")
    return replace(manifest, state=earlier.state)


@dataclass
class Warehouse:
    """An opened warehouse: its manifest and the views a query can name."""

    root: Path | Location  # a Path for a local folder, a Location for a remote warehouse
    manifest: Manifest
    _zarr: dict[str, ZarrView] = field(repr=False)
    _parquet: dict[str, list[Path]] | dict[str, list[str]] = field(repr=False)

    @classmethod
    def open(cls, path: str | Path | Location, *, as_of: dict | None = None) -> Warehouse:
        """Open a warehouse, read-only when remote: a folder, a .zip file, or an fsspec URL
        (file://, http(s)://, s3://, gs://, memory://, zip://...). Opening reads the
        manifest and the prompt ids; a query then reads only the chunks it needs.

        `as_of` (an earlier manifest of the same warehouse) pins the committed rows to that
        manifest's: the query worker sees what its caller opened, not rows an ingest
        committed since."""
        loc = Location.of(path)
        root: Path | Location = loc if loc.remote else loc.local
        manifest = _pinned(load_manifest(loc), as_of)
        if not loc.remote:
            # prompts/tokens are read by Polars and DuckDB directly: check them against the
            # manifest once here, so an edited table is refused rather than queried.
            for entry in manifest.tables.values():
                path = loc.local / entry["path"]
                if os.path.lexists(path):  # lstat first: hashing a FIFO would block
                    require_regular(path)
                check_table(path, entry.get("sha256"))
        return cls(
            root,
            manifest,
            zarr_views(root, manifest, readable_specs(manifest)),
            parquet_views(root),
        )

    @property
    def location(self) -> Location:
        return Location.of(self.root)

    @property
    def remote(self) -> bool:
        return isinstance(self.root, Location) and self.root.remote

    def tables(self) -> list[str]:
        """Names of the views present in this warehouse, sorted."""
        return sorted([*self._zarr, *self._parquet])

    def lazy(self, name: str, *, stop: Stop | None = None) -> pl.LazyFrame:
        """The view `name` as a LazyFrame; nothing is read until it is collected. A Zarr
        view stops at its next block once `stop` is set (a query past its limits)."""
        if name in self._zarr:
            return self._zarr[name].lazy(stop)
        if name in self._parquet:
            return scan_parquet_view(self.root, name, [str(f) for f in self._parquet[name]])
        raise WarehouseError(self._missing(name))

    def sql(
        self,
        query: str,
        *,
        engine: Engine = "polars",
        limits: QueryLimits | None = None,
        isolate: bool = True,
    ) -> pl.DataFrame:
        """Run one SQL query over the views and return its result, within `limits` (memory
        and time). With `isolate` (the default) the query runs in a child process that is
        killed past either limit (`warehouse.worker`): the hard stop, ~5 ms more per
        query and ~0.5 s once per process to start the worker. `isolate=False`, and a
        `memory://` warehouse, run it in this process, stopped from a watchdog thread
        (`warehouse.queries.limits`), where a Polars computation may outlive its error."""
        limits = limits or QueryLimits()
        if engine not in ("polars", "duckdb"):
            raise WarehouseError(f"unknown engine {engine!r}; use 'polars' or 'duckdb'")
        root = self._isolated_root() if isolate else None
        if root is not None:
            from warehouse.worker import isolated, request

            return isolated(
                request("sql", root, query, engine, limits, as_of=self.manifest.to_json())
            )
        if engine == "polars":
            stop = Stop()
            lf = self.sql_lazy(query, stop)
            return self.run_polars(lambda: collect_bounded(lf, limits, stop))
        return self.duckdb_run(query, limits, lambda rel: rel.pl())

    def _isolated_root(self) -> str | None:
        """How a child process opens this warehouse, or None when it cannot (memory://)."""
        if isinstance(self.root, Location):
            url = self.root.url
            if "memory:" in url:
                return None
            return url if "://" in url or "::" in url else os.path.abspath(url)  # a .zip
        return os.path.abspath(self.root)

    def sql_lazy(self, query: str, stop: Stop | None = None) -> pl.LazyFrame:
        """The query as a checked LazyFrame (Polars engine), to stream or `.explain()`.

        A warehouse query reads the warehouse's views only (load other files yourself, in
        Python): see `warehouse.queries.sandbox` for how that is checked."""
        try:
            refuse_table_functions(query, set(self.tables()))
            # Only the views the query names: a view over remote files costs requests.
            views = {name: self.lazy(name, stop=stop) for name in self._named_in(query)}
            ctx = pl.SQLContext(views, eager=False)
            lf = ctx.execute(query)
            lf.collect_schema()  # the query's own errors (an unknown table, column) first
            require_one_query(pl.SQLContext(views, eager=False), query)
            check_plan(lf, views)
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None
        return lf

    def array(
        self,
        site: str,
        *,
        layer: Units = None,
        neurons: Units = None,
        prompts: Rows = None,
        tokens: Rows = None,
        pooling: str | None = None,
    ) -> xr.DataArray:
        """One site's values as a labelled `xarray.DataArray` [token_row | prompt_row, layer,
        neuron | d_model], reading only the chunks the selection falls in (checked as every
        read is). `pooling=None`: per-token activations; `pooling="mean"` (or another of its
        poolings, stored or derived from the per-token rows): pooled responses. `layer`
        (model layer numbers) and `neurons` take one number (its axis is then dropped, as
        `.sel` does) or several; `prompts` takes prompt_id values, `tokens` token_row
        values, or either a Polars expression or a SQL WHERE clause over its table. Rows
        come in warehouse order. float16 and float32 are returned as stored, bfloat16
        widened to float32."""
        import xarray as xr

        _register_accessors()
        view, src = self._array_source(site, pooling)
        rows = self._array_rows(view, src.n_rows, prompts, tokens)
        lis = _positions(layer, list(src.spec.layers), "layer")
        units = np.array(_positions(neurons, list(range(src.units)), "neuron"), np.int64)
        out = np.zeros((len(rows), len(lis), len(units)), _view_dtype(src))
        for j, li in enumerate(lis):
            if len(rows) and len(units):
                out[:, j, :] = from_storage(view.read(src, li, rows, units), src.spec.dtype)
        row_dim, _, unit_dim = dims(src.spec)
        coords: dict[str, Any] = {
            row_dim: rows,
            "layer": np.array(src.spec.layers, np.int64)[lis],
            unit_dim: units,
        }
        if view.prompt_ids is not None:
            coords["prompt_id"] = (row_dim, view.prompt_ids[rows])
        model = self.manifest.model
        attrs = array_attributes(model, src.spec, site_description(model.architecture, site))
        da = xr.DataArray(out, dims=dims(src.spec), coords=coords, name=site, attrs=attrs)
        scalar = {d: 0 for d, v in (("layer", layer), (unit_dim, neurons)) if _is_int(v)}
        return da.isel(scalar) if scalar else da

    def _array_source(self, site: str, pooling: str | None) -> tuple[ZarrView, ArraySource]:
        name = "activations" if pooling is None else "responses"
        if name not in self._zarr:
            raise WarehouseError(self._missing(name))
        view = self._zarr[name]
        for src in view.sources:
            if src.site == site and src.pooling == pooling:
                return view, src
        have = sorted({(s.site, s.pooling) for s in view.sources}, key=str)
        raise SiteError(
            f"no {name} array for site {site!r}"
            + (f" with pooling {pooling!r}" if pooling else "")
            + f"; this warehouse has: {', '.join(s + (f'/{p}' if p else '') for s, p in have)}"
        )

    def _array_rows(self, view: ZarrView, n_rows: int, prompts: Rows, tokens: Rows) -> np.ndarray:
        """Sorted row numbers of the selection: prompt rows of a `responses` view, token rows
        (of the selected prompts, if any) of `activations`."""
        what = "prompt" if view.name == "responses" else "token"
        if what == "prompt" and tokens is not None:
            raise WarehouseError("tokens= selects token rows; pooled responses have none")
        rows = np.arange(n_rows) if tokens is None else self._select("tokens", "token_row", tokens)
        if prompts is not None:
            ids = self._prompt_ids(prompts)
            if view.prompt_ids is not None:
                rows = np.flatnonzero(np.isin(view.prompt_ids[:n_rows], ids))
            else:
                lf = self.lazy("tokens").filter(pl.col("prompt_id").is_in(ids.tolist()))
                of_prompts = self.run_polars(lambda: lf.select("token_row").collect())
                rows = np.intersect1d(rows, of_prompts["token_row"].to_numpy())
        return _checked_rows(rows, n_rows, what)

    def _prompt_ids(self, prompts: Rows) -> np.ndarray:
        """The prompt_id values a prompt selection names; given ids must all exist."""
        ids = self._select("prompts", "prompt_id", prompts)
        if not isinstance(prompts, str | pl.Expr):
            known = self.run_polars(lambda: self.lazy("prompts").select("prompt_id").collect())
            missing = np.setdiff1d(ids, known["prompt_id"].to_numpy())
            if len(missing):
                raise WarehouseError(f"prompt_id {int(missing[0])} is not in this warehouse")
        return ids

    def _select(self, table: str, column: str, sel: Rows) -> np.ndarray:
        """Sorted unique `column` values of the `table` rows a selection names: values of
        `column` as given, a Polars expression, or a SQL WHERE clause (run by `sql`, so it
        reads this warehouse's views only)."""
        if isinstance(sel, str):
            values = self.sql(f"select {column} from {table} where {sel}")[column]
        elif isinstance(sel, pl.Expr):
            lf = self.lazy(table).filter(sel).select(column)
            values = self.run_polars(lambda: lf.collect())[column]
        else:
            values = pl.Series(np.asarray(sel, dtype=np.int64).reshape(-1))
        return np.unique(values.to_numpy().astype(np.int64))

    def run_polars(self, run: Callable[[], T]) -> T:
        """`run()`, a Polars computation over this warehouse, with Polars' errors as one-line
        `WarehouseError`s worded as `sql`'s are."""
        try:
            return run()
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None

    def _named_in(self, query: str) -> list[str]:
        """The views whose names occur in the query as words: only those are opened (and a
        derived view's files checked), so `select 1` opens none; an unknown table's error
        lists every view all the same (`_missing`)."""
        return [n for n in self.tables() if re.search(rf"\b{re.escape(n)}\b", query, re.I)]

    def duckdb_run(self, query: str, limits: QueryLimits, consume: Callable[[Any], T]) -> T:
        """Run one SELECT in a locked-down DuckDB connection over the views and hand its
        relation to `consume` (which fetches the rows) within `limits`."""

        def register(con: Any, stop: Stop) -> None:
            for name in self._named_in(query):
                con.register(name, self._duckdb_view(name, stop))

        return duckdb_select(
            query, limits, register, consume, lambda e: self._sql_error(e, duckdb=True)
        )

    def _duckdb_view(self, name: str, stop: Stop) -> Any:
        """What DuckDB scans for a view: an Arrow dataset over the Parquet files listed (and
        checked) at open, or the Zarr view's Polars frame (DuckDB pushes its filters and
        columns into it). DuckDB itself opens no file."""
        if name in self._zarr:
            return self.lazy(name, stop=stop)
        files = [str(f) for f in self._parquet[name]]
        check_view_files(self.root, name, files)
        if isinstance(self.root, Location):
            return remote_dataset(self.root, files)
        import pyarrow.dataset as ds

        return ds.dataset(files, format="parquet")

    def _sql_error(self, e: Exception, duckdb: bool = False) -> str:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = re.search(
            r"relation '([^']+)' was not found|Table with name (\S+) does not exist", msg
        )
        if missing:
            name = missing.group(1) or missing.group(2)
            return self._missing(name)
        if duckdb and "disabled by configuration" in msg:
            return (
                f"the duckdb engine reads only this warehouse's tables, no other file or URL "
                f"({msg}); load other data yourself and join it in Python"
            )
        return (
            f"SQL error: {msg.removeprefix('Parser Error: ')} (tables: {', '.join(self.tables())})"
        )

    def _missing(self, name: str) -> str:
        if name in DERIVED_VIEWS:
            return (
                f"table {name!r} does not exist yet in {self.root}: "
                f"create it with `{DERIVED_VIEWS[name]}`"
            )
        if name == "activations":
            return (
                f"table 'activations' is absent: {self.root} was ingested with --capture pooled "
                "(per-prompt `responses` only)"
            )
        if name in ARRAY_KINDS:
            return f"table {name!r} is absent: {self.root} has no {name} arrays"
        return f"unknown table {name!r}; tables: {', '.join(self.tables())}"


def _view_dtype(src: ArraySource) -> np.dtype:
    """The dtype `Warehouse.array` returns: as stored, bfloat16 widened to float32."""
    return np.dtype("float32" if src.spec.dtype == "bfloat16" else src.spec.dtype)


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _positions(sel: Units, labels: list[int], what: str) -> list[int]:
    """Positions on an axis of the labels a selection names (all for None), in axis order."""
    if sel is None:
        return list(range(len(labels)))
    wanted = [int(sel)] if _is_int(sel) else [int(x) for x in np.asarray(sel).reshape(-1)]
    index = {label: i for i, label in enumerate(labels)}
    bad = [x for x in wanted if x not in index]
    if bad:
        shown = f"{labels[0]}..{labels[-1]}" if labels == list(range(len(labels))) else labels
        raise WarehouseError(f"{what} {bad[0]} is not in this array ({what}s: {shown})")
    return sorted({index[x] for x in wanted})


def _checked_rows(rows: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_rows):
        bad = rows[0] if rows[0] < 0 else rows[-1]
        raise WarehouseError(f"{what} row {int(bad)} is not in this array (0..{n_rows - 1})")
    return rows


def to_numpy(da: xr.DataArray) -> np.ndarray:
    """The values of a `Warehouse.array` as a numpy array (the same as `da.values`)."""
    return np.asarray(da.values)


def to_torch(da: xr.DataArray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The values of a `Warehouse.array` as a torch tensor (sharing memory when no `dtype`
    is asked), to compare with TransformerLens's `cache["post", layer]`."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(da.values))
    return t if dtype is None else t.to(dtype)


class _NumpyAccessor:
    """`da.numpy()`: `to_numpy(da)`."""

    def __init__(self, da: xr.DataArray) -> None:
        self._da = da

    def __call__(self) -> np.ndarray:
        return to_numpy(self._da)


class _TorchAccessor:
    """`da.torch(dtype=None)`: `to_torch(da, dtype)`."""

    def __init__(self, da: xr.DataArray) -> None:
        self._da = da

    def __call__(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return to_torch(self._da, dtype)


@functools.cache
def _register_accessors() -> None:
    """Give every `xarray.DataArray` `.numpy()` and `.torch()` methods. xarray advises
    against subclassing DataArray; a callable accessor is its documented way to add a method.
    Registered once, when the first array is built; a name that xarray or another package
    already uses is left alone (the functions above always work)."""
    import xarray as xr

    for name, accessor in (("numpy", _NumpyAccessor), ("torch", _TorchAccessor)):
        if not hasattr(xr.DataArray, name):
            xr.register_dataarray_accessor(name)(accessor)
