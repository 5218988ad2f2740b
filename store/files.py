"""Atomic file writes and checksums: every file of a warehouse is written to a temp name and
renamed, so a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from warehouse.errors import FormatError

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return "sha256:" + h.hexdigest()


def sha256_files(root: Path, rel_paths: Iterable[str]) -> str:
    """One digest over several files, name and content, in the given order."""
    h = hashlib.sha256()
    for rel in rel_paths:
        h.update(rel.encode() + b"\0")
        with open(root / rel, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return "sha256:" + h.hexdigest()


def is_temp_file(name: str) -> bool:
    return any(marker in name for marker in TEMP_MARKERS)


def remove_temp_entries(folder: Path) -> int:
    """Delete the temp files and temp folders directly in `folder`: what a killed writer left.
    Only for a writer holding the warehouse lock, in a folder only such writers write to (a
    live writer's temps would go too). Links are removed, never followed. Returns how many."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        if not is_temp_file(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
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
