"""Ingest throughput, size and memory on the embedded model (CPU), measured side by side.

    python bench/ingest.py [--relations country_capital,country_currency] [--languages en]
                           [--batch-size 32]

Prints, on the same prompts and batch size: bare backbone forward tokens/s; ingest
--capture pooled tokens/s; full per-token ingest tokens/s; their ratios to bare forward;
bytes on disk per token vs raw float16; the codec's compression MB/s; and the peak RSS of a
per-token ingest of the chosen languages vs of 4 languages (4x the prompts), each in its own
process. Whole relations are ingested, as users do (a random sample of prompts shares fewer
template prefixes, so it compresses less: see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from warehouse.ingest.capture import pad_batch
from warehouse.ingest.datasets import load_dataset
from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, _batches, _by_length, _select_prompts, ingest


def _config(out: Path, args, capture: str, languages: list[str] | None = None) -> IngestConfig:
    return IngestConfig(
        out=out,
        relations=args.relations.split(","),
        languages=languages or args.languages.split(","),
        batch_size=args.batch_size,
        capture=capture,
    )


def prompt_ids(loaded, args) -> list[list[int]]:
    """Input ids in the order and batches ingest uses, so both sides run the same batches."""
    prompts = _by_length(
        loaded.tokenizer, _select_prompts(_config(Path("."), args, "tokens"), load_dataset(None))
    )
    return [loaded.tokenizer(p.text)["input_ids"] for p in prompts]


def bare_forward(loaded, ids: list[list[int]], bs: int) -> float:
    backbone = loaded.model.base_model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s, e in _batches(np.array([len(x) for x in ids]), bs):
            x, m, pos = pad_batch(ids[s:e], loaded.tokenizer.pad_token_id, "right", loaded.device)
            backbone(input_ids=x, attention_mask=m, position_ids=pos, use_cache=False)
    return time.perf_counter() - t0


def timed_ingest(loaded, cfg: IngestConfig) -> float:
    t0 = time.perf_counter()
    ingest(cfg, show_progress=False, loaded=loaded)
    return time.perf_counter() - t0


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def child(args) -> None:
    """One per-token ingest in this process; prints its prompt count and peak RSS."""
    loaded = load_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as d:
        m = ingest(_config(Path(d) / "w", args, "tokens"), show_progress=False, loaded=loaded)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prompts": m["counts"]["prompts"], "maxrss_mb": rss}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relations", default="country_capital,country_currency")
    ap.add_argument("--languages", default="en")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    loaded = load_model("smollm2-135m")
    ids = prompt_ids(loaded, args)
    n_tokens = sum(len(x) for x in ids)
    bare_forward(loaded, ids[: args.batch_size], args.batch_size)  # warm-up
    with tempfile.TemporaryDirectory() as d:
        rounds = []
        for r in range(args.rounds):  # interleaved: drift on a noisy machine hits all alike
            bare = bare_forward(loaded, ids, args.batch_size)
            pooled = timed_ingest(loaded, _config(Path(d) / f"p{r}", args, "pooled"))
            full = timed_ingest(loaded, _config(Path(d) / f"t{r}", args, "tokens"))
            rounds.append((bare, pooled, full))
        bare, pooled, full = (min(x) for x in zip(*rounds, strict=True))
        # This machine's speed drifts over minutes; each round's three runs are adjacent, so
        # the ratio within a round is steadier than a ratio of minima taken across rounds.
        med_pooled = float(np.median([b / p for b, p, _ in rounds]))
        med_full = float(np.median([b / f for b, _, f in rounds]))
        root = Path(d) / "t0"
        m = json.loads((root / "manifest.json").read_text())
        shape = m["arrays"]["activations/ffn.act"]["shape"]
        raw = shape[0] * shape[1] * shape[2] * 2
        stored = disk_bytes(root / "activations.zarr")
        import zarr

        from warehouse.store.chunks import ChunkEncoder

        arr = zarr.open_array(root / "activations.zarr/ffn.act", mode="r")
        data = arr[:]
        encoder = ChunkEncoder.for_array(arr, Path(d) / "copy")
        t0 = time.process_time()  # the writer thread's CPU cost, whatever else runs
        for i in range(0, len(data), arr.chunks[0]):
            encoder.write_rows(i // arr.chunks[0], data[i : i + arr.chunks[0]])
        comp_s = time.process_time() - t0
    print(
        f"prompts {len(ids)}, tokens {n_tokens}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, relations {args.relations}, "
        f"languages {args.languages}"
    )
    print(f"bare forward        {n_tokens / bare:9.0f} tok/s   1.00x")
    print(
        f"ingest pooled       {n_tokens / pooled:9.0f} tok/s   {bare / pooled:.2f}x"
        f"  (target >= 0.95x; median of rounds {med_pooled:.2f}x)"
    )
    print(
        f"ingest per-token    {n_tokens / full:9.0f} tok/s   {bare / full:.2f}x"
        f"  (target >= 0.85x; median of rounds {med_full:.2f}x)"
    )
    print(
        f"per-token bytes     {stored / n_tokens:9.0f} B/token on disk vs {raw / n_tokens:.0f} "
        f"raw float16: 1/{raw / stored:.2f}  (target <= 1/1.45)"
    )
    print(
        f"chunk encode+write  {raw / comp_s / 1e6:9.0f} MB/s of float16 per CPU-second "
        "(zstd -1 + checksum, files written)"
    )
    sys.stdout.flush()  # the RSS runs below take a while
    rss = []
    langs = args.languages.split(",")
    for lang_set in (langs, (langs + [x for x in ("en", "de", "fr", "es") if x not in langs])[:4]):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--relations",
                args.relations,
                "--languages",
                ",".join(lang_set),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b = rss
    print(
        f"peak RSS            {a['maxrss_mb']:9.0f} MB at {a['prompts']} prompts, "
        f"{b['maxrss_mb']:.0f} MB at {b['prompts']} prompts: "
        f"{b['maxrss_mb'] / a['maxrss_mb']:.3f}x  (target <= 1.10x)"
    )


if __name__ == "__main__":
    main()
