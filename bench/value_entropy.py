"""Benchmark: how far lossless compression can shrink a warehouse's per-token values.

    python bench/value_entropy.py W [--site ffn.act]

Reads the site's per-token float16 array through `Warehouse.array` and prints the empirical
entropy of its 16-bit values, over all values and per layer (each layer one distribution of
65,536 symbols), next to the bytes of the whole folder. A coder that stores each value with
its layer's value frequencies needs at least that many bits per value, so 16 / entropy bounds
the ratio such a coder reaches on the array; only structure across values (repeated token
prefixes, correlated neurons) can go past it.
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


def folder_bytes(root: Path) -> int:
    return sum(os.path.getsize(Path(d) / f) for d, _, files in os.walk(root) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--site", default="ffn.act")
    args = ap.parse_args()
    values = np.ascontiguousarray(Warehouse.open(args.warehouse).array(args.site).to_numpy())
    bits = values.astype(np.float16, copy=False).view(np.uint16)  # (tokens, layers, units)
    per_layer = [entropy(bits[:, layer]) for layer in range(bits.shape[1])]
    overall = entropy(bits)
    raw, folder = bits.nbytes, folder_bytes(args.warehouse)
    print(f"{args.site} {tuple(bits.shape)}: {overall:.2f} bits per value over all values")
    mean = float(np.mean(per_layer))
    print(f"per layer: {min(per_layer):.2f}-{max(per_layer):.2f} bits (mean {mean:.2f})")
    print(f"bound of a per-layer value coder: 1/{16 / mean:.2f} of raw float16")
    print(f"whole folder: {folder:,} bytes, 1/{raw / folder:.2f} of raw {raw:,}")


if __name__ == "__main__":
    main()
