"""Fault injection: every kind of damage is reported by `verify` precisely (exit 1), and no
reader (SQL views, stats, eval, ingest resume) reads damaged data silently.

Also the disk-full path: an OSError in the writer thread stops an ingest with a one-line
message, leaves a warehouse that verify accepts up to its last committed batch, and the same
command then completes it to the bytes of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ingest_cfg, shard_chunks

from warehouse import cli
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.checksums import verify
from warehouse.store.errors import FormatError, WarehouseError

SUBJECTS = [f"Land{i}" for i in range(12)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    rows = []
    for i, s in enumerate(SUBJECTS):
        for rel, obj in (("capital", f"City{i}"), ("currency", f"Coin{i}")):
            rows.append(
                {
                    "relation": rel,
                    "language": "en",
                    "subject": s,
                    "object": obj,
                    "templates": [f"The {rel} of {{subject}} is", f"{{subject}}'s {rel}:"],
                }
            )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _cfg(out: Path, model: Path, data: Path) -> IngestConfig:
    return ingest_cfg(out, model, data, batch_size=4, token_chunk=16, prompt_chunk=8)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_llama_dir, dataset, module_cache) -> Path:
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats

    out = tmp_path_factory.mktemp("pristine") / "w"
    ingest(_cfg(out, tiny_llama_dir, dataset), show_progress=False)
    run_stats(out, split="all", show_progress=False)
    select(out, "cap", "capital", top=5)
    return out


@pytest.fixture
def w(pristine, tmp_path) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(pristine, dst)
    return dst


def _chunk(w: Path, array: str = "activations.zarr/ffn.act", key: str = "c/1/0/0") -> Path:
    return w / array / key


# Chunks per shard file of the fixture's arrays: 2 layers x 1 neuron block (48 units).
PER_SHARD = 2


def _index(data: bytes) -> np.ndarray:
    return np.frombuffer(data[-(16 * PER_SHARD + 4) : -4], dtype="<u8").reshape(PER_SHARD, 2)


def _chunk_at(path: Path, layer: int) -> int:
    """The middle byte of one layer's chunk inside a shard file."""
    offset, length = shard_chunks(path)[(layer, 0)]
    return offset + length // 2


def _mark_absent(path: Path, entry: int) -> None:
    """Rewrite a shard's index (and its crc32c) so that one chunk reads as absent."""
    data = bytearray(path.read_bytes())
    table = _index(bytes(data)).copy()
    table[entry] = np.iinfo(np.uint64).max
    index = table.tobytes()
    data[-(16 * PER_SHARD + 4) :] = index + google_crc32c.value(index).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x10
    path.write_bytes(bytes(data))


def _edit_manifest(w: Path, edit: Callable[[dict], None]) -> None:
    m = json.loads((w / "manifest.json").read_text())
    edit(m)
    (w / "manifest.json").write_text(json.dumps(m, indent=2))


def _cli_verify(capsys, w: Path) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["warehouse", "verify", str(w)]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().out


def _open(w: Path):
    from warehouse.api import Warehouse

    return Warehouse.open(w)


def _read_selection(w: Path, name: str):
    from warehouse.analysis.selections import read_selection

    return read_selection(w, name)


def _edit_stats_value(w: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = next((w / "stats").glob("*.parquet"))
    t = pq.read_table(path)
    ap = t.column("ap")
    pq.write_table(t.set_column(t.schema.get_field_index("ap"), "ap", pc.add(ap, 0.5)), path)


def _sql(w: Path, query: str):
    from warehouse.api import Warehouse

    return Warehouse.open(w).sql(query)


def _read_activations(w: Path):
    from warehouse.api import Warehouse

    return Warehouse.open(w).sql("select sum(value) as s from activations where layer = 0")


def _read_responses(w: Path):
    from warehouse.api import Warehouse

    return Warehouse.open(w).sql("select sum(value) as s from responses where pooling = 'mean'")


def _run_stats(w: Path):
    from warehouse.analysis.stats import run_stats

    return run_stats(w, split="all", show_progress=False, force=True)


def _edit_prompts_table(w: Path) -> None:
    """A valid Parquet file with one fact changed: only the checksum can tell."""
    t = pq.read_table(w / "prompts.parquet")
    objects = t.column("object").to_pylist()
    objects[0] = "Atlantis"
    t = t.set_column(t.schema.get_field_index("object"), "object", pa.array(objects))
    pq.write_table(t, w / "prompts.parquet")


def _write_stray(w: Path) -> None:
    (w / "responses.zarr" / "notes.txt").write_text("hello")


def _symlink_out(w: Path) -> None:
    (w / "evals").mkdir()
    (w / "evals" / "x.parquet").symlink_to(w.parent / "elsewhere.parquet")


# fault -> (inject, the problems verify must report (fragments, exactly these many), the
# reader that must fail, a fragment of the reader's error)
FAULTS: dict[str, tuple] = {
    "truncated_chunk": (
        lambda w: _chunk(w).write_bytes(_chunk(w).read_bytes()[:-7]),
        ["array activations/ffn.act: chunk activations.zarr/ffn.act/c/1/0/0 is corrupt"],
        _read_activations,
        "activations.zarr/ffn.act: a chunk of rows 0..",
    ),
    "flipped_byte_in_chunk": (
        lambda w: _flip(_chunk(w), _chunk_at(_chunk(w), layer=0)),
        ["array activations/ffn.act: chunk activations.zarr/ffn.act/c/1/0/0 is corrupt (layer 0"],
        _read_activations,
        "could not be read",
    ),
    "flipped_byte_in_response_chunk": (
        lambda w: _flip(
            _chunk(w, "responses.zarr/ffn.act/mean", "c/2/0/0"),
            _chunk_at(_chunk(w, "responses.zarr/ffn.act/mean", "c/2/0/0"), layer=1),
        ),
        [
            "array responses/ffn.act/mean: chunk responses.zarr/ffn.act/mean/c/2/0/0 is corrupt "
            "(layer 1"
        ],
        _run_stats,
        "responses.zarr/ffn.act/mean: layer index 1",
    ),
    "flipped_byte_in_shard_index": (
        lambda w: _flip(_chunk(w, "responses.zarr/ffn.act/mean", "c/1/0/0"), -10),
        [
            "array responses/ffn.act/mean: chunk responses.zarr/ffn.act/mean/c/1/0/0 is corrupt "
            "(ValueError: its index fails its crc32c)"
        ],
        _read_responses,
        "could not be read (Stored and computed checksum do not match",
    ),
    "chunk_absent_from_shard_index": (
        lambda w: _mark_absent(_chunk(w, "responses.zarr/ffn.act/mean", "c/0/0/0"), 1),
        [
            "array responses/ffn.act/mean: chunk responses.zarr/ffn.act/mean/c/0/0/0 is corrupt "
            "(ValueError: 1 of its 2 chunks are absent)"
        ],
        _read_responses,
        "its index marks chunks as absent",
    ),
    "missing_chunk": (
        lambda w: _chunk(w, "responses.zarr/ffn.act/mean", "c/0/0/0").unlink(),
        ["array responses/ffn.act/mean: chunk responses.zarr/ffn.act/mean/c/0/0/0 is missing"],
        _read_responses,
        "chunk file",
    ),
    "missing_chunk_read_by_stats": (
        lambda w: _chunk(w, "responses.zarr/ffn.act/mean", "c/1/0/0").unlink(),
        ["array responses/ffn.act/mean: chunk responses.zarr/ffn.act/mean/c/1/0/0 is missing"],
        _run_stats,
        "c/1/0/0 is missing",
    ),
    "missing_array_metadata": (
        lambda w: (w / "responses.zarr/ffn.act/mean/zarr.json").unlink(),
        ["array responses/ffn.act/mean: metadata responses.zarr/ffn.act/mean/zarr.json is missing"],
        lambda w: _open(w).sql("select max(value) from responses where pooling = 'max'"),
        "missing or unreadable",
    ),
    "missing_parquet_table": (
        lambda w: (w / "tokens.parquet").unlink(),
        ["table tokens: file tokens.parquet is missing"],
        _open,
        "tokens.parquet: table file is missing",
    ),
    "edited_parquet_table": (
        _edit_prompts_table,
        ["table prompts: prompts.parquet does not match its checksum"],
        _run_stats,
        "prompts.parquet does not match its checksum",
    ),
    "flipped_byte_in_parquet_table": (
        lambda w: _flip(w / "tokens.parquet"),
        ["table tokens: tokens.parquet does not match its checksum"],
        lambda w: _open(w).sql("select count(*) from tokens"),
        "tokens.parquet does not match its checksum",
    ),
    "manifest_shape_edited": (
        lambda w: _edit_manifest(
            w, lambda m: m["arrays"]["activations/ffn.act"].update(shape=[999, 2, 48])
        ),
        [
            "array activations/ffn.act: manifest shape [999, 2, 48] has 999 rows",
            "array activations/ffn.act: shape/chunks",
        ],
        _read_activations,
        "has shape",
    ),
    "manifest_dtype_edited": (
        lambda w: _edit_manifest(
            w, lambda m: m["arrays"]["responses/ffn.act/mean"].update(dtype="float32")
        ),
        [
            "array responses/ffn.act/mean: manifest dtype 'float32' differs from the capture",
            "array responses/ffn.act/mean: stores float16 (float16), the manifest says float32",
        ],
        _read_responses,
        "stores float16, manifest says float32",
    ),
    "manifest_array_checksum_edited": (
        lambda w: _edit_manifest(
            w, lambda m: m["arrays"]["responses/ffn.act/mean"].update(checksum="crc32c:0badf00d")
        ),
        ["array responses/ffn.act/mean: files do not match the manifest checksum"],
        None,
        None,
    ),
    "manifest_table_checksum_edited": (
        lambda w: _edit_manifest(
            w, lambda m: m["tables"]["prompts"].update(sha256="sha256:" + "1" * 64)
        ),
        ["table prompts: prompts.parquet does not match its checksum"],
        _read_responses,
        "prompts.parquet does not match its checksum",
    ),
    "manifest_model_edited": (
        lambda w: _edit_manifest(w, lambda m: m["model"].update(weights_hash="sha256:" + "2" * 64)),
        ["manifest.json: its model, dataset or capture fields do not match its fingerprint"],
        _read_responses,
        "fields were edited",
    ),
    "manifest_layers_edited": (
        lambda w: _edit_manifest(w, lambda m: m["capture"].update(layers=[1, 0])),
        [
            "manifest.json: its model, dataset or capture fields do not match its fingerprint",
            "array activations/ffn.act: manifest shape [",
            "array responses/ffn.act/mean: manifest shape [",
        ],
        _run_stats,
        "fields were edited",
    ),
    "stray_extra_file": (
        _write_stray,
        ["unexpected file: responses.zarr/notes.txt"],
        None,
        None,
    ),
    "leftover_temp_file": (
        lambda w: (w / "prompts.parquet.tmp-0123abcd").write_bytes(b"half"),
        ["leftover temp file: prompts.parquet.tmp-0123abcd"],
        None,
        None,
    ),
    "symlink_out": (
        _symlink_out,
        ["symbolic link evals/x.parquet -> "],
        _open,
        "leads outside the warehouse",
    ),
    "stats_table_missing": (
        lambda w: next((w / "stats").glob("*.parquet")).unlink(),
        ["stats/ffn.act__mean__all.json: its table ffn.act__mean__all.parquet is missing"],
        None,
        None,
    ),
    "selection_table_damaged": (
        lambda w: (w / "selections" / "cap.parquet").write_bytes(b"PAR1 not really PAR1"),
        ["selections/cap.parquet is not a readable Parquet file"],
        lambda w: _read_selection(w, "cap"),
        "selections/cap.parquet does not match the crc32c its sidecar records",
    ),
    "stats_value_edited": (  # still valid Parquet with as many rows: only its crc32c tells
        lambda w: _edit_stats_value(w),
        ["stats/ffn.act__mean__all.parquet does not match the crc32c its sidecar records"],
        lambda w: _sql(w, "select max(ap) from stats"),
        "stats/ffn.act__mean__all.parquet does not match the crc32c its sidecar records",
    ),
    "stats_sidecar_missing": (
        lambda w: next((w / "stats").glob("*.json")).unlink(),
        ["stats/ffn.act__mean__all.parquet has no sidecar ffn.act__mean__all.json"],
        lambda w: _sql(w, "select count(*) from stats"),
        "stats/ffn.act__mean__all.parquet has no sidecar ffn.act__mean__all.json",
    ),
    "stale_writer_lock": (
        lambda w: (w / ".lock").write_text(
            json.dumps(
                {
                    "pid": 2**22 + 12345,  # above pid_max: no such process
                    "host": socket.gethostname(),
                    "command": "ingest",
                    "started": "2026-01-01T00:00:00Z",
                }
            )
        ),
        ["stale writer lock .lock: `ingest` (pid 4206649) was killed"],
        None,
        None,
    ),
}


def test_pristine_verifies(pristine, capsys):
    report = verify(pristine)
    assert report.ok and not report.notes, report
    code, out = _cli_verify(capsys, pristine)
    assert code == 0 and "OK" in out


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_verify_reports_each_fault(fault, w, capsys):
    inject, expected, reader, read_error = FAULTS[fault]
    inject(w)
    report = verify(w)
    for fragment in expected:
        assert any(fragment in p for p in report.problems), (fragment, report.problems)
    assert len(report.problems) == len(expected), report.problems
    code, out = _cli_verify(capsys, w)
    assert code == 1
    assert out.count("PROBLEM ") == len(expected)
    if reader is not None:
        with pytest.raises(WarehouseError) as e:
            reader(w)
        assert read_error in str(e.value), str(e.value)


def test_fault_kinds_counted():
    assert len(FAULTS) >= 20


def test_missing_chunk_never_reads_as_zeros(w):
    """Plain zarr reads an absent chunk (a missing shard file, or one its shard's index marks
    absent) as the fill value, zeros; the warehouse's reader must refuse it, because every
    chunk is written, even an all-zero one."""
    from warehouse.store.arrays import MissingChunkError, open_array
    from warehouse.store.manifest import array_specs, load_manifest

    spec = array_specs(load_manifest(w))["activations/ffn.act"]
    rows = spec.chunks[0]
    (w / spec.path / "c/0/0/0").unlink()
    _mark_absent(w / spec.path / "c/1/0/0", 1)
    arr = open_array(w, spec)
    for sel in ((slice(0, rows), 1), (slice(rows, 2 * rows), 1), (slice(0, 2 * rows), 0)):
        with pytest.raises(MissingChunkError):
            arr[sel]
    assert arr[2 * rows : 3 * rows, 0, :].shape == (rows, 48)  # other shards still read


def test_resume_refuses_a_damaged_table(w, tiny_llama_dir, dataset):
    """A resumed ingest reads prompts/tokens back: an edited one stops it, nothing written."""
    _edit_manifest(w, lambda m: m["state"].update(status="ingesting"))
    _edit_prompts_table(w)
    with pytest.raises(FormatError, match="prompts.parquet does not match its checksum"):
        ingest(_cfg(w, tiny_llama_dir, dataset), show_progress=False)


# ------------------------------------------------------------------------ disk full


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.mark.parametrize("fail_at", [3, 11])
def test_disk_full_in_the_writer(fail_at, tmp_path, tiny_llama_dir, dataset, monkeypatch, capsys):
    """ENOSPC on the fail_at-th chunk write: a one-line error naming the cause, a warehouse
    that verify accepts up to the last committed batch, and a resume to identical bytes."""
    from warehouse.store.chunks import ChunkEncoder

    ref = tmp_path / "ref"
    ingest(_cfg(ref, tiny_llama_dir, dataset), show_progress=False)

    real_put = ChunkEncoder._put
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] >= fail_at:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_put(path, data)

    monkeypatch.setattr(ChunkEncoder, "_put", staticmethod(full_disk))
    out = tmp_path / "w"
    args = ["warehouse", "ingest", "--out", str(out), "--model", str(tiny_llama_dir)]
    args += ["--dataset", str(dataset), "--batch-size", "4", "--token-chunk", "16"]
    args += ["--prompt-chunk", "8", "--quiet"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: writing the warehouse failed: ")
    assert "No space left on device" in err and "re-run the same command to resume" in err
    assert not (out / ".lock").exists()  # the lock is released on the way out

    state = json.loads((out / "manifest.json").read_text())["state"]
    assert state["status"] == "ingesting"
    report = verify(out)
    assert report.ok, report.problems
    assert report.notes and report.notes[0].startswith("ingest not finished")

    monkeypatch.setattr(ChunkEncoder, "_put", staticmethod(real_put))
    ingest(_cfg(out, tiny_llama_dir, dataset), show_progress=False)
    assert _files(out) == _files(ref)
    assert verify(out).ok
