"""`warehouse export`: copy a consistent subset of a warehouse to share it.

The copy is a warehouse of its own: the manifest keeps the source's model, dataset and
capture (sites and mode narrowed to what was kept), every copied table and array keeps its
checksum (each byte is hashed while it is copied and compared with the source manifest, so a
damaged source is refused, never passed on), and the derived files (stats, selections, evals
and study, with their JSON sidecars) are listed with their own checksums under `files`,
which `verify` checks. `--zip` writes the same content as one uncompressed zip (chunks and
Parquet pages are already zstd-compressed), which `Warehouse.open("share.zip")` reads in
place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from warehouse.store.arrays import (
    SITE_ATTRIBUTES,
    ArraySpec,
    array_attributes,
    coord_files,
    coord_values,
    create_array,
    open_array,
    write_coord,
)
from warehouse.store.checksums import (
    ARRAY_ALGORITHM,
    array_checksum,
    array_files,
    derived_problems,
    require_complete,
)
from warehouse.store.derived_pooling import derived_specs
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import (
    algorithm_of,
    atomic_write_json,
    digest_of,
    files_digest,
    new_digest,
    safe_relative,
)
from warehouse.store.format import (
    ACTIVATIONS,
    DERIVED_DIRS,
    DERIVED_FILES,
    MANIFEST,
    PROMPTS,
    TOKENS,
)
from warehouse.store.location import (
    Location,
    MissingFileError,
    local_folder,
    require_outside,
)
from warehouse.store.lock import creating
from warehouse.store.manifest import Manifest, array_specs, load_manifest
from warehouse.store.progress import Progress
from warehouse.store.sections import Capture

DERIVED = tuple(DERIVED_DIRS)
TABLES = (PROMPTS, TOKENS, *DERIVED)  # what --tables may name
BLOCK = 1 << 22
# A fixed timestamp for every zip entry: the same export gives the same zip bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class ExportOptions:
    tables: list[str] | None = None  # None: every table present (prompts always)
    sites: list[str] | None = None  # None: every captured site
    pooled_only: bool = False  # leave out the per-token activation arrays
    zip: bool = False  # one .zip file instead of a folder


class _Sink(Protocol):
    def copy(self, src: Location, rel: str, h: Any) -> int: ...
    def write_json(self, rel: str, obj: Any) -> None: ...
    def close(self) -> None: ...


def _pump(fi: Any, fo: Any, h: Any) -> int:
    """Copy fi to fo block by block, hashing what passes; returns the bytes copied."""
    n = 0
    while block := fi.read(BLOCK):
        h.update(block)
        fo.write(block)
        n += len(block)
    return n


class _FolderSink:
    """Writes the copy into a folder (the temp folder `creating` renames into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def copy(self, src: Location, rel: str, h: Any) -> int:
        out = safe_relative(self.root, rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        with src.open(rel) as fi, open(out, "wb") as fo:
            return _pump(fi, fo, h)

    def write_json(self, rel: str, obj: Any) -> None:
        atomic_write_json(safe_relative(self.root, rel), obj)

    def close(self) -> None:
        pass


class _ZipSink:
    """Writes a stored (uncompressed) zip (in the temp folder `creating` renames it from)."""

    def __init__(self, path: Path) -> None:
        self.zf = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def _info(self, rel: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(rel, date_time=ZIP_TIME)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def copy(self, src: Location, rel: str, h: Any) -> int:
        with src.open(rel) as fi, self.zf.open(self._info(rel), "w", force_zip64=True) as fo:
            return _pump(fi, fo, h)

    def write_json(self, rel: str, obj: Any) -> None:
        import json

        self.zf.writestr(self._info(rel), json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        self.zf.close()


def export(
    source: str | Path | Location, dest: str | Path, opts: ExportOptions, show_progress: bool = True
) -> Manifest:
    """Copy the chosen subset of `source` (local or remote) to the local `dest`; returns the
    destination's manifest. Nothing is written when the source is damaged (a table, array
    or derived file), holds a link or a special file, or when `dest` lies inside it."""
    src = Location.of(source)
    if not any(m in str(dest) for m in ("://", "::")) and os.path.lexists(dest):
        raise WarehouseError(f"{dest} already exists; choose a new destination")
    dest_path = local_folder(dest, "`warehouse export`")
    if opts.zip and dest_path.suffix != ".zip":
        raise WarehouseError(f"--zip writes one file: give a DEST ending in .zip, not {dest}")
    require_outside(dest_path, [src.url], "`warehouse export`")
    manifest = load_manifest(src)
    require_complete(manifest, src.url)  # type: ignore[arg-type]
    out, keep_arrays, keep_tables, derived = _plan(src, manifest, opts)
    _check_derived(src, derived)

    specs = array_specs(manifest)
    made = _made_arrays(manifest, out)
    total = len(keep_tables) + len(derived)
    total += sum(len(array_files(specs[k])) for k in keep_arrays if k in specs)
    total += sum(len(files) for files in _coord_files(out).values())
    total += sum(len(array_files(s)) for s in made.values())
    with creating(dest_path, "export", file=opts.zip) as root:
        sink: _Sink = _ZipSink(root / dest_path.name) if opts.zip else _FolderSink(root)
        try:
            with Progress("export", total, unit="files", enabled=show_progress) as line:
                _write_made(src, sink, manifest, out, made, line.advance)
                _copy_all(src, sink, manifest, out, keep_tables, keep_arrays, derived, line.advance)
        finally:
            sink.close()
    return out


def _made_arrays(manifest: Manifest, out: Manifest) -> dict[str, ArraySpec]:
    """The derived responses the copy stores (key -> spec with its source): those of its
    arrays that the source derives from per-token rows the copy leaves out."""
    derived = derived_specs(manifest)
    return {k: derived[k] for k in out.arrays if k in derived}


def _write_made(
    src: Location, sink: _Sink, manifest: Manifest, out: Manifest, made: dict, advance
) -> None:
    """Derive each array of `made` from the source's per-token rows, write it as ingest
    writes a stored one (with the coordinate arrays and groups the source lacks), and put
    its files in the copy with their checksums in the copy's manifest."""
    if not made:
        return
    with tempfile.TemporaryDirectory(prefix="warehouse-export-") as tmp:
        root, groups = Path(tmp), set()
        for key, spec in made.items():
            stored = replace(spec, source=None)
            site = open_array(src, spec.source).attrs
            attrs = {k: site[k] for k in SITE_ATTRIBUTES if k in site}
            arr = create_array(root, stored, array_attributes(manifest.model, stored, attrs))
            values, step = open_array(src, spec), stored.chunks[0]
            for a in range(0, stored.shape[0], step):  # one row of shards at a time
                arr[a : a + step] = values[a : a + step]
            files = array_files(stored)
            out.arrays[key]["checksum"] = files_digest(root, files, ARRAY_ALGORITHM)
            _copy_array(Location.of(root), sink, f"array {key}", files, None, advance)
            groups |= {g for g in _groups(stored) if not src.isfile(g)}
        need = coord_values(array_specs(out).values()) if out.coords is not None else {}
        for path in sorted(set(need) - set(manifest.coords or {})):
            write_coord(root, path, *need[path])
            files = coord_files(path, len(need[path][1]))
            out.coords[path] = files_digest(root, files, ARRAY_ALGORITHM)  # type: ignore[index]
            _copy_array(Location.of(root), sink, f"coordinate array {path}", files, None, advance)
        for rel in sorted(groups):
            sink.copy(Location.of(root), rel, hashlib.sha256())


def _copy_all(
    src: Location,
    sink: _Sink,
    manifest: Manifest,
    out: Manifest,
    keep_tables: list[str],
    keep_arrays: list[str],
    derived: list[str],
    advance,
) -> None:
    """Copy tables, arrays (with their group metadata) and derived files, each checked
    against its checksum as it passes, then write the destination's manifest."""
    specs = array_specs(manifest)
    for name in keep_tables:
        entry = manifest.tables[name]
        h = hashlib.sha256()
        sink.copy(src, entry["path"], h)
        _check("table " + name, entry.get("sha256"), h)
        advance(1)
    groups: set[str] = set()
    for key in keep_arrays:
        if key not in specs:  # derived, written by _write_made
            continue
        spec = specs[key]
        groups |= _groups(spec)
        want = array_checksum(manifest.arrays[key])
        _copy_array(src, sink, f"array {key}", array_files(spec), want, advance)
    for path, files in _coord_files(out).items():
        if path in (manifest.coords or {}):  # the others are written by _write_made
            _copy_array(src, sink, f"coordinate array {path}", files, out.coords[path], advance)
    for rel in sorted(groups):
        if src.isfile(rel):
            sink.copy(src, rel, hashlib.sha256())
    listed = manifest.files or {}
    for rel in derived:
        h = hashlib.sha256()
        sink.copy(src, rel, h)
        if rel in listed:
            _check(rel, listed[rel], h)
        out.files[rel] = "sha256:" + h.hexdigest()
        advance(1)
    sink.write_json(MANIFEST, out.to_json())


def _check_derived(src: Location, derived: list[str]) -> None:
    """Every derived file about to be copied decodes, has its sidecar and agrees with it
    (`verify`'s check); the first problem is the one error, and nothing is exported."""
    folders = sorted({rel.split("/", 1)[0] for rel in derived})
    problems, _ = derived_problems(src, folders)
    bad = [p for rel, p in problems if rel in derived]
    if bad:
        more = f" (and {len(bad) - 1} more problem(s))" if len(bad) > 1 else ""
        raise FormatError(
            f"the source's {bad[0]}{more}; nothing was exported: run `warehouse verify "
            f"{src}` on the source"
        )


def _check(what: str, want: str | None, h: Any, algorithm: str = "sha256") -> None:
    if want is not None and digest_of(algorithm, h) != want:
        raise FormatError(
            f"the source's {what} does not match its checksum; nothing was exported: "
            "run `warehouse verify` on the source"
        )


def _copy_array(
    src: Location, sink: _Sink, what: str, rels: list[str], want: str | None, advance
) -> None:
    """Copy the files of an array (`what`: "array <key>" or "coordinate array <path>"),
    checked against its checksum: the same digest as files.stream_digest, each file's name,
    a NUL, then its bytes, with the algorithm the manifest's checksum names."""
    algorithm = algorithm_of(want) if want is not None else "sha256"
    h = new_digest(algorithm)
    for rel in rels:
        h.update(rel.encode() + b"\0")
        try:
            sink.copy(src, rel, h)
        except MissingFileError:
            raise FormatError(
                f"the source's {what} lacks {rel}; nothing was exported: "
                "run `warehouse verify` on the source"
            ) from None
        advance(1)
    _check(what, want, h, algorithm)


def _coord_files(out: Manifest) -> dict[str, list[str]]:
    """The files of each coordinate array the copy keeps (none from an older source)."""
    values = coord_values(array_specs(out).values())
    return {p: coord_files(p, len(values[p][1])) for p in (out.coords or {})}


def _groups(spec: ArraySpec) -> set[str]:
    parts = spec.path.split("/")
    return {"/".join([*parts[:i], "zarr.json"]) for i in range(1, len(parts))}


def _plan(
    src: Location, manifest: Manifest, opts: ExportOptions
) -> tuple[Manifest, list[str], list[str], list[str]]:
    """The destination manifest (without file digests yet), the array keys and table names to
    copy, and the derived files to copy."""
    sites = _chosen_sites(list(manifest.capture.sites), opts)
    tables = _chosen_tables(src, manifest, opts)
    # A copy without per-token rows stores the responses the source derives from them.
    readable = list(manifest.arrays) + (list(derived_specs(manifest)) if opts.pooled_only else [])
    keep_arrays = [
        k
        for k in readable
        if k.split("/")[1] in sites and not (opts.pooled_only and k.startswith(f"{ACTIVATIONS}/"))
    ]
    keep_tables = [t for t in (PROMPTS, TOKENS) if t in tables]
    derived = [rel for d in DERIVED if d in tables for rel in _derived_files(src, d, set(sites))]
    out = _narrowed_manifest(manifest, sites, keep_arrays, keep_tables)
    out.export = {
        "source": src.url,
        "source_fingerprint": manifest.fingerprint,
        "sites": sites,
        "pooled_only": opts.pooled_only,
        "tables": [*keep_tables, *(d for d in DERIVED if d in tables)],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return out, keep_arrays, keep_tables, derived


def _chosen_sites(sites: list[str], opts: ExportOptions) -> list[str]:
    """The captured sites `--sites` keeps, in the warehouse's order (all of them without it)."""
    if opts.sites is None:
        return sites
    unknown = sorted(set(opts.sites) - set(sites))
    if unknown or not opts.sites:
        raise WarehouseError(
            f"--sites {', '.join(unknown) or '(none)'} not in this warehouse; "
            f"available: {', '.join(sites)}"
        )
    return [s for s in sites if s in opts.sites]


def _chosen_tables(src: Location, manifest: Manifest, opts: ExportOptions) -> list[str]:
    """The tables `--tables` names, prompts always among them (every table present without
    it); a derived folder is present when it holds a Parquet file."""
    present = [PROMPTS, *(t for t in (TOKENS,) if t in manifest.tables)]
    present += [d for d in DERIVED if any(n.endswith(".parquet") for n in src.listdir(d))]
    tables = present if opts.tables is None else list(dict.fromkeys([PROMPTS, *opts.tables]))
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise WarehouseError(
            f"unknown table(s) {', '.join(unknown)} for --tables; choose from {', '.join(TABLES)}"
        )
    absent = sorted(set(tables) - set(present))
    if absent:
        raise WarehouseError(
            f"--tables {', '.join(absent)}: not in this warehouse (present: {', '.join(present)})"
        )
    return tables


def _narrowed_manifest(
    manifest: Manifest, sites: list[str], keep_arrays: list[str], keep_tables: list[str]
) -> Manifest:
    """The source's manifest cut down to the kept sites, arrays, tables and coordinate
    arrays, with the fingerprint of what is left and no file digests yet."""
    out = replace(manifest, export=None, files=None)
    capture = {**manifest.capture.to_json(), "sites": sites}
    if not any(k.startswith(f"{ACTIVATIONS}/") for k in keep_arrays):
        capture["mode"] = "pooled"
        capture.pop("derived_pooling", None)  # the copy stores them (_write_made)
    out.capture = Capture.from_json(capture)
    derived = derived_specs(manifest)
    out.arrays = {
        k: manifest.arrays[k]
        if k in manifest.arrays
        else replace(derived[k], source=None).to_json()
        for k in keep_arrays
    }
    out.tables = {t: manifest.tables[t] for t in keep_tables}
    if manifest.coords is not None:  # those of the kept arrays' dimensions
        need = coord_values(array_specs(out).values())
        made = {p for k in keep_arrays if k in derived for p in coord_values([derived[k]])}
        missing = sorted(set(need) - set(manifest.coords) - made)
        if missing:
            raise FormatError(
                f"the source's manifest lists no coordinate array {missing[0]}; nothing was "
                "exported: run `warehouse verify` on the source"
            )
        out.coords = {p: manifest.coords[p] for p in need if p in manifest.coords}
    out.fingerprint = out.computed_fingerprint()
    out.files = {}
    return out


def _derived_files(src: Location, folder: str, sites: set[str]) -> list[str]:
    """A derived folder's Parquet files with their sidecars, those of dropped sites left out
    (the sidecar names the site; a file without one is kept)."""
    names = src.listdir(folder)
    # study/study.json (the record of `warehouse study`) has no table of its own.
    out = [f"{folder}/{n}" for n in names if n in DERIVED_FILES.get(folder, ())]
    for n in names:
        if not n.endswith(".parquet") or n.startswith("."):
            continue
        side = n.removesuffix(".parquet") + ".json"
        site = None
        if side in names:
            meta = src.read_json(f"{folder}/{side}")
            if isinstance(meta, dict):
                site = _site_of(meta)
        if site is not None and site not in sites:
            continue
        out.append(f"{folder}/{n}")
        if side in names:
            out.append(f"{folder}/{side}")
    return out


def _site_of(meta: dict[str, Any]) -> str | None:
    key = meta.get("key")
    options = key.get("options") if isinstance(key, dict) else None  # store/fingerprint.py
    for holder in (meta, options, meta.get("options"), key):
        if isinstance(holder, dict) and isinstance(holder.get("site"), str):
            return holder["site"]
    return None
