"""Shared token prefixes: a batch's common prompt starts run through the model once.

Prompts of one relation and template begin with the same tokens ("The capital of"): in a
causal model those tokens' activations do not depend on what follows, so every prompt of the
batch that starts that way would compute them again. The plan (`plan_prefix`) picks one
prefix length for the batch; two ways run it:

- ingest *packs* the batch (`packs`): each distinct prefix once, then every prompt's
  remaining tokens, laid out as one sequence of a single forward pass, with an attention
  mask that lets each row see exactly the rows of its own prompt before it and positions
  that count within each prompt. One pass, so the tokens saved are time saved: a forward
  pass of a small model on a CPU streams every weight from memory once (~60 ms for
  SmolLM2-135M on 2 threads), and a second pass per batch paid that again.
- the evaluator's greedy decoding (ingest/generation.py) runs the distinct prefixes into a
  key/value cache (`new_cache`, `select_rows`), then the tails: its decoding steps need the
  per-prompt cache anyway.

The rule (deterministic given the batch's token ids, the longest `w` tokens and the
shortest `s`): one prefix length `p` for the whole batch, 2 <= p <= s - 1, the one whose plan
runs the fewest tokens, `distinct(p) * p + n * (w - p)` for `n` prompts whose first `p`
tokens take `distinct(p)` values (a tail shorter than `w - p` is padded to it); of equal
costs the shortest `p`. Ingest's batches hold prompts of one length (`s = w`); the
evaluator's greedy decoding plans its left-padded batches the same way. Only a plan that
runs at most `MAX_SHARE` (3/4) of the `n * w` tokens of one plain forward is taken. A batch
where no two prompts share two leading tokens (or a batch of one prompt) runs as one plain
forward. On the built-in country_capital and country_currency in en, de and fr (batches of
32) the rule runs 55 % of the tokens, while grouping each prompt with its longest-sharing
sorted neighbours would run 53 % at up to six passes a batch.

A packed sequence holds at most `PACK_ROWS` rows: attention over one sequence costs its
rows squared, where a batch's costs each prompt's tokens squared. A batch whose packing is
longer is cut into consecutive runs of prompts, each packed with the prefixes it needs.

A prompt's values are the same mathematics either way, not the same bits: attention reads
its keys in matrices of other shapes, so values differ from one plain forward in the last
float32 bits (see docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIN_PREFIX = 2  # a one-token prefix (the BOS token) saves too little to plan for
PACKED = "packed"  # the capture plan's `prefix` value: ingest packs each batch (`packs`)
# A shared plan must run at most this share of a plain forward's tokens. The evaluator's two
# passes over short prompts cost more than their tokens on 2 CPU threads (a random sample of
# prompts saving 14 % ran slower than one plain forward; docs/performance.md, "Ingest").
MAX_SHARE = 0.75
# The most rows of one packed sequence. Eager attention over one sequence of R rows on 2 CPU
# threads cost 1.09x a 32-prompt batch of the same rows at R = 256, 1.48x at 512, 2.5x at
# 1,024 (SmolLM2-135M); ingest's short prompts pack into well under 256.
PACK_ROWS = 256


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


def within_window(config: Any, length: int) -> bool:
    """`length` token positions fit in the model's sliding attention window (or it has
    none). Both ways of running a plan mask attention themselves (a packed mask, cache slots
    with pads between prefix and tail), which a windowed layer would otherwise narrow."""
    window = getattr(config, "sliding_window", None)
    return window is None or length <= window


def tokens_run(plan: PrefixPlan, n: int, width: int) -> int:
    """The token positions the evaluator's two passes compute for `n` prompts under `plan`."""
    if not plan.shared:
        return n * width
    return len(plan.prefixes) * plan.length + n * (width - plan.length)


@dataclass(frozen=True)
class Pack:
    """One packed forward pass: prompts `start`..`stop` of an equal-length batch as one
    sequence, their distinct prefixes first (in order of first appearance), then each
    prompt's tail. `rows[i][t]` is the sequence row of the pack's prompt i's token t."""

    start: int
    stop: int
    tokens: list[int]
    positions: list[int]  # each row's position within its prompt
    rows: list[list[int]]

    def inputs(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The backbone's inputs, and the rows as a (prompts, tokens) tensor.

        The mask is additive (0 or the dtype's lowest value, as transformers' own eager
        masks), (1, 1, rows, rows): row q sees row k where some prompt holds k at a token
        at or before the one q holds. transformers takes a 4-D mask as given."""
        import torch

        rows = torch.tensor(self.rows, dtype=torch.long)
        width, n = rows.shape[1], len(self.tokens)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        seen = torch.zeros((n, n), dtype=torch.bool)
        seen[
            rows[:, :, None].expand(-1, -1, width)[:, causal],
            rows[:, None, :].expand(-1, width, -1)[:, causal],
        ] = True
        mask = torch.zeros((1, 1, n, n), dtype=dtype).masked_fill_(~seen, torch.finfo(dtype).min)
        inputs = {
            "input_ids": torch.tensor([self.tokens], device=device),
            "position_ids": torch.tensor([self.positions], device=device),
            "attention_mask": mask.to(device),
        }
        return inputs, rows.to(device)


def packs(ids: Sequence[Sequence[int]], plan: PrefixPlan, limit: int = PACK_ROWS) -> list[Pack]:
    """An equal-length batch's packed passes under a shared `plan`: consecutive prompts, as
    many as fit in `limit` rows with the prefixes they need (one prompt at least)."""
    width, p = len(ids[0]), plan.length
    cuts, needed = [0], set()
    for i in range(len(ids)):
        grown = needed | {plan.group[i]}
        if i > cuts[-1] and len(grown) * p + (i + 1 - cuts[-1]) * (width - p) > limit:
            cuts.append(i)
            grown = {plan.group[i]}
        needed = grown
    cuts.append(len(ids))
    return [_pack(ids, plan, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def _pack(ids: Sequence[Sequence[int]], plan: PrefixPlan, start: int, stop: int) -> Pack:
    width, p = len(ids[0]), plan.length
    first: dict[int, int] = {}  # prefix index -> its first row in the sequence
    for g in plan.group[start:stop]:
        first.setdefault(g, len(first) * p)
    tokens = [t for g in first for t in plan.prefixes[g]]
    positions = list(range(p)) * len(first)
    rows = []
    for i in range(start, stop):
        tail = len(tokens)
        tokens += ids[i][p:]
        positions += range(p, width)
        head = first[plan.group[i]]
        rows.append([*range(head, head + p), *range(tail, tail + width - p)])
    return Pack(start, stop, tokens, positions, rows)


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
