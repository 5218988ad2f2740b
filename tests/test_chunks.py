"""The writer's own chunk encoding must give exactly the files zarr writes for the same data."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

from warehouse.store.arrays import ArraySpec, compressors, create_array
from warehouse.store.chunks import ChunkEncoder


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def _pair(tmp_path: Path, shape, chunks, dtype, compressors, shards):
    out = []
    for name in ("by_zarr", "by_encoder"):
        out.append(
            zarr.create_array(
                store=str(tmp_path / name),
                shape=shape,
                chunks=chunks,
                shards=shards,
                dtype=dtype,
                serializer=BytesCodec(),
                compressors=compressors,
                fill_value=0,
                zarr_format=3,
                config={"write_empty_chunks": True},
            )
        )
    return out


CODECS = {  # what this tool writes now (blosc then crc32c), and by earlier builds (zstd, crc32c)
    # blosc's typesize left to zarr: the stored values' width, as create_array sets it
    "blosc-zstd1-shuffle-crc32c": [
        BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        Crc32cCodec(),
    ],
    "blosc-lz4-bitshuffle-typesize2": [BloscCodec(cname="lz4", shuffle="bitshuffle", typesize=2)],
    "zstd-1": [ZstdCodec(level=-1, checksum=True)],
    "zstd-10": [ZstdCodec(level=-10, checksum=True)],
    "zstd1": [ZstdCodec(level=1, checksum=True)],
    "zstd3-nochecksum": [ZstdCodec(level=3, checksum=False)],
    "crc32c": [Crc32cCodec()],
    "crc32c-zstd": [Crc32cCodec(), ZstdCodec(level=-10)],  # a step after crc32c's two parts
}


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "uint16"])
@pytest.mark.parametrize("neurons", [100, 96], ids=["edge-block", "whole-blocks"])
def test_chunk_files_equal_zarrs(
    tmp_path: Path, codec: str, dtype: str, threads: int, neurons: int
) -> None:
    # 70 rows in chunks of 32 (a short last chunk row), 100 neurons in blocks of 48 (an
    # edge block) or 96 (none): every padded case zarr handles. Shards hold a row of chunks:
    # all 3 layers, the neurons rounded up to whole blocks; layer 1 is all zeros, a chunk
    # written all the same.
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((70, 3, neurons)) * 4).astype(dtype)
    data[5:9] = data[0]  # repeated rows, as shared prompt prefixes give
    data[:, 1] = 0
    shards = (32, 3, -(-neurons // 48) * 48)
    by_zarr, by_encoder = _pair(tmp_path, data.shape, (32, 1, 48), dtype, CODECS[codec], shards)
    by_zarr[:] = data
    enc = ChunkEncoder.for_array(by_encoder, tmp_path / "by_encoder")
    assert enc is not None
    with ThreadPoolExecutor(threads) as pool:
        for i, s in enumerate(range(0, 70, 32)):
            enc.write_rows(i, data[s : s + 32], pool if threads > 1 else None)
    assert _files(tmp_path / "by_encoder") == _files(tmp_path / "by_zarr")
    assert enc.bytes_written == sum(len(b) for b in _files(tmp_path / "by_zarr").values())
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "by_encoder"))[:], data)


def test_rows_of_chunks_do_not_rely_on_zeroed_memory(tmp_path: Path, monkeypatch) -> None:
    """new_blocks leaves rows to its caller and fills only what lies past an edge: with fresh
    memory full of garbage, the files are still zarr's (an edge block and a short last row of
    chunks, in a writer's ChunkBuffer and in write_rows alike)."""
    import types

    from warehouse.store import chunks as chunks_module
    from warehouse.store.writer import ChunkBuffer

    garbage = types.SimpleNamespace(
        **{k: getattr(np, k) for k in dir(np) if not k.startswith("__")}
    )
    garbage.empty = lambda shape, dtype=float: np.full(shape, 7, dtype=dtype)
    monkeypatch.setattr(chunks_module, "np", garbage)
    rng = np.random.default_rng(1)
    data = rng.standard_normal((70, 3, 100)).astype("float16")
    spec = ArraySpec(  # what create_array writes: compressors(spec)
        "activations/x", "w.zarr/x", data.shape, (32, 1, 48), "float16", (0, 1, 2), (32, 3, 144)
    )
    by_zarr, by_encoder = _pair(
        tmp_path, data.shape, (32, 1, 48), "float16", compressors(spec), (32, 3, 144)
    )
    by_zarr[:] = data
    enc = ChunkEncoder.for_array(by_encoder, tmp_path / "by_encoder")
    for i, s in enumerate(range(0, 70, 32)):
        enc.write_rows(i, data[s : s + 32])
    assert _files(tmp_path / "by_encoder") == _files(tmp_path / "by_zarr")

    create_array(tmp_path, spec)
    buffer = ChunkBuffer(tmp_path, spec, 0)
    for s in range(0, 70, 9):
        buffer.add(s, data[s : s + 9])
    buffer.finish()
    assert _files(tmp_path / spec.path) == _files(tmp_path / "by_zarr")


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("extent", [(3, 96), (3, 100), (2, 3, 10)])
def test_put_rows_holds_each_chunk_contiguously(extent: tuple[int, ...], threads: int) -> None:
    """A row of chunks gathered a few rows at a time, as the writer does: block `idx` is
    exactly the chunk zarr would cut there (fill value past the edge), whole blocks (one
    strided copy, or one per chunk along the first dimension on a pool) and edge blocks (a
    copy per chunk) alike."""
    from warehouse.store.chunks import blocks_shape, put_rows

    chunks = (16, 1, 48) if len(extent) == 2 else (16, 2, 2, 4)
    rows = np.random.default_rng(2).standard_normal((16, *extent)).astype("float32")
    blocks = np.full(blocks_shape(extent, chunks), -7.0, dtype="float32")
    with ThreadPoolExecutor(threads or 1) as pool:
        for at, n in [(0, 5), (5, 1), (6, 10)]:
            put_rows(blocks, at, rows[at : at + n], pool if threads else None)
    grid = [-(-e // c) for e, c in zip(extent, chunks[1:], strict=True)]
    assert blocks.shape == (*grid, *chunks)
    whole = (g * c for g, c in zip(grid, chunks[1:], strict=True))
    big = np.full((16, *whole), -7.0, dtype="float32")
    big[(slice(None), *(slice(0, e) for e in extent))] = rows
    for idx in np.ndindex(*blocks.shape[: len(extent)]):
        sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks[1:], strict=True))
        np.testing.assert_array_equal(blocks[idx], big[(slice(None), *sel)], err_msg=str(idx))
        assert blocks[idx].flags.c_contiguous


def test_warehouse_arrays_are_encoded_directly(tmp_path: Path) -> None:
    from warehouse.store.arrays import activation_spec, response_spec

    spec = ArraySpec(
        "activations/x", "a.zarr/x", (10, 2, 8), (4, 1, 8), "bfloat16", (0, 1), (4, 2, 8)
    )
    arr = create_array(tmp_path, spec)
    assert ChunkEncoder.for_array(arr, tmp_path / spec.path) is not None
    # what ingest creates now: a shard per row of chunks, every layer, neurons rounded up
    for spec in (
        activation_spec("ffn.act", 3000, [0, 5, 9], 1536, "float16"),
        response_spec("ffn.act", "mean", 700, [0, 5, 9], 1100, "float16"),
    ):
        assert spec.shards == (spec.chunks[0], 3, -(-spec.shape[2] // 512) * 512)
        enc = ChunkEncoder.for_array(create_array(tmp_path, spec), tmp_path / spec.path)
        assert enc is not None and enc.chunks == spec.chunks
    # a shard that is not one whole row of chunks is written through zarr
    odd = ArraySpec(
        "activations/y", "a.zarr/y", (10, 2, 8), (4, 1, 8), "float16", (0, 1), (4, 1, 8)
    )
    assert ChunkEncoder.for_array(create_array(tmp_path, odd), tmp_path / odd.path) is None
    # and so is an array of a file per chunk (the layout of format 1, which no reader takes)
    plain, _ = _pair(tmp_path, (4, 1, 4), (2, 1, 4), "float16", CODECS["zstd-10"], None)
    assert ChunkEncoder.for_array(plain, tmp_path / "by_zarr") is None


@pytest.mark.parametrize(
    "codecs",
    [[GzipCodec(level=1)], [BloscCodec(cname="lz4"), GzipCodec()], [Crc32cCodec(), GzipCodec()]],
)
def test_unknown_codecs_fall_back_to_zarr(tmp_path: Path, codecs) -> None:
    arr, _ = _pair(tmp_path, (4, 1, 4), (2, 1, 4), "float16", codecs, (2, 1, 4))
    assert ChunkEncoder.for_array(arr, tmp_path / "by_zarr") is None


def test_wrong_chunk_shape_is_refused(tmp_path: Path) -> None:
    arr, _ = _pair(tmp_path, (4, 1, 4), (2, 1, 4), "float16", CODECS["zstd-1"], (2, 1, 4))
    enc = ChunkEncoder.for_array(arr, tmp_path / "by_zarr")
    with pytest.raises(ValueError, match="chunk shape"):  # blocks of (1, 1, 4) chunks
        enc.write_blocks(0, np.zeros((1, 1, 1, 1, 4), dtype="float16"), 1)


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    """A write that fails (a full disk) leaves neither the chunk nor its temp file."""
    import errno

    from warehouse.store import files

    arr, _ = _pair(tmp_path, (4, 1, 4), (2, 1, 4), "float16", CODECS["zstd-1"], (2, 1, 4))
    enc = ChunkEncoder.for_array(arr, tmp_path / "by_zarr")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(files.os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        enc.write_rows(0, np.ones((2, 1, 4), dtype="float16"))
    assert _files(tmp_path / "by_zarr") == {}
    assert enc.bytes_written == 0


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("key", ["activations/x", "responses/x/mean"])  # zstd; crc32c codec
def test_running_checksum_equals_the_files(tmp_path: Path, threads: int, key: str) -> None:
    """The writer's running array checksum, also across a resume, is the crc32c of the files
    (each name, a NUL, its bytes, in array_files order) that `verify` reads back."""
    import google_crc32c

    from warehouse.store.checksums import array_files
    from warehouse.store.files import files_digest
    from warehouse.store.writer import ChunkBuffer

    spec = ArraySpec(key, "a.zarr/x", (45, 2, 20), (8, 1, 16), "float16", (0, 1), (8, 2, 32))
    create_array(tmp_path, spec)
    data = np.random.default_rng(1).standard_normal(spec.shape).astype("float16")
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    first = ChunkBuffer(tmp_path, spec, 0)
    first.pool = pool
    first.add(0, data[:21])  # two whole chunk rows reach the disk, 5 rows are lost
    assert first.start == 16 and first.checksum() is None  # not every chunk written yet
    resumed = ChunkBuffer(tmp_path, spec, 16)
    resumed.pool = pool
    resumed.add(12, data[12:])  # a resumed batch starts before the mark: rows are dropped
    resumed.finish()
    stream = b"".join(
        rel.encode() + b"\0" + (tmp_path / rel).read_bytes() for rel in array_files(spec)
    )
    expected = f"crc32c:{google_crc32c.value(stream):08x}"
    assert resumed.checksum() == expected == files_digest(tmp_path, array_files(spec), "crc32c")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / spec.path))[:], data)


def test_every_way_of_writing_writes_the_same_warehouse(
    tmp_path: Path, tiny_llama_dir, monkeypatch
):
    """In line between batches with a pool (a CPU forward's default), on a thread with one
    encoder, and on a thread with an encode pool (hosts with cores to spare): same files, same
    checksums."""
    import json

    from warehouse.ingest import run as ingest_run
    from warehouse.ingest.run import IngestConfig, ingest
    from warehouse.store import writer
    from warehouse.store.checksums import verify

    data = tmp_path / "facts.jsonl"
    rows = [
        {"relation": rel, "language": "en", "subject": f"Land{i}", "object": f"{obj}{i}",
         "templates": [f"The {rel} of {{subject}} is"]}
        for i in range(12)
        for rel, obj in (("capital", "City"), ("currency", "Coin"))
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    on_thread: list[bool] = []

    class Recorded(writer.Writer):
        def __init__(self, *args, background: bool, **kwargs) -> None:
            on_thread.append(background)
            super().__init__(*args, background=background, **kwargs)

    monkeypatch.setattr(ingest_run, "Writer", Recorded)

    def run(name: str, writer_thread: bool | None, threads: int) -> tuple[dict, dict]:
        monkeypatch.setattr(writer, "encode_threads", lambda background: threads)
        cfg = IngestConfig(
            out=tmp_path / name, model=str(tiny_llama_dir), dataset=str(data), batch_size=4,
            token_chunk=16, prompt_chunk=8, writer_thread=writer_thread,
        )  # fmt: skip
        manifest = ingest(cfg, show_progress=False)
        assert verify(tmp_path / name).ok
        files = {k: v for k, v in _files(tmp_path / name).items() if k != "manifest.json"}
        return files, manifest.arrays

    in_line = run("in_line", None, 2)  # the tiny model runs on the CPU
    assert any("/c/" in k for k in in_line[0])
    assert run("thread", True, 1) == in_line
    assert run("thread_pool", True, 3) == in_line
    assert on_thread == [False, True, True]


@pytest.mark.parametrize("background", [True, False])
def test_the_writer_reads_rows_only_once_they_are_ready(tmp_path: Path, background: bool) -> None:
    """From a GPU a batch is handed over while its rows are still being copied to the host
    (Capturer(wait=False)): the writer waits on the batch's event before it reads them, on
    its own thread or in line."""
    from warehouse.store.writer import ChunkBuffer, Writer

    spec = ArraySpec(
        "responses/x/mean", "r.zarr/x", (12, 2, 20), (4, 1, 16), "float16", (0, 1), (4, 2, 32)
    )
    create_array(tmp_path, spec)
    data = np.random.default_rng(2).standard_normal(spec.shape).astype("float16")

    class Copying:  # the rows land when the event is waited on, as a queued copy would
        def __init__(self, rows: np.ndarray, source: np.ndarray) -> None:
            self.rows, self.source, self.waited = rows, source, 0

        def synchronize(self) -> None:
            self.rows[:] = self.source
            self.waited += 1

    commits: list[dict[str, int]] = []
    buffers = {spec.key: ChunkBuffer(tmp_path, spec, 0)}
    writer = Writer(buffers, commits.append, threads=1, background=background)
    events = []
    for s in range(0, 12, 3):
        rows = np.zeros((3, 2, 20), dtype="float16")  # not yet arrived
        events.append(Copying(rows, data[s : s + 3]))
        writer.put({spec.key: (s, rows)}, ready=events[-1])
    writer.close()
    assert [e.waited for e in events] == [1, 1, 1, 1]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / spec.path))[:], data)
    assert commits[-1] == {spec.key: 12}


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize(
    ("rows", "failing", "committed"),
    [(12, 1, [4]), (10, 2, [4, 8])],  # a whole second chunk; the last, partial one (at close)
)
def test_a_write_error_stops_the_caller_at_the_last_chunk(
    tmp_path: Path, monkeypatch, background: bool, rows: int, failing: int, committed: list
) -> None:
    """An OSError while writing a chunk reaches the caller as one WarehouseError (from a
    later put or from close), from the writer's thread or in line; what was committed ends
    at the chunk before, where a resume continues."""
    from warehouse.store.chunks import ChunkEncoder
    from warehouse.store.errors import WarehouseError
    from warehouse.store.writer import ChunkBuffer, Writer

    spec = ArraySpec(
        "responses/x/mean", "r.zarr/x", (rows, 2, 20), (4, 1, 16), "float16", (0, 1), (4, 2, 32)
    )
    create_array(tmp_path, spec)
    real_put = ChunkEncoder._put

    def full_disk(path, data) -> None:
        if f"/c/{failing}/" in str(path):  # every shard file of that row chunk
            raise OSError(28, "No space left on device", str(path))
        real_put(path, data)

    monkeypatch.setattr(ChunkEncoder, "_put", staticmethod(full_disk))
    commits: list[dict[str, int]] = []
    writer = Writer({spec.key: ChunkBuffer(tmp_path, spec, 0)}, commits.append, 1, 1, background)
    data = np.ones((rows, 2, 20), dtype="float16")
    with pytest.raises(WarehouseError, match="^writing the warehouse failed: No space left"):
        for s in range(0, rows, 2):
            writer.put({spec.key: (s, data[s : s + 2])})
        writer.close()
    writer.close(finish=False)  # (as ingest's `finally` does: nothing more happens)
    assert commits == [{spec.key: n} for n in committed]


def test_padding_past_the_last_row_costs_almost_nothing(tmp_path: Path) -> None:
    """The last row of chunks is padded with zeros to whole chunks (zarr's regular grid); with
    blosc those rows compress to a few bytes: the shard of 44 rows of a 300-row response array
    (chunks of 256) is at most 256 bytes a chunk larger than an array of just those 44 rows
    (the 212 zero rows of each chunk were 217 KB of it when responses were stored raw)."""
    from warehouse.store.arrays import response_spec
    from warehouse.store.writer import ChunkBuffer

    rng = np.random.default_rng(3)
    data = rng.standard_normal((300, 2, 1024)).astype("float16")
    sizes = []
    for rows in (data, data[256:]):
        spec = response_spec("ffn.act", "mean", len(rows), [0, 1], 1024, "float16")
        root = tmp_path / str(len(rows))
        create_array(root, spec)
        buffer = ChunkBuffer(root, spec, 0)
        buffer.add(0, rows)
        buffer.finish()
        shards = sorted((root / spec.path / "c").rglob("*/0/0"))
        sizes.append(shards[-1].stat().st_size)
        assert spec.chunks_per_shard == 4
    padded, unpadded = sizes
    assert padded <= unpadded + 4 * 256 and padded < 4 * 44 * 512 * 2, sizes
