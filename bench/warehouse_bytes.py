"""Whole per-token warehouse bytes vs raw float16, and the writer's cost, for the codec chain
ingest writes today and the one earlier builds wrote, side by side in one run.

    python bench/warehouse_bytes.py [--sets bench,whole,sample] [--batch-size 32]

Prompt sets (the built-in dataset, the embedded model, default sites and poolings):

- bench: the bench's relations `country_capital,country_currency` in English (448 prompts);
- whole: the same relations in en, de, fr (1,344 prompts), as bench/ingest.py ingests them;
- sample: ingest's fixed pseudo-random 300 prompts over every relation and language.

Each set is ingested once with each chain, "old" first on the odd sets and "new" first on
the even ones, so drift of the machine's speed does not favour one side. Printed per set
and chain: the whole folder's bytes (every file: tables, manifest, activations, responses)
against the raw float16 of its per-token activations; the ingest's wall time and its
process CPU time (the forward pass and the writer together); and the writer's own path on
one thread (rows gathered chunk by chunk, chunks encoded, shards written, the running array
checksum), timed by writing the new warehouse's per-token arrays, then its pooled arrays,
again with each chain (old, new, new, old: the mean of the two of each). Times are CPU
seconds, so load skews them less than wall time; the load average is printed.

Today's ingest stores the `last` and `max` responses of a per-token warehouse only as the
per-token rows they derive from (store/derived_pooling.py); earlier builds stored them, and
so does the "old" run here. The new warehouse's line also shows its bytes had it stored them
(the derived arrays written as stored arrays with today's chain).

Chains: "new" is what `store.arrays.compressors` gives today (blosc zstd level 1, byte
shuffle, then crc32c); "old" is what earlier builds wrote (activations zstd -10 with its
checksum, responses raw with a crc32c).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store import arrays

SETS = {
    "bench": dict(relations=["country_capital", "country_currency"], languages=["en"]),
    "whole": dict(relations=["country_capital", "country_currency"], languages=["en", "de", "fr"]),
    "sample": dict(max_prompts=300),
}
NEW = arrays.compressors


def old_compressors(spec: arrays.ArraySpec) -> list:
    """What builds before blosc wrote: activations zstd -10 and its checksum, responses raw
    with a crc32c."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    if spec.key.startswith(f"{arrays.ACTIVATIONS}/"):
        return [ZstdCodec(level=-10, checksum=True)]
    return [Crc32cCodec()]


CHAINS: dict[str, Callable] = {"old": old_compressors, "new": NEW}


@contextmanager
def chain(name: str):
    """New arrays are created with this chain's codecs (create_array looks them up here)."""
    arrays.compressors = CHAINS[name]
    try:
        yield
    finally:
        arrays.compressors = NEW


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def raw_float16(specs: dict) -> int:
    return sum(int(np.prod(s.shape)) * 2 for k, s in specs.items() if k.startswith("activations/"))


def ingest_once(loaded, out: Path, name: str, batch: int, options: dict) -> dict:
    """Ingest with chain `name`: "new" as ingest does today (max and last derived), "old"
    as earlier builds did (stored)."""
    cfg = IngestConfig(out=out, batch_size=batch, derive_pooling=name == "new", **options)
    with chain(name):
        wall, cpu = time.perf_counter(), time.process_time()
        m = ingest(cfg, show_progress=False, loaded=loaded)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall": wall,
        "cpu": cpu,
        "bytes": folder_bytes(out),
        "derived_stored": stored_derived_bytes(out, out.parent / "derived"),
        "manifest": m,
    }


def stored_derived_bytes(root: Path, scratch: Path) -> int:
    """Bytes the derived responses of `root` take when written as stored arrays."""
    from warehouse.store.derived_pooling import derived_specs
    from warehouse.store.manifest import load_manifest

    total = 0
    for spec in derived_specs(load_manifest(root)).values():
        values = arrays.open_array(root, spec)
        stored = arrays.ArraySpec(**{**spec.__dict__, "source": None})
        out = arrays.create_array(scratch, stored)
        for a in range(0, stored.shape[0], stored.chunks[0]):
            out[a : a + stored.chunks[0]] = values[a : a + stored.chunks[0]]
        total += folder_bytes(scratch / stored.path)
    shutil.rmtree(scratch, ignore_errors=True)
    return total


def writer_cpu(root: Path, specs: dict, kind: str, name: str, scratch: Path) -> float:
    """CPU seconds of this thread to write every `kind` array of `root` again through the
    ingest writer's ChunkBuffer with chain `name` (a batch of rows at a time, as ingest)."""
    import zarr

    from warehouse.store.writer import ChunkBuffer

    total = 0.0
    for key, spec in specs.items():
        if not key.startswith(f"{kind}/"):
            continue
        data = zarr.open_array(root / spec.path, mode="r")[:]
        with chain(name):
            arrays.create_array(scratch, spec)
        t0 = time.thread_time()
        buffer = ChunkBuffer(scratch, spec, 0)
        step = 352 if kind == arrays.ACTIVATIONS else 32  # about one batch's rows
        for i in range(0, len(data), step):
            buffer.add(i, data[i : i + step])
        buffer.finish()
        total += time.thread_time() - t0
        shutil.rmtree(scratch)
    return total


def measure_set(loaded, name: str, order: list[str], batch: int, tmp: Path) -> dict:
    from warehouse.store.manifest import array_specs, load_manifest

    runs = {c: ingest_once(loaded, tmp / c, c, batch, SETS[name]) for c in order}
    specs = array_specs(load_manifest(tmp / "new"))
    shutil.rmtree(tmp / "old")
    cpu = {}
    for kind in (arrays.ACTIVATIONS, arrays.RESPONSES):
        times: dict[str, list[float]] = {"old": [], "new": []}
        for c in ("old", "new", "new", "old"):
            times[c].append(writer_cpu(tmp / "new", specs, kind, c, tmp / "scratch"))
        cpu[kind] = {c: float(np.mean(t)) for c, t in times.items()}
    m = runs["new"]["manifest"]
    shutil.rmtree(tmp / "new")
    return {
        "prompts": m.counts.prompts,
        "tokens": m.counts.tokens,
        "raw": raw_float16(specs),
        "runs": runs,
        "writer": cpu,
    }


def report(name: str, r: dict) -> None:
    raw = r["raw"]
    print(
        f"\n{name}: {r['prompts']} prompts, {r['tokens']} tokens, raw float16 "
        f"{raw / 1e6:.1f} MB (per-token activations)"
    )
    head = ("folder MB", "vs raw", "ingest wall", "ingest CPU")  # old stores last, max
    print("chain  " + " ".join(f"{h:>{w}s}" for h, w in zip(head, (10, 8, 12, 11), strict=True)))
    for c in ("old", "new"):
        run = r["runs"][c]
        print(
            f"{c:6s} {run['bytes'] / 1e6:10.1f} {'1/' + format(raw / run['bytes'], '.2f'):>8s} "
            f"{run['wall']:11.1f}s {run['cpu']:10.1f}s"
        )
    run = r["runs"]["new"]
    both = run["bytes"] + run["derived_stored"]
    print(
        f"new, storing last and max too (as earlier builds): {both / 1e6:.1f} MB, "
        f"1/{raw / both:.2f}"
    )
    for kind, label in ((arrays.ACTIVATIONS, "per-token"), (arrays.RESPONSES, "pooled")):
        old, new = r["writer"][kind]["old"], r["writer"][kind]["new"]
        print(f"writer CPU, {label} arrays: old {old:.2f} s, new {new:.2f} s ({new / old:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="bench,whole,sample")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    loaded = load_model("smollm2-135m")
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        for i, name in enumerate(args.sets.split(",")):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            r = measure_set(loaded, name, order, args.batch_size, Path(d))
            report(name, r)
            print(f"load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
