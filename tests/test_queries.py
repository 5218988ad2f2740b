"""Queries: the views equal plain zarr/numpy, filters reach the Zarr reads, SQL errors are clear,
and the README example queries give the values plain numpy/duckdb give."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
import zarr.storage._local as zarr_local
from conftest import shard_chunks
from zarr.abc.store import RangeByteRequest

from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.queries import views
from warehouse.queries.views import Ints, Strs, chunk_blocks, constraints
from warehouse.query import run_query
from warehouse.store.derived import checksum_field
from warehouse.store.errors import FormatError, WarehouseError

TEMPLATES = {
    "country_capital": ["The capital city of {subject} is", "{subject}'s capital is"],
    "person_mother": ["The mother of {subject} is"],
    "city_country": ["{subject} is a city in"],
}
FACTS = [
    ("country_capital", "France", "Paris"),
    ("country_capital", "Japan", "Tokyo"),
    ("country_capital", "Germany", "Berlin"),
    ("country_capital", "Italy", "Rome"),
    ("person_mother", "Barack Obama", "Ann Dunham"),
    ("person_mother", "Queen Elizabeth II", "Elizabeth Bowes-Lyon"),
    ("person_mother", "Ada Lovelace", "Anne Isabella Milbanke"),
    ("city_country", "Lyon", "France"),
    ("city_country", "Osaka", "Japan"),
    ("city_country", "Munich", "Germany"),
]
UNITS = {"ffn.act": 48, "ffn.down": 32}
NEURON_CHUNK = 16  # so a layer of ffn.act spans 3 chunk columns and pushdown is visible
TOKEN_CHUNK = 8
PROMPT_CHUNK = 4


def _dataset(path: Path) -> Path:
    with open(path, "w") as f:
        for rel, s, o in FACTS:
            row = {"relation": rel, "language": "en", "subject": s, "object": o}
            f.write(json.dumps(row | {"templates": TEMPLATES[rel]}) + "\n")
    return path


def _ingest(out: Path, model: Path, data: Path, **kw) -> Path:
    # A narrower neuron chunk than the default 512 (the tiny model has 48 units), so that
    # "one neuron" and "all neurons" read different chunk sets.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("warehouse.store.arrays.NEURON_CHUNK", NEURON_CHUNK)
        cfg = dict(
            out=out,
            model=str(model),
            dataset=str(data),
            sites="ffn.act,ffn.down",
            batch_size=4,
            token_chunk=TOKEN_CHUNK,
            prompt_chunk=PROMPT_CHUNK,
        )
        ingest(IngestConfig(**(cfg | kw)), show_progress=False)
    return out


@pytest.fixture(scope="module")
def wpath(tmp_path_factory, tiny_llama_dir) -> Path:
    tmp = tmp_path_factory.mktemp("queries")
    return _ingest(tmp / "w", tiny_llama_dir, _dataset(tmp / "facts.jsonl"))


@pytest.fixture(scope="module")
def w(wpath) -> Warehouse:
    return Warehouse.open(wpath)


def _array(wpath: Path, key: str) -> np.ndarray:
    """An array's values as float32; a derived `max` or `last` response (not stored) from
    its per-token rows with numpy, as docs/format.md shows."""
    if (wpath / key).exists():
        return zarr.open_array(wpath / key, mode="r")[:].astype(np.float32)
    site, pool = key.split("/")[1:]
    x = _array(wpath, f"activations.zarr/{site}")
    p = pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row")
    start, n = p["token_offset"].to_numpy(), p["n_tokens"].to_numpy()
    return x[start + n - 1] if pool == "last" else np.maximum.reduceat(x, start, axis=0)


@functools.cache
def _reference(wpath: Path, view: str) -> pl.DataFrame:
    """The whole view, built with plain zarr + numpy (the tiny arrays fit in memory)."""
    prompts = pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row")
    frames = []
    for site, units in UNITS.items():
        keys = (
            [(f"activations.zarr/{site}", None)]
            if view == "activations"
            else [(f"responses.zarr/{site}/{p}", p) for p in ("mean", "max", "last")]
        )
        for key, pooling in keys:
            a = _array(wpath, key)  # (rows, layers, units)
            rows, layers, neurons = np.meshgrid(
                np.arange(a.shape[0]), np.arange(a.shape[1]), np.arange(units), indexing="ij"
            )
            cols = {
                "row": rows.ravel(),
                "site": site,
                "layer": layers.ravel().astype(np.int32),
                "neuron": neurons.ravel().astype(np.int32),
                "neuron_id": (layers * units + neurons).ravel(),
                "value": a.ravel(),
            }
            if pooling:
                cols["pooling"] = pooling
            frames.append(pl.DataFrame(cols))
    df = pl.concat(frames, how="diagonal")
    if view == "activations":
        return df.rename({"row": "token_row"}).select(*views.ACTIVATIONS_SCHEMA)
    ids = prompts["prompt_id"].to_numpy()
    df = df.rename({"row": "prompt_row"}).with_columns(
        prompt_id=pl.lit(pl.Series(ids)).gather("prompt_row")
    )
    return df.select(*views.RESPONSES_SCHEMA)


@pytest.fixture
def chunk_reads(monkeypatch) -> list[str]:
    """Every chunk zarr reads (through the LocalStore's one file-reading function), named
    as its own file would be, ".../c/<row>/<layer>/<neuron block>": a byte range of a shard
    file is the chunk the shard's index places there; reads of the index are not counted."""
    seen: list[str] = []
    real = zarr_local._get

    def counting(path, prototype, byte_range):
        if "/c/" in str(path):
            base, row = str(path).rsplit("/c/", 1)[0], str(path).rsplit("/c/", 1)[1]
            spans = shard_chunks(Path(path))
            if byte_range is None:
                hit = list(spans)
            elif isinstance(byte_range, RangeByteRequest):
                hit = [c for c, (o, _) in spans.items() if o == byte_range.start]
                assert len(hit) == 1, byte_range  # zarr reads one chunk per request
            else:
                hit = []  # the index
            seen.extend(f"{base}/c/{row.split('/')[0]}/{layer}/{k}" for layer, k in hit)
        return real(path, prototype, byte_range)

    monkeypatch.setattr(zarr_local, "_get", counting)
    # reads are counted in this process: queries run here, not in the worker process
    monkeypatch.setattr(Warehouse, "sql", functools.partialmethod(Warehouse.sql, isolate=False))
    return seen


def _layer_and_neuron_chunk(chunk_path: str) -> str:
    return "/".join(chunk_path.rsplit("/c/")[1].split("/")[1:])


def test_open_tables_manifest(w, wpath):
    assert w.tables() == ["activations", "prompts", "responses", "tokens"]
    assert w.manifest.to_json() == json.loads((wpath / "manifest.json").read_text())
    assert w.manifest.model.units == UNITS
    assert w.lazy("activations").collect_schema() == pl.Schema(views.ACTIVATIONS_SCHEMA)
    assert w.lazy("responses").collect_schema() == pl.Schema(views.RESPONSES_SCHEMA)
    with pytest.raises(WarehouseError, match="no such warehouse folder"):
        Warehouse.open(wpath / "nope")
    # remote URLs open read-only (tests/test_share.py); a missing one is named
    with pytest.raises(WarehouseError, match="not a warehouse or not reachable"):
        Warehouse.open("memory://nothing/here")
    with pytest.raises(WarehouseError, match="not a URL fsspec can open"):
        Warehouse.open("nosuchprotocol://bucket/w")


def test_one_neuron_equals_zarr_and_reads_one_chunk_column(w, wpath, chunk_reads):
    acts = zarr.open_array(wpath / "activations.zarr/ffn.act", mode="r")
    n_tokens, _, _ = acts.shape
    got = w.sql(
        "select token_row, value from activations where site = 'ffn.act' and layer = 1 "
        "and neuron = 20 order by token_row",
        isolate=False,  # reads counted in this process
    )
    reads = sorted(chunk_reads)
    np.testing.assert_array_equal(got["token_row"].to_numpy(), np.arange(n_tokens))
    np.testing.assert_array_equal(got["value"].to_numpy(), acts[:, 1, 20].astype(np.float32))
    # Exactly one column of chunks: every row chunk of layer 1, neuron chunk 20 // 16 = 1.
    n_row_chunks = -(-n_tokens // TOKEN_CHUNK)
    assert n_row_chunks > 3
    want = {str(wpath / f"activations.zarr/ffn.act/c/{i}/1/1") for i in range(n_row_chunks)}
    assert reads == sorted(want)


def test_pushdown_by_neuron_id_prompt_and_rows(w, wpath, chunk_reads):
    # neuron_id 60 = layer 1 * 48 + neuron 12 of ffn.act, and
    # neuron 28 of layer 1 of ffn.down (1 * 32 + 28): two arrays, one chunk column each.
    got = w.sql(
        "select site, layer, neuron, token_row, value from activations where neuron_id = 60",
        isolate=False,  # reads counted in this process
    )
    reads = list(chunk_reads)
    act = _array(wpath, "activations.zarr/ffn.act")
    down = _array(wpath, "activations.zarr/ffn.down")
    by_site = {s: g.sort("token_row") for (s,), g in got.group_by("site")}
    np.testing.assert_array_equal(by_site["ffn.act"]["value"].to_numpy(), act[:, 1, 12])
    np.testing.assert_array_equal(by_site["ffn.down"]["value"].to_numpy(), down[:, 1, 28])
    assert set(by_site["ffn.down"]["layer"]) == {1} and set(by_site["ffn.down"]["neuron"]) == {28}
    cols = {p.split(".zarr/")[1].split("/c/")[0] + ":" + _layer_and_neuron_chunk(p) for p in reads}
    assert cols == {"ffn.act:1/0", "ffn.down:1/1"}

    # one prompt by its id: its responses read one row chunk per array and layer
    chunk_reads.clear()
    p = (
        pl.read_parquet(wpath / "prompts.parquet")
        .filter(pl.col("subject") == "Lyon")
        .row(0, named=True)
    )
    where = f"prompt_id = {p['prompt_id']} and site = 'ffn.act' order by layer, neuron"
    q = "select layer, neuron, value from responses where pooling = '{}' and " + where
    got = w.sql(q.format("mean"), isolate=False)
    reads = list(chunk_reads)
    mean = _array(wpath, "responses.zarr/ffn.act/mean")
    np.testing.assert_array_equal(got["value"].to_numpy(), mean[p["prompt_row"]].ravel())
    row_chunk = p["prompt_row"] // PROMPT_CHUNK
    assert {c.rsplit("/c/")[1] for c in reads} == {
        f"{row_chunk}/{layer}/{k}" for layer in (0, 1) for k in (0, 1, 2)
    }
    assert all("responses.zarr/ffn.act/mean/" in c for c in reads)
    # its derived max: the row chunks of its token rows of the per-token array
    chunk_reads.clear()
    got = w.sql(q.format("max"), isolate=False)
    reads = list(chunk_reads)
    mx = _array(wpath, "responses.zarr/ffn.act/max")
    np.testing.assert_array_equal(got["value"].to_numpy(), mx[p["prompt_row"]].ravel())
    first, last = p["token_offset"], p["token_offset"] + p["n_tokens"] - 1
    assert {c.rsplit("/c/")[1] for c in reads} == {
        f"{r}/{layer}/{k}"
        for r in range(first // TOKEN_CHUNK, last // TOKEN_CHUNK + 1)
        for layer in (0, 1)
        for k in (0, 1, 2)
    }
    assert all("activations.zarr/ffn.act/" in c for c in reads)

    # a token range reads only the row chunks it overlaps
    chunk_reads.clear()
    q = "select value from activations where token_row between 9 and 17 and neuron = 3"
    got = w.sql(q, isolate=False)
    assert got.height == 9 * 2 * 2  # tokens x layers x sites
    assert {c.rsplit("/c/")[1].split("/")[0] for c in chunk_reads} == {"1", "2"}


WHERES = [
    "layer = 0",
    "neuron in (0, 15, 16, 47) and site = 'ffn.act'",
    "neuron_id between 40 and 70",
    "neuron_id > 90 or neuron < 2",
    "(layer = 1 and neuron = 5) or (layer = 0 and neuron = 30)",
    "token_row >= 20 and token_row < 23.5 and neuron <= 3",
    "2 > neuron and 30 <= token_row",
    "not (neuron > 1) and layer <> 1",
    "neuron + 1 = 8",
    "neuron = 4.5",
    "site in ('ffn.down', 'nope') and neuron_id = 63",
    "value > 0.001 and neuron between 10 and 12",
    "cast(neuron as varchar) = '7' and layer = 1",
    "token_row in (1, 2, 3, 40, 41) and neuron_id in (0, 47, 48, 95)",
    "layer = 7",
]


@pytest.mark.parametrize("where", WHERES)
def test_activations_filters_equal_full_scan(w, wpath, where):
    """Pushdown never changes a result: every filter equals it run on the full reference."""
    ref = _reference(wpath, "activations")
    q = f"select * from activations where {where}"
    got = w.sql(q).sort("site", "layer", "neuron", "token_row")
    want = pl.SQLContext(activations=ref).execute(q).collect()
    assert got.height > 0 or where in ("neuron = 4.5", "layer = 7")
    assert got.equals(want.sort("site", "layer", "neuron", "token_row"))


@pytest.mark.parametrize(
    "where",
    [
        "pooling = 'mean' and neuron_id = 50",
        "prompt_row in (0, 5, 9) and layer = 1",
        "prompt_id > 0 and pooling in ('last', 'max') and neuron < 3",
        "prompt_row between 3 and 6 and site = 'ffn.down' and neuron_id >= 60",
    ],
)
def test_responses_filters_equal_full_scan(w, wpath, where):
    ref = _reference(wpath, "responses")
    q = f"select * from responses where {where}"
    keys = ("site", "pooling", "layer", "neuron", "prompt_row")
    got = w.sql(q).sort(keys)
    want = pl.SQLContext(responses=ref).execute(q).collect().sort(keys)
    assert got.height > 0
    assert got.equals(want)


def test_full_scan_streams_bounded_blocks(w, wpath, monkeypatch):
    monkeypatch.setattr(views, "BLOCK_VALUES", 100)
    view = w._zarr["activations"]
    blocks = list(view.scan(None, None, None, None))
    chunk_values = TOKEN_CHUNK * NEURON_CHUNK
    assert max(b.height for b in blocks) == chunk_values  # one chunk: the smallest read unit
    ref = _reference(wpath, "activations")
    keys = ["site", "layer", "neuron", "token_row"]
    assert pl.concat(blocks).sort(keys).equals(ref.sort(keys))
    assert sum(b.height for b in view.scan(["value"], None, 13, None)) == 13


def test_queries_without_value_read_no_chunk(w, wpath, chunk_reads):
    got = w.sql("select layer, count(*) as n from activations where neuron < 10 group by layer")
    n_tokens = pl.read_parquet(wpath / "tokens.parquet").height
    assert sorted(got.rows()) == [(0, n_tokens * 20), (1, n_tokens * 20)]  # 10 x 2 sites
    assert chunk_reads == []


def test_limit_and_lazy(w):
    assert w.sql("select * from activations limit 5").height == 5
    lf = w.lazy("activations").filter(pl.col("neuron_id") == 3).select("token_row", "value")
    assert lf.head(4).collect(engine="streaming").height == 4
    assert "zarr activations" in w.sql_lazy("select * from activations where layer = 0").explain()


def test_constraints_parser():
    c = pl.col
    assert constraints((c("layer") == 3) & c("neuron").is_in([5, 1])) == {
        "layer": Ints(3, 3, (3,)),
        "neuron": Ints(1, 5, (1, 5)),
    }
    assert constraints(c("neuron_id").is_between(10, 20, closed="left")) == {
        "neuron_id": Ints(10, 19)
    }
    assert constraints((c("neuron") < 7.5) | (c("neuron") >= 100)) == {"neuron": Ints()}
    assert constraints((c("layer") == 1) | (c("layer") == 4) | (c("neuron") == 2)) == {}
    assert constraints((c("site") == "ffn.act") | c("site").is_in(["ffn.up"])) == {
        "site": Strs(frozenset({"ffn.act", "ffn.up"}))
    }
    assert constraints(~(c("layer") == 1)) == {}
    assert constraints(c("value") > 1) == {}
    assert constraints(c("layer").cast(pl.Int8) == 1) == {}  # a wrapping cast proves nothing


def test_chunk_blocks():
    runs = np.array([[0, 3], [5, 9], [20, 21]])
    assert [b.tolist() for b in chunk_blocks(runs, 4, 1, 100)] == [[[0, 3], [5, 9], [20, 21]]]
    # 3 + 1 values in chunk 0 and 1, 3 in chunk 1's remainder: whole chunks, none split
    assert [b.tolist() for b in chunk_blocks(runs, 4, 1, 4)] == [[[0, 3]], [[5, 9]], [[20, 21]]]
    assert chunk_blocks(np.zeros((0, 2), np.int64), 4, 1, 4) == []


def test_sql_errors(w, wpath):
    with pytest.raises(WarehouseError, match=r"^SQL error: .*selec.*\(tables: activations, "):
        w.sql("selec 1")
    with pytest.raises(WarehouseError, match=r"unknown table 'nope'; tables: activations, prompts"):
        w.sql("select * from nope")
    with pytest.raises(WarehouseError, match=r"'stats' does not exist yet .*`warehouse stats`"):
        w.sql("select * from stats")
    with pytest.raises(WarehouseError, match="`warehouse select`"):
        w.lazy("selections")
    with pytest.raises(WarehouseError, match="`warehouse eval`"):
        w.sql("select count(*) from evals", engine="duckdb")
    # DuckDB reads the Zarr views too (through the same Polars frames)
    q = "select site, count(*) as n, sum(value) as s from activations group by site order by site"
    a, b = w.sql(q), w.sql(q, engine="duckdb")
    assert (
        a["n"].to_list() == b["n"].to_list()
        and a["n"].sum() == w.sql_lazy("select * from activations").collect().height
    )
    np.testing.assert_allclose(a["s"].to_numpy(), b["s"].to_numpy(), rtol=1e-5)
    with pytest.raises(WarehouseError, match=r'^SQL error: unable to find column "nope"'):
        w.sql("select nope from prompts")
    for q in ("selec 1", "select nope from prompts"):
        with pytest.raises(WarehouseError) as e:
            w.sql(q)
        assert "\n" not in str(e.value)


def test_damaged_chunk_is_a_format_error(wpath, tmp_path):
    import shutil

    wdir = tmp_path / "w"
    shutil.copytree(wpath, wdir)
    chunk = wdir / "activations.zarr/ffn.act/c/2/0/0"
    offset, length = shard_chunks(chunk)[(1, 0)]  # layer 1, first neuron block
    data = bytearray(chunk.read_bytes())
    data[offset + length // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    w = Warehouse.open(wdir)
    assert w.sql("select count(*) as n from activations where layer = 0")["n"].item() > 0
    msg = r"ffn.act: a chunk of rows 0\.\.\d+, layer index 1, neurons 3\.\.3 could not be read"
    with pytest.raises(FormatError, match=msg):
        w.sql("select value from activations where layer = 1 and neuron = 3")
    with pytest.raises(FormatError, match="run `warehouse verify"):
        w.sql("select value from activations where layer = 1 and neuron = 3")


def test_pooled_warehouse_has_no_activations(tmp_path, tiny_llama_dir):

    # What `--capture pooled` writes: the same warehouse without per-token arrays.
    wdir = _ingest(
        tmp_path / "pooled", tiny_llama_dir, _dataset(tmp_path / "facts.jsonl"), capture="pooled"
    )
    w = Warehouse.open(wdir)
    assert w.tables() == ["prompts", "responses", "tokens"]
    with pytest.raises(WarehouseError, match="ingested with --capture pooled"):
        w.sql("select * from activations")
    assert w.sql("select count(*) as n from responses")["n"].item() == 14 * 2 * 3 * (
        48 + 32
    )  # prompts x layers x poolings x units


def test_duckdb_engine_equals_polars(w):
    q = (
        "select relation, count(*) as n, sum(n_tokens) as tokens from prompts "
        "group by relation order by relation"
    )
    a, b = w.sql(q), w.sql(q, engine="duckdb")
    assert a["relation"].to_list() == b["relation"].to_list() == sorted(TEMPLATES)
    assert a["n"].to_list() == b["n"].to_list() == [3, 8, 3]  # facts x templates
    assert a["tokens"].to_list() == b["tokens"].to_list()


# --- the README examples (docs/queries.md) ----------------------------------------------------

TOP_TOKENS = """
select a.token_row, t.token, p.text, a.value
from activations a
join tokens t on t.token_row = a.token_row
join prompts p on p.prompt_id = t.prompt_id
where a.site = 'ffn.act' and a.layer = 1 and a.neuron = 20
order by a.value desc
limit 5
"""

MEAN_PER_RELATION = """
select p.relation, avg(r.value) as mean_response, count(*) as prompts
from responses r
join prompts p on p.prompt_row = r.prompt_row
where r.site = 'ffn.act' and r.pooling = 'mean' and r.layer = 1 and r.neuron = 20
group by p.relation
order by mean_response desc
"""

SHARED = """
with top as (
    select relation, neuron_id, layer, neuron, rank from stats
    where site = 'ffn.act' and pooling = 'mean' and language = 'en' and rank <= 10
)
select a.neuron_id, a.layer, a.neuron, a.rank as rank_mother, b.rank as rank_father
from top a join top b on a.neuron_id = b.neuron_id
where a.relation = 'person_mother' and b.relation = 'person_father'
order by a.neuron_id
"""


def test_example_top_tokens(w, wpath):
    got = w.sql(TOP_TOKENS)
    values = _array(wpath, "activations.zarr/ffn.act")[:, 1, 20]
    top = np.argsort(-values, kind="stable")[:5]
    np.testing.assert_array_equal(got["value"].to_numpy(), values[top])
    assert set(got["token_row"]) == set(top.tolist())  # ties are unlikely in random floats
    con = duckdb.connect()
    texts = dict(
        con.execute(
            f"select t.token_row, t.token from '{wpath}/tokens.parquet' t "
            f"where t.token_row in ({','.join(map(str, top))})"
        ).fetchall()
    )
    assert dict(zip(got["token_row"], got["token"], strict=True)) == texts


def test_example_mean_per_relation(w, wpath):
    got = w.sql(MEAN_PER_RELATION)
    mean = _array(wpath, "responses.zarr/ffn.act/mean")[:, 1, 20]
    rel = pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row")["relation"].to_numpy()
    want = {r: mean[rel == r].mean() for r in TEMPLATES}
    assert got["relation"].to_list() == sorted(want, key=want.get, reverse=True)
    np.testing.assert_allclose(got["mean_response"].to_numpy(), sorted(want.values())[::-1])
    assert got["prompts"].to_list() == [int((rel == r).sum()) for r in got["relation"]]


def test_example_shared_neurons(wpath, tmp_path):
    import shutil

    wdir = tmp_path / "w"
    shutil.copytree(wpath, wdir)
    rng = np.random.default_rng(0)
    units, n_layers = UNITS["ffn.act"], 2
    tops = {}
    for part, relations in enumerate((["person_mother"], ["person_father", "city_country"])):
        rows = []
        for rel in relations:
            ap = rng.random(units * n_layers)
            order = np.argsort(-ap)
            rank = np.empty_like(order)
            rank[order] = np.arange(1, len(ap) + 1)
            tops[rel] = set(np.flatnonzero(rank <= 10).tolist())
            for pooling in ("mean", "max"):
                rows.append(
                    pa.table(
                        {
                            "relation": [rel] * len(ap),
                            "language": ["en"] * len(ap),
                            "site": ["ffn.act"] * len(ap),
                            "pooling": [pooling] * len(ap),
                            "layer": (np.arange(len(ap)) // units).astype(np.int32),
                            "neuron": (np.arange(len(ap)) % units).astype(np.int32),
                            "neuron_id": np.arange(len(ap), dtype=np.int64),
                            "ap": ap if pooling == "mean" else rng.random(len(ap)),
                            "auroc": rng.random(len(ap)),
                            "rank": rank.astype(np.int64),
                        }
                    )
                )
        (wdir / "stats").mkdir(exist_ok=True)
        table = wdir / "stats" / f"part-{part}.parquet"
        pq.write_table(pa.concat_tables(rows), table)
        # a derived table is read only beside its sidecar, which holds its crc32c
        table.with_suffix(".json").write_text(json.dumps(checksum_field(table)))
    w = Warehouse.open(wdir)
    assert "stats" in w.tables()
    got = w.sql(SHARED)
    shared = sorted(tops["person_mother"] & tops["person_father"])
    assert 0 < len(shared) < 10  # 10 of 96 each: some overlap with this seed, not all
    assert got["neuron_id"].to_list() == shared
    assert got["layer"].to_list() == [i // units for i in shared]
    assert got["neuron"].to_list() == [i % units for i in shared]
    assert (got["rank_mother"] <= 10).all() and (got["rank_father"] <= 10).all()
    assert w.sql(SHARED, engine="duckdb").equals(got, null_equal=True)


# --- run_query (the `warehouse query` command) ---------------------------------------------


def test_run_query_formats(wpath, tmp_path):
    q = "select prompt_row, relation, subject from prompts order by prompt_row limit 3"
    want = pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row").head(3)
    want = want.select("prompt_row", "relation", "subject")
    table = run_query(wpath, q)
    assert "shape: (3, 3)" in table and want["subject"][0] in table
    csv = run_query(wpath, q, "csv")
    assert csv.splitlines()[0] == "prompt_row,relation,subject"
    assert pl.read_csv(csv.encode()).equals(want)
    assert json.loads(run_query(wpath, q, "json")) == want.to_dicts()
    out = tmp_path / "r.parquet"
    assert run_query(wpath, q, "parquet", out) is None
    assert pl.read_parquet(out).equals(want)
    with pytest.raises(WarehouseError, match="already exists"):
        run_query(wpath, q, "csv", out)
    with pytest.raises(WarehouseError, match="give a file with --output"):
        run_query(wpath, q, "parquet")
    with pytest.raises(WarehouseError, match="unknown format 'xml'"):
        run_query(wpath, q, "xml")
    assert run_query(wpath, q, "csv", tmp_path / "r.csv") is None
    assert (tmp_path / "r.csv").read_text() == csv


def test_bfloat16_values_widen_exactly(tmp_path, tiny_llama_dir):
    wb = _ingest(
        tmp_path / "wb",
        tiny_llama_dir,
        _dataset(tmp_path / "facts.jsonl"),
        sites="ffn.act",
        dtype="bfloat16",
        pooling=["mean"],
    )
    raw = zarr.open_array(wb / "activations.zarr/ffn.act", mode="r")[:, 0, 7]
    assert raw.dtype == np.uint16
    got = Warehouse.open(wb).sql(
        "select value from activations where neuron_id = 7 order by token_row"
    )
    np.testing.assert_array_equal(
        got["value"].to_numpy(), (raw.astype(np.uint32) << 16).view(np.float32)
    )


def test_count_over_a_self_join_keeps_every_row(w, wpath):
    """A `count(*)` needs no column of one side: the scan still yields its rows (a frame
    with no columns once lost them, so the join counted 0)."""
    n = w.sql("select count(*) as n from activations")["n"].item()
    small = "(select * from activations where layer = 0 and neuron < 3)"
    k = w.sql(f"select count(*) as n from {small}")["n"].item()
    q = f"select count(*) as n from {small} a cross join activations b"
    assert w.sql(q)["n"].item() == w.sql(q, engine="duckdb")["n"].item() == k * n


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_csv_writes_list_columns_as_json(wpath, tmp_path, engine):
    q = "select prompt_row, aliases from prompts order by prompt_row limit 3"
    want = pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row").head(3)
    text = run_query(wpath, q, "csv", engine=engine)
    got = pl.read_csv(text.encode())
    assert got["prompt_row"].to_list() == want["prompt_row"].to_list()
    assert [json.loads(v) for v in got["aliases"]] == want["aliases"].to_list()
    out = tmp_path / "a.csv"
    assert run_query(wpath, q, "csv", out, engine=engine) is None
    assert out.read_text() == text
    out = tmp_path / "a.parquet"
    run_query(wpath, "select * from prompts", "parquet", out, engine=engine)
    assert (
        pl.read_parquet(out)
        .sort("prompt_row")
        .equals(pl.read_parquet(wpath / "prompts.parquet").sort("prompt_row"))
    )


def test_limit_options_parse(wpath, capsys):
    from conftest import run_cli

    from warehouse.queries.limits import QueryLimits, parse_seconds, parse_size

    assert QueryLimits.parse() == QueryLimits(4 * 10**9, 300.0)
    assert parse_size("512MiB") == 512 * 2**20 and parse_size("1000") == 1000
    assert parse_seconds("250ms") == 0.25 and parse_seconds("5m") == 300.0
    for bad in ("lots", "0GB", "4XB", "-1GB"):
        with pytest.raises(WarehouseError, match="--memory-limit"):
            parse_size(bad)
    for bad in ("soon", "0s", "3 days"):
        with pytest.raises(WarehouseError, match="--timeout"):
            parse_seconds(bad)
    code, out, err = run_cli(capsys, "query", str(wpath), "select 1", "--memory-limit", "lots")
    assert (code, out) == (2, "") and err.startswith("error: --memory-limit 'lots'")
    code, out, _ = run_cli(
        capsys,
        "query",
        str(wpath),
        "select count(*) as n from prompts",
        "--format",
        "csv",
        "--memory-limit",
        "1GB",
        "--timeout",
        "30s",
        "--engine",
        "duckdb",
    )
    assert (code, out) == (0, "n\n14\n")


def test_a_table_query_imports_no_model_or_array_library(wpath):
    """The query path's fixed cost: a query of the Parquet tables (in a fresh process, as
    `warehouse query` runs it) imports neither torch, transformers nor zarr, nor pandas
    (pyarrow's `read_table`, `to_numpy` and `Schema.empty_table` would)."""
    import subprocess
    import sys

    code = (
        "import sys; from warehouse.api import Warehouse; "
        f"w = Warehouse.open({str(wpath)!r}); "
        "assert w.sql('select count(*) as n from prompts', isolate=False)['n'].item() > 0; "
        "heavy = ('torch', 'transformers', 'zarr', 'pandas', 'xarray', 'duckdb'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
