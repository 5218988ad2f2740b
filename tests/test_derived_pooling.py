"""Derived poolings: a per-token warehouse stores `mean` and derives `max` and `last` from its
per-token rows, bit for bit what the capturer computes (and what older warehouses store)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ingest_cfg

from warehouse.analysis.stats import run_stats
from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store import derived_pooling
from warehouse.store.arrays import open_array
from warehouse.store.checksums import verify
from warehouse.store.derived_pooling import pool_max, readable_specs
from warehouse.store.export import ExportOptions, export
from warehouse.store.format import DERIVED_POOLING_RULES
from warehouse.store.manifest import load_manifest
from warehouse.store.merge import merge

FACTS = [
    ("capital", "en", "Peru", "Lima", ["The capital of {subject} is", "{subject}'s capital:"]),
    ("capital", "en", "Chile", "Santiago", ["The capital of {subject} is"]),
    ("capital", "de", "Kenia", "Nairobi", ["Die Hauptstadt von {subject} ist"]),
    ("coin", "en", "Peru", "sol", ["{subject} pays in", "The money of {subject} is the"]),
    ("coin", "en", "Japan", "yen", ["{subject} pays in"]),
    ("coin", "de", "Japan", "Yen", ["In {subject} zahlt man mit"]),
]
POOLS = ("mean", "max", "last")


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    rows = [
        dict(relation=r, language=lg, subject=s, object=o, templates=t) for r, lg, s, o, t in FACTS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(out: Path, model: Path, data: Path, **kw) -> IngestConfig:
    return ingest_cfg(out, model, data, **{"sites": "ffn.act,ffn.down", **kw})


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def pair(request, tmp_path_factory, tiny_llama_dir, facts, module_cache) -> tuple[Path, Path]:
    """(new, old): the same ingest with max/last derived, and stored as builds before did."""
    tmp = tmp_path_factory.mktemp(f"pair-{request.param}")
    new, old = tmp / "new", tmp / "old"
    ingest(_cfg(new, tiny_llama_dir, facts, dtype=request.param), show_progress=False)
    ingest(
        _cfg(old, tiny_llama_dir, facts, dtype=request.param, derive_pooling=False),
        show_progress=False,
    )
    return new, old


def _read(w: Path, key: str, sel=slice(None)) -> np.ndarray:
    return np.asarray(open_array(w, readable_specs(load_manifest(w))[key])[sel])


def test_new_warehouses_store_mean_and_name_the_derived(pair):
    new, old = pair
    m, o = load_manifest(new), load_manifest(old)
    assert sorted(m.arrays) == [
        "activations/ffn.act",
        "activations/ffn.down",
        "responses/ffn.act/mean",
        "responses/ffn.down/mean",
    ]
    assert m.capture.derived_pooling == {
        "max": "max(activations[token_offset : token_offset + n_tokens])",
        "last": "activations[token_offset + n_tokens - 1]",
    }
    assert m.capture.pooling == list(POOLS) == o.capture.pooling
    assert not o.capture.has("derived_pooling")
    assert sorted(o.arrays) == sorted(readable_specs(m))
    assert not (new / "responses.zarr/ffn.act/max").exists()
    assert verify(new).ok and verify(old).ok


def test_derived_equal_what_the_capturer_stored(pair, monkeypatch):
    """Bit for bit, whole arrays and orthogonal selections, in blocks of any size."""
    new, old = pair
    for site in ("ffn.act", "ffn.down"):
        for pool in ("max", "last"):
            key = f"responses/{site}/{pool}"
            want = _read(old, key)
            assert _read(new, key).tobytes() == want.tobytes()
            rows = np.array([7, 0, 3, 3, 5])
            sel = (rows, 1, np.array([5, 2, 30]))
            assert _read(new, key, sel).tobytes() == want[rows][:, 1][:, [5, 2, 30]].tobytes()
            assert _read(new, key, (slice(2, 9), slice(None), 4)).tobytes() == (
                want[2:9, :, 4].tobytes()
            )
    monkeypatch.setattr(derived_pooling, "BLOCK_VALUES", 1)  # one prompt per read
    assert _read(new, "responses/ffn.act/max").tobytes() == (
        _read(old, "responses/ffn.act/max").tobytes()
    )


def test_api_sql_and_stats_equal_a_warehouse_that_stores_them(pair, tmp_path):
    new, old = pair
    a, b = tmp_path / "new", tmp_path / "old"
    shutil.copytree(new, a)
    shutil.copytree(old, b)
    wa, wb = Warehouse.open(a), Warehouse.open(b)
    for pool in ("max", "last"):
        x = wa.array("ffn.act", pooling=pool, layer=1, prompts="relation = 'coin'")
        y = wb.array("ffn.act", pooling=pool, layer=1, prompts="relation = 'coin'")
        assert x.equals(y) and x.shape == (4, 48)  # coin's prompts, ffn.act's units
    q = "select prompt_id, pooling, neuron_id, value from responses where neuron < 9 order by all"
    assert (
        wa.sql(q).equals(wb.sql(q)) and wa.sql(q).height == 8 * 3 * 2 * 2 * 9
    )  # prompts, poolings, sites, layers, units
    for pool in ("max", "last"):
        opts = dict(site="ffn.act", pooling=pool, split="all", show_progress=False)
        ta = pq.read_table(run_stats(a, **opts)[0])
        tb = pq.read_table(run_stats(b, **opts)[0])
        assert ta.num_rows == tb.num_rows > 0
        assert pl.from_arrow(ta).equals(pl.from_arrow(tb))


def test_pool_max_is_the_rounded_float32_max():
    """What the capturer does (float32 max, then rounded) equals the max of the rounded
    values: signed zeros from tiny values, infinities, overflow and NaN included."""
    x = torch.tensor(
        [
            [-1e-9, 1e-9, 3.0, -2.0, 70000.0, float("nan"), -float("inf"), 1.0],
            [-2e-9, -1e-9, 2.9999, -1.0, 1.0, 1.0, -5.0, float("nan")],
            [-3e-9, 0.0, 3.0001, -3.0, -1.0, 2.0, -6.0, 1.0],
        ],
        dtype=torch.float32,
    )
    x = torch.cat([x, x.flip(0)])  # two prompts of three tokens, in both orders
    for dtype, torch_dtype, view in (
        ("float16", torch.float16, torch.int16),
        ("bfloat16", torch.bfloat16, torch.int16),
        ("float32", torch.float32, torch.int32),
    ):
        want = torch.stack([x[:3].amax(0), x[3:].amax(0)]).to(torch_dtype).view(view).numpy()
        stored = x.to(torch_dtype).view(view).numpy().view(f"uint{8 * want.itemsize}")
        got = pool_max(stored, np.array([0, 3]), dtype)
        assert got.view(want.dtype).tolist() == want.tolist(), dtype


def test_pooled_only_and_old_warehouses_store_all_three(tmp_path, tiny_llama_dir, facts, pair):
    pooled = tmp_path / "pooled"
    new, _ = pair
    dtype = load_manifest(new).capture.dtype
    m = ingest(_cfg(pooled, tiny_llama_dir, facts, capture="pooled", dtype=dtype), False)
    assert sorted(m.arrays) == [
        f"responses/{s}/{p}" for s in ("ffn.act", "ffn.down") for p in sorted(POOLS)
    ]
    assert not m.capture.has("derived_pooling")
    # The pooled capture computes max and last in the same batches: the derived ones equal it.
    for pool in ("max", "last"):
        key = f"responses/ffn.down/{pool}"
        assert _read(new, key).tobytes() == _read(pooled, key).tobytes()


def test_an_old_warehouse_resumes_with_its_plan(tmp_path, tiny_llama_dir, facts, pair, monkeypatch):
    """A warehouse begun by a build that stored every pooling finishes the same way."""
    from warehouse.ingest import capture as capture_mod

    _, old = pair
    dtype = load_manifest(old).capture.dtype
    out = tmp_path / "w"
    real_run, calls = capture_mod.Capturer.run, {"n": 0}

    def dying_run(self, ids, counts=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_run(self, ids, counts)

    monkeypatch.setattr(capture_mod.Capturer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        ingest(_cfg(out, tiny_llama_dir, facts, dtype=dtype, derive_pooling=False), False)
    monkeypatch.setattr(capture_mod.Capturer, "run", real_run)
    m = ingest(_cfg(out, tiny_llama_dir, facts, dtype=dtype), show_progress=False)  # today's
    assert m.complete and sorted(m.arrays) == sorted(load_manifest(old).arrays)
    assert not m.capture.has("derived_pooling")
    for pool in ("max", "last"):
        key = f"responses/ffn.act/{pool}"
        assert _read(out, key).tobytes() == _read(old, key).tobytes()


def test_every_pooling_derived(tmp_path, tiny_llama_dir, facts, pair):
    """No response array stored at all: prompts are committed with their tokens."""
    new, _ = pair
    out = tmp_path / "w"
    dtype = load_manifest(new).capture.dtype
    m = ingest(_cfg(out, tiny_llama_dir, facts, dtype=dtype, pooling=["max", "last"]), False)
    assert sorted(m.arrays) == ["activations/ffn.act", "activations/ffn.down"]
    assert m.state.prompts_committed == m.counts.prompts == 8
    assert _read(out, "responses/ffn.act/max").tobytes() == (
        _read(new, "responses/ffn.act/max").tobytes()
    )
    assert verify(out).ok


def test_verify_checks_the_derivation(pair, tmp_path):
    new, _ = pair
    w = tmp_path / "w"
    shutil.copytree(new, w)
    stray = w / "responses.zarr/ffn.act/max/zarr.json"
    stray.parent.mkdir()
    stray.write_text("{}")
    m = json.loads((w / "manifest.json").read_text())
    m["capture"]["derived_pooling"]["max"] = "min(activations)"
    (w / "manifest.json").write_text(json.dumps(m))
    problems = verify(w).problems
    assert "unexpected file: responses.zarr/ffn.act/max/zarr.json" in problems
    assert any(
        "'max' by rule 'min(activations)' is not one this tool derives" in p for p in problems
    )


def test_merge_and_export(pair, tmp_path, tiny_llama_dir, facts):
    new, _ = pair
    dtype = load_manifest(new).capture.dtype
    parts = []
    for i in (1, 2):
        parts.append(tmp_path / f"part{i}")
        ingest(_cfg(parts[-1], tiny_llama_dir, facts, dtype=dtype, shard=(i, 2)), False)
    merged = merge(parts, tmp_path / "merged", show_progress=False)
    assert merged.capture.derived_pooling == DERIVED_POOLING_RULES
    assert sorted(merged.arrays) == sorted(load_manifest(new).arrays)
    assert _read(tmp_path / "merged", "responses/ffn.act/max").tobytes() == (
        _read(new, "responses/ffn.act/max").tobytes()
    )
    out = export(new, tmp_path / "share.zip", ExportOptions(zip=True), show_progress=False)
    assert out.capture.derived_pooling == DERIVED_POOLING_RULES
    z, w = Warehouse.open(tmp_path / "share.zip"), Warehouse.open(new)
    assert z.array("ffn.down", pooling="last").equals(w.array("ffn.down", pooling="last"))
    assert verify(tmp_path / "share.zip").ok


def test_a_pooled_only_export_stores_the_derived(pair, tmp_path, tiny_llama_dir, facts):
    """Without the per-token rows, the copy stores max and last as an older build did; with
    every pooling derived, their coordinate arrays and groups too."""
    new, old = pair
    opts = ExportOptions(pooled_only=True, sites=["ffn.down"])
    a = export(new, tmp_path / "a", opts, show_progress=False)
    b = export(old, tmp_path / "b", opts, show_progress=False)
    assert (
        sorted(a.arrays) == sorted(b.arrays) == [f"responses/ffn.down/{p}" for p in sorted(POOLS)]
    )
    assert a.capture.to_json() == b.capture.to_json() and a.capture.mode == "pooled"
    assert verify(tmp_path / "a").ok
    for pool in POOLS:
        key = f"responses/ffn.down/{pool}"
        assert _read(tmp_path / "a", key).tobytes() == _read(old, key).tobytes()
    dtype = load_manifest(new).capture.dtype
    only = tmp_path / "only"
    ingest(_cfg(only, tiny_llama_dir, facts, dtype=dtype, pooling=["last"]), False)
    export(only, tmp_path / "c.zip", ExportOptions(pooled_only=True, zip=True), False)
    assert verify(tmp_path / "c.zip").ok
    z = Warehouse.open(tmp_path / "c.zip")
    assert z.array("ffn.act", pooling="last").equals(
        Warehouse.open(old).array("ffn.act", pooling="last")
    )


def test_info_lists_the_derived_arrays(pair, capsys):
    from conftest import run_cli

    new, _ = pair
    code, out, _ = run_cli(capsys, "info", str(new))
    derived = [x for x in out.splitlines() if "derived from" in x]
    assert code == 0 and derived == [
        f"array       responses/{site}/{pool} [8, 2, {units}] derived from activations/{site}"
        for site, units in (("ffn.act", 48), ("ffn.down", 32))
        for pool in ("max", "last")
    ]
