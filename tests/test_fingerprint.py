"""store/fingerprint.py: the warehouse fingerprint (pinned) and derived results' cache keys."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse.store.derived import checksum_field
from warehouse.store.fingerprint import (
    CacheKey,
    entry,
    entry_is_current,
    fingerprint,
    fingerprint_of,
    is_current,
    read_sidecar,
    result_fingerprint,
    short_id,
    write_sidecar,
)

MANIFEST = {
    "model": {"name": "tiny", "weights_hash": "sha256:00", "units": {"ffn.act": 64}},
    "dataset": {"name": "builtin", "hash": "sha256:11", "split": "all", "seed": 0},
    "capture": {
        "sites": ["ffn.act"],
        "layers": [0, 1],
        "mode": "pooled",
        "dtype": "float16",
        "batch_size": 32,
    },
}


def test_warehouse_fingerprint_is_pinned():
    """The values warehouses on disk record: a change here would make every existing
    warehouse's manifest fail its check (and change the bytes of a new one)."""
    assert fingerprint_of(MANIFEST) == (
        "sha256:d7bcbce25c0c8083bb29cd062ae0414a5ad5576f32c1a70b0542691ea4e63ffc"
    )
    shard = {**MANIFEST, "shard": {"index": 1, "count": 2, "plan": "sha256:ab", "prompts": [0, 5]}}
    assert fingerprint_of(shard) == (
        "sha256:14a13148bf63e5df50a5d638d95b2e1cfd50283bbf819e94165f92e2c7f6eba3"
    )
    # Other manifest fields (counts, tables, state, a shard's ranges) are not inputs.
    more = {**MANIFEST, "counts": {"prompts": 3}, "state": {"status": "complete"}}
    assert fingerprint_of(more) == fingerprint_of(MANIFEST)


def test_fingerprint_is_canonical_json():
    assert fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": [1, 2], "b": 1})
    assert fingerprint({"a": [1, 2]}) != fingerprint({"a": [2, 1]})
    assert fingerprint(None) == (
        "sha256:74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b"
    )
    assert short_id(fingerprint(None)) == "74234e98afe7"
    assert short_id(fingerprint(None), 16) == "74234e98afe7498f"


def test_cache_key_hashes_parent_step_and_options():
    key = CacheKey("sha256:aa", "stats", {"seed": 0})
    assert key.fingerprint == fingerprint(
        {"parent": "sha256:aa", "step": "stats", "options": {"seed": 0}}
    )
    changed = [
        CacheKey("sha256:ab", "stats", {"seed": 0}),
        CacheKey("sha256:aa", "baseline", {"seed": 0}),
        CacheKey("sha256:aa", "stats", {"seed": 1}),
        CacheKey("sha256:aa", "stats", {}),
    ]
    assert len({key.fingerprint, *(k.fingerprint for k in changed)}) == 5
    assert entry(key) == {"fingerprint": key.fingerprint, "key": key.to_json()}
    assert entry_is_current(entry(key), key)
    assert not entry_is_current(entry(changed[0]), key)
    assert not entry_is_current({"key": key.to_json()}, key)  # an entry without fingerprint
    assert not entry_is_current(None, key)


def test_sidecar_round_trip_and_currency(tmp_path):
    result = tmp_path / "r.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), result)
    key = CacheKey("sha256:aa", "stats", {"seed": 0})
    assert not is_current(result, key) and read_sidecar(result) is None
    write_sidecar(result, key, {"rows": 3, "checksum": "sha256:cc"})
    side = json.loads((tmp_path / "r.json").read_text())
    # a Parquet result's sidecar also records its crc32c, checked by every read
    assert side == {**entry(key), "rows": 3, "checksum": "sha256:cc", **checksum_field(result)}
    assert read_sidecar(result) == side and result_fingerprint(result) == key.fingerprint
    assert is_current(result, key)
    assert not is_current(result, CacheKey("sha256:aa", "stats", {"seed": 1}))
    # A sidecar whose row count the file does not have is not current.
    write_sidecar(result, key, {"rows": 4})
    assert not is_current(result, key)
    # A sidecar written before cache keys (no fingerprint) is stale.
    (tmp_path / "r.json").write_text(json.dumps({"options": {"seed": 0}, "rows": 3}))
    assert not is_current(result, key) and result_fingerprint(result) is None
    (tmp_path / "r.json").write_text("{not json")
    assert read_sidecar(result) is None and not is_current(result, key)
    write_sidecar(result, key)
    result.unlink()
    assert not is_current(result, key) and result_fingerprint(result) is None
    with pytest.raises(ValueError, match="fingerprint"):
        write_sidecar(result, key, {"fingerprint": "x"})


# --- which keys each input changes ---------------------------------------------------------
# One base set of inputs to every stage; each case changes one of them and names exactly the
# keys that must change: W warehouse, B baseline, S stats, SF stats with --filter-correct
# (derived from the baseline), E eval results, N the results file's name, P the study's plan
# (derived from SF), X perplexity. A key that changes when it should not recomputes for
# nothing; one that does not change when it should reuses a wrong result.
ALL = {"W", "B", "S", "SF", "E", "P", "X"}  # what a new warehouse fingerprint changes
ANSWERS = {"B", "SF", "E", "N", "P"}  # what new baseline answers change


def _inputs() -> dict:
    manifest = {
        "model": {"name": "tiny", "weights_hash": "sha256:00", "units": {"ffn.act": 64}},
        "dataset": {
            "name": "builtin",
            "hash": "sha256:11",
            "relations": None,
            "languages": None,
            "split": "all",
            "seed": 0,
            "max_prompts": None,
        },
        "capture": {
            "sites": ["ffn.act"],
            "layers": [0, 1],
            "mode": "pooled",
            "pooling": ["mean"],
            "dtype": "float16",
            "batch_size": 32,
            "model_dtype": "float32",
            "token_chunk": 1024,
        },
        "counts": {"prompts": 10},
        "state": {"status": "complete"},
        "tables": {},
    }
    return {
        "manifest": manifest,
        "eval": {"selection": "sel", "top_counts": [2, 6], "controls": 3, "relations": ["a"]},
        "selection": {"name": "sel", "sha256": "sha256:22"},
        "stats": {
            "site": "ffn.act",
            "pooling": "mean",
            "negatives": "ratio:4",
            "split": "identify",
            "seed": 0,
            "per_language": True,
        },
        "plan": {"top_k": 6, "sweep": [2, 6, 20], "language": "en"},
        "ppl": {"sentences": ["One.", "Two."], "seeds": [0, 1]},
    }


def _keys(inp: dict, tmp) -> dict[str, str]:
    import numpy as np
    import polars as pl

    from warehouse.analysis.evaluate import EvalConfig, baseline_key, results_path
    from warehouse.analysis.perplexity import perplexity_key
    from warehouse.analysis.selections import Selection
    from warehouse.analysis.stats import StatsOptions, stats_key
    from warehouse.store.manifest import Manifest
    from warehouse.study import selections_key

    sections = {**inp["manifest"]}
    manifest = Manifest(**sections, fingerprint=fingerprint_of(sections))
    cfg = EvalConfig(**inp["eval"])
    base = tmp / "evals" / "baseline.parquet"
    base.parent.mkdir(exist_ok=True)
    base.touch()
    b = baseline_key(manifest, cfg)
    write_sidecar(base, b)
    s = stats_key(manifest.fingerprint, StatsOptions(**inp["stats"], filter_correct=False))
    sf = stats_key(b.fingerprint, StatsOptions(**inp["stats"], filter_correct=True))
    stats_file = tmp / "stats.parquet"
    stats_file.touch()
    write_sidecar(stats_file, sf)
    meta = {"site": "ffn.act", "units": 64, "n_layers": 2, "weights_hash": "sha256:00", "size": 3}
    frame = pl.DataFrame({"neuron_id": np.arange(3, dtype=np.int64)})
    sel = Selection(inp["selection"]["name"], meta, frame, inp["selection"]["sha256"])
    path, e = results_path(tmp, sel, manifest, cfg, base)
    plan = inp["plan"]
    p = selections_key(stats_file, inp["stats"]["site"], inp["stats"]["negatives"], **plan)
    ppl = inp["ppl"]
    x = perplexity_key(
        manifest.fingerprint, ppl["sentences"], {"a": inp["selection"]["sha256"]}, ppl["seeds"]
    )
    fps = {"W": manifest.fingerprint, "B": b, "S": s, "SF": sf, "E": e, "P": p, "X": x}
    out = {k: v if isinstance(v, str) else v.fingerprint for k, v in fps.items()}
    return {**out, "N": path.name}


CASES = [
    ("manifest.model.name", "tiny-2", ALL),
    ("manifest.model.weights_hash", "sha256:01", ALL | {"N"}),
    ("manifest.model.units", {"ffn.act": 32}, ALL),
    ("manifest.dataset.hash", "sha256:12", ALL),
    ("manifest.dataset.relations", ["a"], ALL),
    ("manifest.dataset.languages", ["en"], ALL),
    ("manifest.dataset.split", "identify", ALL),
    ("manifest.dataset.seed", 1, ALL),
    ("manifest.dataset.max_prompts", 5, ALL),
    ("manifest.capture.sites", ["ffn.up"], ALL),
    ("manifest.capture.layers", [0], ALL),
    ("manifest.capture.mode", "tokens", ALL),
    ("manifest.capture.pooling", ["mean", "max"], ALL),
    ("manifest.capture.dtype", "bfloat16", ALL),
    ("manifest.capture.batch_size", 16, ALL),
    ("manifest.capture.model_dtype", "bfloat16", ALL | {"N"}),  # the eval's default dtype
    ("manifest.capture.token_chunk", 512, ALL),
    ("manifest.capture.prefix", "shared", ALL),  # shared prefixes: values not bit-identical
    ("manifest.shard", {"index": 1, "count": 2}, ALL),
    ("manifest.counts", {"prompts": 11}, set()),
    ("manifest.state", {"status": "ingesting"}, set()),
    ("manifest.tables", {"prompts": {"path": "prompts.parquet"}}, set()),
    ("eval.max_new_tokens", 3, ANSWERS),
    ("eval.match", "paper-prefix", ANSWERS),  # another scoring rule
    ("eval.model_dtype", "bfloat16", ANSWERS),
    ("eval.batch_size", 8, set()),
    ("eval.device", "cuda", set()),
    ("eval.model", "/copy/of/the/weights", set()),
    ("eval.force", True, set()),
    ("eval.baseline", True, set()),
    ("eval.top_counts", [2, 7], {"E", "N"}),
    ("eval.top_counts", [6, 2, 2], set()),  # sorted and unique
    ("eval.fractions", [0.5], {"E", "N"}),
    ("eval.controls", 4, {"E", "N"}),
    ("eval.seed", 1, {"E", "N"}),
    ("eval.relations", ["a", "b"], {"E", "N"}),
    ("eval.languages", ["en"], {"E", "N"}),
    ("eval.split", "all", {"E", "N"}),
    ("eval.templates", ["t1"], {"E", "N"}),
    ("eval.sample", 40, {"E", "N"}),
    ("selection.sha256", "sha256:23", {"E", "N", "X"}),
    ("selection.name", "other", {"E", "N"}),
    ("stats.site", "ffn.up", {"S", "SF", "P"}),
    ("stats.pooling", "max", {"S", "SF", "P"}),
    ("stats.negatives", "all", {"S", "SF", "P"}),
    ("stats.split", "all", {"S", "SF", "P"}),
    ("stats.seed", 1, {"S", "SF", "P"}),
    ("stats.per_language", False, {"S", "SF", "P"}),
    ("stats.templates", ["t1"], {"S", "SF", "P"}),
    ("stats.tie_break", "auroc desc", {"S", "SF", "P"}),
    ("plan.top_k", 7, {"P"}),
    ("plan.sweep", [2, 6], {"P"}),
    ("plan.language", "de", {"P"}),
    ("ppl.sentences", ["One.", "Three."], {"X"}),
    ("ppl.seeds", [0, 1, 2], {"X"}),
]


@pytest.mark.parametrize(("where", "value", "changed"), CASES, ids=[c[0] for c in CASES])
def test_each_input_changes_exactly_its_keys(where, value, changed, tmp_path):
    import copy

    base = _keys(_inputs(), tmp_path)
    inp = copy.deepcopy(_inputs())
    *path, last = where.split(".")
    holder = inp
    for part in path:
        holder = holder[part]
    holder[last] = value
    got = _keys(inp, tmp_path)
    assert {k for k in base if got[k] != base[k]} == changed


def test_the_base_inputs_give_distinct_keys(tmp_path):
    keys = _keys(_inputs(), tmp_path)
    assert len(set(keys.values())) == len(keys) and keys == _keys(_inputs(), tmp_path)
