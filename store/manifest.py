"""manifest.json: what a warehouse holds, how it was made, and how far its ingest got."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from warehouse import __version__
from warehouse.errors import FormatError
from warehouse.store.arrays import ArraySpec
from warehouse.store.files import atomic_write_json, read_json
from warehouse.store.location import Location

FORMAT_NAME = "relation-warehouse"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def new_manifest(
    *, model: dict, dataset: dict, capture: dict, fingerprint: str, counts: dict
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "model": model,
        "dataset": dataset,
        "capture": capture,
        "fingerprint": fingerprint,
        "counts": counts,
        "tables": {},
        "arrays": {},
        "state": {"status": "ingesting", "prompts_committed": 0, "tokens_committed": 0},
    }


def is_warehouse(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def load_manifest(root: Path | str | Location) -> dict[str, Any]:
    """Read and check manifest.json of a local folder or (read-only) an fsspec URL."""
    loc = Location.of(root)
    if loc.remote:
        if not loc.isfile(MANIFEST):
            raise FormatError(f"{loc}: not a warehouse or not reachable (no {MANIFEST} there)")
        return _checked(loc.read_json(MANIFEST), loc)
    root = loc.local
    if not root.exists():
        raise FormatError(f"{root}: no such warehouse folder")
    if not is_warehouse(root):
        raise FormatError(
            f"{root}: not a warehouse (no {MANIFEST}); create one with `warehouse ingest`"
        )
    return _checked(read_json(root / MANIFEST), root)


def _checked(m: Any, root: Path | Location) -> dict[str, Any]:
    where = f"{root}/{MANIFEST}"
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not a relation-warehouse manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"{root}: format version {version} is newer than this tool reads ({FORMAT_VERSION}); "
            "upgrade relation-warehouse"
        )
    for field in ("model", "dataset", "capture", "counts", "tables", "arrays", "state"):
        if not isinstance(m.get(field), dict):
            raise FormatError(f"{where}: field {field!r} is missing or not an object")
    return m


def save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST, manifest)


def fingerprint_of(manifest: dict[str, Any]) -> str:
    """The fingerprint an ingest gives to these model, dataset and capture sections (and to a
    shard's index/count): what a merged or exported manifest records, so that a re-run of
    `warehouse ingest` with the same inputs recognises (or refuses) it."""
    parts = {k: manifest[k] for k in ("model", "dataset", "capture")}
    shard = manifest.get("shard")
    if shard:
        parts["shard"] = {"index": shard["index"], "count": shard["count"]}
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def array_specs(manifest: dict[str, Any]) -> dict[str, ArraySpec]:
    try:
        return {k: ArraySpec.from_json(k, v) for k, v in manifest["arrays"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"manifest arrays entry is malformed ({e})") from None
