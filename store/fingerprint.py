"""Fingerprints and cache keys: one hash for a warehouse's inputs and for every derived result.

They work like the fingerprints of Hugging Face datasets. A warehouse's fingerprint hashes
what made it (the manifest's model, dataset and capture sections, and a shard's index and
count): `fingerprint_of`. Each derived result (stats, baseline, eval results, the study's
selections, perplexity) has a `CacheKey(parent, step, options)`: the fingerprint of what it
derives from, the step's name, and the options that change its content. Its fingerprint is
hash(parent, step, options), so a result's fingerprint is in turn the parent of the results
made from it, and a change anywhere up the chain changes every key below.

Every result records its key in one shape, `{"fingerprint": ..., "key": {"parent", "step",
"options"}, ...}`: a JSON sidecar beside its file (`write_sidecar`), or an entry of a record
(`entry`). A result is current when that fingerprint equals the key's (`is_current`); a
sidecar without one (written before these keys) is stale, and its result is made anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warehouse.store.errors import FormatError
from warehouse.store.files import atomic_write_json, read_json

if TYPE_CHECKING:
    from warehouse.store.manifest import Manifest

PREFIX = "sha256:"


def fingerprint(value: Any) -> str:
    """'sha256:<hex>' of the canonical JSON of `value` (sorted keys, no spaces)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return PREFIX + hashlib.sha256(blob).hexdigest()


def short_id(fp: str, digits: int = 12) -> str:
    """The first `digits` hex digits of a fingerprint: an id for a file or folder name."""
    return fp.removeprefix(PREFIX)[:digits]


def fingerprint_of(manifest: dict[str, Any]) -> str:
    """A warehouse's fingerprint: that of its model, dataset and capture sections (and of a
    shard's index and count). Ingest records it; a merged or exported manifest records it
    too, so that a re-run of `warehouse ingest` with the same inputs recognises (or refuses)
    the warehouse, and `load_manifest` refuses a manifest whose sections were edited."""
    parts = {k: manifest[k] for k in ("model", "dataset", "capture")}
    shard = manifest.get("shard")
    if shard:
        parts["shard"] = {"index": shard["index"], "count": shard["count"]}
    return fingerprint(parts)


def warehouse_fingerprint(manifest: Manifest) -> str:
    """The parent of every result derived from a warehouse: the fingerprint its manifest
    records (checked by `load_manifest`)."""
    return manifest.fingerprint or manifest.computed_fingerprint()


@dataclass(frozen=True)
class CacheKey:
    """What determines one derived result: hash(parent fingerprint, step name, options)."""

    parent: str | None  # the fingerprint of what the result derives from
    step: str  # "stats", "baseline", "eval", "study-plan", "perplexity", ...
    options: dict[str, Any]  # everything else that changes the result's content

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "step": self.step, "options": self.options}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_json())


def entry(key: CacheKey) -> dict[str, Any]:
    """How a result records its key: its fingerprint and the key itself."""
    return {"fingerprint": key.fingerprint, "key": key.to_json()}


def entry_is_current(recorded: Any, key: CacheKey) -> bool:
    """A recorded entry (a sidecar, or an entry of a record) holds `key`'s fingerprint."""
    return isinstance(recorded, dict) and recorded.get("fingerprint") == key.fingerprint


def sidecar_path(result: Path) -> Path:
    """The JSON sidecar of a result file: <stem>.json beside <stem>.parquet."""
    return Path(result).with_suffix(".json")


def write_sidecar(result: Path, key: CacheKey, fields: dict[str, Any] | None = None) -> None:
    """Write the sidecar of `result`: its key's entry and the result's own `fields` (rows,
    timing, a checksum, ...), which may not reuse the names "fingerprint" and "key"."""
    from warehouse.store.derived import checksum_field

    fields = fields or {}
    clash = sorted(set(fields) & {"fingerprint", "key"})
    if clash:
        raise ValueError(f"sidecar fields {clash} are the cache key's own")
    if Path(result).suffix == ".parquet" and Path(result).is_file():
        fields = {**fields, **checksum_field(result)}  # checked by every read (store/derived.py)
    atomic_write_json(sidecar_path(result), {**entry(key), **fields})


def read_sidecar(result: Path) -> dict[str, Any] | None:
    """The sidecar of `result`, or None when it is missing or not a JSON object."""
    path = sidecar_path(result)
    if not path.is_file():
        return None
    try:
        side = read_json(path)
    except (FormatError, OSError):
        return None
    return side if isinstance(side, dict) else None


def result_fingerprint(result: Path) -> str | None:
    """The fingerprint a result's sidecar records (the parent of results made from it), or
    None when there is none."""
    side = read_sidecar(result)
    fp = side.get("fingerprint") if side is not None else None
    return fp if isinstance(fp, str) and Path(result).is_file() else None


def is_current(result: Path, key: CacheKey) -> bool:
    """`result` and its sidecar exist, the sidecar holds `key`'s fingerprint, and, where the
    sidecar counts the rows of a Parquet result, the file has that many."""
    result = Path(result)
    side = read_sidecar(result)
    if side is None or not result.is_file() or not entry_is_current(side, key):
        return False
    rows = side.get("rows")
    if result.suffix == ".parquet" and isinstance(rows, int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(result).metadata.num_rows == rows
        except (OSError, pa.ArrowInvalid):
            return False
    return True
