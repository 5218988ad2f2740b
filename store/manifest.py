"""manifest.json: what a warehouse holds, how it was made, and how far its ingest got."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warehouse.store.arrays import ArraySpec
from warehouse.store.errors import FormatError
from warehouse.store.files import atomic_write_json, read_json, safe_relative
from warehouse.store.fingerprint import fingerprint_of
from warehouse.store.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST
from warehouse.store.location import Location, require_regular
from warehouse.store.sections import Capture, Counts, DatasetInfo, ModelInfo, Section, State
from warehouse.store.version import __version__

# The sections every manifest has, each a JSON object (`counts`, `tables`, `arrays` and
# `state` change as a warehouse is written; `model`, `dataset` and `capture` are what its
# fingerprint hashes, exactly as stored).
SECTIONS = ("model", "dataset", "capture", "counts", "tables", "arrays", "state")
# The typed ones (store/sections.py); `tables` and `arrays` stay name -> entry objects.
TYPED: dict[str, type[Section]] = {
    "model": ModelInfo,
    "dataset": DatasetInfo,
    "capture": Capture,
    "counts": Counts,
    "state": State,
}
# Optional fields, absent unless a run wrote them (docs/format.md says what each holds).
OPTIONAL = ("shard", "files", "export", "nonfinite", "coords", "merged_from")


@dataclass
class Manifest:
    """manifest.json, typed: `Manifest.load` reads and validates one, `save` writes it back.

    The sections `model`, `dataset`, `capture`, `counts` and `state` are typed
    (store/sections.py; a JSON object given for one is typed on construction) and write
    back the JSON objects they were read from (the fingerprint hashes them as stored);
    optional fields are None when absent, and fields this tool does not know are kept in
    `extra`, so `save` writes back what `load` read, byte for byte."""

    model: ModelInfo
    dataset: DatasetInfo
    capture: Capture
    fingerprint: str | None  # of model, dataset, capture (and shard): fingerprint_of
    counts: Counts
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: State = field(default_factory=State.new)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    tool_version: str = __version__
    shard: dict[str, Any] | None = None  # a part of a sharded ingest: index, count, plan, ...
    files: dict[str, str] | None = None  # an export's derived files -> checksum
    export: dict[str, Any] | None = None  # the export that made this copy
    nonfinite: dict[str, Any] | None = None  # array key -> counts of non-finite values
    coords: dict[str, str] | None = None  # coordinate array path -> checksum
    merged_from: list[dict[str, Any]] | None = None  # the inputs of `warehouse merge`
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, section in TYPED.items():
            setattr(self, name, section.of(getattr(self, name)))

    # -------------------------------------------------------------------------- JSON

    @classmethod
    def from_json(
        cls,
        m: Any,
        root: Path | Location | str = "",
        check_fingerprint: bool = True,
        check_paths: bool = True,
    ) -> Manifest:
        """Validate a parsed manifest.json of the warehouse at `root` (validate) and type it."""
        validate(m, root, check_fingerprint, check_paths)
        known = {"format", "format_version", "tool_version", "fingerprint", *SECTIONS, *OPTIONAL}
        return cls(
            **{"fingerprint": None, **{k: m[k] for k in known if k in m}},
            extra={k: v for k, v in m.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as manifest.json holds it (optional fields only when set)."""
        out: dict[str, Any] = {
            "format": self.format,
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            **{k: getattr(self, k) for k in SECTIONS},
            **{k: getattr(self, k).to_json() for k in TYPED},
        }
        for k in ("fingerprint", *OPTIONAL):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out.update(self.extra)
        return out

    @classmethod
    def load(
        cls,
        root: Path | str | Location,
        *,
        check_fingerprint: bool = True,
        check_paths: bool = True,
    ) -> Manifest:
        """Read and check manifest.json of a local folder or (read-only) an fsspec URL.

        `check_fingerprint` refuses a manifest whose model, dataset or capture fields were
        edited after the ingest, `check_paths` one that names a path outside the folder
        (verify turns both off and reports them instead)."""
        loc = Location.of(root)
        if loc.remote:
            if not loc.isfile(MANIFEST):
                raise FormatError(f"{loc}: not a warehouse or not reachable (no {MANIFEST} there)")
            return cls.from_json(loc.read_json(MANIFEST), loc, check_fingerprint, check_paths)
        local = loc.local
        if not local.exists():
            raise FormatError(f"{local}: no such warehouse folder")
        if os.path.lexists(local / MANIFEST):
            require_regular(local / MANIFEST)  # a link or a FIFO is named, not "no manifest"
        if not is_warehouse(local):
            raise FormatError(
                f"{local}: not a warehouse (no {MANIFEST}); create one with `warehouse ingest`"
            )
        require_regular(local / MANIFEST)
        return cls.from_json(read_json(local / MANIFEST), local, check_fingerprint, check_paths)

    def save(self, root: Path) -> None:
        atomic_write_json(root / MANIFEST, self.to_json())

    def validate(
        self, root: Path | Location | str, check_fingerprint: bool = True, check_paths: bool = True
    ) -> None:
        """Refuse this manifest as `load` would refuse it in the warehouse at `root`."""
        validate(self.to_json(), root, check_fingerprint, check_paths)

    # ------------------------------------------------------------------------- facts

    @property
    def complete(self) -> bool:
        """The ingest finished: every table and array is written and checksummed."""
        return self.state.complete

    def computed_fingerprint(self) -> str:
        """The fingerprint of these model, dataset and capture sections (and shard)."""
        return fingerprint_of(self.to_json())

    def array_specs(self) -> dict[str, ArraySpec]:
        return array_specs(self)


def new_manifest(
    *,
    model: ModelInfo | dict[str, Any],
    dataset: DatasetInfo | dict[str, Any],
    capture: Capture | dict[str, Any],
    fingerprint: str,
    counts: Counts | dict[str, Any],
) -> Manifest:
    """The manifest of a warehouse being created (state: nothing committed); each section
    typed or a JSON object."""
    return Manifest(
        model=ModelInfo.of(model),
        dataset=DatasetInfo.of(dataset),
        capture=Capture.of(capture),
        fingerprint=fingerprint,
        counts=Counts.of(counts),
    )


def is_warehouse(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def load_manifest(
    root: Path | str | Location, *, check_fingerprint: bool = True, check_paths: bool = True
) -> Manifest:
    """Manifest.load."""
    return Manifest.load(root, check_fingerprint=check_fingerprint, check_paths=check_paths)


def validate(
    m: Any, root: Path | Location | str, check_fingerprint: bool = True, check_paths: bool = True
) -> None:
    """Refuse a parsed manifest.json that is not one of this tool's format, lacks a section,
    names a path outside the warehouse (`check_paths`) or whose model, dataset or capture
    sections were edited after its fingerprint was taken (`check_fingerprint`)."""
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
    for name in SECTIONS:
        if not isinstance(m.get(name), dict):
            raise FormatError(f"{where}: field {name!r} is missing or not an object")
    _check_paths(m, root, check_paths)
    if check_fingerprint and "fingerprint" in m and fingerprint_of(m) != m["fingerprint"]:
        raise FormatError(
            f"{where}: its model, dataset or capture fields were edited (they no longer "
            "match its fingerprint); restore the original manifest.json"
        )


def _check_paths(m: dict[str, Any], root: Path | Location | str, inside: bool) -> None:
    """Every table and array entry names a path; with `inside`, one relative to the folder
    and inside it: a shared warehouse must not point a reader (or a writer) at files
    outside it."""
    where = f"{root}/{MANIFEST}"
    for kind in ("tables", "arrays"):
        for name, entry in m[kind].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise FormatError(f"{where}: {kind} entry {name!r} has no path")
            if not inside:
                continue
            if isinstance(root, Location):  # remote: no links to follow, check the text
                rel = Path(entry["path"])
                if rel.is_absolute() or ".." in rel.parts or ":" in entry["path"]:
                    raise FormatError(
                        f"manifest path {entry['path']!r} is not a relative path inside "
                        "the warehouse; the manifest was edited or damaged"
                    )
            else:
                safe_relative(Path(root), entry["path"])


def save_manifest(root: Path, manifest: Manifest) -> None:
    manifest.save(root)


def array_specs(manifest: Manifest) -> dict[str, ArraySpec]:
    try:
        return {k: ArraySpec.from_json(k, v) for k, v in manifest.arrays.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"manifest arrays entry is malformed ({e})") from None


# --- non-finite values ---------------------------------------------------------------------
# Manifest.nonfinite (absent when every stored value is finite): {array key: {"layers":
# {layer: {"nan", "posinf", "neginf", "overflow"}}, "neurons": {"layer:unit": [non-finite
# values, of them overflowed]}, "truncated": bool}}. "overflow" counts the infinities whose
# value was finite in the model and too large for the storage dtype (float16: |x| >= 65520).
MAX_LISTED_NEURONS = 1000  # neurons named per array; the per-layer counts stay exact


def add_nonfinite(*fields: dict) -> dict:
    """The sum of `nonfinite` fields (of batches, of a resumed run's parts, of shards)."""
    out: dict[str, dict] = {}
    for part in fields:
        for key, entry in part.items():
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
