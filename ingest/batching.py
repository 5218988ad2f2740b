"""Padded batches of token ids: what ingest's capture and the evaluator's generation share."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(
    ids: Sequence[Sequence[int]], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and position_ids for a padded batch.

    Positions count real tokens only, so a left-padded prompt gets the same rotary positions
    as when it runs alone.
    """
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(width - len(x), width) if side == "left" else slice(0, len(x))
        input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
        mask[i, sl] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # non_blocking: a blocking copy to a GPU waits for everything queued before it (the last
    # batch's forward pass); from pageable memory CUDA stages the bytes before it returns.
    return tuple(t.to(device, non_blocking=True) for t in (input_ids, mask, positions))
