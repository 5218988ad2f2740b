"""The public Python API: open a warehouse, get its views as LazyFrames, query them with SQL.

    w = Warehouse.open("demo-warehouse")
    w.tables()                      # ['activations', 'prompts', 'responses', 'tokens']
    w.sql("select token_row, value from activations where layer = 12 and neuron = 42")
    w.lazy("responses").filter(pl.col("neuron_id") == 18474).collect()

Polars is the default engine: its SQL is planned over the lazy views, so the filters of a query
reach the Zarr readers (see `warehouse.queries.views`). DuckDB runs over the same views. Both
read the views only and run within memory and time limits (`warehouse.queries.sandbox`,
`warehouse.queries.limits`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from warehouse.errors import QueryLimitError, WarehouseError
from warehouse.queries.limits import (
    QueryLimits,
    Stop,
    collect_bounded,
    watchdog,
)
from warehouse.queries.sandbox import (
    check_plan,
    duckdb_connection,
    refuse_table_functions,
    require_one_select,
)
from warehouse.queries.views import (
    DERIVED_VIEWS,
    ZarrView,
    parquet_views,
    remote_dataset,
    scan_parquet_view,
    zarr_views,
)
from warehouse.store.location import Location, require_regular
from warehouse.store.manifest import array_specs, load_manifest
from warehouse.store.tables import check_table

Engine = Literal["polars", "duckdb"]
T = TypeVar("T")

ZARR_VIEWS = ("activations", "responses")


@dataclass
class Warehouse:
    """An opened warehouse: its manifest and the views a query can name."""

    root: Path | Location  # a Path for a local folder, a Location for a remote warehouse
    manifest: dict[str, Any]
    _zarr: dict[str, ZarrView] = field(repr=False)
    _parquet: dict[str, list[Path]] | dict[str, list[str]] = field(repr=False)

    @classmethod
    def open(cls, path: str | Path | Location) -> Warehouse:
        """Open a warehouse, read-only when remote: a folder, a .zip file, or an fsspec URL
        (file://, http(s)://, s3://, gs://, memory://, zip://...). Opening reads the
        manifest and the prompt ids; a query then reads only the chunks it needs."""
        loc = Location.of(path)
        root: Path | Location = loc if loc.remote else loc.local
        manifest = load_manifest(loc)
        if not loc.remote:
            # prompts/tokens are read by Polars and DuckDB directly: check them against the
            # manifest once here, so an edited table is refused rather than queried.
            for entry in manifest["tables"].values():
                path = loc.local / entry["path"]
                if os.path.lexists(path):  # lstat first: hashing a FIFO would block
                    require_regular(path)
                check_table(path, entry.get("sha256"))
        return cls(
            root, manifest, zarr_views(root, manifest, array_specs(manifest)), parquet_views(root)
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
        self, query: str, *, engine: Engine = "polars", limits: QueryLimits | None = None
    ) -> pl.DataFrame:
        """Run one SQL query over the views and return its result, within `limits` (memory
        and time; see `warehouse.queries.limits`)."""
        limits = limits or QueryLimits()
        if engine == "polars":
            stop = Stop()
            lf = self.sql_lazy(query, stop)
            return self._polars(lambda: collect_bounded(lf, limits, stop))
        if engine == "duckdb":
            return self.duckdb_run(query, limits, lambda rel: rel.pl())
        raise WarehouseError(f"unknown engine {engine!r}; use 'polars' or 'duckdb'")

    def sql_lazy(self, query: str, stop: Stop | None = None) -> pl.LazyFrame:
        """The query as a checked LazyFrame (Polars engine), to stream or `.explain()`.

        A warehouse query reads the warehouse's views only (load other files yourself, in
        Python): see `warehouse.queries.sandbox` for how that is checked."""
        try:
            refuse_table_functions(query, set(self.tables()))
            # Only the views the query names: a view over remote files costs requests.
            views = {name: self.lazy(name, stop=stop) for name in self._named_in(query)}
            lf = pl.SQLContext(views, eager=False).execute(query)
            check_plan(lf, views)
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None
        return lf

    def _polars(self, run: Callable[[], T]) -> T:
        """`run()`, with Polars' errors as one-line `WarehouseError`s."""
        try:
            return run()
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None

    def _named_in(self, query: str) -> list[str]:
        """The views whose names occur in the query as words (all of them when none do, so
        that an unknown-table error still lists every view)."""
        names = [n for n in self.tables() if re.search(rf"\b{re.escape(n)}\b", query, re.I)]
        return names or list(self.tables())

    def duckdb_run(self, query: str, limits: QueryLimits, consume: Callable[[Any], T]) -> T:
        """Run one SELECT in a locked-down DuckDB connection over the views and hand its
        relation to `consume` (which fetches the rows) within `limits`."""
        import duckdb

        stop = Stop()
        with duckdb_connection(limits) as con:
            try:
                require_one_select(con, query)
                for name in self._named_in(query):
                    con.register(name, self._duckdb_view(name, stop))
                with watchdog(limits, stop, con.interrupt):
                    try:
                        return consume(con.sql(query))
                    except duckdb.Error as e:
                        if stop.reason is not None:
                            raise QueryLimitError(stop.reason) from None
                        raise WarehouseError(self._sql_error(e, duckdb=True)) from None
            except duckdb.Error as e:
                raise WarehouseError(self._sql_error(e, duckdb=True)) from None

    def _duckdb_view(self, name: str, stop: Stop) -> Any:
        """What DuckDB scans for a view: an Arrow dataset over the Parquet files listed (and
        checked) at open, or the Zarr view's Polars frame (DuckDB pushes its filters and
        columns into it). DuckDB itself opens no file."""
        if name in self._zarr:
            return self.lazy(name, stop=stop)
        files = [str(f) for f in self._parquet[name]]
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
        if name in ZARR_VIEWS:
            return f"table {name!r} is absent: {self.root} has no {name} arrays"
        return f"unknown table {name!r}; tables: {', '.join(self.tables())}"
