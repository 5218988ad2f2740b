"""Benchmark: SQL over the lazy Zarr views vs a plain zarr + numpy read of the same data.

    python bench/query.py                 # builds (once) a 300-prompt SmolLM2-135M warehouse
    python bench/query.py W --layer 12 --neuron 42 --repeat 15

Timings are medians over `--repeat` runs after one warm-up run (so both sides read from the
page cache; a shared 2-core box is noisy, runs are interleaved so both see the same load).
Target: "one neuron over all tokens" through `Warehouse.sql` within 2x of `arr[:, layer, n]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import zarr

from warehouse.api import Warehouse


def default_out(max_prompts: int) -> Path:
    return Path(tempfile.gettempdir()) / f"relation-warehouse-bench-query-{max_prompts}"


def build(out: Path, max_prompts: int) -> Path:
    """The embedded model's warehouse; a re-run with the same options returns at once."""
    from warehouse.ingest.run import IngestConfig, ingest

    ingest(IngestConfig(out=out, max_prompts=max_prompts), show_progress=True)
    return out


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, run in turns so every one sees the same load."""
    for f in fns.values():
        f()  # warm-up: page cache, zarr metadata, Polars' first-query setup
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def _open(args) -> tuple[Path, Warehouse, zarr.Array, int]:
    """The warehouse (built if none was named), the site's array and the layer's index."""
    path = args.warehouse or build(default_out(args.max_prompts), args.max_prompts)
    w = Warehouse.open(path)
    spec = w.manifest.arrays[f"activations/{args.site}"]
    arr = zarr.open_array(path / spec["path"], mode="r")
    li = spec["layers"].index(args.layer)
    print(
        f"warehouse {path}: {w.manifest.counts.tokens:,} tokens, "
        f"{w.manifest.counts.prompts:,} prompts, array {tuple(arr.shape)} {arr.dtype}, "
        f"chunks {tuple(arr.chunks)}"
    )
    return path, w, arr, li


def _per_relation(path: Path, w: Warehouse, arr, li: int, args, where: str):
    """The neuron's mean per relation, in numpy over zarr and in SQL, checked equal first.
    Returns (the numpy function, the SQL text)."""
    prompts = pl.read_parquet(path / "prompts.parquet").sort("prompt_row")
    tokens = pl.read_parquet(path / "tokens.parquet").sort("token_row")
    codes = tokens.join(prompts.select("prompt_id", "relation"), on="prompt_id", how="left")
    rel_names, rel_index = np.unique(codes["relation"].to_numpy(), return_inverse=True)

    def numpy_mean_per_relation() -> np.ndarray:
        v = arr[:, li, args.neuron].astype(np.float32)
        return np.bincount(rel_index, v) / np.bincount(rel_index)

    per_relation = f"""
        select p.relation, avg(a.value) as mean, count(*) as tokens
        from activations a
        join tokens t on t.token_row = a.token_row
        join prompts p on p.prompt_id = t.prompt_id
        where a.{where.replace(" and ", " and a.")}
        group by p.relation order by p.relation"""
    sql_means = w.sql(per_relation)["mean"].to_numpy()
    np.testing.assert_allclose(sql_means, numpy_mean_per_relation(), rtol=1e-5)
    assert w.sql(per_relation)["relation"].to_list() == list(rel_names)
    return numpy_mean_per_relation, per_relation


def _print_times(t: dict[str, float], args, li: int) -> None:
    ms = {k: v * 1e3 for k, v in t.items()}
    print(f"\none neuron over all tokens ({args.site} layer {args.layer} neuron {args.neuron})")
    print(f"  zarr arr[:, {li}, {args.neuron}]   {ms['zarr']:8.2f} ms")
    print(f"  Warehouse.sql            {ms['sql']:8.2f} ms   ratio {t['sql'] / t['zarr']:.2f}x")
    print(f"  Warehouse.lazy().filter  {ms['lazy']:8.2f} ms   ratio {t['lazy'] / t['zarr']:.2f}x")
    print("mean activation per relation for that neuron (activations x tokens x prompts)")
    print(f"  zarr + numpy bincount    {ms['numpy_rel']:8.2f} ms")
    print(
        f"  Warehouse.sql            {ms['sql_rel']:8.2f} ms   "
        f"ratio {t['sql_rel'] / t['numpy_rel']:.2f}x"
    )
    print(f"\ntarget: one-neuron ratio <= 2x: {'met' if t['sql'] / t['zarr'] <= 2 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("warehouse", nargs="?", type=Path, help="default: build one in the temp dir")
    ap.add_argument("--max-prompts", type=int, default=300, help="prompts when building")
    ap.add_argument("--site", default="ffn.act")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--neuron", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    path, w, arr, li = _open(args)

    where = f"site = '{args.site}' and layer = {args.layer} and neuron = {args.neuron}"
    one_neuron = f"select token_row, value from activations where {where}"
    # Same values both ways, before timing anything.
    got = w.sql(one_neuron).sort("token_row")["value"].to_numpy()
    np.testing.assert_array_equal(got, arr[:, li, args.neuron].astype(np.float32))
    numpy_rel, per_relation = _per_relation(path, w, arr, li, args, where)
    is_neuron = (
        (pl.col("site") == args.site)
        & (pl.col("layer") == args.layer)
        & (pl.col("neuron") == args.neuron)
    )
    ways = {
        "zarr": lambda: arr[:, li, args.neuron],
        "sql": lambda: w.sql(one_neuron),
        "lazy": lambda: w.lazy("activations").filter(is_neuron).select("token_row", "value")
        .collect(),
        "numpy_rel": numpy_rel,
        "sql_rel": lambda: w.sql(per_relation),
    }  # fmt: skip
    _print_times(interleaved(ways, args.repeat), args, li)


if __name__ == "__main__":
    main()
