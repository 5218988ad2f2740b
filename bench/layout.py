"""One array per site with a layer axis vs one array per layer: write and read speed.

    python bench/layout.py [--tokens 8192]

Both layouts hold the same real activations (built-in prompts through the embedded model,
tiled to --tokens rows) with the same chunk shape per layer and the same codec; the script
times writing everything, reading one neuron over all tokens, and reading all neurons of one
1024-token block.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from warehouse.store.arrays import NEURON_CHUNK, TOKEN_CHUNK


def real_activations(n_tokens: int) -> np.ndarray:
    from warehouse.ingest.run import IngestConfig, ingest

    with tempfile.TemporaryDirectory() as d:
        ingest(IngestConfig(out=Path(d) / "w", max_prompts=300), show_progress=False)
        a = zarr.open_array(Path(d) / "w/activations.zarr/ffn.act", mode="r")[:]
    reps = -(-n_tokens // len(a))
    return np.concatenate([a] * reps)[:n_tokens]


def _create(path: Path, shape, chunks) -> zarr.Array:
    return zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=chunks,
        dtype="float16",
        serializer=BytesCodec(),
        compressors=[ZstdCodec(level=1, checksum=True)],
        zarr_format=3,
        overwrite=True,
    )


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    args = ap.parse_args()
    x = real_activations(args.tokens)  # (tokens, layers, units)
    n, L, U = x.shape
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        one = _create(root / "one", x.shape, (TOKEN_CHUNK, 1, NEURON_CHUNK))
        per = [_create(root / f"layer{i}", (n, U), (TOKEN_CHUNK, NEURON_CHUNK)) for i in range(L)]

        def write_one():
            for s in range(0, n, TOKEN_CHUNK):
                one[s : s + TOKEN_CHUNK] = x[s : s + TOKEN_CHUNK]

        def write_per():
            for s in range(0, n, TOKEN_CHUNK):
                for i in range(L):
                    per[i][s : s + TOKEN_CHUNK] = x[s : s + TOKEN_CHUNK, i]

        rows = [
            ("write all", timed(write_one, 1), timed(write_per, 1)),
            (
                "one neuron, all tokens",
                timed(lambda: one[:, 12, 42]),
                timed(lambda: per[12][:, 42]),
            ),
            (
                "all neurons, 1024 tokens",
                timed(lambda: one[:TOKEN_CHUNK]),
                timed(lambda: [p[:TOKEN_CHUNK] for p in per]),
            ),
        ]
    print(
        f"{n} tokens x {L} layers x {U} neurons, float16, chunks ({TOKEN_CHUNK}, 1, {NEURON_CHUNK})"
    )
    print(f"{'operation':26s} {'layer axis':>11s} {'per layer':>11s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:26s} {a * 1e3:9.1f}ms {b * 1e3:9.1f}ms {a / b:7.2f}")


if __name__ == "__main__":
    main()
