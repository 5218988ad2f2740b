"""The SQL examples of README.md and every docs/*.md, read from the Markdown itself, each
return rows on a tiny study warehouse built like the demo's (English, pooled, with stats,
selections and evals: what `warehouse demo` leaves, selections named `study-<relation>`) or,
for the per-token views, on a `--capture tokens` ingest of the same facts. The examples name
only what the demo warehouse holds too: its relations, English, layer numbers below 2."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pytest
from test_study import TEMPLATES, config, write_facts

from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.study import run_study

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
PER_TOKEN = re.compile(r"\b(activations|tokens)\b")


def sql_blocks(text: str) -> list[str]:
    """The statements of the ```sql fences (indented ones in lists too), split at a `;` that
    ends a line."""
    out = []
    for m in re.finditer(r"^([ \t]*)```sql\n(.*?)^\1```", text, re.M | re.S):
        body = textwrap.dedent(m.group(2))
        out += [s.strip() for s in re.split(r";[ \t]*$", body, flags=re.M) if _has_code(s)]
    return out


def _has_code(sql: str) -> bool:
    return any(ln.strip() and not ln.strip().startswith("--") for ln in sql.splitlines())


def query_commands(text: str) -> list[str]:
    """The SQL of each `warehouse query W "..."` line in the other fences."""
    out = []
    for block in re.finditer(r"^```([a-z]*)\n(.*?)^```", text, re.M | re.S):
        if block.group(1) == "sql":  # its statements are sql_blocks'
            continue
        joined = block.group(2).replace("\\\n", " ")
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
    english = {key: t for key, t in TEMPLATES.items() if key[1] == "en"}  # as the demo
    facts = write_facts(strong_llama_dir, english, tmp / "facts.jsonl")
    run_study(config(tmp / "study", strong_llama_dir, facts))
    cfg = IngestConfig(out=tmp / "tokens", model=str(strong_llama_dir), dataset=str(facts))
    ingest(cfg, show_progress=False)
    return {"pooled": tmp / "study", "tokens": tmp / "tokens"}


def duckdb_queries(text: str) -> list[str]:
    """The SQL of each plain `duckdb.sql("...")` call, which reads the files by path."""
    return re.findall(r'\bduckdb\.sql\("([^"]+)"', text)


def test_the_docs_have_examples():
    found = examples()
    with_sql = {"README.md", "docs/queries.md", "docs/statistics.md", "docs/eval.md"}
    assert with_sql | {"docs/sharing.md"} <= {doc for doc, _ in found}
    assert len(found) >= 25


def test_the_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert [d for d in DOCS[1:] if f"]({d})" not in readme] == []


def test_fences_are_split_into_statements():
    text = "a\n  ```sql\n  -- one\n  select 1;\n\n  -- two\n  select 2\n  ```\n"
    assert sql_blocks(text) == ["-- one\nselect 1", "-- two\nselect 2"]


@pytest.mark.parametrize(("doc", "sql"), examples(), ids=lambda x: x[:40])
def test_each_example_returns_rows(warehouses, doc, sql):
    kind = "tokens" if PER_TOKEN.search(sql) else "pooled"
    w = Warehouse.open(warehouses[kind])
    assert w.sql(sql).height > 0, (doc, sql)


# A `warehouse demo` output (pooled, English): set, the pooled examples run on it as well.
DEMO = os.environ.get("WAREHOUSE_DEMO")


@pytest.mark.skipif(not DEMO, reason="WAREHOUSE_DEMO names no demo warehouse")
@pytest.mark.parametrize(
    ("doc", "sql"), [e for e in examples() if not PER_TOKEN.search(e[1])], ids=lambda x: x[:40]
)
def test_each_pooled_example_returns_rows_on_the_demo(doc, sql):
    assert Warehouse.open(DEMO).sql(sql).height > 0, (doc, sql)


def test_plain_duckdb_examples_return_rows(warehouses):
    queries = duckdb_queries((ROOT / "docs/queries.md").read_text())
    assert len(queries) == 1
    for sql in queries:
        path = str(warehouses["pooled"])
        assert len(duckdb.sql(sql.replace("demo-warehouse", path)).fetchall()) > 0, sql


def test_the_derived_pooling_recipe_runs(warehouses, tmp_path):
    """docs/format.md's numpy recipe for the derived `last` and `max` gives what the
    warehouse reads (`last` bit for bit, `max` as numbers)."""
    fences = re.findall(
        r"^```python\n(.*?)^```", (ROOT / "docs/format.md").read_text(), re.M | re.S
    )
    [recipe] = [f for f in fences if "np.maximum.reduceat" in f]
    path = warehouses["tokens"]
    assert 'W, site = "W", ' in recipe
    # Run as a user would, in its own interpreter, saving what it computed.
    script = tmp_path / "recipe.py"
    script.write_text(
        recipe.replace('W, site = "W", ', f"W, site = {str(path)!r}, ")
        + f"np.save({str(tmp_path / 'last.npy')!r}, last)\n"
        + f"np.save({str(tmp_path / 'max.npy')!r}, max_)\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    scope = {k: np.load(tmp_path / f"{f}.npy") for k, f in (("last", "last"), ("max_", "max"))}
    w = Warehouse.open(path)
    layer = w.manifest.capture.layers[0]
    assert "max" in w.manifest.capture.derived_pooling
    last = w.array("ffn.act", pooling="last", layer=layer).values
    assert scope["last"].shape == last.shape and scope["last"].tobytes() == last.tobytes()
    assert np.array_equal(scope["max_"], w.array("ffn.act", pooling="max", layer=layer).values)
