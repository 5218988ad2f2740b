"""`warehouse demo`: the pipeline that exists so far, end to end, on the embedded model.

ingest (pooled responses of a fixed sample of the built-in dataset) -> verify -> stats (AP of
every neuron for every relation) -> one selection per relation -> overlap between them. Each
step reuses its output when re-run with the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from warehouse.errors import WarehouseError


def run_demo(out: Path, max_prompts: int, fraction: float, show_progress: bool = True) -> str:
    from warehouse.analysis.overlap import overlap
    from warehouse.analysis.selections import list_selections, select
    from warehouse.analysis.stats import run_stats
    from warehouse.api import Warehouse
    from warehouse.ingest.run import IngestConfig, ingest
    from warehouse.store.checksums import verify

    ingest(IngestConfig(out=out, capture="pooled", max_prompts=max_prompts), show_progress)
    report = verify(out)
    if not report.ok:
        raise WarehouseError(f"{out} failed verification: {report.problems[0]}")
    run_stats(out, pooling="mean", show_progress=show_progress)
    w = Warehouse.open(out)
    relations = w.sql("select distinct relation from prompts order by relation")["relation"]
    existing = {s["name"] for s in list_selections(out)}
    names = []
    for rel in relations:
        name = f"{rel}__top"
        if name not in existing:
            select(out, name, rel, "all", fraction=fraction)
        names.append(name)
    top_ap = w.sql(
        "select relation, max(ap) as best_ap, avg(ap) as mean_ap "
        "from stats where language = 'all' group by relation order by relation"
    )
    pairs = overlap(out, names).sort("jaccard", descending=True).head(5)
    with pl.Config(tbl_rows=50, tbl_cols=-1, tbl_width_chars=120):
        return (
            f"{w.manifest['counts']['prompts']} prompts ingested and verified\n"
            f"best and mean AP of any neuron per relation (stats, language 'all'):\n{top_ap}\n"
            f"most overlapping relation neuron sets ({fraction:.2%} of neurons each):\n{pairs}"
        )
