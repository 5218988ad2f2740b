"""The public Python API: open a warehouse, get its views as LazyFrames, query them with SQL.

    w = Warehouse.open("demo-warehouse")
    w.tables()                      # ['activations', 'prompts', 'responses', 'tokens']
    w.sql("select token_row, value from activations where layer = 12 and neuron = 42")
    w.lazy("responses").filter(pl.col("neuron_id") == 18474).collect()

Polars is the engine: its SQL is planned over the lazy views, so the filters of a query reach
the Zarr readers (see `warehouse.queries.views`). DuckDB can run the Parquet-only views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from warehouse.errors import WarehouseError
from warehouse.queries.views import (
    DERIVED_VIEWS,
    ZarrView,
    parquet_views,
    remote_dataset,
    scan_parquet_view,
    zarr_views,
)
from warehouse.store.location import Location
from warehouse.store.manifest import array_specs, load_manifest
from warehouse.store.tables import check_table

Engine = Literal["polars", "duckdb"]
# Polars SQL's table functions that read files (read_csv, read_parquet, read_ipc, ...).
_FILE_FUNCTIONS = re.compile(r"\bread_[a-z_]+\s*\(", re.IGNORECASE)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
                check_table(loc.local / entry["path"], entry.get("sha256"))
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

    def lazy(self, name: str) -> pl.LazyFrame:
        """The view `name` as a LazyFrame; nothing is read until it is collected."""
        if name in self._zarr:
            return self._zarr[name].lazy()
        if name in self._parquet:
            return scan_parquet_view(self.root, name, [str(f) for f in self._parquet[name]])
        raise WarehouseError(self._missing(name))

    def sql(self, query: str, *, engine: Engine = "polars") -> pl.DataFrame:
        """Run one SQL query over the views and return its result."""
        if engine == "polars":
            return self._sql_polars(query)
        if engine == "duckdb":
            return self._sql_duckdb(query)
        raise WarehouseError(f"unknown engine {engine!r}; use 'polars' or 'duckdb'")

    def sql_lazy(self, query: str) -> pl.LazyFrame:
        """The query as a LazyFrame (Polars engine), to stream or inspect with .explain()."""
        # Polars SQL can read any file with read_csv('...') and friends; a warehouse query
        # reads the warehouse's views only (load other files yourself, in Python). String
        # literals are blanked first, so text that merely mentions read_csv is fine.
        found = _FILE_FUNCTIONS.search(re.sub(r"'(?:[^']|'')*'", "''", query))
        if found:
            raise WarehouseError(
                "warehouse queries read the warehouse's views only, not files: "
                f"{found.group(0).strip()}...) is not allowed"
            )
        # Only the views the query names: a view over remote files costs requests to build.
        views = {name: self.lazy(name) for name in self._named_in(query)}
        ctx = pl.SQLContext(views, eager=False)
        try:
            return ctx.execute(query)
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None

    def _named_in(self, query: str) -> list[str]:
        """The views whose names occur in the query as words (all of them when none do, so
        that an unknown-table error still lists every view)."""
        names = [n for n in self.tables() if re.search(rf"\b{re.escape(n)}\b", query, re.I)]
        return names or list(self.tables())

    def _sql_polars(self, query: str) -> pl.DataFrame:
        lf = self.sql_lazy(query)
        try:
            # The streaming engine pulls the Zarr blocks one at a time through filters and
            # aggregations, so a query over every neuron does not hold the array in memory.
            return lf.collect(engine="streaming")
        except pl.exceptions.PolarsError as e:
            raise WarehouseError(self._sql_error(e)) from None

    def _sql_duckdb(self, query: str) -> pl.DataFrame:
        import duckdb

        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        try:
            files = []
            named = set(self._named_in(query))
            for name, paths in self._parquet.items():
                if name not in named:
                    continue
                if isinstance(self.root, Location):
                    # DuckDB scans a pyarrow dataset with projection and filter pushdown.
                    con.register(name, remote_dataset(self.root, [str(f) for f in paths]))
                    continue
                files += [str(p) for p in paths]
                listed = ", ".join(_sql_str(str(p)) for p in paths)
                con.execute(f"create view {name} as select * from read_parquet([{listed}])")
            # The views are the only files the connection may touch: no other file, no
            # URL, no extension install, no ATTACH or COPY elsewhere, and the settings are
            # locked so the query cannot undo this.
            if files:
                con.execute(f"set allowed_paths = [{', '.join(_sql_str(f) for f in files)}]")
            con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")
            statements = con.extract_statements(query)
            kinds = {s.type for s in statements}
            if len(statements) != 1 or not kinds <= {
                duckdb.StatementType.SELECT,
                duckdb.StatementType.EXPLAIN,
            }:
                raise WarehouseError(
                    "warehouse queries are one SELECT statement (no COPY, ATTACH, INSTALL, "
                    f"SET, PRAGMA or writes); got {', '.join(t.name for t in kinds) or 'none'}"
                )
            return con.sql(query).pl()
        except duckdb.Error as e:
            raise WarehouseError(self._sql_error(e, duckdb=True)) from None
        finally:
            con.close()

    def _sql_error(self, e: Exception, duckdb: bool = False) -> str:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = re.search(
            r"relation '([^']+)' was not found|Table with name (\S+) does not exist", msg
        )
        if missing:
            name = missing.group(1) or missing.group(2)
            if duckdb and name in self._zarr:
                return (
                    f"{name} is read from Zarr and only the polars engine can query it "
                    f"(duckdb tables: {', '.join(sorted(self._parquet))})"
                )
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
