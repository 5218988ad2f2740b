"""How selections relate: shared neurons of pairs, per layer, and where a selection lives.

Neuron ids are per site, so two selections share a neuron only when both site and neuron_id
are equal. docs/statistics.md gives the same results as SQL over the `selections` view.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import polars as pl

from warehouse.analysis.selections import Selection, read_selection
from warehouse.store.errors import WarehouseError


def _keys(s: Selection) -> pl.DataFrame:
    return s.frame.select("site", "neuron_id", "layer")


def _jaccard(shared: pl.Expr, n_a: pl.Expr, n_b: pl.Expr) -> pl.Expr:
    union = n_a + n_b - shared
    return pl.when(union > 0).then(shared / union).otherwise(None)


def overlap(root: Path | str, names: list[str]) -> pl.DataFrame:
    """One row per unordered pair (in the order given): a, b, n_a, n_b, shared, jaccard."""
    if len(names) < 2:
        raise WarehouseError("overlap needs at least two selections")
    if len(set(names)) != len(names):
        raise WarehouseError(f"each selection may be named once, got {names}")
    sels = {n: read_selection(root, n) for n in names}
    rows = []
    for a, b in combinations(names, 2):
        ka, kb = _keys(sels[a]), _keys(sels[b])
        shared = ka.join(kb, on=["site", "neuron_id"], how="inner").height
        rows.append({"a": a, "b": b, "n_a": ka.height, "n_b": kb.height, "shared": shared})
    schema = {"a": pl.String, "b": pl.String, "n_a": pl.Int64, "n_b": pl.Int64, "shared": pl.Int64}
    return pl.DataFrame(rows, schema=schema).with_columns(
        jaccard=_jaccard(pl.col("shared"), pl.col("n_a"), pl.col("n_b"))
    )


def overlap_by_layer(root: Path | str, a: str, b: str) -> pl.DataFrame:
    """Per layer of the warehouse: layer, n_a, n_b, shared, jaccard (null where both are 0)."""
    sa, sb = read_selection(root, a), read_selection(root, b)
    layers = sorted(set(sa.meta["layers"]) | set(sb.meta["layers"]))
    shared = _keys(sa).join(_keys(sb), on=["site", "neuron_id"], how="inner")
    return (
        pl.DataFrame({"layer": layers}, schema={"layer": pl.Int32})
        .join(_per_layer(sa, "n_a"), on="layer", how="left")
        .join(_per_layer(sb, "n_b"), on="layer", how="left")
        .join(shared.group_by("layer").agg(shared=pl.len().cast(pl.Int64)), on="layer", how="left")
        .fill_null(0)
        .with_columns(jaccard=_jaccard(pl.col("shared"), pl.col("n_a"), pl.col("n_b")))
        .sort("layer")
    )


def layer_distribution(root: Path | str, name: str) -> pl.DataFrame:
    """Every layer of the warehouse: layer, count (neurons of the selection), share of it."""
    s = read_selection(root, name)
    layers = pl.DataFrame({"layer": s.meta["layers"]}, schema={"layer": pl.Int32})
    return (
        layers.join(_per_layer(s, "count"), on="layer", how="left")
        .fill_null(0)
        .with_columns(share=pl.col("count") / max(s.frame.height, 1))
        .sort("layer")
    )


def _per_layer(s: Selection, column: str) -> pl.DataFrame:
    return s.frame.group_by("layer").agg(pl.len().cast(pl.Int64).alias(column))
