"""Checksums of every table and array, recorded when an ingest finishes, and `verify`."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from warehouse.store.arrays import (
    STORAGE_DTYPES,
    ArraySpec,
    chunk_keys,
    coord_files,
    coord_values,
    write_coord,
)
from warehouse.store.chunks import shard_index
from warehouse.store.derived import CHECKSUM, crc32c_of
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import (
    algorithm_of,
    files_digest,
    is_temp_file,
    loads_json,
    safe_relative,
    sha256_file,
    stream_digest,
)
from warehouse.store.format import (
    ACTIVATIONS,
    DERIVED_DIRS,
    DERIVED_FILES,
    DERIVED_PARTS,
    MANIFEST,
    OUTPUT_DIRS,
)
from warehouse.store.location import Location, kind_of, require_regular
from warehouse.store.lock import LOCK, creations, lock_status
from warehouse.store.manifest import Manifest, array_specs, load_manifest

# The folders written by later stages (format.DERIVED_DIRS) each hold Parquet tables, every
# one beside its JSON sidecar (<name>.parquet + <name>.json), and nothing else but the files
# DERIVED_FILES names and a sharded eval's unjoined parts (evals/parts/<request>/, pairs as
# well). A report drawn into the warehouse (`warehouse demo` puts it there, OUTPUT_DIRS) is
# not data: checked for links and special files only.


def array_files(spec: ArraySpec) -> list[str]:
    """Every file an array consists of: its metadata and all its chunks, in a fixed order."""
    return [f"{spec.path}/zarr.json", *chunk_keys(spec)]


# The checksum of every array and coordinate array, in its manifest entry's field `checksum`
# (crc32c: a check against damage and mix-ups; tables and derived files keep sha256).
ARRAY_ALGORITHM = "crc32c"


def array_checksum(entry: dict) -> str | None:
    """An array's recorded checksum, "crc32c:<hex>"."""
    return entry.get("checksum")


def finalize_checksums(root: Path, manifest: Manifest, known: dict[str, str] | None = None) -> None:
    """Record every table's and array's checksum; `known` holds array checksums the writer
    already computed from the bytes it wrote (the rest are read back from disk)."""
    known = known or {}
    for entry in manifest.tables.values():
        entry["sha256"] = sha256_file(safe_relative(root, entry["path"]))
    for key, spec in array_specs(manifest).items():
        digest = known.get(key)
        if digest is None or algorithm_of(digest) != ARRAY_ALGORITHM:
            digest = files_digest(root, array_files(spec), ARRAY_ALGORITHM)
        manifest.arrays[key]["checksum"] = digest


def write_coords(root: Path, manifest: Manifest) -> None:
    """Write the coordinate arrays of the manifest's arrays (once, when a warehouse is made)
    and record each one's checksum under `coords`, with the algorithm of its arrays."""
    coords = {}
    for path, (dim, values) in coord_values(array_specs(manifest).values()).items():
        write_coord(root, path, dim, values)
        coords[path] = files_digest(root, coord_files(path, len(values)), ARRAY_ALGORITHM)
    manifest.coords = coords


def _verify_coords(loc: Location, manifest: Manifest, expected: set[str], report: Report) -> None:
    """The coordinate arrays a manifest lists (none before they existed): exactly those its
    arrays need, each holding the values the manifest implies and matching its checksum."""
    listed = manifest.coords
    if listed is None:
        return
    specs = array_specs(manifest)
    want = coord_values(specs.values())
    if not isinstance(listed, dict) or set(listed) != set(want):
        report.problems.append(
            f"manifest coords {sorted(listed) if isinstance(listed, dict) else listed!r} "
            f"differ from the coordinate arrays its arrays need: {sorted(want)}"
        )
        return
    # An array entry that disagrees with the rest of the manifest is reported once, by
    # _verify_spec; the coordinates are checked against the entries that agree.
    sound = coord_values(s for k, s in specs.items() if not _spec_disagreements(manifest, k, s))
    for path, (dim, values) in want.items():
        files = coord_files(path, len(values))
        expected.update(files)
        if path not in sound:
            continue
        dim, values = sound[path]
        report.checked_files += len(files)
        try:  # a link or special file on the way is a finding, not a crash
            problem = _coord_problem(loc, path, dim, values)
            if problem is None and not _matches(loc, files, listed[path]):
                problem = "files do not match the manifest checksum"
        except FormatError as e:
            problem = str(e)
        if problem is not None:
            report.problems.append(f"coordinate array {path}: {problem}")


def _coord_problem(loc: Location, path: str, dim: str, values: np.ndarray) -> str | None:
    if not all(loc.isfile(f) for f in coord_files(path, len(values))):
        return "a file is missing"
    try:
        arr = zarr.open_array(store=loc.zarr_store(path), mode="r", zarr_format=3)
        if list(arr.metadata.dimension_names or []) != [dim] or arr.shape != values.shape:
            return f"dimension {arr.metadata.dimension_names} / shape {arr.shape} are wrong"
        if not np.array_equal(np.asarray(arr[:]), values):
            return "its values differ from the manifest's rows, layers or units"
    except Exception as e:  # any unreadable file is a finding, not a crash
        return f"unreadable ({type(e).__name__}: {e})"
    return None


@dataclass
class Report:
    """What `verify` found. `problems` are damage (exit 1); `notes` are states that are not
    damage, such as an ingest that stopped after its last committed batch."""

    problems: list[str] = field(default_factory=list)
    checked_files: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _group_files(path: str) -> set[str]:
    """zarr.json files of the groups above an array (e.g. activations.zarr/zarr.json)."""
    parts = Path(path).parts
    return {str(Path(*parts[:i], "zarr.json")) for i in range(1, len(parts))}


def verify(root: Path | str | Location) -> Report:
    """Check a warehouse file by file; every problem is reported, none is fatal to the check.

    A warehouse whose ingest has not finished is checked up to its committed rows: every
    chunk below the committed mark must exist and decode, later ones may be absent. A remote
    or zipped warehouse is checked read-only (`_verify_remote`).
    """
    loc = Location.of(root)
    if loc.remote:
        return _verify_remote(loc)
    root = loc.local
    report = Report()
    _verify_creations(root, report)
    if not root.exists() and (report.problems or report.notes):
        report.problems.insert(0, f"{root}: no warehouse here")
        return report
    manifest = load_manifest(root, check_fingerprint=False, check_paths=False)
    lock = lock_status(root)
    writing = lock is not None and lock.get("stale") is not True and "unreadable" not in lock
    _verify_lock(lock, report)
    _note_unfinished(manifest, report)
    _verify_fingerprint(manifest, report)
    expected = {MANIFEST}  # every file the manifest accounts for; the rest are checked apart
    _verify_tables(root, manifest, expected, report)
    _verify_arrays(loc, manifest, expected, report)
    _verify_derived_pooling(loc, manifest, report)
    _verify_coords(loc, manifest, expected, report)
    _verify_listed_files(loc, manifest, expected, report)
    _verify_derived(loc, report)
    _verify_tree(root, expected, writing, report)
    return report


def _note_unfinished(manifest: Manifest, report: Report) -> None:
    """An ingest that has not finished is a state, not damage: a note saying how far it got."""
    state = manifest.state
    if not state.complete:
        report.notes.append(
            "ingest not finished: checked up to the last committed batch "
            f"({state.prompts_committed} of {manifest.counts.prompts} "
            "prompts); re-run the same ingest command to resume"
        )


def _verify_tables(root: Path, manifest: Manifest, expected: set[str], report: Report) -> None:
    """Every table the manifest lists: inside the warehouse, present, its checksum and rows."""
    for name, entry in manifest.tables.items():
        try:
            path = safe_relative(root, entry["path"])
        except FormatError as e:
            report.problems.append(f"table {name}: {e}")
            continue
        expected.add(entry["path"])
        report.checked_files += 1
        _verify_table(name, entry, path, report)


def _verify_arrays(loc: Location, manifest: Manifest, expected: set[str], report: Report) -> None:
    """Every array the manifest lists: its entry agrees with the manifest, and its files
    (up to the committed rows of an unfinished ingest) decode and match the checksum."""
    complete = manifest.complete
    for key, spec in array_specs(manifest).items():
        try:
            safe_relative(loc.local, spec.path)
        except FormatError as e:
            report.problems.append(f"array {key}: {e}")
            continue
        files = array_files(spec)
        expected.update(files)
        expected.update(_group_files(spec.path))
        report.checked_files += len(files)
        _verify_spec(manifest, key, spec, report)
        digest = array_checksum(manifest.arrays[key])
        committed = manifest.state.rows_on_disk(key, spec.shape[0])
        _verify_array(loc, key, spec, digest, complete, committed, report)


def _verify_derived_pooling(loc: Location, manifest: Manifest, report: Report) -> None:
    """Derived responses store nothing: their manifest field names rules this tool knows,
    and, where nothing else was found damaged, their source opens (the per-token array and
    the prompts' token rows, which must tile it)."""
    from warehouse.store.derived_pooling import DerivedArray, derived_specs

    try:
        specs = derived_specs(manifest)
    except FormatError as e:
        report.problems.append(str(e))
        return
    if report.problems:  # its source's damage is reported already, and derives nothing
        return
    for key, spec in specs.items():
        try:
            DerivedArray(loc, spec)
        except (FormatError, WarehouseError) as e:
            report.problems.append(f"derived array {key}: {e}")
            return


def _verify_tree(root: Path, expected: set[str], writing: bool, report: Report) -> None:
    """Every path under the warehouse: no links, no special files, no file nothing accounts
    for (lstat, so a link is seen as a link and never followed)."""
    for dirpath, dirnames, names in os.walk(root):
        for n in [*dirnames, *names]:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                # A link can point anywhere; a warehouse is plain files, so it is refused.
                report.problems.append(
                    f"symbolic link {rel} -> {os.readlink(full)}: a warehouse holds no links"
                )
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                report.problems.append(
                    f"special file {rel} ({kind_of(mode)}): a warehouse holds plain files only"
                )
            elif stat.S_ISREG(mode) and rel not in expected:
                _verify_other_file(rel, n, writing, report)


def _verify_creations(root: Path, report: Report) -> None:
    """Temp folders beside the warehouse of a run that was creating it (ingest, export,
    merge): a killed one's is a problem (the next run of that command removes it)."""
    for c in creations(root):
        command = (c.command or "").removesuffix(" (creating)") or "ingest, export or merge"
        if c.dead:
            size = sum(p.stat().st_size for p in c.path.rglob("*") if p.is_file())
            report.problems.append(
                f"leftover temp folder {c.path.name} beside {root.name} ({size:,} bytes) of a "
                f"killed `warehouse {command}`: the next `warehouse {command}` that makes "
                f"{root.name} removes it, or delete it"
            )
        else:
            report.notes.append(f"{c.path.name}: `warehouse {command}` is making {root.name}")


def _verify_lock(lock: dict | None, report: Report) -> None:
    if lock is None:
        return
    if "unreadable" in lock:
        report.problems.append(
            f"writer lock {LOCK} is unreadable ({lock['unreadable']}): no writer can be told "
            f"from it, and writers refuse to start; if no warehouse command runs, delete {LOCK}"
        )
    elif lock.get("stale") is True:
        report.problems.append(
            f"stale writer lock {LOCK}: `{lock.get('command')}` (pid {lock.get('pid')}) "
            f"was killed; re-run that command (it takes the lock over), or delete {LOCK}"
        )
    else:
        report.notes.append(
            f"a writer holds {LOCK}: `{lock.get('command')}` (pid {lock.get('pid')} on "
            f"{lock.get('host')}), so files may still change"
        )


def _verify_table(name: str, entry: dict, path: Path, report: Report) -> None:
    if not os.path.lexists(path):
        report.problems.append(f"table {name}: file {entry['path']} is missing")
        return
    try:
        require_regular(path)
    except FormatError:
        report.problems.append(f"table {name}: {entry['path']} is not a plain file")
        return
    digest = entry.get("sha256")
    if digest is not None and sha256_file(path) != digest:
        report.problems.append(f"table {name}: {entry['path']} does not match its checksum")
        return
    rows = _parquet_rows(path)
    if rows is None:
        report.problems.append(f"table {name}: {entry['path']} is not a readable Parquet file")
    elif rows != entry.get("rows"):
        report.problems.append(
            f"table {name}: {entry['path']} has {rows} rows, the manifest says {entry.get('rows')}"
        )


def _verify_other_file(rel: str, name: str, writing: bool, report: Report) -> None:
    """A file the manifest does not list: a derived table, the writer lock, or a stray."""
    top = rel.split(os.sep, 1)[0]
    if top in DERIVED_DIRS and os.sep in rel and not is_temp_file(name):
        return  # checked by _verify_derived
    if (top in OUTPUT_DIRS and os.sep in rel) or rel == LOCK:
        return  # the lock: _verify_lock
    if is_temp_file(name):
        if not writing:  # while a writer runs, its temp files are work in progress
            report.problems.append(f"leftover temp file: {rel}")
        return
    report.problems.append(f"unexpected file: {rel}")


def _parquet_rows(path: Path) -> int | None:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None


def _verify_fingerprint(manifest: Manifest, report: Report) -> None:
    """model, dataset and capture are what the fingerprint was computed from at ingest, so an
    edit of any of them (a swapped weights hash, another layer list) shows up here."""
    if manifest.computed_fingerprint() != manifest.fingerprint:
        report.problems.append(
            "manifest.json: its model, dataset or capture fields do not match its fingerprint "
            "(edited after the ingest?); restore the original manifest.json"
        )


def _verify_spec(manifest: Manifest, key: str, spec: ArraySpec, report: Report) -> None:
    """The manifest's description of an array agrees with the rest of the manifest."""
    report.problems.extend(_spec_disagreements(manifest, key, spec))


def _spec_disagreements(manifest: Manifest, key: str, spec: ArraySpec) -> list[str]:
    kind, site = key.split("/")[:2]
    out = []
    want_rows = manifest.counts.tokens if kind == ACTIVATIONS else manifest.counts.prompts
    if spec.shape[0] != want_rows:
        out.append(
            f"array {key}: manifest shape {list(spec.shape)} has {spec.shape[0]} rows, "
            f"the manifest's counts say {want_rows}"
        )
    units = manifest.model.units.get(site)
    if spec.shape[2] != units or list(spec.layers) != list(manifest.capture.layers):
        out.append(
            f"array {key}: manifest shape {list(spec.shape)} / layers {list(spec.layers)} "
            f"disagree with the model's {units} units and the captured layers"
        )
    if spec.dtype != manifest.capture.dtype:
        out.append(
            f"array {key}: manifest dtype {spec.dtype!r} differs from the capture dtype "
            f"{manifest.capture.dtype!r}"
        )
    return out


def _verify_derived(loc: Location, report: Report) -> None:
    """stats/, selections/, evals/, study/ (local or remote): every Parquet file decodes and
    has its sidecar, every sidecar its table, row counts agree, nothing else lies there."""
    problems, checked = derived_problems(loc)
    report.checked_files += checked
    report.problems.extend(p for _, p in problems)


def derived_problems(
    loc: Location, folders: list[str] | None = None
) -> tuple[list[tuple[str, str]], int]:
    """What is wrong in the derived folders (all, or `folders`): (file, problem) pairs, and
    how many files were checked. Links, special files and temp files are left to the
    caller (verify's walk names them; readers refuse them)."""
    problems: list[tuple[str, str]] = []
    checked = 0
    for folder in folders or list(DERIVED_DIRS):
        entries = loc.entries(folder)
        for name in sorted(entries):
            rel, kind = f"{folder}/{name}", entries[name]
            if kind == "a folder" and DERIVED_PARTS.get(folder) == name:
                for request, sub in sorted(loc.entries(rel).items()):
                    if sub == "a folder":
                        checked += _check_pairs(loc, f"{rel}/{request}", folder, (), problems)
                    elif sub == "a plain file":
                        problems.append((f"{rel}/{request}", f"unexpected file: {rel}/{request}"))
            elif kind == "a folder":
                if not is_temp_file(name):
                    problems.append((rel, f"unexpected folder: {rel}"))
        checked += _check_pairs(loc, folder, folder, DERIVED_FILES.get(folder, ()), problems)
    return problems, checked


def _check_pairs(
    loc: Location, where: str, folder: str, others: tuple[str, ...], problems: list
) -> int:
    """Check the plain files directly in `where`: Parquet tables with sidecars, and `others`
    (JSON objects). Returns how many were checked."""
    command = DERIVED_DIRS[folder]
    entries = loc.entries(where)
    files = {n for n, kind in entries.items() if kind == "a plain file" and not is_temp_file(n)}
    for name in sorted(files):
        rel = f"{where}/{name}"
        stem, dot, suffix = name.rpartition(".")
        if name in others:
            if _json_at(loc, rel) is None:
                problems.append((rel, f"{rel} is not a readable JSON object"))
        elif dot and suffix == "parquet":
            meta = _json_at(loc, f"{where}/{stem}.json") if f"{stem}.json" in files else None
            if f"{stem}.json" not in files:
                problems.append(
                    (
                        rel,
                        f"{rel} has no sidecar {stem}.json, yet the `{folder}` view would read "
                        f"it: re-run `warehouse {command}`, or delete it if it was put there "
                        "by hand",
                    )
                )
            rows = _parquet_rows_at(loc, rel)
            want = None if meta is None else meta.get("rows", meta.get("size"))
            if isinstance(rows, str):
                problems.append((rel, f"{rel} is not a readable Parquet file ({rows})"))
            elif isinstance(want, int) and want != rows:
                problems.append((rel, f"{rel} has {rows} rows, its sidecar says {want}"))
            elif meta is not None and not _crc_matches(loc, rel, meta):
                problems.append(
                    (
                        rel,
                        f"{rel} does not match the crc32c its sidecar records (edited or damaged)",
                    )
                )
        elif dot and suffix == "json":
            if _json_at(loc, rel) is None:
                problems.append((rel, f"{rel} is not a readable JSON sidecar"))
            elif f"{stem}.parquet" not in files:
                problems.append(
                    (
                        rel,
                        f"{rel}: its table {stem}.parquet is missing; re-run "
                        f"`warehouse {command}` to make it again",
                    )
                )
        else:
            problems.append((rel, f"unexpected file: {rel}"))
    return len(files)


def _crc_matches(loc: Location, rel: str, meta: dict) -> bool:
    """A derived table's bytes against the crc32c its sidecar records (none: unchecked)."""
    want = meta.get(CHECKSUM)
    return want is None or crc32c_of(loc.read_bytes(rel)) == want


def _parquet_rows_at(loc: Location, rel: str) -> int | str:
    """Rows of a Parquet file, every page decoded; or what is wrong with it."""
    try:
        with loc.open(rel) as f:
            return pq.read_table(f).num_rows
    except (OSError, pa.ArrowException, FormatError) as e:
        return str(e)


def _json_at(loc: Location, rel: str) -> dict | None:
    try:
        d = loads_json(loc.read_bytes(rel))
    except (OSError, ValueError, FormatError):
        return None
    return d if isinstance(d, dict) else None


def _verify_array(
    loc: Location,
    key: str,
    spec: ArraySpec,
    digest: str | None,
    complete: bool,
    committed: int,
    report: Report,
) -> None:
    """Metadata against the manifest, every chunk decoded (local or remote, read-only)."""
    if not loc.isfile(f"{spec.path}/zarr.json"):
        report.problems.append(f"array {key}: metadata {spec.path}/zarr.json is missing")
        return
    try:
        arr = zarr.open_array(store=loc.zarr_store(spec.path), mode="r", zarr_format=3)
    except Exception as e:  # any unreadable metadata is a finding, not a crash
        report.problems.append(f"array {key}: metadata unreadable ({e})")
        return
    shards = tuple(arr.shards) if arr.shards is not None else None
    if (tuple(arr.shape), tuple(arr.chunks), shards) != (spec.shape, spec.chunks, spec.shards):
        report.problems.append(
            f"array {key}: shape/chunks/shards {tuple(arr.shape)}/{tuple(arr.chunks)}/{shards} "
            f"differ from the manifest's {spec.shape}/{spec.chunks}/{spec.shards}"
        )
        return
    if str(arr.dtype) != STORAGE_DTYPES.get(spec.dtype) or (
        arr.attrs.get("warehouse_dtype") != spec.dtype
    ):
        report.problems.append(
            f"array {key}: stores {arr.dtype} ({arr.attrs.get('warehouse_dtype')}), the "
            f"manifest says {spec.dtype}"
        )
        return
    bad = False
    # Chunks are decoded one at a time (in a shard, one layer's at a time): zstd's content
    # checksum catches flipped bytes and truncation, and a missing file is named rather than
    # read back as zeros.
    for ck in chunk_keys(spec):
        i, j, k = (int(x) for x in ck.rsplit("/c/", 1)[1].split("/"))
        if not loc.isfile(ck):
            # Below the committed mark every chunk must be there; above it (an ingest that
            # has not finished) a chunk may not be written yet.
            if i * spec.chunks[0] < committed:
                report.problems.append(f"array {key}: chunk {ck} is missing")
                bad = True
            continue
        problem = _check_file(loc, arr, spec, ck, (i, j, k))
        if problem:
            report.problems.append(f"array {key}: chunk {ck} is corrupt ({problem})")
            bad = True
    if complete and not bad and not _matches(loc, array_files(spec), digest):
        report.problems.append(f"array {key}: files do not match the manifest checksum")


def _check_file(
    loc: Location, arr: zarr.Array, spec: ArraySpec, rel: str, index: tuple[int, int, int]
) -> str | None:
    """What is wrong with one chunk file, decoding it as zarr does; None if nothing."""
    rows = slice(index[0] * spec.shards[0], min((index[0] + 1) * spec.shards[0], spec.shape[0]))
    try:
        # A shard: its index first (zarr reads a chunk the index marks absent as zeros), then
        # every chunk, one layer at a time.
        shard_index(loc.read_bytes(rel), spec.chunks_per_shard)
        for layer in range(spec.shape[1]):
            try:
                np.asarray(arr[rows, layer, :])
            except Exception as e:
                return f"layer {layer}: {type(e).__name__}: {e}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _matches(loc: Location, rels: list[str], digest: str | None, single: bool = False) -> bool:
    """Whether files (local or remote) match their recorded checksum, computed with the
    algorithm it names (stream_digest's digest; `single`: one file's content alone). A missing
    checksum, or one of an unknown algorithm, does not match."""
    try:
        algorithm = algorithm_of(digest)  # type: ignore[arg-type]
    except FormatError:
        return False
    return stream_digest(loc.open, rels, algorithm, names=not single) == digest


def _verify_listed_files(
    loc: Location, manifest: Manifest, expected: set[str], report: Report
) -> None:
    """Derived files an export or merge listed with checksums (stats, selections, evals)."""
    for rel, digest in sorted((manifest.files or {}).items()):
        try:
            _safe(loc, rel)
        except FormatError as e:
            report.problems.append(str(e))
            continue
        expected.add(rel)
        report.checked_files += 1
        if not loc.isfile(rel):
            report.problems.append(f"file {rel} is missing")
        elif not _matches(loc, [rel], digest, single=True):
            report.problems.append(f"file {rel} does not match its checksum")


def _verify_remote(loc: Location) -> Report:
    """Check a warehouse file by file; every problem is reported, none is fatal to the check.

    Works read-only on a remote or zipped warehouse too (every byte is fetched once or twice).
    """
    report = Report()
    manifest = load_manifest(loc)
    complete = manifest.complete
    if not complete:
        report.problems.append(
            f"ingest not finished ({manifest.state.prompts_committed} of "
            f"{manifest.counts.prompts} prompts committed); re-run the ingest to resume"
        )
    expected = {MANIFEST}
    for name, entry in manifest.tables.items():
        try:
            _safe(loc, entry["path"])
        except FormatError as e:
            report.problems.append(str(e))
            continue
        expected.add(entry["path"])
        report.checked_files += 1
        if not loc.isfile(entry["path"]):
            report.problems.append(f"table {name}: file {entry['path']} is missing")
        elif complete and not _matches(loc, [entry["path"]], entry.get("sha256"), single=True):
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
        digest = array_checksum(manifest.arrays[key])
        committed = manifest.state.rows_on_disk(key, spec.shape[0])
        _verify_array(loc, key, spec, digest, complete, committed, report)
    _verify_derived_pooling(loc, manifest, report)
    _verify_coords(loc, manifest, expected, report)
    _verify_listed_files(loc, manifest, expected, report)
    _verify_derived(loc, report)
    listed = manifest.files
    for rel in loc.walk():
        rel = rel.replace(os.sep, "/")
        n = rel.rsplit("/", 1)[-1]
        if rel in expected or rel.startswith(tuple(f"{d}/" for d in OUTPUT_DIRS)):
            continue
        if is_temp_file(n):
            report.problems.append(f"leftover temp file: {rel}")
        elif not rel.startswith(tuple(f"{d}/" for d in DERIVED_DIRS)):
            report.problems.append(f"unexpected file: {rel}")
        elif isinstance(listed, dict):
            # An export lists every derived file it wrote; a read-only copy gains none.
            report.problems.append(
                f"{rel} is not listed in the manifest's files: it was added after the "
                "export (a read-only copy gains no files)"
            )
    return report


def _safe(loc: Location, rel: str) -> None:
    if not loc.remote:
        safe_relative(loc.local, rel)
    elif rel.startswith("/") or ".." in rel.split("/"):
        raise FormatError(f"manifest path {rel!r} is not a relative path inside the warehouse")


def require_complete(manifest: Manifest, root: Path) -> None:
    if not manifest.complete:
        raise WarehouseError(f"{root}: ingest has not finished; re-run it to resume")
