"""Derived tables: each Parquet file of stats/, selections/, evals/ and study/ lies beside
its JSON sidecar, which records the file's crc32c; every read checks both.

A derived table is read only with the sidecar its command wrote (a Parquet file without
one is refused: the `stats` view would otherwise read whatever was dropped there), and its
bytes must match the sidecar's `crc32c` (an edit that keeps a valid Parquet file is
refused, like a damaged one). Local files are hashed once per process while their size,
mtime and inode stay the same; remote and zipped ones as they are read. Sidecars written
before checksums were recorded have none, and their tables are read unchecked (`verify`
still decodes them).

crc32c is a check against damage and mix-ups, not against tampering, as for the arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from warehouse.store.errors import FormatError, MissingFileError
from warehouse.store.files import Crc32c
from warehouse.store.format import DERIVED_DIRS, SIDECAR_SUFFIX
from warehouse.store.location import Location

CHECKSUM = "crc32c"  # the sidecar field that holds a derived table's checksum

# (path, size, mtime, inode) -> crc32c of files already hashed by this process
_HASHED: dict[tuple[str, int, int, int], str] = {}


def crc32c_of(data: bytes) -> str:
    h = Crc32c()
    h.update(data)
    return h.hexdigest()


def crc32c_file(path: Path) -> str:
    """The crc32c of a local file, once per process while it is unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        h = Crc32c()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def checksum_field(table: Path) -> dict[str, str]:
    """What a derived table's sidecar records of its bytes: {"crc32c": hex}."""
    return {CHECKSUM: crc32c_file(table)}


def is_derived(rel: str) -> bool:
    """Whether `rel` (relative to a warehouse) is a derived Parquet table."""
    return rel.split("/", 1)[0] in DERIVED_DIRS and "/" in rel and rel.endswith(".parquet")


def sidecar_rel(rel: str) -> str:
    return rel.removesuffix(".parquet") + SIDECAR_SUFFIX


def read_sidecar(loc: Location, rel: str) -> dict[str, Any]:
    """The sidecar of derived table `rel`: a plain file holding a JSON object, or one line
    saying why the table is refused."""
    side = sidecar_rel(rel)
    command = DERIVED_DIRS[rel.split("/", 1)[0]]
    try:
        meta = loc.read_json(side)
    except MissingFileError:
        raise FormatError(
            f"{loc}: {rel} has no sidecar {side.rsplit('/', 1)[-1]}, so nothing says what "
            f"made it: re-run `warehouse {command}`, or delete it if it was put there by hand"
        ) from None
    if not isinstance(meta, dict):
        raise FormatError(f"{loc}: {side} is not a JSON object, so {rel} is not read")
    return meta


def check_derived(loc: Location, rel: str, data: bytes | None = None) -> None:
    """Refuse derived table `rel` without its sidecar, or whose bytes (`data`, or the file's)
    differ from the crc32c its sidecar records."""
    want = read_sidecar(loc, rel).get(CHECKSUM)
    if want is None:
        return  # a sidecar written before checksums were recorded
    if data is not None:
        got = crc32c_of(data)
    elif loc.remote:
        got = crc32c_of(loc.read_bytes(rel))
    else:
        got = crc32c_file(Path(loc.file(rel)))
    if got != want:
        raise FormatError(
            f"{loc}: {rel} does not match the crc32c its sidecar records (edited or damaged); "
            f"run `warehouse verify {loc}`"
        )


def check_derived_path(path: Path) -> None:
    """`check_derived` for a local file, when it is a derived table of a warehouse (its
    manifest.json is in the folder two or three levels up: W/stats/x.parquet,
    W/evals/parts/<request>/x.parquet); other files pass."""
    path = Path(path)
    for depth in (2, 4):
        parents = list(path.parents)
        if len(parents) >= depth and (parents[depth - 1] / "manifest.json").is_file():
            root = parents[depth - 1]
            rel = path.relative_to(root).as_posix()
            if is_derived(rel):
                check_derived(Location.of(root), rel)
            return
