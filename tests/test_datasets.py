"""Relation datasets: formats agree, bad rows fail on one line, splits are by subject."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LRE

from warehouse.ingest.datasets import (
    Fact,
    assign_splits,
    build_prompts,
    describe,
    load_dataset,
    prompt_id,
)
from warehouse.ingest.scoring import is_correct, is_paper_correct, normalize_answer
from warehouse.store.errors import DatasetError

LANGS = {"en", "de", "fr", "es", "zh", "ja"}

ROWS = [
    {
        "relation": "country_capital",
        "language": "en",
        "subject": "France",
        "object": "Paris",
        "templates": ["The capital of {subject} is", "{subject}'s capital is"],
    },
    {
        "relation": "country_capital",
        "language": "de",
        "subject": "Frankreich",
        "subject_id": "France",
        "object": "Paris",
        "templates": ["Die Hauptstadt von {subject} ist"],
    },
    {
        "relation": "country_capital",
        "language": "en",
        "subject": "United States",
        "object": "Washington, D.C.",
        "aliases": ["Washington", "DC"],
        "templates": ["The capital of the {subject} is"],
    },
    {
        "relation": "word_antonym",
        "language": "zh",
        "subject": "热",
        "subject_id": "hot",
        "object": "冷",
        "templates": ["{subject}的反义词是"],
    },
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_csv(path: Path, rows: list[dict], lists: str = "json") -> Path:
    fields = ["relation", "language", "subject", "subject_id", "object", "aliases", "templates"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            cells = dict(row)
            for key in ("aliases", "templates"):
                if key in cells:
                    value = cells[key]
                    cells[key] = json.dumps(value) if lists == "json" else "|".join(value)
            writer.writerow(cells)
    return path


def write_parquet(path: Path, rows: list[dict], lists: str = "native") -> Path:
    columns: dict[str, list] = {
        k: [] for k in ("relation", "language", "subject", "subject_id", "object", "aliases")
    }
    columns["templates"] = []
    for row in rows:
        for key in columns:
            value = row.get(key)
            if key in ("aliases", "templates") and value is not None and lists != "native":
                value = json.dumps(value) if lists == "json" else "|".join(value)
            columns[key].append(value)
    pq.write_table(pa.table(columns), path)
    return path


# ---------------------------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize(
    "writer, suffix, lists",
    [
        (write_csv, "csv", "json"),
        (write_csv, "csv", "pipe"),
        (write_parquet, "parquet", "native"),
        (write_parquet, "parquet", "json"),
        (write_parquet, "parquet", "pipe"),
    ],
)
def test_formats_round_trip_to_the_same_facts(tmp_path, writer, suffix, lists):
    reference = load_dataset(write_jsonl(tmp_path / "facts.jsonl", ROWS))
    other = load_dataset(writer(tmp_path / f"facts.{suffix}", ROWS, lists=lists))
    assert other.facts == reference.facts
    assert other.hash == reference.hash
    assert other.name == "facts"


def test_csv_pipe_lists_are_stripped_and_empty_cells_are_defaults(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text(
        "relation,language,subject,object,aliases,templates,subject_id\n"
        'r,en,Paris,France,,"A {subject} is | {subject}, in"  ,\n',
        "utf-8",
    )
    (fact,) = load_dataset(path).facts
    assert fact.templates == ("A {subject} is", "{subject}, in")
    assert (fact.aliases, fact.subject_id) == ((), "Paris")


def test_jsonl_fields_defaults_and_hash(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "facts.jsonl", ROWS))
    assert data.relations() == ["country_capital", "word_antonym"]
    assert data.languages() == ["de", "en", "zh"]
    assert data.facts[0] == Fact(
        relation="country_capital",
        language="en",
        subject="France",
        object="Paris",
        aliases=(),
        templates=("The capital of {subject} is", "{subject}'s capital is"),
        subject_id="France",  # defaults to the subject
    )
    assert data.facts[2].aliases == ("Washington", "DC")
    assert data.hash.startswith("sha256:") and len(data.hash) == 7 + 64
    # Order of rows, templates and aliases does not change the hash; a changed object does.
    shuffled = [dict(r) for r in reversed(ROWS)]
    shuffled[1]["aliases"] = ["DC", "Washington"]
    assert load_dataset(write_jsonl(tmp_path / "b.jsonl", shuffled)).hash == data.hash
    changed = [dict(r) for r in ROWS]
    changed[0]["object"] = "Lyon"
    assert load_dataset(write_jsonl(tmp_path / "c.jsonl", changed)).hash != data.hash


def test_a_file_is_parsed_once_until_it_changes(tmp_path, monkeypatch):
    """Loads of an unchanged file reuse its parse (keyed by its bytes); an edit is read again,
    even one that keeps the file's size and mtime, and a caller's edits never reach the next
    load."""
    import os

    from warehouse.ingest import datasets

    parsed = []
    real = datasets._load_table
    monkeypatch.setattr(datasets, "_load_table", lambda *a: parsed.append(a) or real(*a))
    path = write_jsonl(tmp_path / "facts.jsonl", ROWS)
    first = load_dataset(path)
    first.facts.clear()
    again = load_dataset(path)
    assert len(parsed) == 1
    assert again.facts == load_dataset(write_jsonl(tmp_path / "b.jsonl", ROWS)).facts
    assert len(again.facts) == len(ROWS) and again.hash == first.hash

    stat = path.stat()
    changed = [dict(r) for r in ROWS]
    changed[0]["object"] = "Lyon!"  # as long as "Paris": the file keeps its size
    write_jsonl(path, changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    edited = load_dataset(path)
    assert edited.facts[0].object == "Lyon!" and edited.hash != first.hash


def test_duplicate_fact_with_same_object_merges_templates(tmp_path):
    extra = dict(
        ROWS[0], templates=["Paris? The capital of {subject} is", "{subject}'s capital is"]
    )
    data = load_dataset(write_jsonl(tmp_path / "d.jsonl", [ROWS[0], extra]))
    assert len(data.facts) == 1
    assert data.facts[0].templates == (
        "The capital of {subject} is",
        "{subject}'s capital is",
        "Paris? The capital of {subject} is",
    )


# ---------------------------------------------------------------------------------------------
# Errors: one line naming file, line and field


def _error(path: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _bad_jsonl(tmp_path: Path, **changes) -> Path:
    bad = dict(ROWS[0], **changes)
    bad = {k: v for k, v in bad.items() if v is not None}
    return write_jsonl(tmp_path / "data.jsonl", [ROWS[1], bad])


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"templates": ["Capital of X"]},
            """data.jsonl:2: field 'templates': template "Capital of X" has no {subject}""",
        ),
        (
            {"templates": ["{subject} and {subject}"]},
            """data.jsonl:2: field 'templates': template "{subject} and {subject}" """
            "has {subject} 2 times",
        ),
        (
            {"templates": ["The capital of {subject} is "]},
            """data.jsonl:2: field 'templates': template "The capital of {subject} is " """
            "ends with whitespace",
        ),
        ({"templates": []}, "data.jsonl:2: field 'templates': needs at least one template"),
        ({"templates": "The capital of {subject} is"}, None),  # a string is one template
        ({"object": None}, "data.jsonl:2: missing field 'object'"),
        ({"subject": 7}, "data.jsonl:2: field 'subject': expected a string, got a number"),
        ({"subject": "  "}, "data.jsonl:2: field 'subject': is empty"),
        ({"aliases": "Paris"}, None),  # "|"-separated strings are accepted everywhere
        ({"aliases": {"a": 1}}, "data.jsonl:2: field 'aliases': expected a list, got an object"),
        (
            {"aliases": ["Paname", 3]},
            "data.jsonl:2: field 'aliases': item 1 is a number, expected a string",
        ),
        (
            {"relation": "Country Capital"},
            "data.jsonl:2: field 'relation': 'Country Capital' must be lowercase letters, "
            "digits and _",
        ),
        (
            {"language": "English"},
            "data.jsonl:2: field 'language': 'English' is not a language code such as en or zh",
        ),
        (
            {"objct": "Paris"},
            "data.jsonl:2: unknown field 'objct' (known: relation, language, subject, object, "
            "aliases, templates, subject_id)",
        ),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, changes, expected):
    path = _bad_jsonl(tmp_path, **changes)
    if expected is None:
        load_dataset(path)
        return
    assert _error(path) == f"{tmp_path}/{expected}"


def test_invalid_json_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"relation": "x",\n', "utf-8")
    assert _error(path) == (
        f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes (column 18)"
    )
    path.write_text("[1, 2]\n", "utf-8")
    assert _error(path) == f"{path}:1: expected a JSON object, got a list"


def test_conflicting_duplicate(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [ROWS[0], ROWS[1], dict(ROWS[0], object="Lyon")])
    assert _error(path) == (
        f"{path}:3: field 'object': duplicate fact (country_capital, en, France) has object "
        "'Lyon' but line 1 has 'Paris'"
    )


def test_unknown_suffix_missing_file_and_empty(tmp_path):
    odd = tmp_path / "facts.txt"
    odd.write_text("x", "utf-8")
    assert _error(odd) == (
        f"{odd}: unknown dataset suffix '.txt' (expected one of .jsonl, .csv, .parquet, "
        "an LRE .json file or folder)"
    )
    assert _error(tmp_path / "nope.jsonl") == (
        f"{tmp_path}/nope.jsonl: no such dataset file or folder (or use 'builtin')"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", "utf-8")
    assert _error(empty) == f"{empty}: empty dataset (no facts)"
    header_only = tmp_path / "empty.csv"
    header_only.write_text("relation,language,subject,object,templates\n", "utf-8")
    assert _error(header_only) == f"{header_only}: empty dataset (no facts)"


def test_csv_errors_count_the_header_as_line_1(tmp_path):
    rows = [ROWS[0], dict(ROWS[2], templates=["Capital of X"])]
    path = write_csv(tmp_path / "data.csv", rows)
    assert _error(path) == (
        f"""{path}:3: field 'templates': template "Capital of X" has no {{subject}}"""
    )
    path.write_text("relation,language,subject,templates\nr,en,a,{subject} is\n", "utf-8")
    assert _error(path) == f"{path}:1: missing column 'object'"
    path.write_text('relation,language,subject,object,templates\nr,en,a,b,["{subject}"\n')
    assert _error(path) == (
        f"{path}:2: field 'templates': invalid JSON array: Expecting ',' delimiter (column 13)"
    )


def test_parquet_errors_name_the_row(tmp_path):
    rows = [ROWS[0], ROWS[1], dict(ROWS[2], subject_id="France", subject="France", object="Nice")]
    path = write_parquet(tmp_path / "data.parquet", rows)
    assert _error(path) == (
        f"{path}:3: field 'object': duplicate fact (country_capital, en, France) has object "
        "'Nice' but row 1 has 'Paris'"
    )
    pq.write_table(
        pa.table(
            {
                "relation": ["r"],
                "language": ["en"],
                "subject": [1],
                "object": ["b"],
                "templates": [["{subject} is"]],
            }
        ),
        path,
    )
    assert _error(path) == f"{path}:1: field 'subject': expected a string, got a number"


# ---------------------------------------------------------------------------------------------
# Splits and prompts


def _many_subjects(tmp_path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        for lang in ("en", "de"):
            rows.append(
                {
                    "relation": "r",
                    "language": lang,
                    "subject": f"s{i}-{lang}",
                    "subject_id": f"s{i}",
                    "object": f"o{i}",
                    "templates": ["A {subject} is", "B {subject} is"],
                }
            )
    return write_jsonl(tmp_path / "many.jsonl", rows)


@pytest.mark.parametrize("n, n_test", [(7, 2), (60, 24), (124, 49), (125, 50), (400, 50)])
def test_split_sizes(tmp_path, n, n_test):
    data = load_dataset(_many_subjects(tmp_path, n))
    splits = assign_splits(data)
    assert len(splits) == n
    assert Counter(splits.values()) == {"test": n_test, "identify": n - n_test}
    assert n_test == min(50, math.floor(0.4 * n))


def test_splits_are_by_subject_deterministic_and_seeded(tmp_path):
    data = load_dataset(_many_subjects(tmp_path, 100))
    assert assign_splits(data) == assign_splits(data)
    assert assign_splits(data, seed=1) != assign_splits(data)
    test = build_prompts(data, split="test")
    identify = build_prompts(data, split="identify")
    assert len(test) == 40 * 2 * 2 and len(identify) == 60 * 2 * 2
    assert not {p.subject_id for p in test} & {p.subject_id for p in identify}
    # Every language of a subject is in that subject's split.
    for p in build_prompts(data):
        assert p.split == assign_splits(data)[("r", p.subject_id)]
    # The rule, spelled out: the 40 lowest sha256 ranks are the test subjects.
    import hashlib

    ranked = sorted(
        (f"s{i}" for i in range(100)), key=lambda s: hashlib.sha256(f"0:r:{s}".encode()).hexdigest()
    )
    assert {p.subject_id for p in test} == set(ranked[:40])


def test_prompt_text_span_and_order(tmp_path):
    rows = [dict(ROWS[0], subject="{Fr}ance", subject_id="France"), ROWS[2], ROWS[1]]
    data = load_dataset(write_jsonl(tmp_path / "p.jsonl", rows))
    prompts = build_prompts(data)
    keys = [(p.relation, p.language, p.subject_id, p.template) for p in prompts]
    assert keys == sorted(keys)
    p = next(p for p in prompts if p.template == "{subject}'s capital is")
    assert p.text == "{Fr}ance's capital is"  # braces in user text survive (no str.format)
    assert (p.subject_start, p.subject_end) == (0, 8)
    for p in prompts:
        assert p.text[p.subject_start : p.subject_end] == p.subject
        assert p.text == p.template.replace("{subject}", p.subject)
    us = next(p for p in prompts if p.subject == "United States")
    assert us.text == "The capital of the United States is"
    assert (us.subject_start, us.subject_end) == (19, 32)
    assert us.aliases == ("Washington", "DC")


def test_prompt_ids_are_stable(tmp_path):
    assert prompt_id("country_capital", "en", "France", "The capital of {subject} is") == (
        4441177024159665328
    )
    data = load_dataset(write_jsonl(tmp_path / "p.jsonl", ROWS))
    first = {(p.subject_id, p.template): p.prompt_id for p in build_prompts(data)}
    again = {(p.subject_id, p.template): p.prompt_id for p in build_prompts(data, seed=5)}
    assert first == again  # the seed moves splits, never ids
    assert all(0 <= i < 2**63 for i in first.values())


def test_unknown_relation_language_and_split(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "p.jsonl", ROWS))
    with pytest.raises(
        DatasetError,
        match=r"^unknown relation 'capital' \(available: "
        r"country_capital, word_antonym\)$",
    ):
        build_prompts(data, relations=["capital"])
    with pytest.raises(DatasetError, match=r"^unknown language 'fr' \(available: de, en, zh\)$"):
        build_prompts(data, languages=["fr"])
    with pytest.raises(DatasetError, match=r"^unknown split 'train'"):
        build_prompts(data, split="train")
    assert {p.language for p in build_prompts(data, languages="zh")} == {"zh"}


def test_describe(tmp_path):
    data = load_dataset(_many_subjects(tmp_path, 10))
    info = describe(data)
    assert info["name"] == "many" and info["hash"] == data.hash
    assert info["relations"] == {
        "r": {
            lang: {"facts": 10, "identify": 6, "test": 4, "templates": 2, "prompts": 20}
            for lang in ("de", "en")
        }
    }


# ---------------------------------------------------------------------------------------------
# Scoring a continuation


# (continuation, object, aliases, the default rule `is_correct`, the paper's `is_paper_correct`)
SCORING = [
    # a continuation that runs past the whole answer, ending its word
    (" Paris.", "Paris", (), True, True),
    (" PARIS is", "Paris", (), True, True),
    (" Parisian", "Paris", (), False, True),  # runs on inside the word: another word
    # partial answers: at least 3 normalized characters
    (" Par", "Paris", (), True, True),
    (" Pa", "Paris", (), False, True),
    (" Osl", "Oslo", (), True, True),
    (" Os", "Oslo", (), False, True),
    (" Oslo", "Oslo", (), True, True),
    # years: a digit or two is no answer
    (" 1", "1879", (), False, True),
    (" 18", "1879", (), False, True),
    (" 187", "1879", (), True, True),
    (" 1879.", "1879", (), True, True),
    (" 1879s", "1879", (), False, True),
    (" 1789", "1879", (), False, False),
    # quotes plus a letter or two
    (' "T', "Tokyo", (), False, True),
    (" «Ja", "Japan", (), False, True),
    (' "Tok', "Tokyo", (), True, True),
    # whole short objects count, their prefixes and longer words do not
    (" H", "H", (), True, True),
    (" H.", "H", (), True, True),
    (" He", "H", (), False, True),
    (" Fe", "Fe", (), True, True),
    (" fe,", "Fe", (), True, True),
    (" F", "Fe", (), False, True),
    (" Fer", "Fe", (), False, True),
    # aliases, by the same rule
    (" USA", "United States", ("USA",), True, True),
    (" US", "the United States", ("USA",), False, True),
    (" U.S.A. and", "United States", ("USA",), True, True),
    (" Uni", "United States", ("USA",), True, True),
    (" Lyon", "Paris", ("Ville Lumière",), False, False),
    # multi-word objects: a part of the first word, the first word, more
    (" Buenos", "Buenos Aires", (), True, True),
    (" Bue", "Buenos Aires", (), True, True),
    (" Bu", "Buenos Aires", (), False, True),
    (" Buenos Aires,", "Buenos Aires", (), True, True),
    (" Buenos Dias", "Buenos Aires", (), False, False),
    (" Washington,", "Washington, D.C.", (), True, True),
    (" Li", "Li Wei", (), False, True),  # a whole first word, but under 3 characters
    (" Li Wei", "Li Wei", (), True, True),
    (" the United", "the United States", (), True, True),
    # zh/ja: no spaces, the object is one word; 3 characters or the whole object
    ("东京", "东京", (), True, True),
    ("东", "东京", (), False, True),
    ("東京", "東京都", (), False, True),
    ("東京都です", "東京都", (), True, True),
    ("星期", "星期一", (), False, True),
    ("星期一。", "星期一", (), True, True),
    ("巴\ufffd", "巴黎", (), False, True),  # a split UTF-8 character at the end is ignored
    ("バルセ", "バルセロナ", (), True, True),
    # nothing said, or nothing to match
    (" ", "Paris", (), False, False),
    ("", "Paris", (), False, False),
    (" Pa", "", (), False, False),
]


@pytest.mark.parametrize("continuation, obj, aliases, correct, paper", SCORING)
def test_is_correct(continuation, obj, aliases, correct, paper):
    assert is_correct(continuation, obj, aliases) is correct
    assert is_paper_correct(continuation, obj, aliases) is paper


def test_normalize_answer():
    assert normalize_answer(" Washington, D.C.\n") == "washingtondc"
    assert normalize_answer("「東京」。") == "東京"


# ---------------------------------------------------------------------------------------------
# The built-in dataset


@pytest.fixture(scope="module")
def builtin():
    return load_dataset()


def test_builtin_covers_relations_and_languages(builtin):
    assert builtin.name == "builtin"
    assert set(builtin.languages()) == LANGS
    info = describe(builtin)["relations"]
    assert len(info) >= 12
    for relation, cells in info.items():
        assert set(cells) == LANGS, relation
    big = [r for r, cells in info.items() if all(c["facts"] >= 60 for c in cells.values())]
    assert len(big) >= 10, big
    assert all(len(f.templates) >= 2 for f in builtin.facts)
    path = Path(__file__).parents[1] / "ingest" / "data" / "builtin.jsonl"
    assert path.stat().st_size < 3_000_000


def test_builtin_english_splits(builtin):
    # (identify, test) subjects per relation: every relation but the calendar ones has >= 40
    # test subjects and >= 60 identification subjects; 7 weekdays and 12 months cannot.
    info = describe(builtin)["relations"]
    got = {r: (cells["en"]["identify"], cells["en"]["test"]) for r, cells in info.items()}
    assert got == {
        "capital_country": (68, 44),
        "city_country": (72, 48),
        "company_country": (77, 50),
        "country_capital": (68, 44),
        "country_continent": (69, 45),
        "country_currency": (68, 44),
        "country_language": (69, 45),
        "element_symbol": (62, 41),
        "landmark_country": (68, 45),
        "month_next": (8, 4),
        "weekday_next": (5, 2),
        "word_antonym": (86, 50),
    }
    assert builtin.hash == (
        "sha256:012a5b454107711d5cbedc920ef08f89a2339985005676e01f514e6c3e82e60f"
    )
    assert len(builtin.facts) == 7091


def test_builtin_facts_share_subject_ids_across_languages(builtin):
    ids: dict[tuple[str, str], set[str]] = {}
    for f in builtin.facts:
        ids.setdefault((f.relation, f.language), set()).add(f.subject_id)
    for relation in builtin.relations():
        english = ids[(relation, "en")]
        for lang in LANGS:
            # One missing id is allowed: a word that merges two facts in one language.
            assert len(english ^ ids[(relation, lang)]) <= 1, (relation, lang)


def test_builtin_examples(builtin):
    by_key = {(f.relation, f.language, f.subject_id): f for f in builtin.facts}
    fr = by_key[("country_capital", "fr", "Japan")]
    assert (fr.subject, fr.object) == ("Japon", "Tokyo")
    assert fr.templates[0] == "La capitale du {subject} est"
    ja = by_key[("country_capital", "ja", "France")]
    assert (ja.subject, ja.object, ja.templates[0]) == ("フランス", "パリ", "{subject}の首都は")
    de = by_key[("capital_country", "de", "Bern")]
    assert (de.object, de.aliases[0]) == ("der Schweiz", "Schweiz")
    en = by_key[("capital_country", "en", "Washington, D.C.")]
    assert en.object == "the United States" and "USA" in en.aliases
    prompts = build_prompts(builtin, relations=["element_symbol"], languages=["zh"])
    iron = next(p for p in prompts if p.subject_id == "iron")
    assert (iron.text, iron.object) == ("铁的化学符号是", "Fe")


def make_builtin(*args: str) -> subprocess.CompletedProcess:
    """`python tools/make_builtin.py ARGS`, the generator that is not installed."""
    tool = Path(__file__).parents[1] / "tools" / "make_builtin.py"
    return subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)


def test_builtin_is_in_sync_with_its_generator():
    pytest.importorskip("babel")
    done = make_builtin("--check")
    shipped = Path(__file__).parents[1] / "ingest" / "data" / "builtin.jsonl"
    assert (done.returncode, done.stderr) == (0, "")
    n = len(shipped.read_text("utf-8").splitlines())
    assert done.stdout == f"{shipped}: the {n} facts the generator makes, byte for byte\n"


def test_the_generator_is_not_part_of_the_package():
    import importlib.util

    assert importlib.util.find_spec("warehouse.ingest.datasets") is not None
    assert importlib.util.find_spec("warehouse.ingest.make_builtin") is None


def test_the_generator_check_finds_a_changed_byte(tmp_path):
    pytest.importorskip("babel")
    shipped = Path(__file__).parents[1] / "ingest" / "data" / "builtin.jsonl"
    copy = tmp_path / "builtin.jsonl"
    changed = shipped.read_bytes().replace(b'"Paris"', b'"Lyon"', 1)
    copy.write_bytes(changed)
    done = make_builtin("--check", "--out", str(copy))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: {copy} is not what tools/make_builtin.py makes\n"
    assert copy.read_bytes() == changed


# ---------------------------------------------------------------------------------------------
# LRE importer


@pytest.mark.skipif(not LRE.is_dir(), reason="LRE data set not present")
def test_lre_folder_matches_the_json_files():
    data = load_dataset(LRE)
    files = sorted(LRE.rglob("*.json"))
    assert data.name == "lre"
    assert data.relations() == sorted(p.stem for p in files)
    assert data.languages() == ["en"]
    for path in files:
        raw = json.loads(path.read_text("utf-8"))
        facts = [f for f in data.facts if f.relation == path.stem]
        # Repeated subjects are one fact; their other objects become aliases.
        assert len(facts) == len({s["subject"].strip() for s in raw["samples"]}), path.stem
        n_objects = sum(1 + len(f.aliases) for f in facts)
        assert n_objects == len(
            {(s["subject"].strip(), s["object"].strip()) for s in raw["samples"]}
        ), path.stem
        templates = raw["prompt_templates"] + raw["prompt_templates_zs"]
        expected = list(dict.fromkeys(t.replace("{}", "{subject}") for t in templates))
        assert all(f.templates == tuple(expected) for f in facts), path.stem


@pytest.mark.skipif(not LRE.is_dir(), reason="LRE data set not present")
def test_lre_single_file_and_prompts():
    data = load_dataset(LRE / "factual" / "country_capital_city.json")
    assert data.name == "country_capital_city"
    assert len(data.facts) == 24
    brazil = next(f for f in data.facts if f.subject == "Brazil")
    assert brazil.object == "Brasília"  # the file's "Bras\\u00edlia" escape is decoded
    prompts = build_prompts(data)
    assert len(prompts) == 24 * 4
    assert Counter(p.split for p in prompts) == {"test": 9 * 4, "identify": 15 * 4}
    texts = {p.text for p in prompts if p.subject == "France"}
    assert texts == {
        "The capital city of France is",
        "The capital of France is",
        "The capital of France is the city of",
        "What is the capital of France? It is the city of",
    }


@pytest.mark.skipif(not LRE.is_dir(), reason="LRE data set not present")
def test_lre_paper_relations_have_more_than_300_facts():
    info = describe(load_dataset(LRE))["relations"]
    big = sorted(r for r, cells in info.items() if cells["en"]["facts"] > 300)
    assert len(big) == 12, big  # the 12 relations Liu et al. (2025) use
    assert info["person_mother"]["en"]["test"] == 50


def test_bad_lre_file(tmp_path):
    path = tmp_path / "rel.json"
    path.write_text(json.dumps({"prompt_templates": ["{} is a"], "samples": [{"subject": "a"}]}))
    assert _error(path) == f"{path}: sample 0: missing field 'object'"
    path.write_text(json.dumps({"prompt_templates": ["no slot"], "samples": []}))
    assert (
        _error(path) == f"""{path}: field 'prompt_templates': template "no slot" needs one {{}}"""
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(empty) == f"{empty}: folder holds no LRE .json relation files"
