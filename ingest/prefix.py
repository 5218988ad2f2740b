"""Shared token prefixes: a batch's common prompt starts run through the model once.

Prompts of one relation and template begin with the same tokens ("The capital of"): in a
causal model those tokens' activations do not depend on what follows, so every prompt of the
batch that starts that way would compute them again. A batch is therefore run as two
forward passes when that saves tokens:

1. the *head*: each distinct prefix of `length` tokens once, with a key/value cache;
2. the *tail*: every prompt's remaining tokens, its prefix's cache rows selected for it,
   positions continuing after the prefix, the attention mask covering prefix and tail.

The rule (deterministic given the batch's token ids, the longest `w` tokens and the
shortest `s`): one prefix length `p` for the whole batch, 2 <= p <= s - 1, the one whose plan
runs the fewest tokens, `distinct(p) * p + n * (w - p)` for `n` prompts whose first `p`
tokens take `distinct(p)` values (a tail shorter than `w - p` is padded to it); of equal
costs the shortest `p`. Ingest's batches hold prompts of one length (`s = w`); the
evaluator's greedy decoding plans its left-padded batches the same way. Only a plan that
runs at most `MAX_SHARE` (3/4) of the `n * w` tokens of one plain forward is taken: the
second pass has a fixed cost of its own, so a plan that saves little runs slower than one
forward. A batch where no two prompts share two leading tokens (or a batch of one prompt)
runs as one plain forward. One length for the whole batch keeps it at two forward passes:
on the built-in country_capital and country_currency in en, de and fr (batches of 32) the
rule runs 55 % of the tokens, while grouping each prompt with its longest-sharing sorted
neighbours would run 53 % at up to six passes a batch.

A prompt's values are the same mathematics either way, not the same bits: the tail's
attention reads cached keys in a matrix of another shape, so values differ from one plain
forward in the last float32 bits (see docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIN_PREFIX = 2  # a one-token prefix (the BOS token) is too little to pay for a second pass
SHARED = "shared"  # the capture plan's `prefix` value that runs this module's plan
# A shared plan must run at most this share of a plain forward's tokens. Two passes over
# short prompts cost more than their tokens on 2 CPU threads: whole relations (55 % of the
# tokens) gained 1.11x per token, a random sample (86 %) 1.02x per token, and pooled ingest
# of it ran at 0.86x the bare forward, under its 0.95x target; docs/performance.md, "Ingest".
MAX_SHARE = 0.75


@dataclass(frozen=True)
class PrefixPlan:
    """How one batch is run. `length` 0: one plain forward, nothing shared."""

    length: int  # tokens of each prompt's prefix
    prefixes: list[list[int]]  # the distinct prefixes, in order of first appearance
    group: list[int]  # per prompt of the batch: the index of its prefix in `prefixes`

    @property
    def shared(self) -> bool:
        return self.length > 0


def plan_prefix(ids: Sequence[Sequence[int]]) -> PrefixPlan:
    """The plan of a batch of prompts (the rule in the module's docstring)."""
    n = len(ids)
    if n < 2 or min(len(x) for x in ids) <= MIN_PREFIX:
        return PrefixPlan(0, [], [])
    width, shortest = max(len(x) for x in ids), min(len(x) for x in ids)
    ordered = sorted(tuple(x) for x in ids)
    # distinct(p) = 1 + the sorted neighbours that differ within their first p tokens.
    common = [_common_length(a, b) for a, b in zip(ordered, ordered[1:], strict=False)]
    best, best_cost = 0, n * width
    for p in range(MIN_PREFIX, shortest):
        distinct = 1 + sum(c < p for c in common)
        cost = distinct * p + n * (width - p)
        if cost < best_cost:
            best, best_cost = p, cost
    if not best or best_cost > MAX_SHARE * n * width:
        return PrefixPlan(0, [], [])
    index: dict[tuple[int, ...], int] = {}
    group = [index.setdefault(tuple(x[:best]), len(index)) for x in ids]
    return PrefixPlan(best, [list(k) for k in index], group)


def tokens_run(plan: PrefixPlan, n: int, width: int) -> int:
    """The token positions the backbone computes for a batch of `n` prompts under `plan`."""
    if not plan.shared:
        return n * width
    return len(plan.prefixes) * plan.length + n * (width - plan.length)


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def new_cache(config: Any) -> Any:
    """An empty key/value cache for the head's forward pass. Made here, not by the model: a
    forward stopped after its last captured site (an exception) returns nothing, but the
    layers it ran have filled this cache, and those are all the tail's pass needs."""
    from transformers import DynamicCache

    return DynamicCache(config=config)


def select_rows(cache: Any, group: torch.Tensor) -> None:
    """Give each tail prompt its prefix's cached keys and values: cache row `group[i]` becomes
    row i (in place; layers the head never reached stay empty)."""
    cache.batch_select_indices(group)
