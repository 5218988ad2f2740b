"""Parquet tables of a warehouse (prompts, tokens, stats, selections, evals)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.errors import FormatError
from warehouse.store.files import atomic_write_bytes
from warehouse.store.location import Location

# Row groups of ~64k rows let DuckDB/Polars skip groups by their min/max statistics
# (e.g. a query for one prompt_id range) without making files of many tiny groups.
ROW_GROUP_SIZE = 65_536


def write_table(path: Path, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise FormatError(f"{path}: table file is missing") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{path}: not a readable Parquet file ({e})") from None


def read_table_at(
    root: Path | str | Location, rel: str, columns: list[str] | None = None
) -> pa.Table:
    """`read_table` of `rel` in a local or remote warehouse (remote: only the footer and the
    asked columns' chunks are fetched)."""
    loc = Location.of(root)
    if not loc.remote:
        return read_table(loc.local / rel, columns)
    try:
        with loc.open(rel) as f:
            return pq.read_table(f, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{loc}: {rel} is not a readable Parquet file ({e})") from None
