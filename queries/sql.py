"""`warehouse query W "SQL"`: run one query and render its result as a table, CSV, JSON or
Parquet, to stdout (returned as text) or to a new file."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from warehouse.errors import WarehouseError
from warehouse.store.files import atomic_write_bytes

FORMATS = ("table", "csv", "json", "parquet")
TABLE_ROWS = 50  # rows a terminal table shows; --format csv/json/parquet give every row


def run_query(
    warehouse_path: str | Path,
    sql: str,
    fmt: str = "table",
    output: Path | None = None,
    *,
    engine: str = "polars",
) -> str | None:
    """Run `sql` on the warehouse; return the rendered result, or None when written to `output`.

    Checks the format and output before querying, so a bad option costs no scan.
    """
    from warehouse.api import Warehouse

    if fmt not in FORMATS:
        raise WarehouseError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise WarehouseError("--format parquet writes binary: give a file with --output")
    if output is not None and Path(output).exists():
        raise WarehouseError(f"{output} already exists; remove it or choose another --output")
    df = Warehouse.open(warehouse_path).sql(sql, engine=engine)  # type: ignore[arg-type]
    data = render(df, fmt)
    if output is None:
        return data.decode()
    atomic_write_bytes(Path(output), data)
    return None


def render(df: pl.DataFrame, fmt: str) -> bytes:
    if fmt == "table":
        with pl.Config(tbl_rows=TABLE_ROWS, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            return (str(df) + "\n").encode()
    if fmt == "csv":
        return df.write_csv().encode()
    if fmt == "json":
        return (df.write_json() + "\n").encode()  # one array of row objects
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    return buf.getvalue()
