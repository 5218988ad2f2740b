"""Parquet tables of a warehouse (prompts, tokens, stats, selections, evals)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.errors import FormatError
from warehouse.store.files import atomic_write_bytes

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
