"""manifest.json: what a warehouse holds, how it was made, and how far its ingest got."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from warehouse import __version__
from warehouse.errors import FormatError
from warehouse.store.arrays import ArraySpec
from warehouse.store.files import atomic_write_json, read_json, safe_relative

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


# "https://h/w" becomes "https:/h/w" once it has been through pathlib, so match one slash.
# (Two letters at least, so a Windows drive "C:/" is a path.)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def fingerprint(parts: dict[str, Any]) -> str:
    """sha256 of what made a warehouse (model, dataset, capture), as ingest records it."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def check_local(root: str | Path) -> Path:
    """A warehouse argument as a local folder; URLs are refused with what to do instead."""
    text = str(root)
    if _URL.match(text):
        text = re.sub(r"^([^:/]+):/(?!/)", r"\1://", text)  # undo pathlib's "https:/h"
        raise FormatError(
            f"{text}: remote warehouses are not supported yet; copy the folder "
            "locally (e.g. with rsync) and give its path"
        )
    return Path(text)


def load_manifest(
    root: Path, *, check_fingerprint: bool = True, check_paths: bool = True
) -> dict[str, Any]:
    """Read and check a warehouse's manifest. `check_fingerprint` refuses a manifest whose
    model, dataset or capture fields were edited after the ingest, `check_paths` one that
    names a path outside the folder (verify turns both off and reports them instead)."""
    root = check_local(root)
    if not root.exists():
        raise FormatError(f"{root}: no such warehouse folder")
    if not is_warehouse(root):
        raise FormatError(
            f"{root}: not a warehouse (no {MANIFEST}); create one with `warehouse ingest`"
        )
    m = read_json(root / MANIFEST)
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise FormatError(f"{root / MANIFEST}: not a relation-warehouse manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"{root}: format version {version} is newer than this tool reads ({FORMAT_VERSION}); "
            "upgrade relation-warehouse"
        )
    for field in ("model", "dataset", "capture", "counts", "tables", "arrays", "state"):
        if not isinstance(m.get(field), dict):
            raise FormatError(f"{root / MANIFEST}: field {field!r} is missing or not an object")
    # Every path a manifest names is opened relative to the folder: a shared warehouse must
    # not point a reader (or a writer) at files outside it.
    for kind in ("tables", "arrays"):
        for name, entry in m[kind].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise FormatError(f"{root / MANIFEST}: {kind} entry {name!r} has no path")
            if check_paths:
                safe_relative(root, entry["path"])
    if check_fingerprint and "fingerprint" in m:
        parts = {k: m[k] for k in ("model", "dataset", "capture")}
        if fingerprint(parts) != m["fingerprint"]:
            raise FormatError(
                f"{root / MANIFEST}: its model, dataset or capture fields were edited (they "
                "no longer match its fingerprint); restore the original manifest.json"
            )
    return m


def save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST, manifest)


def array_specs(manifest: dict[str, Any]) -> dict[str, ArraySpec]:
    try:
        return {k: ArraySpec.from_json(k, v) for k, v in manifest["arrays"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"manifest arrays entry is malformed ({e})") from None
