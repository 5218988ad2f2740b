"""Checksums of every table and array, recorded when an ingest finishes, and `verify`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from warehouse.errors import FormatError, WarehouseError
from warehouse.store.arrays import ArraySpec, chunk_keys
from warehouse.store.files import is_temp_file, safe_relative, sha256_file, sha256_files
from warehouse.store.location import Location
from warehouse.store.manifest import MANIFEST, array_specs, load_manifest


def array_files(spec: ArraySpec) -> list[str]:
    """Every file an array consists of: its metadata and all its chunks, in a fixed order."""
    return [f"{spec.path}/zarr.json", *chunk_keys(spec)]


def finalize_checksums(root: Path, manifest: dict) -> None:
    for entry in manifest["tables"].values():
        entry["sha256"] = sha256_file(safe_relative(root, entry["path"]))
    for key, spec in array_specs(manifest).items():
        manifest["arrays"][key]["sha256"] = sha256_files(root, array_files(spec))


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _group_files(path: str) -> set[str]:
    """zarr.json files of the groups above an array (e.g. activations.zarr/zarr.json)."""
    parts = Path(path).parts
    return {str(Path(*parts[:i], "zarr.json")) for i in range(1, len(parts))}


def _sha256_at(loc: Location, rels: list[str], single: bool = False) -> str:
    """sha256_file / sha256_files over a local or remote location."""
    if not loc.remote:
        return sha256_file(loc.local / rels[0]) if single else sha256_files(loc.local, rels)
    h = hashlib.sha256()
    for rel in rels:
        if not single:
            h.update(rel.encode() + b"\0")
        with loc.open(rel) as f:
            while block := f.read(1 << 22):
                h.update(block)
    return "sha256:" + h.hexdigest()


def verify(root: Path | str | Location) -> Report:
    """Check a warehouse file by file; every problem is reported, none is fatal to the check.

    Works read-only on a remote or zipped warehouse too (every byte is fetched once or twice).
    """
    loc = Location.of(root)
    report = Report()
    manifest = load_manifest(loc)
    complete = manifest["state"].get("status") == "complete"
    if not complete:
        report.problems.append(
            f"ingest not finished ({manifest['state'].get('prompts_committed', 0)} of "
            f"{manifest['counts'].get('prompts')} prompts committed); re-run the ingest to resume"
        )
    expected = {MANIFEST}
    for name, entry in manifest["tables"].items():
        try:
            _safe(loc, entry["path"])
        except FormatError as e:
            report.problems.append(str(e))
            continue
        expected.add(entry["path"])
        report.checked_files += 1
        if not loc.isfile(entry["path"]):
            report.problems.append(f"table {name}: file {entry['path']} is missing")
        elif complete and _sha256_at(loc, [entry["path"]], single=True) != entry.get("sha256"):
            report.problems.append(f"table {name}: {entry['path']} does not match its checksum")
    for key, spec in array_specs(manifest).items():
        try:
            _safe(loc, spec.path)
        except FormatError as e:
            report.problems.append(str(e))
            continue
        files = array_files(spec)
        expected.update(files)
        expected.update(_group_files(spec.path))
        report.checked_files += len(files)
        _verify_array(loc, key, spec, manifest["arrays"][key].get("sha256"), complete, report)
    # Derived files an export or merge listed with checksums (stats, selections, evals).
    for rel, digest in sorted((manifest.get("files") or {}).items()):
        try:
            _safe(loc, rel)
        except FormatError as e:
            report.problems.append(str(e))
            continue
        expected.add(rel)
        report.checked_files += 1
        if not loc.isfile(rel):
            report.problems.append(f"file {rel} is missing")
        elif _sha256_at(loc, [rel], single=True) != digest:
            report.problems.append(f"file {rel} does not match its checksum")
    for rel in loc.walk():
        rel = rel.replace(os.sep, "/")
        if rel not in expected and not rel.startswith(("stats/", "selections/", "evals/")):
            n = rel.rsplit("/", 1)[-1]
            kind = "leftover temp file" if is_temp_file(n) else "unexpected file"
            report.problems.append(f"{kind}: {rel}")
    return report


def _safe(loc: Location, rel: str) -> None:
    if not loc.remote:
        safe_relative(loc.local, rel)
    elif rel.startswith("/") or ".." in rel.split("/"):
        raise FormatError(f"manifest path {rel!r} is not a relative path inside the warehouse")


def _verify_array(
    loc: Location, key: str, spec: ArraySpec, digest: str | None, complete: bool, report: Report
) -> None:
    if not loc.isfile(f"{spec.path}/zarr.json"):
        report.problems.append(f"array {key}: metadata {spec.path}/zarr.json is missing")
        return
    try:
        arr = zarr.open_array(store=loc.zarr_store(spec.path), mode="r", zarr_format=3)
    except Exception as e:  # any unreadable metadata is a finding, not a crash
        report.problems.append(f"array {key}: metadata unreadable ({e})")
        return
    if tuple(arr.shape) != spec.shape or tuple(arr.chunks) != spec.chunks:
        report.problems.append(
            f"array {key}: shape/chunks {tuple(arr.shape)}/{tuple(arr.chunks)} differ from the "
            f"manifest's {spec.shape}/{spec.chunks}"
        )
        return
    if str(arr.dtype) not in ("float16", "float32", "uint16"):
        report.problems.append(f"array {key}: unexpected dtype {arr.dtype}")
        return
    bad = False
    # Chunks are decoded one at a time: zstd's content checksum catches flipped bytes and
    # truncation, and a missing file is named rather than read back as zeros.
    for ck in chunk_keys(spec):
        if not loc.isfile(ck):
            if complete:
                report.problems.append(f"array {key}: chunk {ck} is missing")
                bad = True
            continue
        i, j, k = (int(x) for x in ck.rsplit("/c/", 1)[1].split("/"))
        sel = tuple(
            slice(idx * c, min((idx + 1) * c, s))
            for idx, c, s in zip((i, j, k), spec.chunks, spec.shape, strict=True)
        )
        try:
            np.asarray(arr[sel])
        except Exception as e:
            report.problems.append(f"array {key}: chunk {ck} is corrupt ({type(e).__name__}: {e})")
            bad = True
    if complete and not bad and _sha256_at(loc, array_files(spec)) != digest:
        report.problems.append(f"array {key}: files do not match the manifest checksum")


def require_complete(manifest: dict, root: Path) -> None:
    if manifest["state"].get("status") != "complete":
        raise WarehouseError(f"{root}: ingest has not finished; re-run it to resume")
