"""Selections and overlap: top-K / fraction / SQL targets, seeded disjoint controls, and the
overlap tables, checked against plain sets computed from the stats file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from test_stats import DUPLICATES, TIED, make_warehouse, write_ties

from warehouse.analysis.overlap import layer_distribution, overlap, overlap_by_layer
from warehouse.analysis.selections import list_selections, random_like, read_selection, select
from warehouse.analysis.stats import run_stats, stats_path
from warehouse.store.errors import WarehouseError

UNITS = 48  # ffn.act units of the tiny Llama; 2 layers
# One English template of each relation (test_stats.write_dataset gives each two).
RELATION_TEMPLATES = [
    "The CEO of {subject} is",
    "So, The capital of {subject} is",
    "The mother of {subject} is",
]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_llama_dir) -> Path:
    root = make_warehouse(tmp_path_factory.mktemp("sel") / "W", tiny_llama_dir)
    run_stats(root, "ffn.act", show_progress=False)
    return root


@pytest.fixture
def w(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "W"
    shutil.copytree(base, out)
    return out


def stats(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "stats" / "ffn.act__mean__all.parquet")


def test_top_k_is_the_best_ranks_and_records_its_sql(w: Path):
    path = select(w, "cc_en", "country_capital", "en", top=10)
    assert path == w / "selections" / "cc_en.parquet"
    got = pl.read_parquet(path)
    want = (
        stats(w)
        .filter(pl.col("relation") == "country_capital", pl.col("language") == "en")
        .sort("rank")
        .head(10)
    )
    assert got["neuron_id"].to_list() == want["neuron_id"].to_list()
    assert got["score"].to_list() == want["ap"].to_list()
    assert got["rank"].to_list() == list(range(1, 11))
    assert (got["layer"] * UNITS + got["neuron"] == got["neuron_id"]).all()
    assert set(got["site"]) == {"ffn.act"} and set(got["selection"]) == {"cc_en"}
    meta = json.loads((w / "selections" / "cc_en.json").read_text())
    manifest = json.loads((w / "manifest.json").read_text())
    assert {k: meta[k] for k in ("name", "kind", "of", "relation", "language", "site")} == {
        "name": "cc_en",
        "kind": "target",
        "of": None,
        "relation": "country_capital",
        "language": "en",
        "site": "ffn.act",
    }
    assert meta["weights_hash"] == manifest["model"]["weights_hash"]
    assert (meta["units"], meta["n_layers"], meta["layers"]) == (UNITS, 2, [0, 1])
    assert meta["size"] == 10 and sum(meta["per_layer"].values()) == 10
    # the recorded SQL gives the same neurons over the union of every stats file
    run_stats(w, "ffn.act", negatives="ratio:4", show_progress=False)
    con = duckdb.connect()
    con.execute(f"create view stats as select * from read_parquet('{w}/stats/*.parquet')")
    again = con.sql(meta["sql"]).pl()
    assert again["neuron_id"].to_list() == got["neuron_id"].to_list()


def test_fraction_of_all_neurons_of_the_site(w: Path):
    select(w, "pm_5pct", "person_mother", fraction=0.05)  # 0.05 x 96 = 4.8 -> 5
    got = read_selection(w, "pm_5pct")
    want = stats(w).filter(
        pl.col("relation") == "person_mother", pl.col("language") == "all", pl.col("rank") <= 5
    )
    assert sorted(got.neuron_ids.tolist()) == sorted(want["neuron_id"].to_list())
    assert "rank <= 5" in got.meta["sql"] and got.meta["language"] == "all"
    with pytest.raises(WarehouseError, match=r"selects none"):
        select(w, "tiny", "person_mother", fraction=0.001)
    with pytest.raises(WarehouseError, match=r"--fraction must be in \(0, 1\]"):
        select(w, "big", "person_mother", fraction=1.5)


def test_sql_selection(w: Path):
    q = (
        "SELECT neuron_id, ap AS score FROM stats "
        "WHERE relation = 'company_ceo' AND language = 'de' AND ap > 0.5"
    )
    select(w, "ceo_de", sql=q)
    got = read_selection(w, "ceo_de")
    want = stats(w).filter(
        pl.col("relation") == "company_ceo", pl.col("language") == "de", pl.col("ap") > 0.5
    )
    assert len(want) > 5
    # ranked by score, ties by neuron_id
    assert got.neuron_ids.tolist() == want.sort("rank")["neuron_id"].to_list()
    assert got.meta["sql"] == q and got.meta["relation"] is None
    # no score: the query's own order, score null
    select(
        w,
        "by_id",
        sql="SELECT neuron_id FROM stats WHERE relation = 'company_ceo' "
        "AND language = 'all' AND neuron_id % 10 = 3 ORDER BY neuron_id DESC",
    )
    got = read_selection(w, "by_id")
    assert got.neuron_ids.tolist() == [93, 83, 73, 63, 53, 43, 33, 23, 13, 3]
    assert got.frame["score"].null_count() == 10


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT 96 AS neuron_id UNION ALL SELECT -1", r"2 neuron id\(s\).*: 96, -1"),
        ("SELECT 5 AS neuron_id, 'ffn.down' AS site", r"site\(s\) \['ffn.down'\]"),
        ("SELECT 5 AS neuron_id UNION ALL SELECT 5", r"more than once: \[5\]"),
        ("SELECT neuron_id FROM stats WHERE ap > 2", r"returned no neurons"),
        ("SELECT layer FROM stats", r"must return a neuron_id column; it returned layer"),
        ("SELECT 'x' AS neuron_id", r"neuron_id must be an integer column"),
        ("SELEKT 1", r"the selection query failed: Parser Error"),
        ("CREATE TABLE t AS SELECT 1", r"one SELECT statement .*; got CREATE"),
    ],
)
def test_sql_selection_errors(w: Path, query: str, message: str):
    with pytest.raises(WarehouseError, match=message):
        select(w, "bad", sql=query)
    assert not (w / "selections" / "bad.json").exists()


@pytest.mark.parametrize(
    "template",
    [
        "SELECT column0::BIGINT AS neuron_id FROM read_csv('{secret}', header=false)",
        "SELECT column0::BIGINT AS neuron_id FROM \"read_csv\"('{secret}', header=false)",
        "COPY (SELECT 1 AS neuron_id) TO '{out}'",
        "EXPLAIN ANALYZE COPY (SELECT 1 AS neuron_id) TO '{out}'",
        "SELECT 1 AS neuron_id; COPY (SELECT 1) TO '{out}'",
        "ATTACH '{out}' AS x",
    ],
)
def test_sql_selection_reads_and_writes_no_file(w: Path, tmp_path: Path, template: str):
    # `select --sql` runs user SQL: the same sandbox as `warehouse query` (one SELECT, no
    # file access), so neither a private file's rows nor a written file can come of it.
    secret, out = tmp_path / "secret.csv", tmp_path / "written"
    secret.write_text("7\n8\n")
    before = {p: p.read_bytes() for p in sorted(w.rglob("*")) if p.is_file()}
    with pytest.raises(WarehouseError, match=r"one SELECT statement|disabled|failed"):
        select(w, "leak", sql=template.format(secret=secret, out=out))
    assert not out.exists() and not (w / "selections" / "leak.parquet").exists()
    assert {p: p.read_bytes() for p in sorted(w.rglob("*")) if p.is_file()} == before


def test_names_relations_and_missing_stats(w: Path):
    for bad in ("", "a b", "../x", ".hidden", "x/y", "a.tmp-1"):
        with pytest.raises(WarehouseError, match=r"bad selection name"):
            select(w, bad, "person_mother", top=3)
    with pytest.raises(WarehouseError, match=r"'baseline' names the unablated rows"):
        select(w, "baseline", "person_mother", top=3)
    select(w, "pm", "person_mother", top=3)
    with pytest.raises(WarehouseError, match=r"already exists.*--overwrite"):
        select(w, "pm", "person_mother", top=4)
    select(w, "pm", "person_mother", top=4, overwrite=True)
    assert read_selection(w, "pm").meta["size"] == 4
    with pytest.raises(WarehouseError, match=r"unknown relation 'x'.*available: company_ceo, "):
        select(w, "s", "x", top=3)
    with pytest.raises(WarehouseError, match=r"language 'fr'; available: all, de, en"):
        select(w, "s", "person_mother", "fr", top=3)
    with pytest.raises(WarehouseError, match=r"run `warehouse stats .* --negatives ratio:4` first"):
        select(w, "s", "person_mother", negatives="ratio:4", top=3)
    with pytest.raises(WarehouseError, match=r"site 'ffn.up'.*available: ffn.act, ffn.down"):
        select(w, "s", "person_mother", site="ffn.up", top=3)
    with pytest.raises(WarehouseError, match=r"pooling 'max'.*available: mean, last"):
        select(w, "s", "person_mother", pooling="max", top=3)
    with pytest.raises(WarehouseError, match=r"exactly one of"):
        select(w, "s", "person_mother", top=3, fraction=0.1)
    with pytest.raises(WarehouseError, match=r"--top must be a positive integer"):
        select(w, "s", "person_mother", top=0)
    # site=None picks the only site with stats, and asks once two sites have them
    assert read_selection(w, "pm").site == "ffn.act"
    run_stats(w, "ffn.down", show_progress=False)
    with pytest.raises(WarehouseError, match=r"several sites \(ffn.act, ffn.down\); choose one"):
        select(w, "s", "person_mother", top=3)
    select(w, "pm_down", "person_mother", site="ffn.down", top=3)
    assert read_selection(w, "pm_down").frame["neuron_id"].max() < 64
    with pytest.raises(WarehouseError, match=r"no selection named 'nope'.*available: pm, pm_down"):
        read_selection(w, "nope")


def test_random_like_is_disjoint_same_per_layer_and_seeded(w: Path):
    select(w, "cc", "country_capital", top=20)
    a = read_selection(w, random_like(w, "cc_r1", "cc", seed=1).stem)
    b = read_selection(w, random_like(w, "cc_r1b", "cc", seed=1).stem)
    c = read_selection(w, random_like(w, "cc_r2", "cc", seed=2).stem)
    target = read_selection(w, "cc")
    assert a.neuron_ids.tolist() == b.neuron_ids.tolist() != c.neuron_ids.tolist()
    for ctrl in (a, c):
        assert not set(ctrl.neuron_ids) & set(target.neuron_ids)
        assert ctrl.meta["per_layer"] == target.meta["per_layer"]
        assert len(set(ctrl.neuron_ids)) == 20
    assert {k: a.meta[k] for k in ("kind", "of", "seed", "relation", "site")} == {
        "kind": "control",
        "of": "cc",
        "seed": 1,
        "relation": "country_capital",
        "site": "ffn.act",
    }
    # 30 of layer 0's 48 units leave only 18 for a disjoint control of 30
    select(
        w,
        "l0",
        sql="SELECT neuron_id FROM stats WHERE relation = 'company_ceo' "
        "AND language = 'all' AND layer = 0 AND neuron < 30",
    )
    with pytest.raises(WarehouseError, match=r"layer 0 holds 30 of 48 neurons"):
        random_like(w, "l0_r", "l0", seed=0)
    with pytest.raises(WarehouseError, match=r"no selection named 'zzz'"):
        random_like(w, "z_r", "zzz", seed=0)
    names = [s["name"] for s in list_selections(w)]
    assert names == ["cc", "cc_r1", "cc_r1b", "cc_r2", "l0"]


def test_overlap_tables_equal_set_arithmetic(w: Path):
    select(w, "cc", "country_capital", top=30)
    select(w, "pm", "person_mother", top=30)
    select(w, "ceo", "company_ceo", top=10)
    random_like(w, "cc_r", "cc", seed=0)
    names = ["cc", "pm", "ceo", "cc_r"]
    ids = {n: set(read_selection(w, n).neuron_ids.tolist()) for n in names}
    got = overlap(w, names)
    assert got.columns == ["a", "b", "n_a", "n_b", "shared", "jaccard"]
    assert got.select("a", "b").rows() == [
        ("cc", "pm"),
        ("cc", "ceo"),
        ("cc", "cc_r"),
        ("pm", "ceo"),
        ("pm", "cc_r"),
        ("ceo", "cc_r"),
    ]
    for row in got.iter_rows(named=True):
        a, b = ids[row["a"]], ids[row["b"]]
        assert (row["n_a"], row["n_b"], row["shared"]) == (len(a), len(b), len(a & b))
        assert row["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    assert got.filter(a="cc", b="cc_r")["shared"].item() == 0

    by_layer = overlap_by_layer(w, "cc", "pm")
    assert by_layer["layer"].to_list() == [0, 1]
    assert by_layer["shared"].sum() == len(ids["cc"] & ids["pm"])
    for row in by_layer.iter_rows(named=True):
        lo, hi = row["layer"] * UNITS, (row["layer"] + 1) * UNITS
        a = {i for i in ids["cc"] if lo <= i < hi}
        b = {i for i in ids["pm"] if lo <= i < hi}
        assert (row["n_a"], row["n_b"], row["shared"]) == (len(a), len(b), len(a & b))

    dist = layer_distribution(w, "ceo")
    counts = [sum(1 for i in ids["ceo"] if i // UNITS == layer) for layer in (0, 1)]
    assert dist["count"].to_list() == counts
    np.testing.assert_allclose(dist["share"].to_numpy(), np.array(counts) / 10)


PAIRS_SQL = """
WITH sizes AS (SELECT selection, count(*) AS n FROM selections GROUP BY selection),
shared AS (
    SELECT a.selection AS a, b.selection AS b, count(*) AS shared
    FROM selections a JOIN selections b
      ON a.site = b.site AND a.neuron_id = b.neuron_id AND a.selection < b.selection
    GROUP BY ALL
)
SELECT x.selection AS a, y.selection AS b, x.n AS n_a, y.n AS n_b,
       coalesce(s.shared, 0) AS shared,
       coalesce(s.shared, 0) / (x.n + y.n - coalesce(s.shared, 0)) AS jaccard
FROM sizes x JOIN sizes y ON x.selection < y.selection
LEFT JOIN shared s ON s.a = x.selection AND s.b = y.selection
ORDER BY a, b
"""

LAYERS_SQL = """
SELECT layer, count(*) AS count, count(*) / sum(count(*)) OVER () AS share
FROM selections WHERE selection = 'study-country_capital'
GROUP BY layer ORDER BY layer
"""


def test_docs_sql_recipes_match(w: Path):
    """The SQL recipes of docs/statistics.md give the overlap tables (and are in the docs)."""
    select(w, "study-country_capital", "country_capital", top=30)
    select(w, "pm", "person_mother", top=30)
    random_like(w, "study-country_capital_r", "study-country_capital", seed=0)
    con = duckdb.connect()
    con.execute(f"create view selections as select * from read_parquet('{w}/selections/*.parquet')")
    want = overlap(w, ["pm", "study-country_capital", "study-country_capital_r"])
    assert con.sql(PAIRS_SQL).pl().equals(want, null_equal=True)
    dist = con.sql(LAYERS_SQL).pl()
    # the country_capital selection has neurons in both layers
    assert dist.rows() == layer_distribution(w, "study-country_capital").rows()
    docs = (Path(__file__).parents[1] / "docs" / "statistics.md").read_text()
    for recipe in (PAIRS_SQL, LAYERS_SQL):
        assert recipe.strip() in docs


def test_top_k_at_an_ap_tie_records_how_the_cut_fell(w: Path):
    """51 neurons share AP = 1 (test_stats.write_ties): the top 4 are 4 of the 6 exact
    duplicates in the seeded order, the top 10 the duplicates and the 4 widest margins, and
    the sidecar says how many shared the k-th AP, how many were taken and what cut them."""
    by_margin = write_ties(w)
    run_stats(w, "ffn.act", seed=0, force=True, show_progress=False)
    select(w, "t4", TIED, "en", top=4)
    select(w, "t10", TIED, "en", top=10)
    select(w, "t60", TIED, "en", top=60)
    t4, t10, t60 = (read_selection(w, n) for n in ("t4", "t10", "t60"))
    assert t4.neuron_ids.tolist() == [40, 17, 88, 70]  # seed 0; not the lowest ids
    assert t10.neuron_ids.tolist()[:4] == [40, 17, 88, 70]
    assert sorted(t10.neuron_ids.tolist()) == sorted([*DUPLICATES, *by_margin[6:10]])
    assert t4.meta["ties"] == {"k": 4, "ap": 1.0, "ap_ties": 51, "selected": 4, "cut_by": "seed"}
    assert t10.meta["ties"] == {"k": 10, "ap": 1.0, "ap_ties": 51, "selected": 10, "cut_by": "smd"}
    g = stats(w).filter(relation=TIED, language="en").sort("rank")
    at, after = g.row(59, named=True), g.row(60, named=True)
    differs = [c for c in ("ap", "auroc") if at[c] != after[c]]
    differs += ["smd"] if abs(at["smd"]) != abs(after["smd"]) else []
    assert t60.meta["ties"] == {
        "k": 60,
        "ap": at["ap"],
        "ap_ties": (g["ap"] == at["ap"]).sum(),
        "selected": (g["ap"].head(60) == at["ap"]).sum(),
        "cut_by": differs[0] if differs else "seed",
    }
    # Another seed reorders the duplicates only: the top 10 is the same set.
    run_stats(w, "ffn.act", seed=1, force=True, show_progress=False)
    select(w, "t10_s1", TIED, "en", top=10)
    s1 = read_selection(w, "t10_s1")
    assert s1.neuron_ids.tolist()[:6] != t10.neuron_ids.tolist()[:6]
    assert sorted(s1.neuron_ids.tolist()) == sorted(t10.neuron_ids.tolist())
    assert s1.neuron_ids.tolist()[6:] == t10.neuron_ids.tolist()[6:]
    assert s1.meta["stats"]["seed"] == 1


def test_selection_from_template_stats(w: Path):
    """Stats over a template subset live in their own file; a selection names that set."""
    en = RELATION_TEMPLATES
    with pytest.raises(WarehouseError, match=r"--template \.\.\.` first"):
        select(w, "tpl", "country_capital", "en", top=5, templates=en)
    (path,) = run_stats(w, "ffn.act", templates=en, show_progress=False)
    select(w, "tpl", "country_capital", "en", top=5, templates=en)
    got = read_selection(w, "tpl")
    part = pl.read_parquet(path).filter(relation="country_capital", language="en").sort("rank")
    assert got.neuron_ids.tolist() == part["neuron_id"].head(5).to_list()
    assert got.meta["stats"]["templates"] == sorted(en)
    assert got.meta["stats"]["file"] == f"stats/{path.name}"
    # the recorded SQL picks the same neurons from the union of every stats file
    con = duckdb.connect()
    con.execute(f"create view stats as select * from read_parquet('{w}/stats/*.parquet')")
    assert con.sql(got.meta["sql"]).pl()["neuron_id"].to_list() == got.neuron_ids.tolist()


def test_template_options_of_the_cli(w: Path, capsys):
    """`stats --template` and `select --template` reach the same files as the API; an
    unknown template is one error line and writes nothing."""
    import conftest

    tpl = [a for t in RELATION_TEMPLATES for a in ("--template", t)]
    code, out, err = conftest.run_cli(capsys, "stats", str(w), "--site", "ffn.act", *tpl, "--quiet")
    assert code == 0, err
    path = stats_path(w, "ffn.act", "mean", "all", RELATION_TEMPLATES)
    assert out == f"wrote {path}\n"
    args = ["select", str(w), "--name", "t", "--relation", "company_ceo", "--top", "3", *tpl]
    code, out, err = conftest.run_cli(capsys, *args)
    assert code == 0, err
    assert read_selection(w, "t").meta["stats"]["file"] == f"stats/{path.name}"
    before = sorted(p.name for p in (w / "stats").iterdir())
    code, _, err = conftest.run_cli(capsys, "stats", str(w), "--template", "Nope {subject}")
    assert code != 0 and err.startswith("error: unknown template(s) 'Nope {subject}'")
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (w / "stats").iterdir()) == before
