"""store/fingerprint.py: the warehouse fingerprint (pinned) and derived results' cache keys."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
    assert side == {**entry(key), "rows": 3, "checksum": "sha256:cc"}
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
