"""Parquet tables of a warehouse (prompts, tokens, stats, selections, evals)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.store.errors import FormatError
from warehouse.store.files import atomic_write_bytes, loads_json, sha256_file
from warehouse.store.format import MANIFEST
from warehouse.store.location import Location, require_regular

if TYPE_CHECKING:
    from warehouse.store.manifest import Manifest

# Row groups of ~64k rows let DuckDB/Polars skip groups by their min/max statistics
# (e.g. a query for one prompt_id range) without making files of many tiny groups.
ROW_GROUP_SIZE = 65_536


# Key-value metadata of every Parquet file a warehouse writes: which warehouse it belongs to.
PROVENANCE_KEYS = ("relation-warehouse.format_version", "relation-warehouse.fingerprint")


def provenance(manifest: Manifest) -> dict[str, str]:
    """A manifest's format version and fingerprint, as a Parquet file's key-value metadata."""
    values = (manifest.format_version, manifest.fingerprint)
    return {k: str(v) for k, v in zip(PROVENANCE_KEYS, values, strict=True) if v is not None}


def _unchecked_manifest(folder: Path) -> Manifest | None:
    """The manifest of `folder` as it is (its paths and fingerprint not checked), or None
    when there is none or it is not one: what a table's provenance and checksum come from."""
    from warehouse.store.manifest import Manifest

    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        return None
    try:
        raw = loads_json(path.read_bytes())
        return Manifest.from_json(raw, folder, check_fingerprint=False, check_paths=False)
    except (OSError, ValueError, FormatError):
        return None


def warehouse_provenance(path: Path) -> dict[str, str]:
    """The provenance of the warehouse a table is written into (its manifest.json is in one
    of the folders above: `W/`, `W/stats/`, `W/evals/parts/<request>/`); none outside one."""
    for folder in list(Path(path).parents)[:4]:
        if (folder / MANIFEST).is_file() and not (folder / MANIFEST).is_symlink():
            m = _unchecked_manifest(folder)
            return provenance(m) if m is not None else {}
    return {}


def table_of(columns: dict, schema: pa.Schema) -> pa.Table:
    """A table of these columns (NumPy arrays or lists) with exactly this schema.

    Built through Polars, not `pa.table`: pyarrow's constructors import pandas on their
    first call when it is installed (0.3-0.4 s, to ask whether a value is a pandas object),
    which was the largest part of an ingest's own time before its first batch; an ingest or
    an eval needs pandas nowhere else."""
    import polars as pl

    # Polars infers each column's type (an empty one is null-typed); the cast makes it the
    # schema's, and refuses a value that does not fit
    return pl.DataFrame(columns).to_arrow().cast(schema)


def numpy_columns(table: pa.Table, names: Sequence[str]) -> list[np.ndarray]:
    """These columns of `table` as writable NumPy arrays, through Polars: pyarrow's own
    `to_numpy` imports pandas on its first call, as its constructors do (`table_of`)."""
    import polars as pl

    frame = pl.from_arrow(table.select(list(names)))
    assert isinstance(frame, pl.DataFrame)
    return [frame[name].to_numpy(writable=True) for name in names]


def write_table(path: Path, table: pa.Table, manifest: Manifest | None = None) -> None:
    """Write a Parquet table atomically, with the provenance of `manifest` (by default the
    manifest of the warehouse it is written into) in its key-value metadata."""
    meta = provenance(manifest) if manifest is not None else warehouse_provenance(path)
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


# (path, size, mtime, inode) -> sha256 of tables already hashed by this process: a table is
# hashed once, not on every read, and any rewrite of the file changes the key.
_HASHED: dict[tuple[str, int, int, int], str] = {}


def check_table(path: Path, expected: str | None) -> None:
    """Refuse a manifest table whose bytes differ from the checksum the manifest records.

    Parquet has no checksum of its own by default, so an edited prompts/tokens file could
    otherwise be read as if it were the real one.
    """
    if expected is None:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: table file is missing; run `warehouse verify`") from None
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    if _HASHED[key] != expected:
        raise FormatError(
            f"{path} does not match its checksum in manifest.json (edited or damaged); "
            f"run `warehouse verify {Path(path).parent}`"
        )


def _manifest_checksum(path: Path) -> str | None:
    """The sha256 manifest.json records for `path`, when it is one of its tables."""
    m = _unchecked_manifest(path.parent)
    for entry in m.tables.values() if m is not None else ():
        if entry.get("path") == path.name:
            return entry.get("sha256")
    return None


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    from warehouse.store.derived import check_derived_path

    if os.path.lexists(path):
        require_regular(path)  # never through a link, never blocked on a FIFO
    check_table(path, _manifest_checksum(Path(path)))
    check_derived_path(Path(path))  # a derived table: its sidecar and its crc32c
    try:
        # ParquetFile, not pq.read_table: that one imports pyarrow.dataset (and with it
        # pandas, ~0.4 s), which a query of prompts need not pay for.
        return pq.ParquetFile(path).read(columns=columns)
    except FileNotFoundError:
        raise FormatError(f"{path}: table file is missing") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{path}: not a readable Parquet file ({e})") from None


def read_table_at(
    root: Path | str | Location, rel: str, columns: list[str] | None = None
) -> pa.Table:
    """`read_table` of `rel` in a local or remote warehouse (remote: only the footer and the
    asked columns' chunks are fetched)."""
    from warehouse.store.derived import check_derived, is_derived

    loc = Location.of(root)
    if not loc.remote:
        return read_table(loc.local / rel, columns)
    try:
        if is_derived(rel):  # read whole (derived tables are small), checked, then parsed
            data = loc.read_bytes(rel)
            check_derived(loc, rel, data)
            return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)
        with loc.open(rel) as f:
            return pq.ParquetFile(f).read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{loc}: {rel} is not a readable Parquet file ({e})") from None
