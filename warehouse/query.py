"""`warehouse query W "SQL"`: run one query and render its result as a table, CSV, JSON or
Parquet, to stdout (returned as text) or to a new file.

With `--output`, Parquet and CSV are streamed into the file (Polars' sinks; DuckDB's record
batches), so a large result is never held in memory whole; a table or JSON is built first."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from warehouse.api import Warehouse
from warehouse.queries.limits import QueryLimits, Stop, collect_bounded
from warehouse.store.errors import WarehouseError

FORMATS = ("table", "csv", "json", "parquet")
TABLE_ROWS = 50  # rows a terminal table shows; --format csv/json/parquet give every row
BATCH_ROWS = 65_536  # rows per DuckDB record batch written to --output


def run_query(
    warehouse_path: str | Path,
    sql: str,
    fmt: str = "table",
    output: Path | None = None,
    *,
    engine: str = "polars",
    limits: QueryLimits | None = None,
) -> str | None:
    """Run `sql` on the warehouse; return the rendered result, or None when written to `output`.

    Checks the format and output before querying, so a bad option costs no scan.
    """
    if fmt not in FORMATS:
        raise WarehouseError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise WarehouseError("--format parquet writes binary: give a file with --output")
    if output is not None:
        check_output(Path(output))
    w = Warehouse.open(warehouse_path)
    limits = limits or QueryLimits()
    if output is None or fmt in ("table", "json"):
        df = w.sql(sql, engine=engine, limits=limits, isolate=False)  # type: ignore[arg-type]
        data = render(df, fmt)
        if output is None:
            return data.decode()
        _stream_to(Path(output), lambda tmp: tmp.write_bytes(data))
        return None
    _stream_to(Path(output), lambda tmp: _write(w, sql, fmt, tmp, engine, limits))
    return None


def check_output(path: Path) -> None:
    """A new file in an existing folder, or one line saying why not."""
    if os.path.lexists(path):
        raise WarehouseError(f"{path} already exists; remove it or choose another --output")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if os.path.lexists(folder) else "does not exist; create it first"
        raise WarehouseError(f"--output {path}: its folder {folder} {what}")


def _stream_to(path: Path, write: Any) -> None:
    """`write(tmp)` into a temp name beside `path`, then rename it to `path` (never over an
    existing file: the rename is a hard link, which fails when `path` appeared meanwhile).
    The temp name holds the pid, so the parent of a killed query process removes it."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        write(tmp)
        os.link(tmp, path)
    except FileExistsError:
        raise WarehouseError(
            f"{path} already exists; remove it or choose another --output"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write(w: Any, sql: str, fmt: str, tmp: Path, engine: str, limits: QueryLimits) -> None:
    if engine == "polars":
        stop = Stop()
        lf = w.sql_lazy(sql, stop)
        sink = (
            lf.sink_parquet(tmp, compression="zstd", lazy=True)
            if fmt == "parquet"
            else text_columns(lf).sink_csv(tmp, lazy=True)
        )
        w.run_polars(lambda: collect_bounded(sink, limits, stop))
    elif engine == "duckdb":
        w.duckdb_run(sql, limits, lambda rel: _write_batches(rel, fmt, tmp))
    else:
        raise WarehouseError(f"unknown engine {engine!r}; use 'polars' or 'duckdb'")


def _write_batches(rel: Any, fmt: str, tmp: Path) -> None:
    """Write a DuckDB relation's record batches one at a time."""
    import pyarrow.parquet as pq

    reader = rel.to_arrow_reader(BATCH_ROWS)
    if fmt == "parquet":
        with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as out:
            for batch in reader:
                out.write_batch(batch)
        return
    with open(tmp, "wb") as f:
        first = True
        for batch in reader:
            df = text_columns(pl.from_arrow(batch))  # type: ignore[arg-type]
            f.write(df.write_csv(include_header=first).encode())
            first = False
        if first:  # no rows: the header alone
            empty = pl.from_arrow(reader.schema.empty_table())
            f.write(text_columns(empty).write_csv().encode())  # type: ignore[arg-type]


def text_columns(frame: Any) -> Any:
    """List, array and struct columns as JSON text (CSV holds flat values only)."""
    nested = [n for n, t in frame.collect_schema().items() if t.is_nested()]
    return frame.with_columns(
        pl.when(pl.col(n).is_null())
        .then(None)
        .otherwise(
            pl.struct(pl.col(n).alias("v"))
            .struct.json_encode()
            .str.strip_prefix('{"v":')
            .str.strip_suffix("}")
        )
        .alias(n)
        for n in nested
    )


def render(df: pl.DataFrame, fmt: str) -> bytes:
    if fmt == "table":
        with pl.Config(tbl_rows=TABLE_ROWS, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            return (str(df) + "\n").encode()
    if fmt == "csv":
        return text_columns(df).write_csv().encode()
    if fmt == "json":
        return (df.write_json() + "\n").encode()  # one array of row objects
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    return buf.getvalue()
