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
from warehouse.store.sections import Capture, Counts, DatasetInfo, ModelInfo, State

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
    m.model.name = "edited"  # the sections are what the fingerprint was taken of
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


# An older warehouse's sections: keys this tool no longer writes (`padding_side`), one it
# never knew, and keys absent that a new ingest writes (`source`, `relations`, `finished`).
OLD_SECTIONS = {
    "model": {"name": "tiny", "weights_hash": "sha256:00", "units": {"ffn.act": 4}, "x": [1]},
    "dataset": {"name": "builtin", "hash": "sha256:11", "languages": None, "seed": 0},
    "capture": {"sites": ["ffn.act"], "layers": [0], "mode": "tokens", "padding_side": "left"},
    "counts": {"prompts": 3, "tokens": 12, "by_relation": {"r": 3}},
    "state": {"status": "ingesting", "prompts_committed": 2},
}


def test_sections_with_unknown_and_absent_keys_round_trip_byte_for_byte(tmp_path: Path):
    raw = {**GOLDEN, **OLD_SECTIONS}
    raw["fingerprint"] = fingerprint_of(raw)
    text = json.dumps(raw, indent=2, sort_keys=True) + "\n"
    (tmp_path / "manifest.json").write_text(text)
    m = Manifest.load(tmp_path, check_paths=False)
    assert (m.model.extra, m.capture.extra, m.counts.extra) == (
        {"x": [1]},
        {"padding_side": "left"},
        {"by_relation": {"r": 3}},
    )
    # absent keys read as their defaults, and are not written back
    assert (m.model.source, m.dataset.relations, m.dataset.languages, m.state.finished) == (
        None,
        None,
        None,
        None,
    )
    assert (m.state.tokens_committed, m.capture.per_token, m.complete) == (0, True, False)
    assert {k: getattr(m, k).to_json() for k in OLD_SECTIONS} == OLD_SECTIONS
    assert m.computed_fingerprint() == m.fingerprint == raw["fingerprint"]
    m.save(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == text


def test_state_helpers_write_the_state_a_dict_did():
    s = State.new()
    assert s.to_json() == {"status": "ingesting", "prompts_committed": 0, "tokens_committed": 0}
    s.commit(tokens=40, prompts=6)
    assert (s.committed("tokens"), s.committed("prompts")) == (40, 6)
    assert (s.rows_on_disk("activations/ffn.act", 50), s.rows_on_disk("responses/a/b", 5)) == (
        40,
        5,
    )
    with pytest.raises(ValueError, match="not 'rows'"):
        s.committed("rows")
    s.mark_complete("2026-01-01T00:00:00Z")
    assert s.to_json() == {
        "status": "complete",
        "prompts_committed": 6,
        "tokens_committed": 40,
        "finished": "2026-01-01T00:00:00Z",
    }
    assert s.complete and s.rows_on_disk("activations/ffn.act", 50) == 50


def test_a_section_is_made_of_a_dict_or_itself_and_copies_keep_absent_keys():
    cap = Capture.of(OLD_SECTIONS["capture"])
    assert Capture.of(cap) is cap and cap == Capture.from_json(dict(OLD_SECTIONS["capture"]))
    pooled = cap.updated(mode="pooled")
    assert pooled.to_json() == {**OLD_SECTIONS["capture"], "mode": "pooled"}
    assert (cap.mode, pooled.per_token, pooled.has("dtype"), pooled.has("mode")) == (
        "tokens",
        False,
        False,
        True,
    )
    with pytest.raises(TypeError, match="no key"):
        cap.updated(padding_side="right")
    # a null written is not an absent key
    assert DatasetInfo(relations=None).to_json() == {"relations": None} != DatasetInfo().to_json()
    m = new_manifest(**SECTIONS, fingerprint="", counts=Counts(prompts=1, tokens=2))
    assert isinstance(m.model, ModelInfo) and m.to_json()["counts"] == {"prompts": 1, "tokens": 2}
