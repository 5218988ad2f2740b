"""Shared token prefixes: a batch's common prompt starts run through the model once.

Prompts of one relation and template begin with the same tokens ("The capital of"): in a
causal model those tokens' activations do not depend on what follows, so every prompt of the
batch that starts that way would compute them again. Two ways run a batch's prompts with
each shared start once:

- ingest *packs* the batch (`packs`): its prompts' prefix tree, each distinct token prefix
  once, laid out as one sequence of a single forward pass, with an attention mask that lets
  each row see exactly the rows of the prefix it ends (its own prompt's tokens up to it) and
  positions that count within each prompt. One pass, so the tokens saved are time saved: a
  forward pass of a small model on a CPU streams every weight from memory once (~40 ms for
  SmolLM2-135M on 2 threads), and a second pass per batch paid that again. A packing that
  runs more than `MAX_SHARE` (3/4) of the batch's tokens is not taken: the batch runs as one
  plain forward. On the built-in country_capital and country_currency in en, de and fr
  (batches of 32) the trees run 49 % of the tokens; one prefix length per batch (the plan
  below) ran 55 %.
- the evaluator's greedy decoding (ingest/generation.py) packs each left-padded batch of
  prompts of several lengths the same way (`tree`), one pack per batch, into a key/value
  cache (`new_cache`), and then gives each prompt the cached rows of its own path, left-
  padded (`gather_paths`), for its decoding steps. A batch whose tree holds more than
  `PACK_ROWS` rows runs a plan (`plan_prefix`): one prefix length for the batch, the
  distinct prefixes into the cache (`select_rows`), then the tails in a second pass. On the
  study bench's test prompts the trees run 71 % of the token positions that the plan runs.

The plan's rule (deterministic given the batch's token ids, the longest `w` tokens and the
shortest `s`): one prefix length `p` for the whole batch, 2 <= p <= s - 1, the one whose plan
runs the fewest tokens, `distinct(p) * p + n * (w - p)` for `n` prompts whose first `p`
tokens take `distinct(p)` values (a tail shorter than `w - p` is padded to it); of equal
costs the shortest `p`. Only a plan that runs at most `MAX_SHARE` of the `n * w` tokens of
one plain forward is taken. A batch where no two prompts share two leading tokens (or a
batch of one prompt) runs as one plain forward.

A packed sequence holds at most `PACK_ROWS` rows: attention over one sequence costs its
rows squared, where a batch's costs each prompt's tokens squared. A batch whose tree is
larger is cut into consecutive runs of prompts, each packed with the tree of its own.

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
# The capture plan's `prefix` value: ingest packs each batch's prefix tree (`packs`). Builds
# that packed one prefix length per batch wrote "packed", with other rounding.
PACKED = "tree"
# A packing or a plan must run at most this share of a plain forward's tokens: a small saving
# does not pay for the extra work. The evaluator's two passes over short prompts cost more
# than their tokens on 2 CPU threads (a random sample saving 14 % ran slower than one plain
# forward; docs/performance.md, "Ingest"); a packed pass adds a mask over all its rows and a
# gather of every prompt's rows per captured layer.
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
    """One packed forward pass: prompts `start`..`stop` of a batch (ingest's hold one length,
    the evaluator's several) as one sequence, a row per distinct token prefix of theirs, in
    order of first appearance (so a row's ancestors come before it). `rows[i][t]` is the
    sequence row of the pack's prompt i's token t."""

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

        # A shorter prompt's path (the evaluator's batches) is padded with its last row:
        # that row sees its own path, so the mask is the same, and `rows[:, -1]` is always
        # each prompt's last token.
        width = max(map(len, self.rows))
        rows = torch.tensor([r + r[-1:] * (width - len(r)) for r in self.rows], dtype=torch.long)
        n = len(self.tokens)
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


def packs(ids: Sequence[Sequence[int]], limit: int = PACK_ROWS) -> list[Pack] | None:
    """An equal-length batch's packed passes (each runs its prompts' prefix tree, every
    distinct token prefix once): consecutive prompts, as many as fit in `limit` rows (one
    prompt at least). None where packing would run more than `MAX_SHARE` of the batch's
    tokens, or the batch is a single prompt: it runs as one plain forward."""
    n, width = len(ids), len(ids[0])
    if n < 2:
        return None
    out: list[Pack] = []
    start, trie = 0, _Trie()
    for i in range(n):
        if i > start and len(trie.tokens) + trie.new_rows(ids[i]) > limit:
            out.append(trie.pack(start, i))
            start, trie = i, _Trie()
        trie.add(ids[i])
    out.append(trie.pack(start, n))
    if sum(len(k.tokens) for k in out) > MAX_SHARE * n * width:
        return None
    return out


def tree(ids: Sequence[Sequence[int]], limit: int = PACK_ROWS) -> Pack | None:
    """A batch of prompts of any lengths as one pack, its whole prefix tree (the evaluator's
    prefill). None where the tree holds more than `limit` rows or more than `MAX_SHARE` of the
    `n * w` tokens of the batch padded to its longest prompt, or the batch is one prompt."""
    if len(ids) < 2:
        return None
    trie = _Trie()
    for prompt in ids:
        trie.add(prompt)
    padded = len(ids) * max(map(len, ids))
    if len(trie.tokens) > min(limit, MAX_SHARE * padded):
        return None
    return trie.pack(0, len(ids))


class _Trie:
    """The prefix tree of a pack's prompts, as sequence rows: a row per distinct token
    prefix, in order of first appearance (a row's ancestors come before it)."""

    def __init__(self) -> None:
        self.row: dict[tuple[int, int], int] = {}  # (parent row or -1, token) -> row
        self.tokens: list[int] = []
        self.positions: list[int] = []
        self.rows: list[list[int]] = []

    def new_rows(self, prompt: Sequence[int]) -> int:
        """The rows `prompt` would add."""
        return len(prompt) - len(self._known(prompt))

    def add(self, prompt: Sequence[int]) -> None:
        path = self._known(prompt)
        for t in range(len(path), len(prompt)):
            self.row[(path[-1] if path else -1, prompt[t])] = len(self.tokens)
            path.append(len(self.tokens))
            self.tokens.append(prompt[t])
            self.positions.append(t)
        self.rows.append(path)

    def _known(self, prompt: Sequence[int]) -> list[int]:
        """The rows of `prompt`'s longest prefix already in the tree, in token order."""
        path: list[int] = []
        for token in prompt:
            row = self.row.get((path[-1] if path else -1, token))
            if row is None:
                break
            path.append(row)
        return path

    def pack(self, start: int, stop: int) -> Pack:
        return Pack(start, stop, self.tokens, self.positions, self.rows)


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


def gather_paths(cache: Any, slots: torch.Tensor) -> None:
    """Turn a packed pass's cache, (blocks, heads, rows, dim) per layer, into one cache row
    per prompt of each block: `slots` (prompts, width) names the packed rows of each
    prompt's cache positions (left-padded: the pad slots name any row, masked out). Block k's
    prompts become cache rows k * prompts ... (in place)."""
    for layer in cache.layers:
        if not layer.is_initialized:  # a layer the pass never reached
            continue
        for name in ("keys", "values"):
            x = getattr(layer, name)[:, :, slots]  # (blocks, heads, prompts, width, dim)
            setattr(layer, name, x.transpose(1, 2).flatten(0, 1))
        if hasattr(layer, "cumulative_length"):  # a sliding window's: its mask sizes
            layer.cumulative_length = slots.shape[1]
