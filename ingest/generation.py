"""Greedy generation with a KV cache over left-padded batches: the evaluator's decoding
(`warehouse eval`), run with or without an ablation's hooks in place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from warehouse.ingest.batching import pad_batch
from warehouse.ingest.models import LoadedModel
from warehouse.ingest.prefix import (
    Pack,
    PrefixPlan,
    gather_paths,
    new_cache,
    plan_prefix,
    select_rows,
    tree,
    within_window,
)
from warehouse.ingest.prepacked import prepacked


@torch.inference_mode()
def greedy(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    *,
    blocks: int = 1,
    shared_prefix: bool = False,
) -> list[list[int]]:
    """Greedy new token ids of one left-padded batch, each cut before its first EOS.

    The same argmax decoding as `model.generate(do_sample=False)` with a KV cache: one forward
    over the prompts, then one per new token; positions count real tokens only. Hooks in place
    (an ablation) run in every forward, so the generated tokens are ablated like the prompt.

    `ids` is `blocks` equal blocks of the same prompts (one per ablation of `ablate_rows`).
    With `shared_prefix` each distinct token prefix runs once per block: the block's prefix
    tree as one packed pass (`_tree_prefill`), or where the tree is too large, one prefix
    length's distinct prefixes before the tails (`_plan`, `_shared_head`). The same
    mathematics, not the same bits. So are the
    linear layers' packed weights (ingest/prepacked.py).
    """
    with prepacked(model):  # linear layers on weights packed once (ingest/prepacked.py)
        rows = _decode(model, ids, pad_id, eos_ids, max_new_tokens, blocks, shared_prefix)
    eos_set = set(eos_ids)
    return [_cut(row, eos_set) for row in rows]


def _decode(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    blocks: int,
    shared_prefix: bool,
) -> list[list[int]]:
    """`greedy`'s new token ids, each row up to `max_new_tokens` long, EOS not yet cut."""
    device = next(model.parameters()).device
    # The backbone, then the LM head on the last position alone: the head of
    # `model(..., logits_to_keep=1)` runs as a batched matmul over a non-contiguous slice,
    # ~1.3x slower on CPU prefills. What a causal LM's forward does after its head (a logit
    # scale, Gemma's tanh soft-cap) is monotonic, so the argmax is the same.
    backbone, head = model.base_model, model.get_output_embeddings()
    h, mask, pos, cache = _prefill(model, ids, blocks, max_new_tokens, shared_prefix, pad_id)
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)
    done = torch.zeros(len(ids), dtype=torch.bool, device=device)
    new: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        token = head(h).argmax(-1)  # (batch,)
        token = torch.where(done, pad_id, token)
        new.append(token)
        done |= torch.isin(token, eos)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = backbone(
            input_ids=token[:, None], attention_mask=mask, position_ids=pos, cache=cache,
            use_cache=True,
        )  # fmt: skip
        h, cache = out.last_hidden_state[:, -1], out.cache
    return torch.stack(new, dim=1).tolist() if new else [[] for _ in ids]


def _prefill(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    blocks: int,
    new: int,
    shared: bool,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """The prompts' forward pass: each prompt's last hidden state (batch, d_model), its
    cache's mask and positions (batch, slots), and the cache. With `shared` a block's prefix
    tree runs as one packed pass (`_tree_prefill`), else a plan's distinct prefixes run once
    (`_shared_head`) before the tails, else the left-padded batch runs as it is."""
    device, backbone = next(model.parameters()).device, model.base_model
    block = ids[: len(ids) // blocks]
    pack = _tree(model.config, block, new, shared)
    if pack is not None:
        return _tree_prefill(model, pack, blocks, device)
    plan = _plan(model.config, block, new, shared)
    if plan.shared:
        x, mask, pos, cache = _shared_head(backbone, ids, plan, blocks, pad_id, device)
    else:
        (x, mask, pos), cache = pad_batch(ids, pad_id, "left", device), None
    out = backbone(input_ids=x, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    return out.last_hidden_state[:, -1], mask, pos, out.cache


def _tree(config: Any, ids: Sequence[Sequence[int]], new: int, shared: bool) -> Pack | None:
    """ingest/prefix.py's tree of one block's prompts as one pack, unless `shared` is off or
    the cache would outgrow a sliding attention window: the pass caches a row per tree row,
    and each prompt's cache then holds the padded prompts and `new` tokens."""
    pack = tree(ids) if shared else None
    if pack is None or not within_window(config, max(len(pack.tokens), max(map(len, ids)) + new)):
        return None
    return pack


def _tree_prefill(
    model: torch.nn.Module, pack: Pack, blocks: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """`_prefill` of a block's prefix tree: one packed sequence per block (a batch row each,
    so `ablate_rows` gives block k its ablation), each distinct prefix once. Each prompt's
    last row gives its hidden state; its path's cached rows, left-padded, become its cache."""
    inputs, rows = pack.inputs(model.dtype, device)
    inputs["input_ids"] = inputs["input_ids"].expand(blocks, -1)
    inputs["position_ids"] = inputs["position_ids"].expand(blocks, -1)
    cache = new_cache(model.config)
    out = model.base_model(**inputs, cache=cache, use_cache=True)
    h = out.last_hidden_state[:, rows[:, -1]].flatten(0, 1)  # (blocks * prompts, d_model)
    width = rows.shape[1]  # the longest prompt
    slots = torch.tensor([[r[0]] * (width - len(r)) + r for r in pack.rows], device=device)
    gather_paths(out.cache, slots)
    lengths = torch.tensor([len(r) for r in pack.rows], device=device)
    mask = (torch.arange(width, device=device) >= (width - lengths)[:, None]).long()
    return h, mask.repeat(blocks, 1), (lengths - 1).repeat(blocks)[:, None], out.cache


def _plan(config: Any, ids: Sequence[Sequence[int]], new: int, shared: bool) -> PrefixPlan:
    """ingest/prefix.py's plan of one block's prompts, unless `shared` is off or a sliding
    attention window is shorter than the padded prompts and `new` tokens: a window counts
    cache slots, and the pads between a prefix and a shorter tail take slots."""
    if not shared or not within_window(config, max(map(len, ids)) + new):
        return PrefixPlan(0, [], [])
    return plan_prefix(ids)


def _shared_head(
    backbone: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    plan: PrefixPlan,
    blocks: int,
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """Run each block's distinct prefixes once into a cache; return the tails' inputs (left
    padded, after the prefix: the mask is 0 between a prefix and a shorter tail) and the
    cache with each prompt's prefix rows selected for it."""
    p, distinct = plan.length, len(plan.prefixes)
    cache = new_cache(backbone.config)
    x, mask, pos = pad_batch(plan.prefixes * blocks, pad_id, "left", device)
    backbone(input_ids=x, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    rows = [k * distinct + g for k in range(blocks) for g in plan.group]
    select_rows(cache, torch.tensor(rows, dtype=torch.long, device=device))
    x, mask, pos = pad_batch([t[p:] for t in ids], pad_id, "left", device)
    mask = torch.cat([torch.ones((len(ids), p), dtype=mask.dtype, device=device), mask], dim=1)
    return x, mask, pos + p, cache


def _cut(row: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos:
            return row[:i]
    return row


def answer(
    loaded: LoadedModel,
    ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    blocks: int = 1,
    shared_prefix: bool = False,
) -> list[str]:
    """Decoded greedy continuations of one batch of token ids (hooks in place apply; `blocks`
    and `shared_prefix` as for `greedy`)."""
    tok = loaded.tokenizer
    new = greedy(
        loaded.model,
        ids,
        tok.pad_token_id,
        eos_token_ids(loaded),
        max_new_tokens,
        blocks=blocks,
        shared_prefix=shared_prefix,
    )
    return [tok.decode(t, skip_special_tokens=True) for t in new]


def eos_token_ids(loaded: LoadedModel) -> list[int]:
    """The ids that end generation: the generation config's, else the tokenizer's EOS."""
    gen = getattr(loaded.model, "generation_config", None)
    value = getattr(gen, "eos_token_id", None) if gen is not None else None
    if value is None:
        value = loaded.tokenizer.eos_token_id
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list | tuple) else [value])]
