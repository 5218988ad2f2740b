"""Compare lossless codecs on real per-token activations, chunk by chunk.

    python bench/codecs.py [WAREHOUSE] [--prompts 200] [--responses]

Without WAREHOUSE it ingests a sample of the built-in dataset with the embedded model. Prints
compression ratio and single-core encode/decode MB/s of each codec on the warehouse's chunks
(1024 tokens x 512 neurons of one layer), the unit the writer compresses. Times are CPU
seconds of this one thread (blosc runs single-threaded here, as in the ingest writer), so a
busy machine skews them less than wall time would.

--responses compares codecs on each pooled response array instead (chunks of 256
prompts x 512 neurons), the data a `--capture pooled` run writes.

"(chosen)" marks what ingest writes today: blosc (zstd level 1, byte shuffle of 2-byte
values, the whole chunk one block) then zarr's `crc32c` codec; "(earlier builds)" what it
wrote before (activations zstd -10 with its checksum, responses raw with a crc32c).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
from numcodecs import LZ4, Blosc, Zstd

CHUNK_BYTES = 1024 * 512 * 2  # a per-token chunk of float16: blosc's block in the chosen codec


def chunks_of(root: Path, path: str = "activations.zarr/ffn.act", limit: int = 60) -> list:
    arr = zarr.open_array(root / path, mode="r")
    rows, layers, units = arr.shape
    r, n = arr.chunks[0], arr.chunks[2]
    out = []
    for layer in range(0, layers, max(1, layers // 10)):
        for u in range(0, units, n):
            for s in range(0, rows - r + 1 if rows >= r else 1, r):
                out.append(np.ascontiguousarray(arr[s : s + r, layer, u : u + n]))
    return out[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("warehouse", nargs="?")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--responses", action="store_true", help="zstd levels on pooled responses")
    args = ap.parse_args()
    numcodecs.blosc.use_threads = False  # as zarr and the ingest writer run it
    with tempfile.TemporaryDirectory() as d:
        root = Path(args.warehouse) if args.warehouse else Path(d) / "w"
        if not args.warehouse:
            from warehouse.ingest.run import IngestConfig, ingest

            ingest(IngestConfig(out=root, max_prompts=args.prompts), show_progress=False)
        if args.responses:
            for pool in ("mean", "max", "last"):
                chunks = chunks_of(root, f"responses.zarr/ffn.act/{pool}")
                levels = {
                    f"{pool} zstd level {lv} + checksum": Zstd(lv, checksum=True)
                    for lv in (-50, -10, -1, 1)
                }
                levels[f"{pool} raw + crc32c (earlier builds)"] = Crc32c()
                levels[f"{pool} blosc zstd-1 shuffle, auto blocks"] = _blosc(0)
                levels[f"{pool} blosc zstd-1 shuffle + crc32c (chosen)"] = Crc32c(_blosc())
                compare(chunks, levels)
            return
        chunks = chunks_of(root)
    compare(
        chunks,
        {
            "blosc lz4-5 shuffle": Blosc("lz4", 5, Blosc.SHUFFLE),
            "blosc lz4-1 shuffle": Blosc("lz4", 1, Blosc.SHUFFLE),
            "blosc lz4-1 shuffle, chunk blocks": _blosc(cname="lz4"),
            "blosc lz4-5 noshuffle": Blosc("lz4", 5, Blosc.NOSHUFFLE),
            "zstd-1": Zstd(1),
            "zstd level -1": Zstd(-1),
            "zstd level -1 + checksum": Zstd(-1, checksum=True),
            "zstd level -5 + checksum": Zstd(-5, checksum=True),
            "zstd level -10 + checksum (earlier builds)": Zstd(-10, checksum=True),
            "zstd level -20 + checksum": Zstd(-20, checksum=True),
            "zstd-3": Zstd(3),
            "blosc zstd-1 bitshuffle": Blosc("zstd", 1, Blosc.BITSHUFFLE),
            "blosc zstd-1 shuffle, auto blocks": _blosc(0),
            "blosc zstd-1 shuffle, chunk blocks + crc32c (chosen)": Crc32c(_blosc()),
            "blosc zstd-3 shuffle, chunk blocks": _blosc(level=3),
            "blosc lz4-5 bitshuffle": Blosc("lz4", 5, Blosc.BITSHUFFLE),
            "lz4": LZ4(),
        },
    )


def _blosc(blocksize: int = CHUNK_BYTES, level: int = 1, cname: str = "zstd") -> Blosc:
    """blosc (zstd unless `cname`) with a byte shuffle of 2-byte values; blocksize 0: blosc's
    automatic blocks."""
    return Blosc(cname, level, Blosc.SHUFFLE, blocksize=blocksize, typesize=2)


class Crc32c:
    """zarr's crc32c codec, after `inner` (or none): the bytes, then their crc32c
    (little-endian). Joined here, a copy the ingest writer does not make (it writes the chunk
    and its crc32c as two parts)."""

    def __init__(self, inner: Blosc | None = None) -> None:
        self.inner = inner

    def encode(self, chunk: np.ndarray) -> bytes:
        data = chunk.tobytes() if self.inner is None else self.inner.encode(chunk)
        return data + google_crc32c.value(data).to_bytes(4, "little")

    def decode(self, data: bytes) -> bytes:
        if google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
            raise ValueError("crc32c mismatch")
        return data[:-4] if self.inner is None else self.inner.decode(data[:-4])


def compare(chunks: list[np.ndarray], codecs: dict) -> None:
    raw = sum(c.nbytes for c in chunks)
    print(f"{len(chunks)} chunks, {raw / 1e6:.1f} MB float16")
    for name, codec in codecs.items():
        t_enc = t_dec = float("inf")
        for _ in range(5):  # best of 5: the first pass also pays page faults for its output
            t0 = time.thread_time()
            enc = [codec.encode(c) for c in chunks]
            t_enc = min(t_enc, time.thread_time() - t0)
            t0 = time.thread_time()
            for e in enc:
                codec.decode(e)
            t_dec = min(t_dec, time.thread_time() - t0)
        size = sum(len(e) for e in enc)
        print(
            f"{name:52s} ratio {raw / size:5.2f}x  encode {raw / t_enc / 1e6:6.0f} MB/s  "
            f"decode {raw / t_dec / 1e6:6.0f} MB/s"
        )


if __name__ == "__main__":
    main()
