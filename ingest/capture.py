"""One forward pass per batch, with hooks that gather every prompt token's activations and
pool them per prompt on the model's device, so only finished rows cross to the host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from warehouse.errors import SiteError
from warehouse.ingest.sites import hook_sites, units
from warehouse.store.arrays import STORAGE_DTYPES

POOLINGS = ("mean", "max", "last")
_TORCH_STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class CaptureSpec:
    sites: Mapping[str, Sequence[int]]  # site -> model layers captured
    tokens: bool  # keep per-token activations (False: pooled responses only)
    pooling: Sequence[str]
    dtype: str  # storage dtype: float16 | bfloat16 | float32
    padding_side: str = "right"


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
    return input_ids.to(device), mask.to(device), positions.to(device)


def _to_host(x: torch.Tensor, dtype: str) -> np.ndarray:
    """`x` in the storage dtype, C-ordered, as a host array. A strided `x` (the responses'
    transposed view) is converted and laid out in one copy: `.to()` keeps its strides, and
    the `.contiguous()` after it was a second pass, together ~0.9 ms per array and batch."""
    want = _TORCH_STORAGE[dtype]
    if x.dtype != want or not x.is_contiguous():
        x = torch.empty(x.shape, dtype=want, device=x.device).copy_(x)
    if dtype == "bfloat16":
        return x.view(torch.int16).cpu().numpy().view(np.uint16)
    return x.cpu().numpy().astype(STORAGE_DTYPES[dtype], copy=False)


class _AllCaptured(Exception):
    """Raised by the last hook of a forward pass: nothing after it is stored."""


class Capturer:
    """Runs batches through a model's backbone and returns the rows to store.

    The forward pass stops once every captured site has been seen: what the model computes
    after the last one (the rest of that layer, any later layers, the final norm) is never
    stored, so it is not computed (with `--layers 0-11` of a 30-layer model, ingest runs 12).
    """

    def __init__(self, model: torch.nn.Module, pad_id: int, spec: CaptureSpec) -> None:
        self.model = model
        self.backbone = model.base_model  # no LM head: ingest never needs logits
        self.pad_id = pad_id
        self.spec = spec
        self.device = next(model.parameters()).device
        self.units = {site: units(model.config, site) for site in spec.sites}

    @torch.inference_mode()
    def run(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Keys "activations/<site>" -> (tokens, layers, units) in prompt order, and
        "responses/<site>/<pooling>" -> (prompts, layers, units)."""
        spec = self.spec
        input_ids, mask, positions = pad_batch(ids, self.pad_id, spec.padding_side, self.device)
        real = mask.bool()  # (batch, seq)
        n_real = real.sum(1, keepdim=True)  # (batch, 1)
        if spec.padding_side == "left":  # index of each prompt's last real token
            last = torch.full((len(ids),), input_ids.shape[1] - 1, device=self.device)
        else:
            last = n_real[:, 0] - 1
        batch = torch.arange(len(ids), device=self.device)
        store_dtype = _TORCH_STORAGE[spec.dtype]
        layer_index = {s: {layer: i for i, layer in enumerate(ls)} for s, ls in spec.sites.items()}
        out: dict[str, torch.Tensor] = {}
        for site, layers in spec.sites.items():
            shape_t = (int(real.sum()), len(layers), self.units[site])
            if spec.tokens:
                out[f"activations/{site}"] = torch.empty(
                    shape_t, dtype=store_dtype, device=self.device
                )
            for pool in spec.pooling:
                # (layers, batch, units): each hook reduces straight into a contiguous slab.
                out[f"responses/{site}/{pool}"] = torch.empty(
                    (len(layers), len(ids), self.units[site]),
                    dtype=torch.float32,
                    device=self.device,
                )

        padded = not bool(real.all())
        pending = {(site, layer) for site, ls in spec.sites.items() for layer in ls}

        def grab(site: str, layer: int, t: torch.Tensor) -> None:
            store(site, layer, t)
            pending.discard((site, layer))
            if not pending:
                raise _AllCaptured

        def store(site: str, layer: int, t: torch.Tensor) -> None:
            i = layer_index[site][layer]
            if spec.tokens:  # (tokens, units), prompt by prompt
                out[f"activations/{site}"][:, i] = t[real] if padded else t.flatten(0, 1)
            # Pool in float32 whatever the model dtype; padding never enters a pool. Ingest
            # batches are never padded, so the masks are skipped there (hooks run on the
            # forward's critical path).
            t32 = t.float()
            for pool in spec.pooling:
                dst = out[f"responses/{site}/{pool}"][i]  # (batch, units), contiguous
                # Reductions write into dst (out=): no temporaries, no extra copy. Unpadded,
                # every prompt has the batch's width: a scalar divisor and the last column's
                # view give the same values without a broadcast or a gather.
                if pool == "mean":
                    src = t32.masked_fill(~real[..., None], 0.0) if padded else t32
                    torch.sum(src, 1, out=dst)
                    dst.div_(n_real if padded else t32.shape[1])
                elif pool == "max":
                    src = t32.masked_fill(~real[..., None], float("-inf")) if padded else t32
                    torch.amax(src, 1, out=dst)
                else:  # last
                    dst.copy_(t32[batch, last] if padded else t32[:, -1])

        with hook_sites(self.model, spec.sites, grab):
            try:
                self.backbone(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                )
            except _AllCaptured:
                pass
        if pending:  # a site the forward never reached would be stored as garbage
            raise SiteError(f"the forward pass never reached (site, layer) {sorted(pending)}")
        return {
            k: _to_host(v if k.startswith("activations/") else v.transpose(0, 1), spec.dtype)
            for k, v in out.items()
        }
