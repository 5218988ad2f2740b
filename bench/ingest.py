"""Ingest throughput, size and memory on the embedded model (CPU), measured side by side.

    python bench/ingest.py [--prompts 256] [--batch-size 32]

Prints, on the same prompts and batch size: bare backbone forward tokens/s; ingest
--capture pooled tokens/s; full per-token ingest tokens/s; their ratios to bare forward;
bytes on disk per token vs raw float16; compression MB/s; peak RSS of an ingest of N and of
4N prompts (each in its own process).
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

import torch


def _prompts_ids(loaded, n: int) -> list[list[int]]:
    from warehouse.ingest.datasets import load_dataset
    from warehouse.ingest.run import IngestConfig, _select_prompts

    prompts = _select_prompts(IngestConfig(out=Path("."), max_prompts=n), load_dataset(None))
    ids = [loaded.tokenizer(p.text)["input_ids"] for p in prompts]
    return sorted(ids, key=len)  # the order ingest uses, so both see the same batches


def bare_forward(loaded, ids: list[list[int]], bs: int) -> float:
    import numpy as np
    from warehouse.ingest.capture import pad_batch
    from warehouse.ingest.run import _batches

    backbone = loaded.model.base_model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s, e in _batches(np.array([len(x) for x in ids]), bs):
            x, m, pos = pad_batch(ids[s:e], loaded.tokenizer.pad_token_id, "right", loaded.device)
            backbone(input_ids=x, attention_mask=m, position_ids=pos, use_cache=False)
    return time.perf_counter() - t0


def timed_ingest(loaded, out: Path, n: int, bs: int, capture: str) -> float:
    from warehouse.ingest.run import IngestConfig, ingest

    cfg = IngestConfig(out=out, max_prompts=n, batch_size=bs, capture=capture)
    t0 = time.perf_counter()
    ingest(cfg, show_progress=False, loaded=loaded)
    return time.perf_counter() - t0


def disk_bytes(root: Path, sub: str) -> int:
    return sum(p.stat().st_size for p in (root / sub).rglob("*") if p.is_file())


def child(n: int, bs: int) -> None:
    """One ingest in this process; prints its peak RSS."""
    from warehouse.ingest.models import load_model

    loaded = load_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as d:
        timed_ingest(loaded, Path(d) / "w", n, bs, "tokens")
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.batch_size)
        return
    from warehouse.ingest.models import load_model

    loaded = load_model("smollm2-135m")
    ids = _prompts_ids(loaded, args.prompts)
    n_tokens = sum(len(x) for x in ids)
    bare_forward(loaded, ids[: args.batch_size], args.batch_size)  # warm-up
    with tempfile.TemporaryDirectory() as d:
        rounds = []
        for r in range(2):  # interleaved, so drift on a noisy machine hits all three alike
            bare = bare_forward(loaded, ids, args.batch_size)
            pooled = timed_ingest(
                loaded, Path(d) / f"p{r}", args.prompts, args.batch_size, "pooled"
            )
            full = timed_ingest(loaded, Path(d) / f"t{r}", args.prompts, args.batch_size, "tokens")
            rounds.append((bare, pooled, full))
        bare, pooled, full = (min(x) for x in zip(*rounds, strict=True))
        m = json.loads((Path(d) / "t0" / "manifest.json").read_text())
        act = m["arrays"]["activations/ffn.act"]
        raw = act["shape"][0] * act["shape"][1] * act["shape"][2] * 2
        stored = disk_bytes(Path(d) / "t0", "activations.zarr")
        # compression speed on the stored data: re-encode the whole per-token array once
        import zarr
        from numcodecs import Zstd

        arr = zarr.open_array(Path(d) / "t0" / act["path"], mode="r")[:]
        t0 = time.perf_counter()
        Zstd(1).encode(arr.tobytes())
        comp_s = time.perf_counter() - t0
    rss = {}
    for n in (args.prompts, 4 * args.prompts):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        rss[n] = json.loads(out.stdout.strip().splitlines()[-1])["maxrss_mb"]
    print(
        f"prompts {args.prompts}, tokens {n_tokens}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"bare forward        {n_tokens / bare:9.0f} tok/s   1.00x")
    print(
        f"ingest pooled       {n_tokens / pooled:9.0f} tok/s   {bare / pooled:.2f}x"
        "  (target >= 0.95x)"
    )
    print(
        f"ingest per-token    {n_tokens / full:9.0f} tok/s   {bare / full:.2f}x  (target >= 0.85x)"
    )
    print(
        f"per-token bytes     {stored / n_tokens:9.0f} B/token on disk vs {raw / n_tokens:.0f} raw "
        f"float16: 1/{raw / stored:.2f}  (target <= 1/1.45)"
    )
    print(f"zstd-1 compression  {raw / comp_s / 1e6:9.0f} MB/s on one core")
    a, b = rss[args.prompts], rss[4 * args.prompts]
    print(
        f"peak RSS            {a:9.0f} MB at {args.prompts} prompts, {b:.0f} MB at "
        f"{4 * args.prompts} prompts: {b / a:.3f}x  (target <= 1.10x)"
    )


if __name__ == "__main__":
    main()
