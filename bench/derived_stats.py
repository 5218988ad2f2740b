"""`warehouse stats` on `max` and `last` pooling: a warehouse that stores them against one that
derives them from its per-token rows (today's ingest), side by side in one process.

    python bench/derived_stats.py [--prompts 200]

Both warehouses are ingested from ingest's fixed sample of `--prompts` prompts (the embedded
model, default site and poolings); each stats run is timed twice per warehouse (stored,
derived, derived, stored) and the means are printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from warehouse.analysis.stats import run_stats
from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, ingest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    args = ap.parse_args()
    loaded = load_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as d:
        w = {}
        for name, derive in (("stored", False), ("derived", True)):
            w[name] = Path(d) / name
            cfg = IngestConfig(out=w[name], max_prompts=args.prompts, derive_pooling=derive)
            m = ingest(cfg, show_progress=False, loaded=loaded)
        print(
            f"{m.counts.prompts} prompts, {m.counts.tokens} tokens, {len(m.capture.layers)} "
            f"layers, units {m.model.units}; load average {os.getloadavg()[0]:.1f}"
        )
        for pool in ("max", "last"):
            t: dict[str, list[float]] = {"stored": [], "derived": []}
            for name in ("stored", "derived", "derived", "stored"):
                t0 = time.perf_counter()
                run_stats(w[name], pooling=pool, split="all", force=True, show_progress=False)
                t[name].append(time.perf_counter() - t0)
            s, dv = sum(t["stored"]) / 2, sum(t["derived"]) / 2
            print(f"stats {pool}: stored {s:.2f} s, derived {dv:.2f} s ({dv / s:.2f}x)")
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
