"""Benchmark: how far lossless compression can shrink a warehouse's per-token values.

    python bench/value_entropy.py W [--site ffn.act]

Reads the site's per-token float16 array through `Warehouse.array` and prints, next to the
bytes of the whole folder:

- the empirical entropy of its 16-bit values, over all values and per layer (each layer one
  distribution of 65,536 symbols): a coder that stores each value with its layer's value
  frequencies needs at least that many bits per value, so 16 / entropy bounds its ratio;
- a context bound: the high byte (sign, exponent, top mantissa bits) coded with its own
  neuron's frequencies, then the low byte with the frequencies that follow its high byte in
  the layer. Counted on the data it codes (each neuron's table from a few thousand values),
  this estimate errs low, so the ratio it gives is generous;
- the share of token rows whose token prefix (the prompt's tokens up to and including the
  row's) another row already has: those rows hold the same values (a causal model's
  activations depend on the prefix only), so a store that kept each distinct prefix once
  would code only the rest, and the context bound over them is the most any such coder
  reaches.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from warehouse.api import Warehouse


def entropy(bits: np.ndarray) -> float:
    """Bits per symbol of the empirical distribution of 16-bit symbols."""
    counts = np.bincount(bits.ravel(), minlength=1 << 16).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _code_bits(counts: np.ndarray) -> float:
    """Bits to code every symbol of each row of `counts` with that row's own frequencies."""
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(counts > 0, np.log2(counts / totals), 0.0)
    return float(-(counts * logs).sum())


def context_bits(bits: np.ndarray) -> tuple[float, float]:
    """Bits per value of the context bound (module docstring), over all layers: the high
    bytes' and the low bytes' parts."""
    high_bits = low_bits = 0.0
    units = bits.shape[2]
    for layer in range(bits.shape[1]):
        high, low = (bits[:, layer] >> 8).astype(np.int64), (bits[:, layer] & 255).astype(np.int64)
        by_neuron = np.arange(units)[None, :] * 256 + high
        high_bits += _code_bits(
            np.bincount(by_neuron.ravel(), minlength=units * 256).reshape(-1, 256)
        )
        by_high = high * 256 + low
        low_bits += _code_bits(np.bincount(by_high.ravel(), minlength=1 << 16).reshape(256, 256))
    return high_bits / bits.size, low_bits / bits.size


def repeated_share(warehouse: Warehouse) -> float:
    """Share of token rows whose token prefix an earlier row of the warehouse already has."""
    tokens = warehouse.sql("select prompt_row, token_id from tokens order by token_row")
    seen: set[tuple[int, ...]] = set()
    rows = 0
    for (_,), group in tokens.group_by("prompt_row", maintain_order=True):
        ids = tuple(group["token_id"].to_list())
        seen.update(ids[: k + 1] for k in range(len(ids)))
        rows += len(ids)
    return 1 - len(seen) / rows


def folder_bytes(root: Path) -> int:
    return sum(os.path.getsize(Path(d) / f) for d, _, files in os.walk(root) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--site", default="ffn.act")
    args = ap.parse_args()
    warehouse = Warehouse.open(args.warehouse)
    values = np.ascontiguousarray(warehouse.array(args.site).to_numpy())
    bits = values.astype(np.float16, copy=False).view(np.uint16)  # (tokens, layers, units)
    per_layer = [entropy(bits[:, layer]) for layer in range(bits.shape[1])]
    overall = entropy(bits)
    raw, folder = bits.nbytes, folder_bytes(args.warehouse)
    print(f"{args.site} {tuple(bits.shape)}: {overall:.2f} bits per value over all values")
    mean = float(np.mean(per_layer))
    print(f"per layer: {min(per_layer):.2f}-{max(per_layer):.2f} bits (mean {mean:.2f})")
    print(f"bound of a per-layer value coder: 1/{16 / mean:.2f} of raw float16")
    high, low = context_bits(bits)
    context = high + low
    print(
        f"context bound: {context:.2f} bits ({high:.2f} high byte per neuron, {low:.2f} low "
        f"byte per high byte), 1/{16 / context:.2f}"
    )
    share = repeated_share(warehouse)
    kept = context * (1 - share)
    print(
        f"token rows whose prefix another row has: {share:.1%}; the context bound over the "
        f"rest: {kept:.2f} bits per stored value, 1/{16 / kept:.2f} of raw float16"
    )
    print(f"whole folder: {folder:,} bytes, 1/{raw / folder:.2f} of raw {raw:,}")


if __name__ == "__main__":
    main()
