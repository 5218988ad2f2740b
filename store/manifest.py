"""manifest.json: what a warehouse holds, how it was made, and how far its ingest got."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from warehouse.store.arrays import ArraySpec
from warehouse.store.errors import FormatError
from warehouse.store.files import atomic_write_json, read_json, safe_relative
from warehouse.store.fingerprint import fingerprint_of
from warehouse.store.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST
from warehouse.store.location import Location, require_regular
from warehouse.store.version import __version__


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


def load_manifest(
    root: Path | str | Location, *, check_fingerprint: bool = True, check_paths: bool = True
) -> dict[str, Any]:
    """Read and check manifest.json of a local folder or (read-only) an fsspec URL.

    `check_fingerprint` refuses a manifest whose model, dataset or capture fields were edited
    after the ingest, `check_paths` one that names a path outside the folder (verify turns
    both off and reports them instead)."""
    loc = Location.of(root)
    if loc.remote:
        if not loc.isfile(MANIFEST):
            raise FormatError(f"{loc}: not a warehouse or not reachable (no {MANIFEST} there)")
        return _checked(loc.read_json(MANIFEST), loc, check_fingerprint, check_paths)
    root = loc.local
    if not root.exists():
        raise FormatError(f"{root}: no such warehouse folder")
    if os.path.lexists(root / MANIFEST):
        require_regular(root / MANIFEST)  # a link or a FIFO is named, not "no manifest"
    if not is_warehouse(root):
        raise FormatError(
            f"{root}: not a warehouse (no {MANIFEST}); create one with `warehouse ingest`"
        )
    require_regular(root / MANIFEST)
    return _checked(read_json(root / MANIFEST), root, check_fingerprint, check_paths)


def _checked(
    m: Any, root: Path | Location, check_fingerprint: bool = True, check_paths: bool = True
) -> dict[str, Any]:
    where = f"{root}/{MANIFEST}"
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not a relation-warehouse manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"{root}: format version {version} is newer than this tool reads ({FORMAT_VERSION}); "
            "upgrade relation-warehouse"
        )
    if version < FORMAT_VERSION:
        raise FormatError(
            f"{root}: format version {version} is an older format; this tool reads format "
            f"{FORMAT_VERSION} only: ingest the warehouse again"
        )
    for field in ("model", "dataset", "capture", "counts", "tables", "arrays", "state"):
        if not isinstance(m.get(field), dict):
            raise FormatError(f"{where}: field {field!r} is missing or not an object")
    # Every path a manifest names is opened relative to the folder: a shared warehouse must
    # not point a reader (or a writer) at files outside it.
    for kind in ("tables", "arrays"):
        for name, entry in m[kind].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise FormatError(f"{where}: {kind} entry {name!r} has no path")
            if check_paths:
                if isinstance(root, Location):  # remote: no links to follow, check the text
                    rel = Path(entry["path"])
                    if rel.is_absolute() or ".." in rel.parts or ":" in entry["path"]:
                        raise FormatError(
                            f"manifest path {entry['path']!r} is not a relative path inside "
                            "the warehouse; the manifest was edited or damaged"
                        )
                else:
                    safe_relative(root, entry["path"])
    if check_fingerprint and "fingerprint" in m and fingerprint_of(m) != m["fingerprint"]:
        raise FormatError(
            f"{where}: its model, dataset or capture fields were edited (they no longer "
            "match its fingerprint); restore the original manifest.json"
        )
    return m


def save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST, manifest)


def array_specs(manifest: dict[str, Any]) -> dict[str, ArraySpec]:
    try:
        return {k: ArraySpec.from_json(k, v) for k, v in manifest["arrays"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"manifest arrays entry is malformed ({e})") from None


# --- non-finite values ---------------------------------------------------------------------
# manifest["nonfinite"] (absent when every stored value is finite): {array key: {"layers":
# {layer: {"nan", "posinf", "neginf", "overflow"}}, "neurons": {"layer:unit": [non-finite
# values, of them overflowed]}, "truncated": bool}}. "overflow" counts the infinities whose
# value was finite in the model and too large for the storage dtype (float16: |x| >= 65520).
NONFINITE = "nonfinite"
MAX_LISTED_NEURONS = 1000  # neurons named per array; the per-layer counts stay exact


def add_nonfinite(*fields: dict) -> dict:
    """The sum of `nonfinite` fields (of batches, of a resumed run's parts, of shards)."""
    out: dict[str, dict] = {}
    for field in fields:
        for key, entry in field.items():
            into = out.setdefault(key, {"layers": {}, "neurons": {}, "truncated": False})
            for layer, counts in entry.get("layers", {}).items():
                have = into["layers"].setdefault(layer, dict.fromkeys(counts, 0))
                for name, n in counts.items():
                    have[name] = have.get(name, 0) + n
            into["truncated"] |= bool(entry.get("truncated"))
            for neuron, (bad, over) in entry.get("neurons", {}).items():
                if neuron not in into["neurons"] and len(into["neurons"]) >= MAX_LISTED_NEURONS:
                    into["truncated"] = True
                    continue
                old = into["neurons"].get(neuron, [0, 0])
                into["neurons"][neuron] = [old[0] + bad, old[1] + over]
    return out


def describe_nonfinite(field: dict, dtype: str, names: int = 5) -> list[str]:
    """One line per array: its non-finite counts and the first neurons (layer:unit)."""
    lines = []
    for key in sorted(field):
        entry = field[key]
        total = {k: 0 for k in ("nan", "posinf", "neginf", "overflow")}
        for counts in entry["layers"].values():
            for k in total:
                total[k] += counts.get(k, 0)
        neurons = sorted(entry["neurons"], key=lambda n: tuple(int(x) for x in n.split(":")))
        shown = ", ".join(neurons[:names]) + (", ..." if len(neurons) > names else "")
        more = "+" if entry.get("truncated") else ""
        lines.append(
            f"{key}: {total['nan']} NaN, {total['posinf']} +inf, {total['neginf']} -inf "
            f"({total['overflow']} overflowed {dtype}) in {len(neurons)}{more} neuron(s) "
            f"(layer:unit {shown})"
        )
    return lines
