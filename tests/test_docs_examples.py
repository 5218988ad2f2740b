"""The SQL examples of README.md and docs/queries.md, read from the Markdown itself, each
return rows on a tiny study warehouse (pooled, with stats, selections and evals: what
`warehouse demo` leaves) or, for the per-token views, on a `--capture tokens` ingest of the
same facts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import duckdb
import pytest
from test_study import TEMPLATES, config, write_facts

from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.study import run_study

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/queries.md")
PER_TOKEN = re.compile(r"\b(activations|tokens)\b")


def sql_blocks(text: str) -> list[str]:
    """The bodies of the ```sql fences."""
    return [m.group(1).strip() for m in re.finditer(r"^```sql\n(.*?)^```", text, re.M | re.S)]


def query_commands(text: str) -> list[str]:
    """The SQL of each `warehouse query W "..."` line in the other fences."""
    out = []
    for block in re.finditer(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        joined = block.group(1).replace("\\\n", " ")
        for line in joined.splitlines():
            if line.lstrip().startswith("warehouse query "):
                out.append(shlex.split(line, comments=True)[3])
    return out


def python_queries(text: str) -> list[str]:
    """The SQL of each `w.sql("...")` call (a `Warehouse`) in the ```python fences."""
    out = []
    for block in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        out += re.findall(r'\bw\.sql\("([^"]+)"', block.group(1))
    return out


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        queries = sql_blocks(text) + query_commands(text) + python_queries(text)
        found += [(doc, q) for q in queries]
    return found


@pytest.fixture(scope="module")
def warehouses(strong_llama_dir, module_cache, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("docs")
    facts = write_facts(strong_llama_dir, TEMPLATES, tmp / "facts.jsonl")
    run_study(config(tmp / "study", strong_llama_dir, facts))
    cfg = IngestConfig(out=tmp / "tokens", model=str(strong_llama_dir), dataset=str(facts))
    ingest(cfg, show_progress=False)
    return {"pooled": tmp / "study", "tokens": tmp / "tokens"}


def duckdb_queries(text: str) -> list[str]:
    """The SQL of each plain `duckdb.sql("...")` call, which reads the files by path."""
    return re.findall(r'\bduckdb\.sql\("([^"]+)"', text)


def test_the_docs_have_examples():
    found = examples()
    assert {doc for doc, _ in found} == set(DOCS)
    assert len(found) >= 8


@pytest.mark.parametrize(("doc", "sql"), examples(), ids=lambda x: x[:40])
def test_each_example_returns_rows(warehouses, doc, sql):
    kind = "tokens" if PER_TOKEN.search(sql) else "pooled"
    w = Warehouse.open(warehouses[kind])
    assert w.sql(sql).height > 0, (doc, sql)


def test_plain_duckdb_examples_return_rows(warehouses):
    queries = duckdb_queries((ROOT / "docs/queries.md").read_text())
    assert len(queries) == 1
    for sql in queries:
        path = str(warehouses["pooled"])
        assert len(duckdb.sql(sql.replace("demo-warehouse", path)).fetchall()) > 0, sql
