"""Stats: the stored AP/AUROC/moments equal scikit-learn and numpy recomputed from the raw
Zarr array and prompts table, per language and pooled, in both negatives modes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import zarr
from sklearn.metrics import average_precision_score, roc_auc_score

from warehouse.analysis import stats as stats_mod
from warehouse.analysis.selectivity import sample_negatives
from warehouse.analysis.stats import parse_negatives, run_stats, stats_path
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.errors import WarehouseError
from warehouse.store.fingerprint import CacheKey, fingerprint, write_sidecar
from warehouse.store.format import STATS_SCHEMA

RELATIONS = {
    "company_ceo": ("The CEO of {subject} is", "Der Chef von {subject} ist"),
    "country_capital": ("The capital of {subject} is", "Die Hauptstadt von {subject} ist"),
    "person_mother": ("The mother of {subject} is", "Die Mutter von {subject} ist"),
}


def write_dataset(path: Path) -> Path:
    """3 relations; 10 English subjects with 2 templates, 7 of them also in German."""
    with open(path, "w") as f:
        for rel, (en, de) in RELATIONS.items():
            for i in range(10):
                subject = f"Subj{rel[:3]}{i}"
                fact = {"relation": rel, "subject": subject, "object": f"Obj{i}"}
                f.write(json.dumps({**fact, "language": "en", "templates": [en, "So, " + en]}))
                f.write("\n")
                if i < 7:
                    de_fact = {**fact, "language": "de", "subject_id": subject, "templates": [de]}
                    f.write(json.dumps(de_fact) + "\n")
    return path


def make_warehouse(out: Path, model: Path) -> Path:
    """A pooled warehouse of the tiny Llama: 2 layers, ffn.act (48 units) and ffn.down (32)."""
    data = write_dataset(out.parent / f"{out.name}.jsonl")
    cfg = IngestConfig(
        out=out,
        model=str(model),
        dataset=str(data),
        sites="ffn.act,ffn.down",
        capture="pooled",
        pooling=["mean", "last"],
        batch_size=8,
        prompt_chunk=16,  # several row chunks, so row selection crosses chunk borders
    )
    ingest(cfg, show_progress=False)
    return out


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, tiny_llama_dir) -> Path:
    return make_warehouse(tmp_path_factory.mktemp("stats") / "W", tiny_llama_dir)


@pytest.fixture
def fresh(warehouse: Path, tmp_path: Path) -> Path:
    """A private copy of the module's warehouse without its stats, for tests that change it."""
    out = tmp_path / "W"
    shutil.copytree(warehouse, out, ignore=shutil.ignore_patterns("stats"))
    return out


# ---------------------------------------------------------------- independent reference


def reference(
    root: Path,
    site: str,
    pooling: str,
    negatives: str,
    seed: int,
    split: str,
    sample: int = 10,
    templates: list[str] | None = None,
):
    """Recompute the stats of every (relation, language) for `sample` random neurons per layer
    (and the first and last) with sklearn and numpy from the raw array and prompts table,
    following docs/statistics.md's rules."""
    prompts = pl.read_parquet(root / "prompts.parquet").sort("prompt_row")
    if split != "all":
        prompts = prompts.filter(pl.col("split") == split)
    if templates is not None:
        prompts = prompts.filter(pl.col("template").is_in(templates))
    relations = sorted(prompts["relation"].unique())
    y = np.array([relations.index(r) for r in prompts["relation"]])
    lang = prompts["language"].to_numpy()
    x = zarr.open_array(root / "responses.zarr" / site / pooling, mode="r")[:]
    x = x[prompts["prompt_row"].to_numpy()].astype(np.float64)  # (prompts, layers, units)
    layers = json.loads((root / "manifest.json").read_text())["capture"]["layers"]
    units = x.shape[2]
    _, ratio = parse_negatives(negatives)
    rng = np.random.default_rng(0)
    neurons = sorted({0, units - 1, *rng.choice(units, sample, replace=False).tolist()})
    rows = []
    for language in ["all", *sorted(set(lang))]:
        in_lang = np.ones(len(y), bool) if language == "all" else lang == language
        for code, relation in enumerate(relations):
            if ratio is None:
                counted = in_lang
            else:
                counted = sample_negatives(y, code, ratio, seed, in_lang)
            pos = y[counted] == code
            if pos.all() or not pos.any():
                continue
            for li, layer in enumerate(layers):
                for neuron in neurons:
                    v = x[counted, li, neuron]
                    p, n = v[pos], v[~pos]
                    pooled = np.sqrt((len(p) * p.var() + len(n) * n.var()) / len(v))
                    rows.append(
                        {
                            "relation": relation,
                            "language": language,
                            "neuron_id": layer * units + neuron,
                            "ap_ref": average_precision_score(pos, v),
                            "auroc_ref": roc_auc_score(pos, v),
                            "mean_pos_ref": p.mean(),
                            "std_pos_ref": p.std(),
                            "mean_neg_ref": n.mean(),
                            "std_neg_ref": n.std(),
                            "smd_ref": (p.mean() - n.mean()) / pooled if pooled > 0 else 0.0,
                            "n_pos_ref": len(p),
                            "n_neg_ref": len(n),
                        }
                    )
    return pl.DataFrame(rows)


def assert_matches_reference(path: Path, ref: pl.DataFrame, n_neurons: int) -> None:
    got = pl.read_parquet(path)
    pairs = ref.select("relation", "language").unique()
    assert len(got) == len(pairs) * n_neurons, "stats and reference cover different groups"
    both = got.join(ref, on=["relation", "language", "neuron_id"], how="inner")
    assert len(both) == len(ref)
    # AP and AUROC are float64 (sklearn-exact); the moments and SMD are stored as float32
    for name in ("ap", "auroc"):
        np.testing.assert_allclose(
            both[name].to_numpy(), both[f"{name}_ref"].to_numpy(), rtol=0, atol=1e-9, err_msg=name
        )
    for name in ("mean_pos", "std_pos", "mean_neg", "std_neg", "smd"):
        np.testing.assert_allclose(
            both[name].to_numpy(),
            both[f"{name}_ref"].to_numpy(),
            rtol=1e-6,
            atol=1e-7,
            err_msg=name,
        )
    assert (both["n_pos"] == both["n_pos_ref"]).all() and (both["n_neg"] == both["n_neg_ref"]).all()


def documented_order(g: pl.DataFrame, seed: int) -> list[int]:
    """neuron_ids of one (relation, language) in the order docs/statistics.md defines: AP,
    AUROC, |SMD| descending, then a permutation of the (layer, neuron) positions drawn with
    default_rng([seed, first 8 bytes of sha256(relation NUL language), little-endian])."""
    relation, language = g["relation"][0], g["language"][0]
    digest = hashlib.sha256(f"{relation}\0{language}".encode()).digest()
    key = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")]).permutation(96)
    g = g.with_columns(key=pl.Series(key[g["neuron_id"].to_numpy()]), abs_smd=pl.col("smd").abs())
    return g.sort(["ap", "auroc", "abs_smd", "key"], descending=[True, True, True, False])[
        "neuron_id"
    ].to_list()


def tie_groups(ap: list[float]) -> tuple[list[int], list[int]]:
    """For APs in rank order: 1 + the number of higher APs, and how many share each AP."""
    return [1 + sum(b > a for b in ap) for a in ap], [ap.count(a) for a in ap]


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("negatives", ["all", "ratio:4", "ratio:0.5"])
def test_equals_sklearn_per_language_and_pooled(warehouse: Path, negatives: str):
    (path,) = run_stats(warehouse, "ffn.act", negatives=negatives, seed=3, show_progress=False)
    assert path == stats_path(warehouse, "ffn.act", "mean", negatives)
    ref = reference(warehouse, "ffn.act", "mean", negatives, seed=3, split="identify")
    # 3 relations x {all, de, en}, every one with both sides present; 2 layers x 48 units
    assert len(ref.select("relation", "language").unique()) == 9
    assert_matches_reference(path, ref, 96)
    if negatives == "ratio:0.5":  # really sampled: fewer negatives than other prompts
        got = pl.read_parquet(path).filter(pl.col("language") == "all")
        assert (got["n_neg"] == np.floor(0.5 * got["n_pos"] + 0.5)).all()


def test_heavy_ties_narrow_slabs_and_row_subsets(fresh: Path, monkeypatch):
    """Responses from {-1, -0.5, 0, 0.5, 1} (and -0.0), read in 16-neuron slabs, split=test."""
    arr = zarr.open_array(fresh / "responses.zarr" / "ffn.down" / "last", mode="r+")
    rng = np.random.default_rng(0)
    values = rng.integers(-2, 3, arr.shape).astype(np.float16) / 2
    values[rng.random(arr.shape) < 0.1] = -0.0
    arr[:] = values
    monkeypatch.setattr(stats_mod, "NEURON_CHUNK", 16)
    monkeypatch.setattr(stats_mod, "MAX_SLAB_NEURONS", 16)
    for negatives in ("all", "ratio:1"):
        (path,) = run_stats(
            fresh, "ffn.down", "last", negatives, split="test", seed=1, show_progress=False
        )
        ref = reference(fresh, "ffn.down", "last", negatives, seed=1, split="test")
        assert len(ref.select("relation", "language").unique()) == 9
        assert_matches_reference(path, ref, 64)


def test_rank_order_and_layout(warehouse: Path):
    (path,) = run_stats(warehouse, "ffn.act", show_progress=False)
    got = pl.read_parquet(path)
    assert got.columns == [f.name for f in STATS_SCHEMA]
    # the file is sorted by (relation, language, rank) ...
    assert got.select("relation", "language", "rank").equals(
        got.select("relation", "language", "rank").sort("relation", "language", "rank")
    )
    # ... and rank is 1..N by AP, AUROC, |SMD| descending, then the seeded order; never the id
    for _, g in got.group_by("relation", "language"):
        assert g["rank"].to_list() == list(range(1, 97))
        assert g["neuron_id"].to_list() == documented_order(g, 0)
        assert (g["ap_rank"].to_list(), g["ap_ties"].to_list()) == tie_groups(g["ap"].to_list())
    assert (got["neuron_id"] == got["layer"] * 48 + got["neuron"]).all()
    assert set(got["split"]) == {"identify"} and set(got["negatives"]) == {"all"}
    # one (relation, language) per row group, so filters on them prune
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 9
    for i in range(meta.num_row_groups):
        for col in (0, 1):
            s = meta.row_group(i).column(col).statistics
            assert s.min == s.max


def test_rerun_is_skipped_other_options_rewrite_only_their_file(fresh: Path):
    (a,) = run_stats(fresh, "ffn.act", show_progress=False)
    (b,) = run_stats(fresh, "ffn.act", negatives="ratio:4", seed=0, show_progress=False)
    stamp_a, stamp_b = a.stat().st_mtime_ns, b.stat().st_mtime_ns
    assert run_stats(fresh, "ffn.act", show_progress=False) == [a]
    assert a.stat().st_mtime_ns == stamp_a
    run_stats(fresh, "ffn.act", negatives="ratio:4", seed=1, show_progress=False)
    assert b.stat().st_mtime_ns != stamp_b and a.stat().st_mtime_ns == stamp_a
    options = json.loads(b.with_suffix(".json").read_text())["key"]["options"]
    assert (options["seed"], options["tie_break"]) == (1, stats_mod.TIE_BREAK)
    # the seed orders exact ties in "all" mode too, so another seed is another file
    run_stats(fresh, "ffn.act", seed=7, show_progress=False)
    assert a.stat().st_mtime_ns != stamp_a
    stamp_a = a.stat().st_mtime_ns
    run_stats(fresh, "ffn.act", force=True, show_progress=False)
    assert a.stat().st_mtime_ns != stamp_a
    side = json.loads(a.with_suffix(".json").read_text())
    assert side["rows"] == 864 and side["key"]["parent"] == _fingerprint(fresh)
    assert side["key"]["step"] == "stats" and side["fingerprint"] == fingerprint(side["key"])
    # every site by default; one file each, no temp leftovers
    assert [p.name for p in run_stats(fresh, show_progress=False)] == [
        "ffn.act__mean__all.parquet",
        "ffn.down__mean__all.parquet",
    ]
    assert sorted(p.name for p in (fresh / "stats").iterdir()) == [
        "ffn.act__mean__all.json",
        "ffn.act__mean__all.parquet",
        "ffn.act__mean__ratio-4.json",
        "ffn.act__mean__ratio-4.parquet",
        "ffn.down__mean__all.json",
        "ffn.down__mean__all.parquet",
    ]


def test_a_template_subset_is_its_own_file_and_equals_sklearn(fresh: Path):
    """English prompts of the 'So, ' templates plus every German one: sklearn on just those."""
    tpl = sorted(
        {"So, " + en for en, _ in RELATIONS.values()} | {de for _, de in RELATIONS.values()}
    )
    (main,) = run_stats(fresh, "ffn.act", negatives="ratio:4", show_progress=False)
    (path,) = run_stats(fresh, "ffn.act", negatives="ratio:4", templates=tpl, show_progress=False)
    key = stats_mod.template_set(tpl)
    assert key == stats_mod.template_set(list(reversed(tpl))) and key.startswith("tpl-")
    assert path.name == f"ffn.act__mean__ratio-4__{key}.parquet"
    assert path == stats_path(fresh, "ffn.act", "mean", "ratio:4", tpl) != main
    ref = reference(fresh, "ffn.act", "mean", "ratio:4", seed=0, split="identify", templates=tpl)
    assert_matches_reference(path, ref, 96)
    got, whole = pl.read_parquet(path), pl.read_parquet(main)
    assert set(got["template_set"]) == {key} and set(whole["template_set"]) == {"all"}
    en_pos = got.filter(language="en")["n_pos"].unique().to_list()
    assert en_pos == [6] and whole.filter(language="en")["n_pos"].unique().to_list() == [12]
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"]["options"]["templates"] == tpl and side["template_set"] == key
    # both files stay; the same call again is a no-op
    stamp = path.stat().st_mtime_ns
    run_stats(fresh, "ffn.act", negatives="ratio:4", templates=tpl, show_progress=False)
    assert path.stat().st_mtime_ns == stamp and main.is_file()
    with pytest.raises(WarehouseError, match=r"unknown template\(s\) 'Nope \{subject\}'"):
        run_stats(fresh, "ffn.act", templates=["Nope {subject}"], show_progress=False)
    with pytest.raises(WarehouseError, match=r"at least one template"):
        run_stats(fresh, "ffn.act", templates=[], show_progress=False)


def test_a_killed_runs_temps_are_removed(fresh: Path):
    stats = fresh / "stats"
    stats.mkdir(exist_ok=True)
    (stats / ".tmp-dead0001").mkdir()
    (stats / ".tmp-dead0001" / "ap.npy").write_bytes(b"\x93NUMPY half")
    (stats / "x.parquet.tmp-0123abcd").write_bytes(b"half")
    (stats / "keep.txt").write_text("not a temp")  # only temps go (verify names the rest)
    run_stats(fresh, "ffn.act", show_progress=False)
    assert sorted(p.name for p in stats.iterdir()) == [
        "ffn.act__mean__all.json",
        "ffn.act__mean__all.parquet",
        "keep.txt",
    ]


def test_single_language_groups_share_one_computation(fresh: Path):
    """With per_language=False only "all" rows are written; the run still equals sklearn."""
    (path,) = run_stats(fresh, "ffn.act", per_language=False, show_progress=False)
    got = pl.read_parquet(path)
    assert set(got["language"]) == {"all"} and len(got) == 3 * 96


def _fingerprint(w: Path) -> str:
    return json.loads((w / "manifest.json").read_text())["fingerprint"]


def test_filter_correct(fresh: Path):
    with pytest.raises(WarehouseError, match=r"run `warehouse eval W --baseline` first"):
        run_stats(fresh, "ffn.act", filter_correct=True, show_progress=False)
    prompts = pl.read_parquet(fresh / "prompts.parquet")
    # every second prompt correct; one prompt evaluated twice with differing answers
    baseline = prompts.select("prompt_id", correct=pl.col("prompt_row") % 2 == 0)
    twice = baseline.filter(pl.col("correct")).head(1).with_columns(correct=pl.lit(False))
    (fresh / "evals").mkdir()
    pl.concat([baseline, twice]).write_parquet(fresh / "evals" / "baseline.parquet")
    base = fresh / "evals" / "baseline.parquet"
    side = fresh / "evals" / "baseline.json"
    side.write_text(json.dumps({"kind": "baseline", "match": "prefix"}))  # made before keys
    with pytest.raises(WarehouseError, match=r"has no cache key .* to make it anew"):
        run_stats(fresh, "ffn.act", filter_correct=True, show_progress=False)
    prefix = CacheKey(_fingerprint(fresh), "baseline", {"rule": "answer-prefix-3"})
    write_sidecar(base, prefix)
    (path,) = run_stats(fresh, "ffn.act", filter_correct=True, show_progress=False)
    kept = prompts.filter(
        (pl.col("split") == "identify")
        & (pl.col("prompt_row") % 2 == 0)
        & ~pl.col("prompt_id").is_in(twice["prompt_id"].to_list())
    )
    got = pl.read_parquet(path).filter(pl.col("language") == "all")
    want = kept.group_by("relation").len()
    n_pos = got.group_by("relation").agg(pl.col("n_pos").first()).join(want, on="relation")
    assert (n_pos["n_pos"] == n_pos["len"]).all()
    assert (got["n_pos"] + got["n_neg"] == len(kept)).all()
    side = json.loads(path.with_suffix(".json").read_text())
    # derived from the baseline, whose key derives from the warehouse's
    assert side["key"]["options"]["filter_correct"] and side["key"]["parent"] == prefix.fingerprint
    # The same answers scored under another rule: the stats are computed anew.
    stamp = path.stat().st_mtime_ns
    assert run_stats(fresh, "ffn.act", filter_correct=True, show_progress=False) == [path]
    assert path.stat().st_mtime_ns == stamp
    paper = CacheKey(prefix.parent, "baseline", {"rule": "paper-prefix"})
    write_sidecar(base, paper)
    assert run_stats(fresh, "ffn.act", filter_correct=True, show_progress=False) == [path]
    assert path.stat().st_mtime_ns != stamp
    assert json.loads(path.with_suffix(".json").read_text())["key"]["parent"] == paper.fingerprint


def test_clear_errors(fresh: Path):
    with pytest.raises(WarehouseError, match=r"site 'ffn.gate'.*available: ffn.act, ffn.down"):
        run_stats(fresh, "ffn.gate", show_progress=False)
    with pytest.raises(WarehouseError, match=r"pooling 'max'.*available: mean, last"):
        run_stats(fresh, "ffn.act", pooling="max", show_progress=False)
    with pytest.raises(WarehouseError, match=r"'all' or 'ratio:K'"):
        run_stats(fresh, "ffn.act", negatives="ratio:-1", show_progress=False)
    with pytest.raises(WarehouseError, match=r"unknown split 'train'"):
        run_stats(fresh, "ffn.act", split="train", show_progress=False)
    manifest = json.loads((fresh / "manifest.json").read_text())
    manifest["state"]["status"] = "ingesting"
    (fresh / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WarehouseError, match=r"ingest has not finished"):
        run_stats(fresh, "ffn.act", show_progress=False)
    assert not (fresh / "stats").exists()


def test_parse_negatives():
    assert parse_negatives("all") == ("all", None)
    assert parse_negatives("ratio:4.0") == ("ratio:4", 4.0)
    assert parse_negatives("ratio:0.5") == ("ratio:0.5", 0.5)
    for bad in ("some", "ratio:", "ratio:x", "ratio:0", "ratio:inf", "ratio4"):
        with pytest.raises(WarehouseError):
            parse_negatives(bad)


# ------------------------------------------------------------------------- ties at AP = 1

TIED = "country_capital"
DUPLICATES = [3, 17, 40, 51, 70, 88]  # exact copies of one column: only the seed orders them


def write_ties(root: Path) -> list[int]:
    """ffn.act/mean responses where every neuron with an even id separates TIED perfectly
    (AP = AUROC = 1 in every language group), by a margin that grows with the id, and the
    DUPLICATES are one column with the widest margin. Returns the even ids by margin, widest
    first. Sorted by neuron_id this tie group would start at layer 0, neuron 0."""
    arr = zarr.open_array(root / "responses.zarr" / "ffn.act" / "mean", mode="r+")
    relation = pl.read_parquet(root / "prompts.parquet").sort("prompt_row")["relation"]
    positive = (relation == TIED).to_numpy()
    rng = np.random.default_rng(5)
    x = np.clip(rng.normal(0, 1, (arr.shape[0], 96)), -3.9, 3.9)  # negatives stay below 4
    base, lift = x[:, 1].copy(), rng.random(positive.sum())
    separated = [j for j in range(96) if j % 2 == 0 or j in DUPLICATES]
    for j in separated:  # one shared column: the margin alone sets the SMD, rising with j
        x[:, j] = base
        x[positive, j] = 4 + j / 8 + lift
    x[:, DUPLICATES] = base[:, None]
    x[np.ix_(positive, DUPLICATES)] = (30 + lift)[:, None]
    arr[:] = x.reshape(arr.shape[0], 2, 48).astype(np.float16)
    rest = sorted((j for j in separated if j not in DUPLICATES), reverse=True)
    return [*DUPLICATES, *rest]


def test_ties_at_ap_one_are_ordered_by_smd_then_seed_never_by_id(fresh: Path):
    by_margin = write_ties(fresh)
    orders = {}
    for seed in (0, 1):
        (path,) = run_stats(fresh, "ffn.act", seed=seed, force=True, show_progress=False)
        g = pl.read_parquet(path).filter(relation=TIED, language="en")
        ref = reference(fresh, "ffn.act", "mean", "all", seed=seed, split="identify", sample=48)
        ref = ref.filter(relation=TIED, language="en")
        both = g.join(ref, on="neuron_id")
        assert len(both) == 96
        assert np.abs(both["ap"] - both["ap_ref"]).max() < 1e-12  # sklearn's AP ...
        assert np.abs(both["auroc"] - both["auroc_ref"]).max() < 1e-12  # ... and AUROC
        tied = g.filter(pl.col("ap") == 1.0)
        assert sorted(tied["neuron_id"]) == sorted(by_margin)  # 51 neurons share AP = 1
        assert set(tied["auroc"]) == {1.0}  # so AUROC cannot break the tie: |SMD| does
        assert (tied["ap_rank"] == 1).all() and (tied["ap_ties"] == 51).all()
        assert g["neuron_id"].to_list() == documented_order(g, seed)
        orders[seed] = g["neuron_id"].to_list()
    # The duplicates lead in a seeded order; the rest of the tie group follows by margin.
    assert orders[0][:6] != orders[1][:6] and sorted(orders[0][:6]) == DUPLICATES
    assert sorted(orders[1][:6]) == DUPLICATES
    assert orders[0][6:51] == orders[1][6:51] == by_margin[6:]
    assert orders[0][:4] == [40, 17, 88, 70]  # seed 0, exactly; not the lowest ids
