"""Greedy generation with a KV cache over left-padded batches: the evaluator's decoding
(`warehouse eval`), run with or without an ablation's hooks in place."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from warehouse.ingest.batching import pad_batch
from warehouse.ingest.models import LoadedModel


@torch.inference_mode()
def greedy(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy new token ids of one left-padded batch, each cut before its first EOS.

    The same argmax decoding as `model.generate(do_sample=False)` with a KV cache: one forward
    over the prompts, then one per new token; positions count real tokens only. Hooks in place
    (an ablation) run in every forward, so the generated tokens are ablated like the prompt.
    """
    device = next(model.parameters()).device
    x, mask, pos = pad_batch(ids, pad_id, "left", device)  # (batch, seq) each
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)
    done = torch.zeros(len(ids), dtype=torch.bool, device=device)
    new: list[torch.Tensor] = []
    # The backbone, then the LM head on the last position alone: the head of
    # `model(..., logits_to_keep=1)` runs as a batched matmul over a non-contiguous slice,
    # ~1.3x slower on CPU prefills. What a causal LM's forward does after its head (a logit
    # scale, Gemma's tanh soft-cap) is monotonic, so the argmax is the same.
    backbone, head = model.base_model, model.get_output_embeddings()
    cache = None
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
    rows = torch.stack(new, dim=1).tolist() if new else [[] for _ in ids]
    eos_set = set(eos.tolist())
    return [_cut(row, eos_set) for row in rows]


def _cut(row: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos:
            return row[:i]
    return row


def answer(loaded: LoadedModel, ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
    """Decoded greedy continuations of one batch of token ids (hooks in place apply)."""
    tok = loaded.tokenizer
    new = greedy(loaded.model, ids, tok.pad_token_id, eos_token_ids(loaded), max_new_tokens)
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
