"""Shards, merge and Ray: every way of splitting the work gives the single run's bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ingest_cfg

from warehouse.analysis.eval_shards import eval_shard, join_eval
from warehouse.analysis.evaluate import EvalConfig, run_eval
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.ingest.shards import parse_shard, shard_range
from warehouse.store import merge as merge_mod
from warehouse.store.checksums import verify
from warehouse.store.errors import WarehouseError
from warehouse.store.fingerprint import fingerprint_of
from warehouse.store.merge import merge

FACTS = [
    ("country_capital", "en", "France", "Paris"),
    ("country_capital", "en", "Japan", "Tokyo"),
    ("country_capital", "en", "Germany", "Berlin"),
    ("country_capital", "de", "Frankreich", "Paris"),
    ("person_mother", "en", "Barack Obama", "Ann Dunham"),
    ("person_mother", "en", "Ada Lovelace", "Anne Milbanke"),
    ("person_mother", "en", "Queen Elizabeth II", "Elizabeth Bowes-Lyon"),
]
TEMPLATES = {
    ("country_capital", "en"): ["The capital city of {subject} is", "{subject}'s capital is"],
    ("country_capital", "de"): ["Die Hauptstadt von {subject} ist"],
    ("person_mother", "en"): ["The mother of {subject} is", "Who is the mother of {subject}?"],
}
DERIVED = ("stats", "selections", "evals")


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                dict(relation=r, language=lg, subject=s, object=o, templates=TEMPLATES[(r, lg)])
            )
            + "\n"
            for r, lg, s, o in FACTS
        )
    )
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAREHOUSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def cfg(out: Path, model: Path, data: Path, **kw) -> IngestConfig:
    return ingest_cfg(out, model, data, **{"sites": "ffn.act,ffn.down", "prompt_chunk": 2, **kw})


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_llama_dir, facts, cache) -> Path:
    out = tmp_path_factory.mktemp("single") / "w"
    ingest(cfg(out, tiny_llama_dir, facts), show_progress=False)
    return out


def files(root: Path) -> dict[str, bytes]:
    """Every table and array file (the manifest and derived folders aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and p.relative_to(root).parts[0] not in DERIVED
    }


def assert_same_bytes(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    assert len(fa) > 50
    differ = [k for k in fa if fa[k] != fb[k]]
    assert not differ, differ[:5]


def manifest(w: Path) -> dict:
    return json.loads((w / "manifest.json").read_text())


# ------------------------------------------------------------------------------ shards + merge


def test_parse_shard_and_ranges():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(WarehouseError, match="shard"):
            parse_shard(bad)
    n_tok = np.array([5, 5, 5, 7, 7, 9, 9, 9, 9, 12])
    starts = [0, 2, 3, 5, 7, 9]  # batches of at most 2 of one length
    ranges = [shard_range(n_tok, starts, (i, 3)) for i in (1, 2, 3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(s in starts for s, _ in ranges) and all(e > s for s, e in ranges)
    with pytest.raises(WarehouseError, match="only 6 batch"):
        shard_range(n_tok, starts, (1, 7))


def test_shards_merge_to_the_single_run(tmp_path, tiny_llama_dir, facts, single, monkeypatch):
    parts = []
    for i in (1, 2, 3):
        part = tmp_path / f"p{i}"
        m = ingest(cfg(part, tiny_llama_dir, facts, shard=(i, 3)), show_progress=False)
        assert m.shard["index"] == i and m.fingerprint != manifest(single)["fingerprint"]
        assert verify(part).ok
        parts.append(part)
    counts = [manifest(p)["counts"]["prompts"] for p in parts]
    assert sum(counts) == manifest(single)["counts"]["prompts"] and min(counts) > 0
    # a shard re-run with other options is refused; the same options find it complete
    with pytest.raises(WarehouseError, match="shard"):
        ingest(cfg(parts[0], tiny_llama_dir, facts, shard=(1, 2)), show_progress=False)
    raw = []
    real = merge_mod._raw_source
    monkeypatch.setattr(merge_mod, "_raw_source", lambda *a: raw.append(real(*a)) or raw[-1])
    out = tmp_path / "merged"
    m = merge([parts[2], parts[0], parts[1]], out, show_progress=False)  # any order
    assert any(r is not None for r in raw) and any(r is None for r in raw)
    assert_same_bytes(single, out)
    assert m.fingerprint == manifest(single)["fingerprint"]
    assert m.dataset.to_json() == manifest(single)["dataset"]
    assert verify(out).ok
    # ingest with the single run's options recognises the merged warehouse as complete
    again = ingest(cfg(out, tiny_llama_dir, facts), show_progress=False)
    assert again.state.complete

    with pytest.raises(WarehouseError, match="shard\\(s\\) 2/3 missing"):
        merge([parts[0], parts[2]], tmp_path / "x", show_progress=False)
    with pytest.raises(WarehouseError, match="not a shard"):
        merge([parts[0], single], tmp_path / "x", show_progress=False)
    with pytest.raises(WarehouseError, match="not empty"):
        merge(parts, out, show_progress=False)


def test_a_part_with_older_response_codecs_merges_to_the_single_run(
    tmp_path, tiny_llama_dir, facts, single, monkeypatch
):
    """A part whose responses are zstd (as earlier builds wrote them) is decoded and encoded
    again, not copied: the merge equals today's single run byte for byte."""
    from zarr.codecs import ZstdCodec

    from warehouse.store import arrays

    current = arrays.compressors
    parts = []
    for i in (1, 2, 3):
        with monkeypatch.context() as mp:
            if i == 1:  # (it starts at row 0: its shards align with the output's)
                mp.setattr(
                    arrays,
                    "compressors",
                    lambda spec: (
                        current(spec)
                        if spec.key.startswith("activations/")
                        else [ZstdCodec(level=-50, checksum=True)]
                    ),
                )
            part = tmp_path / f"p{i}"
            ingest(cfg(part, tiny_llama_dir, facts, shard=(i, 3)), show_progress=False)
        parts.append(part)
    meta = json.loads((parts[0] / "responses.zarr/ffn.act/mean/zarr.json").read_text())
    assert "zstd" in json.dumps(meta) and verify(parts[0]).ok
    out = tmp_path / "merged"
    merge(parts, out, show_progress=False)
    assert_same_bytes(single, out)
    assert verify(out).ok


def test_merge_relations_and_refusals(tmp_path, tiny_llama_dir, facts, single):
    a, b = tmp_path / "a", tmp_path / "b"
    ingest(cfg(a, tiny_llama_dir, facts, relations=["person_mother"]), show_progress=False)
    ingest(cfg(b, tiny_llama_dir, facts, relations=["country_capital"]), show_progress=False)
    out = tmp_path / "ab"
    m = merge([a, b], out, show_progress=False)
    assert verify(out).ok
    # the same prompts in the same order as one ingest of both relations; the files' key-value
    # metadata names the warehouse they belong to (the merge's own fingerprint)
    for t in ("prompts.parquet", "tokens.parquet"):
        assert pq.read_table(out / t).equals(pq.read_table(single / t))
        meta = pq.read_metadata(out / t).metadata[b"relation-warehouse.fingerprint"]
        assert meta.decode() == m.fingerprint
    assert m.dataset.relations == ["country_capital", "person_mother"]
    assert [x["source"] for x in m.merged_from] == [str(a), str(b)]
    # values: equal to the single run to float16 rounding (other batch neighbours)
    import zarr

    for key in ("responses.zarr/ffn.act/mean", "activations.zarr/ffn.down"):
        x = zarr.open_array(str(out / key), mode="r")[:]
        y = zarr.open_array(str(single / key), mode="r")[:]
        np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3)

    with pytest.raises(WarehouseError, match="prompt id\\(s\\) are in both"):
        merge([a, out], tmp_path / "x", show_progress=False)
    other = Path(shutil.copytree(a, tmp_path / "other"))
    for field, value, msg in (
        (("model", "weights_hash"), "sha256:0", "model.weights_hash differs"),
        (("capture", "dtype"), "float32", "capture.dtype differs"),
        (("capture", "sites"), ["ffn.act"], "capture.sites differs"),
        (("format_version",), 0, "format version 0"),
    ):
        m2 = manifest(a)
        if len(field) == 2:
            m2[field[0]][field[1]] = value
        else:
            m2[field[0]] = value
        # Another warehouse made that way, not an edited one: its fingerprint matches.
        m2["fingerprint"] = fingerprint_of(m2)
        (other / "manifest.json").write_text(json.dumps(m2))
        with pytest.raises(WarehouseError, match=msg):
            merge([b, other], tmp_path / "x", show_progress=False)
    with pytest.raises(WarehouseError, match="at least two"):
        merge([a], tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ eval shards


def _with_selection(src: Path, dest: Path) -> Path:
    w = Path(shutil.copytree(src, dest))
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats

    run_stats(w, site="ffn.act", split="all", show_progress=False)
    select(w, "cc", "country_capital", "all", "ffn.act", "mean", "all", top=6)
    return w


def test_eval_shards_equal_single_eval(tmp_path, single):
    ecfg = EvalConfig(selection="cc", controls=2, split="all", batch_size=2, top_counts=[2, 6])
    one = _with_selection(single, tmp_path / "one")
    shutil.rmtree(one / "evals", ignore_errors=True)
    path = run_eval(one, ecfg, show_progress=False)
    many = Path(shutil.copytree(one, tmp_path / "many"))
    shutil.rmtree(many / "evals")
    assert eval_shard(many, ecfg, (2, 3)) is None
    assert eval_shard(many, ecfg, (3, 3)) is None
    assert join_eval(many, ecfg, 3) is None  # shard 1 missing
    assert not (many / "evals" / "baseline.parquet").exists()
    got = eval_shard(many, ecfg, (1, 3))
    assert got == many / "evals" / path.name
    for name in ("baseline.parquet", path.name):
        assert (many / "evals" / name).read_bytes() == (one / "evals" / name).read_bytes()
    assert not (many / "evals" / "parts").exists()
    # a second sharded request reuses the baseline and the cached results: no parts to answer
    assert eval_shard(many, ecfg, (1, 2)) is None
    part = next((many / "evals" / "parts").rglob("*.parquet"))
    import pyarrow.parquet as pq

    assert pq.read_table(part).num_rows == 0
    assert eval_shard(many, ecfg, (2, 2)) == got


# ------------------------------------------------------------------------------ Ray


@pytest.fixture
def one_thread():
    """CPU float results depend on the BLAS thread count; Ray CPU tasks use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ray_two_workers_ingest_and_eval(tmp_path, tiny_llama_dir, facts, one_thread):
    ray = pytest.importorskip("ray")
    from warehouse.scale import sharded_eval, sharded_ingest

    ref = tmp_path / "ref"
    ingest(cfg(ref, tiny_llama_dir, facts), show_progress=False)
    ref = _with_selection(ref, tmp_path / "ref-sel")
    ecfg = EvalConfig(selection="cc", controls=1, split="all", batch_size=2)
    path = run_eval(ref, ecfg, show_progress=False)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        out = tmp_path / "rayed"
        m = sharded_ingest(
            cfg(out, tiny_llama_dir, facts), ray_address="local", show_progress=False
        )
        assert len(m.merged_from) == 2  # one shard per worker CPU
        assert_same_bytes(ref, out)
        assert not (tmp_path / ".rayed.parts").exists()
        for d in ("stats", "selections"):
            shutil.copytree(ref / d, out / d)
        got = sharded_eval(out, ecfg, ray_address="local", show_progress=False)
        for name in ("baseline.parquet", path.name):
            assert (out / "evals" / name).read_bytes() == (ref / "evals" / name).read_bytes()
        assert got.name == path.name
    finally:
        ray.shutdown()


def test_sharded_ingest_in_process(tmp_path, tiny_llama_dir, facts, single):
    """The runner `warehouse study` builds on, without Ray: shards one after another, merged."""
    from warehouse.scale import parts_folder, sharded_ingest

    out = tmp_path / "w"
    m = sharded_ingest(cfg(out, tiny_llama_dir, facts, capture="pooled"), 3, show_progress=False)
    assert [x["shard"] for x in m.merged_from] == ["1/3", "2/3", "3/3"]
    assert not parts_folder(out).exists()
    ref = tmp_path / "ref"
    ingest(cfg(ref, tiny_llama_dir, facts, capture="pooled"), show_progress=False)
    assert_same_bytes(ref, out)
    assert not (out / "activations.zarr").exists()
    # a second call finds the merged warehouse complete
    again = sharded_ingest(cfg(out, tiny_llama_dir, facts, capture="pooled"), 3)
    assert again.fingerprint == m.fingerprint
    with pytest.raises(WarehouseError, match="use at most"):
        sharded_ingest(cfg(tmp_path / "many", tiny_llama_dir, facts), 100, show_progress=False)
    assert not (tmp_path / "many").exists()
    with pytest.raises(WarehouseError, match="--shards must be at least 1"):
        sharded_ingest(cfg(tmp_path / "none", tiny_llama_dir, facts), 0)
