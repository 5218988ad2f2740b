"""Greedy generation with a KV cache over left-padded batches: the evaluator's decoding
(`warehouse eval`), run with or without an ablation's hooks in place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from warehouse.ingest.batching import pad_batch
from warehouse.ingest.models import LoadedModel
from warehouse.ingest.prefix import (
    PrefixPlan,
    new_cache,
    plan_prefix,
    select_rows,
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
    With `shared_prefix` the prompts' shared leading tokens run once per block before the
    rest (`_plan`, `_shared_head`): the same mathematics, not the same bits. So are the
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
    plan = _plan(model.config, ids[: len(ids) // blocks], max_new_tokens, shared_prefix)
    if plan.shared:
        x, mask, pos, cache = _shared_head(backbone, ids, plan, blocks, pad_id, device)
    else:
        (x, mask, pos), cache = pad_batch(ids, pad_id, "left", device), None
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)
    done = torch.zeros(len(ids), dtype=torch.bool, device=device)
    new: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        out = backbone(
            input_ids=x, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True
        )
        token = head(out.last_hidden_state[:, -1]).argmax(-1)  # (batch,)
        token = torch.where(done, pad_id, token)
        new.append(token)
        done |= torch.isin(token, eos)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        cache = out.cache
        x = token[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
    return torch.stack(new, dim=1).tolist() if new else [[] for _ in ids]


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
