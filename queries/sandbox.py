"""What a warehouse query may read, checked on the engines' own parse and plan, not on text.

Polars: `table_identifiers` (Polars' own SQL parser) lists every table the query names, table
functions included; a name that is not a view and that Polars resolves as a table function
(`read_csv`, `read_parquet`, ...: any name Polars does not answer "not a supported table
function" for) is refused before the plan is built, so no file is touched. The statement must
be one query (Polars' parser accepts it as a subquery). Then every leaf of the resolved plan
must be one of the views' own scans (the same Parquet paths, the same Zarr reader) or an
in-memory literal (`VALUES`).

DuckDB: the query must parse to exactly one SELECT statement, and the connection has no file
access at all: the views are Arrow datasets and Polars frames this code opens itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import polars as pl

from warehouse.queries.limits import QueryLimits, Stop, watchdog
from warehouse.store.errors import QueryLimitError, WarehouseError

T = TypeVar("T")

_NOT_A_FUNCTION = "is not a supported table function"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_table_function(name: str) -> bool:
    """Whether Polars SQL resolves `name(...)` as a table function. Asked with no arguments,
    so nothing is read; any answer other than "not a supported table function" counts as a
    function (a renamed message refuses too much, never too little)."""
    try:
        pl.SQLContext().execute(f"select * from {_quoted(name)}()").collect_schema()
    except pl.exceptions.PolarsError as e:
        return _NOT_A_FUNCTION not in str(e)
    return True


def table_identifiers(query: str) -> list[str]:
    """Every table name the query refers to, as Polars' SQL parser sees it."""
    return list(pl.SQLContext()._ctxt.table_identifiers(query))


def refuse_table_functions(query: str, views: set[str]) -> None:
    """Refuse a query naming anything but views and its own CTEs (a table function reads
    files: `read_csv('/etc/passwd')`, however it is quoted, spelled or commented)."""
    for name in table_identifiers(query):
        if name not in views and is_table_function(name):
            raise WarehouseError(
                "warehouse queries read the warehouse's views only, not files: the table "
                f"function {name}(...) is not allowed"
            )


def require_one_query(ctx: pl.SQLContext, query: str) -> None:
    """Refuse any statement but one query (SELECT, VALUES, WITH, set operations): Polars'
    own parser must accept the text as a subquery, `select * from (<query>) as _q`, which
    EXPLAIN, SHOW, CREATE, DROP, TRUNCATE, DELETE and any other statement are not (a DELETE
    parses as a subquery, and is refused when its plan is resolved). Only the plan and its
    schema are built, nothing is read; a trailing `;` is allowed."""
    body = query.rstrip().rstrip(";")
    try:
        ctx.execute(f"select * from (\n{body}\n) as _warehouse_query").collect_schema()
    except pl.exceptions.PolarsError:
        raise WarehouseError(
            "warehouse queries are one query (SELECT, VALUES or WITH ... SELECT): no EXPLAIN, "
            "SHOW, CREATE, DROP, TRUNCATE, DELETE or other statement"
        ) from None


def _leaves(lf: pl.LazyFrame) -> Iterator[tuple[str, Any]]:
    """(node type, what it reads) of every leaf of the resolved plan."""
    nt = lf._ldf.visit()
    todo = [nt.get_node()]
    while todo:
        nt.set_node(todo.pop())
        node = nt.view_current_node()
        kind = type(node).__name__
        inputs = nt.get_inputs()
        if kind == "Scan":
            yield kind, tuple(str(p) for p in node.paths)
        elif kind == "PythonScan":
            yield kind, node.options[0]
        elif not inputs:
            yield kind, None
        todo.extend(inputs)


def check_plan(lf: pl.LazyFrame, views: dict[str, pl.LazyFrame]) -> None:
    """Refuse a plan that reads anything other than the views' own sources."""
    own_paths = set()
    own_readers: list[Any] = []
    for view in views.values():
        for kind, what in _leaves(view):
            if kind == "Scan":
                own_paths.add(what)
            elif kind == "PythonScan":
                own_readers.append(what)
    for kind, what in _leaves(lf):
        if kind == "Scan" and what in own_paths:
            continue
        if kind == "PythonScan" and any(what is r for r in own_readers):
            continue
        if kind == "DataFrameScan":  # VALUES lists and other literals
            continue
        raise WarehouseError(
            f"warehouse queries read the warehouse's views only: the plan reads {kind} "
            f"{what!r}, which is none of them"
        )


# ---------------------------------------------------------------------------------- DuckDB


def duckdb_config(limits: QueryLimits, temp_dir: str) -> dict[str, Any]:
    """Settings fixed when the connection opens, then locked: no file or network access,
    no extensions, no lookup of Python variables, memory and spill space bounded."""
    return {
        "enable_external_access": False,
        "python_enable_replacements": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "memory_limit": f"{limits.memory_bytes}B",
        "temp_directory": temp_dir,
        "max_temp_directory_size": f"{limits.memory_bytes}B",
        "lock_configuration": True,
    }


@contextmanager
def duckdb_connection(limits: QueryLimits) -> Iterator[Any]:
    """A locked-down in-memory DuckDB connection with a private spill folder, removed after."""
    import duckdb

    # the pid in its name lets the parent of a killed query process remove it
    temp_dir = tempfile.mkdtemp(prefix=f"warehouse-duckdb-{os.getpid()}-")
    try:
        con = duckdb.connect(config=duckdb_config(limits, temp_dir))
        try:
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def require_one_select(con: Any, query: str) -> None:
    """Refuse anything but exactly one SELECT (EXPLAIN ANALYZE, COPY, ATTACH, PRAGMA, SET,
    INSTALL, LOAD, CREATE, EXPORT, CALL, several statements, ...), by DuckDB's own parser."""
    import duckdb

    statements = con.extract_statements(query)
    kinds = [s.type for s in statements]
    if kinds != [duckdb.StatementType.SELECT]:
        got = ", ".join(k.name for k in kinds) or "none"
        raise WarehouseError(
            "warehouse queries are one SELECT statement (no EXPLAIN, COPY, EXPORT, ATTACH, "
            f"INSTALL, LOAD, SET, PRAGMA, CALL or writes); got {got}"
        )


def duckdb_select(
    query: str,
    limits: QueryLimits,
    register: Callable[[Any, Stop], None],
    consume: Callable[[Any], T],
    message: Callable[[Exception], str],
) -> T:
    """Run one SELECT in a locked-down connection within `limits`: `register(con, stop)`
    hands DuckDB the views it may scan (Arrow data, never paths), `consume` fetches the
    rows, and a DuckDB error becomes a WarehouseError worded by `message` (a
    QueryLimitError once the watchdog stopped the query)."""
    import duckdb

    stop = Stop()
    with duckdb_connection(limits) as con:
        try:
            require_one_select(con, query)
            register(con, stop)
            with watchdog(limits, stop, con.interrupt):
                return consume(con.sql(query))
        except duckdb.Error as e:
            if stop.reason is not None:
                raise QueryLimitError(stop.reason) from None
            raise WarehouseError(message(e)) from None
