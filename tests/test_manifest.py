"""The typed Manifest: it reads every field of manifest.json and writes the same bytes back
(those of the dict writer before it, `json.dumps(indent=2, sort_keys=True)` and a newline),
keeps fields it does not know, and validates what it loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from warehouse.errors import FormatError
from warehouse.store.fingerprint import fingerprint_of
from warehouse.store.manifest import Manifest, new_manifest

SECTIONS = {
    "model": {"name": "tiny", "weights_hash": "sha256:00", "n_layers": 2, "units": {"ffn.act": 4}},
    "dataset": {"name": "builtin", "hash": "sha256:11", "split": "all", "seed": 0},
    "capture": {"sites": ["ffn.act"], "layers": [0, 1], "mode": "pooled", "dtype": "float16"},
}
# Every field a manifest may hold (docs/format.md), and one this tool does not know.
GOLDEN = {
    "format": "relation-warehouse",
    "format_version": 3,
    "tool_version": "0.1.0",
    **SECTIONS,
    "fingerprint": "",
    "counts": {"prompts": 3, "tokens": 12},
    "tables": {"prompts": {"path": "prompts.parquet", "rows": 3, "sha256": "sha256:22"}},
    "arrays": {
        "responses/ffn.act/mean": {
            "path": "responses.zarr/ffn.act/mean",
            "shape": [3, 2, 4],
            "chunks": [256, 1, 4],
            "shards": [256, 2, 4],
            "dtype": "float16",
            "layers": [0, 1],
            "checksum": "crc32c:0badf00d",
        }
    },
    "state": {"status": "complete", "prompts_committed": 3, "tokens_committed": 0},
    "shard": {"index": 1, "count": 2, "plan": "sha256:33", "prompts": [0, 3], "tokens": [0, 12]},
    "files": {"stats/s.parquet": "sha256:44"},
    "export": {"source": "W", "sites": ["ffn.act"], "pooled_only": True, "tables": ["prompts"]},
    "nonfinite": {"responses/ffn.act/mean": {"layers": {}, "neurons": {}, "truncated": False}},
    "coords": {"responses.zarr/ffn.act/layer": "crc32c:00000000"},
    "merged_from": [{"source": "a", "fingerprint": "sha256:55", "prompts": 3}],
    "a_field_of_a_newer_tool": {"kept": [1, 2]},
}
GOLDEN["fingerprint"] = fingerprint_of(GOLDEN)
GOLDEN_TEXT = json.dumps(GOLDEN, indent=2, sort_keys=True) + "\n"


def test_the_golden_manifest_is_pinned():
    """The bytes below are what the dict writer wrote for GOLDEN; a change of the fields or
    their serialization changes this digest."""
    digest = hashlib.sha256(GOLDEN_TEXT.encode()).hexdigest()
    assert digest == "3774b120c6671a678a15d5ae4b32cbec82e9105b2c9e2f55084c332ce8570b89"


def test_load_then_save_writes_the_same_bytes(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(GOLDEN_TEXT)
    m = Manifest.load(tmp_path, check_paths=False)
    assert (m.shard["index"], m.files, m.extra) == (
        1,
        GOLDEN["files"],
        {"a_field_of_a_newer_tool": {"kept": [1, 2]}},
    )
    assert m.complete and m.computed_fingerprint() == m.fingerprint == GOLDEN["fingerprint"]
    out = tmp_path / "again"
    out.mkdir()
    m.save(out)
    assert (out / "manifest.json").read_text() == GOLDEN_TEXT
    assert m.to_json() == GOLDEN
    m.model["name"] = "edited"  # the sections are what the fingerprint was taken of
    with pytest.raises(FormatError, match="were edited"):
        m.validate(out, check_paths=False)


def test_a_new_manifest_has_the_fields_of_a_new_warehouse():
    m = new_manifest(**SECTIONS, fingerprint="sha256:66", counts={"prompts": 3, "tokens": 12})
    assert m.to_json() == {
        "format": "relation-warehouse",
        "format_version": 3,
        "tool_version": "0.1.0",
        **SECTIONS,
        "fingerprint": "sha256:66",
        "counts": {"prompts": 3, "tokens": 12},
        "tables": {},
        "arrays": {},
        "state": {"status": "ingesting", "prompts_committed": 0, "tokens_committed": 0},
    }
    assert not m.complete and m.nonfinite is None and m.array_specs() == {}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format_version=2), "format version 2 is an older format"),
        (lambda m: m.update(format_version=4), "format version 4 is newer than this tool reads"),
        (lambda m: m.update(format="other"), "not a relation-warehouse manifest"),
        (lambda m: m.pop("state"), "field 'state' is missing or not an object"),
        (lambda m: m["model"].update(name="edited"), "were edited"),
    ],
)
def test_validate_refuses(tmp_path: Path, edit, message: str):
    m = json.loads(GOLDEN_TEXT)
    edit(m)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match=message):
        Manifest.load(tmp_path, check_paths=False)
