"""Atomic file writes and checksums: every file of a warehouse is written to a temp name and
renamed, so a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import google_crc32c

from warehouse.store.errors import FormatError, WarehouseError

# Temp files carry this marker so that verify/resume can recognise (and clean) leftovers of
# a killed process; zarr's own LocalStore uses ".partial" for the same purpose.
TEMP_MARKERS = (".tmp-", ".partial")


Bytes = bytes | memoryview


def atomic_write_bytes(path: Path, data: Bytes | list[Bytes], make_parents: bool = True) -> None:
    """Write `data` (bytes, or parts written one after another) to a temp name beside `path`
    and rename it into place; on any failure (a full disk) neither the file nor its temp is
    left. `make_parents=False` skips the mkdir for callers that already made the folder (the
    chunk writer, once per folder)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, list):
                f.writelines(data)
            else:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def loads_json(data: str | bytes) -> Any:
    """`json.loads`, with JSON nested too deeply for Python's parser (a hostile file of
    100,000 `[`) raised as the JSONDecodeError (a ValueError) every caller handles, not as a
    RecursionError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", "", 0) from None


def read_json(path: Path) -> Any:
    try:
        return loads_json(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


class Crc32c:
    """A running crc32c with hashlib's update/hexdigest (google_crc32c's own hexdigest gives
    bytes)."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: Bytes) -> None:
        self._crc = google_crc32c.extend(self._crc, data)

    def hexdigest(self) -> str:
        return f"{self._crc:08x}"


# Checksums a manifest records, by the prefix of their value ("sha256:<hex>"). Arrays use
# crc32c from format 3 on: 6x faster than sha256, and the writer computes it on the cores the
# forward pass needs (it was a quarter of the per-token writer's CPU). It is a check against
# damage and mix-ups, not against tampering; tables and derived files keep sha256.
DIGESTS: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256, "crc32c": Crc32c}


def new_digest(algorithm: str) -> Any:
    try:
        return DIGESTS[algorithm]()
    except KeyError:
        raise FormatError(
            f"unknown checksum algorithm {algorithm!r} (this tool knows {', '.join(DIGESTS)})"
        ) from None


def algorithm_of(digest: str) -> str:
    """The algorithm of a recorded checksum "<algorithm>:<hex>"; FormatError if unknown."""
    algorithm = digest.split(":", 1)[0] if isinstance(digest, str) and ":" in digest else ""
    if algorithm not in DIGESTS:
        raise FormatError(
            f"checksum {str(digest)[:40]!r} is not '<algorithm>:<hex>' of a known algorithm"
        )
    return algorithm


def digest_of(algorithm: str, h: Any) -> str:
    return f"{algorithm}:{h.hexdigest()}"


def sha256_file(path: Path) -> str:
    return files_digest(path.parent, [path.name], "sha256", names=False)


def files_digest(
    root: Path, rel_paths: Iterable[str], algorithm: str = "sha256", names: bool = True
) -> str:
    """One digest over several files under `root` (stream_digest)."""
    return stream_digest(lambda rel: open(root / rel, "rb"), rel_paths, algorithm, names)


def stream_digest(
    open_file: Callable[[str], IO[bytes]],
    rel_paths: Iterable[str],
    algorithm: str = "sha256",
    names: bool = True,
) -> str:
    """One digest over several files, name (then a NUL) and content, in the given order;
    `names=False` hashes the contents alone (one file's checksum). `open_file` opens a
    name (a local folder's file, or a remote warehouse's: Location.open)."""
    h = new_digest(algorithm)
    for rel in rel_paths:
        if names:
            h.update(rel.encode() + b"\0")
        with open_file(rel) as f:
            while block := f.read(1 << 22):
                h.update(block)
    return digest_of(algorithm, h)


def is_temp_file(name: str) -> bool:
    return any(marker in name for marker in TEMP_MARKERS)


def remove_temp_entries(
    folder: Path, recursive: bool = False, only: Callable[[str], bool] | None = None
) -> int:
    """Delete the temp files and temp folders in `folder` (and, `recursive`, in the folders
    below it): what a killed writer left. Only for a writer holding the warehouse lock, in a
    folder only such writers write to (a live writer's temps would go too), or with `only`,
    which picks the names to delete (the dead creations beside a folder). Links are removed,
    never followed. Returns how many."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        if not is_temp_file(entry.name) or (only is not None and not only(entry.name)):
            if recursive and is_dir:
                removed += remove_temp_entries(Path(entry.path), recursive, only)
            continue
        if is_dir:
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed += 1
    return removed


def safe_relative(root: Path, rel: str) -> Path:
    """Resolve a manifest path, refusing absolute paths and anything that leaves the root."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise FormatError(
            f"manifest path {rel!r} is not a relative path inside the warehouse; the manifest "
            "was edited or damaged: restore the original manifest.json"
        )
    full = root / p
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        raise FormatError(
            f"manifest path {rel!r} leads outside the warehouse (through a symbolic link); "
            "replace the link with the real files"
        ) from None
    return full


# Marks a folder `warehouse report` made, so that drawing a report again into it is allowed
# while a folder of other files is not written into without --overwrite.
REPORT_MARKER = ".warehouse-report"


def claim_output_folder(
    out: Path, overwrite: bool = False, *, option: str = "--out", create: bool = True
) -> None:
    """Make sure the report may write into `out`: a new or empty folder, or one a report was
    drawn into (it holds REPORT_MARKER), or any folder with `overwrite`. `create` makes the
    folder and marks it; without it nothing is written (a check before a long study)."""
    out = Path(out)
    if os.path.lexists(out) and (out.is_symlink() or not out.is_dir()):
        raise WarehouseError(f"{out} is not a folder; pass a new or empty folder for {option}")
    marker = out / REPORT_MARKER
    ours = marker.is_file() and not marker.is_symlink()
    if out.is_dir() and not ours and not overwrite and any(out.iterdir()):
        how = (
            "or pass --overwrite to write the report's files into it (files of the same "
            "names are replaced)"
            if option == "--out"
            else "or draw the report into it later with `warehouse report W --out DIR --overwrite`"
        )
        raise WarehouseError(
            f"{out} holds other files and is not a folder a report was drawn into; nothing "
            f"was written: choose a new or empty folder for {option}, {how}"
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
        if not ours:
            atomic_write_bytes(marker, b"a folder `warehouse report` writes into\n")
