"""Relation datasets: facts with templates, read from JSONL/CSV/Parquet or the LRE JSON files.

One row per fact: (relation, language, subject, object) plus the templates that state the
subject and the relation and stop where the object would start ("The capital of {subject} is").
A fact becomes one prompt per template. Splits are by subject (`subject_id`, shared by the
same fact in every language), so a subject never lands in both `identify` and `test`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from warehouse.store.errors import DatasetError
from warehouse.store.files import loads_json
from warehouse.store.format import SPLITS

SUBJECT = "{subject}"
FIELDS = ("relation", "language", "subject", "object", "aliases", "templates", "subject_id")
REQUIRED = ("relation", "language", "subject", "object", "templates")
SUFFIXES = (".jsonl", ".csv", ".parquet")
BUILTIN = "builtin"

_RELATION_RE = re.compile(r"[a-z0-9_]+")
# BCP-47-like: "en", "zh", "pt-BR", "zh_Hant"; enough to catch swapped columns and typos.
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
# The LRE files hold a few escapes twice-encoded ("Bras\\u00edlia"); decode them to the letter.
_LITERAL_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class Fact:
    relation: str
    language: str
    subject: str
    object: str
    aliases: tuple[str, ...]
    templates: tuple[str, ...]
    subject_id: str


@dataclass(frozen=True)
class Prompt:
    prompt_id: int
    relation: str
    language: str
    split: str  # "identify" | "test"
    subject: str
    subject_id: str
    object: str
    aliases: tuple[str, ...]
    template: str
    text: str
    subject_start: int  # char span of the subject inside text
    subject_end: int


@dataclass
class Dataset:
    name: str
    facts: list[Fact]
    hash: str  # "sha256:<hex>" of the sorted canonical facts: file order and format do not matter

    def relations(self) -> list[str]:
        return sorted({f.relation for f in self.facts})

    def languages(self) -> list[str]:
        return sorted({f.language for f in self.facts})


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(spec: str | Path | None = None) -> Dataset:
    """Load the built-in dataset (None or "builtin"), a .jsonl/.csv/.parquet file, or LRE data.

    LRE data is a folder of the LRE relation JSON files (searched recursively) or one such file.
    """
    if spec is None or (isinstance(spec, str) and spec == BUILTIN):
        source = resources.files("warehouse.ingest").joinpath("data/builtin.jsonl")
        with resources.as_file(source) as path:
            return _load_table_cached(Path(path), name=BUILTIN)
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file or folder (or use 'builtin')")
    if path.is_dir():
        return _load_lre_folder(path)
    if path.suffix == ".json":
        return _make_dataset(path.stem, _lre_facts(path))
    if path.suffix not in SUFFIXES:
        raise DatasetError(
            f"{path}: unknown dataset suffix {path.suffix!r} "
            f"(expected one of {', '.join(SUFFIXES)}, an LRE .json file or folder)"
        )
    return _load_table_cached(path, name=path.stem)


# Tables already validated and hashed in this process, by content: a process that ingests or
# evaluates several times (the study, a notebook, the bench) parses a file once (the built-in
# dataset: 0.15-0.27 s, ~1 % of a pooled bench ingest). The file is read once, hashed, and
# parsed from those bytes, so an edit between the two cannot be cached under the old key.
_TABLE_CACHE: dict[tuple[str, str, str], Dataset] = {}
_TABLE_CACHE_SIZE = 4


def _load_table_cached(path: Path, name: str) -> Dataset:
    data = path.read_bytes()
    key = (name, path.suffix, hashlib.sha256(data).hexdigest())
    dataset = _TABLE_CACHE.get(key)
    if dataset is None:
        dataset = _load_table(path, name, data)
        while len(_TABLE_CACHE) >= _TABLE_CACHE_SIZE:
            del _TABLE_CACHE[next(iter(_TABLE_CACHE))]
        _TABLE_CACHE[key] = dataset
    # Facts are frozen; a fresh list keeps a caller's edits out of the cache.
    return Dataset(name=dataset.name, facts=list(dataset.facts), hash=dataset.hash)


def _load_table(path: Path, name: str, data: bytes) -> Dataset:
    """The facts of a table file whose bytes are `data` (`path` names it in errors)."""
    readers = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    merged: dict[tuple[str, str, str], tuple[Fact, str]] = {}
    for where, row in readers[path.suffix](path, data):
        fact = _fact_from_row(row, where)
        key = (fact.relation, fact.language, fact.subject_id)
        if key in merged:
            first, first_where = merged[key]
            merged[key] = (_merge_duplicate(first, fact, first_where, where), first_where)
        else:
            merged[key] = (fact, where)
    if not merged:
        raise DatasetError(f"{path}: empty dataset (no facts)")
    return _make_dataset(name, [fact for fact, _ in merged.values()])


def _make_dataset(name: str, facts: list[Fact]) -> Dataset:
    return Dataset(name=name, facts=facts, hash=dataset_hash(facts))


def dataset_hash(facts: Iterable[Fact]) -> str:
    """sha256 over the sorted canonical facts: the same facts hash alike in any order or format."""
    lines = sorted(
        json.dumps(
            [
                f.relation,
                f.language,
                f.subject_id,
                f.subject,
                f.object,
                sorted(f.aliases),
                sorted(f.templates),
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for f in facts
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return f"sha256:{digest.hexdigest()}"


def _merge_duplicate(first: Fact, dup: Fact, first_where: str, where: str) -> Fact:
    """A repeated (relation, language, subject_id) may add templates or aliases, not change it."""
    first_file, number = first_where.rsplit(":", 1)
    first_line = f"{'row' if first_file.endswith('.parquet') else 'line'} {number}"
    key = f"({dup.relation}, {dup.language}, {dup.subject_id})"
    if dup.object != first.object:
        raise DatasetError(
            f"{where}: field 'object': duplicate fact {key} has object {dup.object!r} "
            f"but {first_line} has {first.object!r}"
        )
    if dup.subject != first.subject:
        raise DatasetError(
            f"{where}: field 'subject': duplicate fact {key} has subject {dup.subject!r} "
            f"but {first_line} has {first.subject!r}"
        )
    return Fact(
        relation=first.relation,
        language=first.language,
        subject=first.subject,
        object=first.object,
        aliases=_unique(first.aliases + dup.aliases),
        templates=_unique(first.templates + dup.templates),
        subject_id=first.subject_id,
    )


# Each reader yields (where, row): `where` is "file:line" (JSONL/CSV physical line, 1-based)
# or "file:row" (Parquet, 1-based), the prefix of every error about that row.


def _check_utf8(path: Path, data: bytes) -> None:
    """A DatasetError naming the line of the first byte that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None


def _jsonl_rows(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    _check_utf8(path, data)
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = loads_json(line.rstrip("\r\n"))  # columns then count within the line
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {_type_name(row)}")
            yield where, row


def _csv_rows(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    _check_utf8(path, data)
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        _check_columns(header, f"{path}:1")
        start = reader.line_num + 1  # quoted cells may span lines: report where the row starts
        for cells in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise DatasetError(
                    f"{where}: expected {len(header)} cells (as in the header), got {len(cells)}"
                )
            # An empty CSV cell means "not given", so optional fields take their defaults.
            yield where, {h: c for h, c in zip(header, cells, strict=True) if c != ""}


def _parquet_rows(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DatasetError(f"{path}: not a readable Parquet file: {e}") from None
    _check_columns(parquet.schema_arrow.names, str(path))
    number = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:{number}", {k: v for k, v in row.items() if v is not None}


def _check_columns(columns: Sequence[str], where: str) -> None:
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        raise DatasetError(f"{where}: unknown column {unknown[0]!r} (known: {', '.join(FIELDS)})")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DatasetError(f"{where}: missing column {missing[0]!r}")


# ---------------------------------------------------------------------------------------------
# Validation


def _fact_from_row(row: dict[str, Any], where: str) -> Fact:
    for key in row:
        if key not in FIELDS:
            raise DatasetError(f"{where}: unknown field {key!r} (known: {', '.join(FIELDS)})")
    for key in REQUIRED:
        if row.get(key) is None:
            raise DatasetError(f"{where}: missing field {key!r}")

    relation = _text(row, "relation", where)
    if not _RELATION_RE.fullmatch(relation):
        raise DatasetError(
            f"{where}: field 'relation': {relation!r} must be lowercase letters, digits and _"
        )
    language = _text(row, "language", where)
    if not _LANGUAGE_RE.fullmatch(language):
        raise DatasetError(
            f"{where}: field 'language': {language!r} is not a language code such as en or zh"
        )
    subject = _text(row, "subject", where)
    obj = _text(row, "object", where)
    subject_id = _text(row, "subject_id", where) if row.get("subject_id") is not None else subject

    aliases = _text_list(row, "aliases", where) if row.get("aliases") is not None else ()
    templates = _text_list(row, "templates", where)
    if not templates:
        raise DatasetError(f"{where}: field 'templates': needs at least one template")
    for template in templates:
        _check_template(template, f"{where}: field 'templates'")

    return Fact(
        relation=relation,
        language=language,
        subject=subject,
        object=obj,
        aliases=tuple(a for a in _unique(aliases) if a != obj),
        templates=_unique(templates),
        subject_id=subject_id,
    )


def _check_template(template: str, where: str) -> None:
    count = template.count(SUBJECT)
    if count == 0:
        raise DatasetError(f'{where}: template "{template}" has no {SUBJECT}')
    if count > 1:
        raise DatasetError(f'{where}: template "{template}" has {SUBJECT} {count} times')
    if template != template.rstrip():
        # The object's leading space belongs to the object's first token ("is" + " Paris").
        raise DatasetError(f'{where}: template "{template}" ends with whitespace')


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r}: expected a string, got {_type_name(value)}")
    value = _clean(value)
    if not value:
        raise DatasetError(f"{where}: field {key!r}: is empty")
    return value


def _text_list(row: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = row[key]
    if isinstance(value, str):
        # CSV and Parquet string columns: a JSON array, or values separated by "|".
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = loads_json(stripped)
            except json.JSONDecodeError as e:
                raise DatasetError(
                    f"{where}: field {key!r}: invalid JSON array: {e.msg} (column {e.colno})"
                ) from None
        else:
            value = [item.strip() for item in stripped.split("|")] if stripped else []
    if not isinstance(value, list | tuple):
        raise DatasetError(f"{where}: field {key!r}: expected a list, got {_type_name(value)}")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DatasetError(
                f"{where}: field {key!r}: item {i} is {_type_name(item)}, expected a string"
            )
        if key == "templates":
            # Trailing whitespace is an error (see _check_template), so only the left is cut.
            item = unicodedata.normalize("NFC", item).lstrip()
        else:
            item = _clean(item)
        if not item:
            raise DatasetError(f"{where}: field {key!r}: item {i} is empty")
        items.append(item)
    return tuple(items)


def _clean(text: str) -> str:
    # NFC so that "é" typed two ways is one subject; strip so "Jimmy Carter " matches itself.
    return unicodedata.normalize("NFC", text).strip()


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# LRE importer (Hernandez et al., "Linearity of Relation Decoding in Transformer LMs")


def _load_lre_folder(folder: Path) -> Dataset:
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    if not files:
        raise DatasetError(f"{folder}: folder holds no LRE .json relation files")
    seen: dict[str, Path] = {}
    facts: list[Fact] = []
    for path in files:
        if path.stem in seen:
            raise DatasetError(f"{path}: relation {path.stem!r} also defined in {seen[path.stem]}")
        seen[path.stem] = path
        facts.extend(_lre_facts(path))
    return _make_dataset(folder.resolve().name, facts)


def _lre_facts(path: Path) -> list[Fact]:
    """One LRE relation file → facts in English; repeated subjects merge, extra objects → aliases.

    LRE lists some subjects more than once with different objects (Spider-Man: Peter Parker,
    Miles Morales); each is a correct answer, so the first is the object, the rest aliases.
    """
    relation = path.stem
    if not _RELATION_RE.fullmatch(relation):
        raise DatasetError(
            f"{path}: relation name {relation!r} (the file stem) must match [a-z0-9_]+"
        )
    raw = path.read_bytes()
    _check_utf8(path, raw)
    try:
        data = loads_json(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an LRE relation object, got {_type_name(data)}")
    templates = _lre_templates(path, data)
    return [
        Fact(
            relation=relation,
            language="en",
            subject=subject,
            object=objs[0],
            aliases=tuple(objs[1:]),
            templates=templates,
            subject_id=subject,
        )
        for subject, objs in _lre_objects(path, data).items()
    ]


def _lre_templates(path: Path, data: dict) -> tuple[str, ...]:
    """The relation's prompt templates (few-shot and zero-shot lists), `{}` → the subject
    placeholder, each once."""
    templates: list[str] = []
    for key in ("prompt_templates", "prompt_templates_zs"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise DatasetError(f"{path}: field {key!r}: expected a list of strings")
        for template in value:
            if template.count("{}") != 1:
                raise DatasetError(f'{path}: field {key!r}: template "{template}" needs one {{}}')
            template = template.strip().replace("{}", SUBJECT)
            _check_template(template, f"{path}: field {key!r}")
            templates.append(template)
    if not templates:
        raise DatasetError(f"{path}: field 'prompt_templates': no templates")
    return _unique(templates)


def _lre_objects(path: Path, data: dict) -> dict[str, list[str]]:
    """subject -> its distinct objects in file order, from the relation's samples."""
    samples = data.get("samples")
    if not isinstance(samples, list) or not samples:
        raise DatasetError(f"{path}: field 'samples': expected a non-empty list")
    objects: dict[str, list[str]] = {}
    for i, sample in enumerate(samples):
        where = f"{path}: sample {i}"
        if not isinstance(sample, dict):
            raise DatasetError(f"{where}: expected an object, got {_type_name(sample)}")
        for key in ("subject", "object"):
            if key not in sample:
                raise DatasetError(f"{where}: missing field {key!r}")
        subject = _lre_text(_text(sample, "subject", where))
        obj = _lre_text(_text(sample, "object", where))
        objects.setdefault(subject, [])
        if obj not in objects[subject]:
            objects[subject].append(obj)
    return objects


def _lre_text(text: str) -> str:
    return _LITERAL_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


# ---------------------------------------------------------------------------------------------
# Splits and prompts


def _rank_key(seed: int, relation: str, subject_id: str) -> str:
    return hashlib.sha256(f"{seed}:{relation}:{subject_id}".encode()).hexdigest()


def assign_splits(
    dataset: Dataset, seed: int = 0, n_test: int = 50, test_fraction: float = 0.4
) -> dict[tuple[str, str], str]:
    """(relation, subject_id) → "identify" | "test", decided by subject, never by prompt.

    Per relation, subjects ranked by sha256(f"{seed}:{relation}:{subject_id}"): the first
    min(n_test, floor(test_fraction * n_subjects)) are `test`. The cap by fraction keeps
    identification prompts for small relations (7 weekdays) where 50 would take them all.
    """
    if n_test < 0:
        raise DatasetError(f"n_test must be >= 0, got {n_test}")
    if not 0.0 <= test_fraction <= 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1], got {test_fraction}")
    subjects: dict[str, set[str]] = {}
    for fact in dataset.facts:
        subjects.setdefault(fact.relation, set()).add(fact.subject_id)
    splits: dict[tuple[str, str], str] = {}
    for relation, ids in sorted(subjects.items()):
        ranked = sorted(ids, key=lambda s: _rank_key(seed, relation, s))
        # The epsilon keeps 0.4 * 60 from flooring to 23 through float rounding.
        n = min(n_test, math.floor(test_fraction * len(ranked) + 1e-9))
        for i, subject_id in enumerate(ranked):
            splits[(relation, subject_id)] = "test" if i < n else "identify"
    return splits


def prompt_id(relation: str, language: str, subject_id: str, template: str) -> int:
    """A stable 63-bit id: the same prompt gets the same id in every run and warehouse."""
    key = "\x1f".join((relation, language, subject_id, template)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def build_prompts(
    dataset: Dataset,
    relations: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    split: str = "all",
    seed: int = 0,
    n_test: int = 50,
    test_fraction: float = 0.4,
) -> list[Prompt]:
    """One prompt per (fact, template), sorted by (relation, language, subject_id, template)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    wanted_relations = _select("relation", relations, dataset.relations())
    wanted_languages = _select("language", languages, dataset.languages())
    splits = assign_splits(dataset, seed=seed, n_test=n_test, test_fraction=test_fraction)

    prompts = []
    for fact in dataset.facts:
        if fact.relation not in wanted_relations or fact.language not in wanted_languages:
            continue
        fact_split = splits[(fact.relation, fact.subject_id)]
        if split != "all" and fact_split != split:
            continue
        for template in fact.templates:
            start = template.index(SUBJECT)
            prompts.append(
                Prompt(
                    prompt_id=prompt_id(fact.relation, fact.language, fact.subject_id, template),
                    relation=fact.relation,
                    language=fact.language,
                    split=fact_split,
                    subject=fact.subject,
                    subject_id=fact.subject_id,
                    object=fact.object,
                    aliases=fact.aliases,
                    template=template,
                    # str.replace, not str.format: user text may contain braces.
                    text=template.replace(SUBJECT, fact.subject),
                    subject_start=start,
                    subject_end=start + len(fact.subject),
                )
            )
    prompts.sort(key=lambda p: (p.relation, p.language, p.subject_id, p.template))
    return prompts


def _select(kind: str, wanted: Sequence[str] | None, available: list[str]) -> set[str]:
    if wanted is None:
        return set(available)
    if isinstance(wanted, str):  # a bare string would otherwise be read letter by letter
        wanted = [wanted]
    for name in wanted:
        if name not in available:
            raise DatasetError(f"unknown {kind} {name!r} (available: {', '.join(available)})")
    return set(wanted)


def describe(dataset: Dataset, seed: int = 0) -> dict[str, Any]:
    """Counts per relation and language, for `warehouse datasets --json`.

    `facts` = `identify` + `test` (facts per split); `templates` = distinct template strings;
    `prompts` = facts × their templates.
    """
    splits = assign_splits(dataset, seed=seed)
    relations: dict[str, dict[str, dict[str, Any]]] = {}
    templates: dict[tuple[str, str], set[str]] = {}
    for fact in sorted(dataset.facts, key=lambda f: (f.relation, f.language)):
        cell = relations.setdefault(fact.relation, {}).setdefault(
            fact.language, {"facts": 0, "identify": 0, "test": 0, "templates": 0, "prompts": 0}
        )
        cell["facts"] += 1
        cell[splits[(fact.relation, fact.subject_id)]] += 1
        cell["prompts"] += len(fact.templates)
        templates.setdefault((fact.relation, fact.language), set()).update(fact.templates)
    for (relation, language), found in templates.items():
        relations[relation][language]["templates"] = len(found)
    return {"name": dataset.name, "hash": dataset.hash, "relations": relations}
