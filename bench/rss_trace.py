"""Resident memory batch by batch: what a longer ingest holds, and why.

    python bench/rss_trace.py [--relations all] [--languages en,de,fr,es,zh,ja] [--every 15]
    python bench/rss_trace.py --capturer [--repeats 200]

The first form runs one per-token ingest of the embedded model and prints, every `--every`
batches, the batch's token rows, the largest batch so far and the process's RSS (`VmRSS`)
after the batch was written. A run's peak follows its largest batch; the trace shows what
the run adds besides, while the largest batch stays the same (docs/performance.md, "Peak
RSS").

`--capturer` runs the capturer alone (no writer) `--repeats` times over batches of 256
token rows of those prompts: once over the same batch, once over each of them in turn. Memory
that a new batch shape leaves behind (caches keyed by tensor shape) shows as a rise in the
second and none in the first. Both forms cap oneDNN's kernel cache as `warehouse ingest`
does (`warehouse.launch.limit_onednn_cache`); run them with `ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024`
in the environment for oneDNN's default, or with `LRU_CACHE_CAPACITY=1
ONEDNN_PRIMITIVE_CACHE_CAPACITY=0` to see what torch's oneDNN caches hold at all.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from warehouse.ingest.capture import Capturer, CaptureSpec
from warehouse.ingest.datasets import load_dataset
from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, batch_ranges, ingest, order_by_length, select_prompts
from warehouse.launch import limit_onednn_cache
from warehouse.store import writer


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _config(out: Path, args) -> IngestConfig:
    return IngestConfig(
        out=out,
        relations=None if args.relations == "all" else args.relations.split(","),
        languages=args.languages.split(","),
    )


def trace_ingest(loaded, args) -> None:
    """One per-token ingest; (batch rows, largest so far, RSS) after each batch's write."""
    rows: list[tuple[int, int, float]] = []
    put = writer.Writer.put

    def traced(self, batch, ready=None):  # the writer's own put, then a reading
        put(self, batch, ready)
        n = sum(len(v[1]) for k, v in batch.items() if k.startswith("activations/"))
        rows.append((n, max(n, rows[-1][1] if rows else 0), rss_mb()))

    writer.Writer.put = traced
    try:
        with tempfile.TemporaryDirectory() as d:
            ingest(_config(Path(d) / "w", args), show_progress=False, loaded=loaded)
    finally:
        writer.Writer.put = put
    print(f"{len(rows)} batches; every {args.every}th: batch rows, largest so far, RSS MB")
    for i in range(0, len(rows), args.every):
        print(f"{i:5d} {rows[i][0]:5d} {rows[i][1]:5d} {rows[i][2]:8.0f}")
    print(f"peak of the readings {max(r[2] for r in rows):.0f} MB")


def trace_capturer(loaded, args) -> None:
    """The capturer alone over 256-row batches: the same one again, then each in turn."""
    cfg = _config(Path("."), args)
    _, encoded = order_by_length(loaded.tokenizer, select_prompts(cfg, load_dataset(None)))
    ids = encoded.ids
    lengths = np.array([len(x) for x in ids])
    batches = [ids[s:e] for s, e in batch_ranges(lengths, 32) if (e - s) * lengths[s] == 256]
    spec = CaptureSpec({"ffn.act": list(range(loaded.n_layers))}, True, ["mean"], "float16")
    cap = Capturer(loaded.model, loaded.tokenizer.pad_token_id, spec, shared_prefix=True)
    with torch.inference_mode():
        cap.run(batches[0])  # warm-up: the packed weights and the first batch's buffers
    for name, every in (("same batch", 1), ("each in turn", len(batches))):
        before = rss_mb()
        with torch.inference_mode():
            for i in range(args.repeats):
                cap.run(batches[i % every])
        print(
            f"{name:13} ({len(batches)} batches of 256 rows): RSS {before:.0f} -> {rss_mb():.0f} MB"
        )


def main() -> None:
    limit_onednn_cache()  # before the first forward
    ap = argparse.ArgumentParser()
    ap.add_argument("--relations", default="all")
    ap.add_argument("--languages", default="en,de,fr,es,zh,ja")
    ap.add_argument("--every", type=int, default=15)
    ap.add_argument("--capturer", action="store_true")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    loaded = load_model("smollm2-135m", device="cpu")
    (trace_capturer if args.capturer else trace_ingest)(loaded, args)


if __name__ == "__main__":
    main()
