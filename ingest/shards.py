"""Deterministic slices of an ingest (`--shard i/n`): each is a run of whole batches of the
single-process plan, so its rows are computed exactly as they would be in one process, and
`warehouse merge` of all n parts equals the single run byte for byte (store/merge.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from warehouse.store.errors import WarehouseError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4): shard 2 of 4, counted from 1."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise WarehouseError(f"--shard must look like i/n (e.g. 2/4), not {text!r}")
    return check_shard((int(m.group(1)), int(m.group(2))))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    i, n = shard
    if n < 1 or not 1 <= i <= n:
        raise WarehouseError(f"--shard {i}/{n}: need 1 <= i <= n")
    return i, n


def shard_range(
    n_tokens: np.ndarray, batch_starts: Sequence[int], shard: tuple[int, int]
) -> tuple[int, int]:
    """[start, end) prompt rows of shard i of n: whole batches, cut where the running token
    count (the work) is nearest to i/n of the total, every shard at least one batch."""
    i, n = check_shard(shard)
    n_batches = len(batch_starts)
    if n > n_batches:
        raise WarehouseError(
            f"--shard {i}/{n}: the run has only {n_batches} batch(es) of prompts; "
            f"use at most {n_batches} shards (or a smaller --batch-size)"
        )
    total = int(n_tokens.sum())
    before = np.concatenate([[0], np.cumsum(n_tokens)])[list(batch_starts)]  # tokens before
    cuts = [0]
    for j in range(1, n):
        # nearest batch start to j/n of the tokens, leaving room for the shards after it
        b = int(np.argmin(np.abs(before - j * total / n)))
        b = min(max(b, cuts[-1] + 1), n_batches - (n - j))
        cuts.append(b)
    cuts.append(n_batches)
    starts = [*batch_starts, len(n_tokens)]
    return int(starts[cuts[i - 1]]), int(starts[cuts[i]])
