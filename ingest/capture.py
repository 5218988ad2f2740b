"""One forward pass per batch, with hooks that gather every prompt token's activations and
pool them per prompt on the model's device, so only finished rows cross to the host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from warehouse.ingest.batching import pad_batch
from warehouse.ingest.prefix import Pack, packs, within_window
from warehouse.ingest.prepacked import prepacked
from warehouse.ingest.sites import hook_sites, units
from warehouse.store.arrays import STORAGE_DTYPES
from warehouse.store.errors import SiteError
from warehouse.store.manifest import MAX_LISTED_NEURONS

POOLINGS = ("mean", "max", "last")
_TORCH_STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class CaptureSpec:
    sites: Mapping[str, Sequence[int]]  # site -> model layers captured
    tokens: bool  # keep per-token activations (False: pooled responses only)
    pooling: Sequence[str]
    dtype: str  # storage dtype: float16 | bfloat16 | float32


def _stored(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """`x` in the storage dtype, C-ordered, on its device. A strided `x` (the responses'
    transposed view) is converted and laid out in one copy: `.to()` keeps its strides, and
    the `.contiguous()` after it was a second pass, together ~0.9 ms per array and batch."""
    want = _TORCH_STORAGE[dtype]
    if x.dtype != want or not x.is_contiguous():
        x = torch.empty(x.shape, dtype=want, device=x.device).copy_(x)
    return x


def _to_host(x: torch.Tensor, dtype: str) -> np.ndarray:
    """A stored (`_stored`) tensor as a host array. From a GPU the copy is queued into
    page-locked memory and not waited for: whoever reads the array first waits for the event
    `Capturer.run` records after its copies."""
    want = _TORCH_STORAGE[dtype]
    if x.device.type == "cuda":
        x = torch.empty(x.shape, dtype=want, pin_memory=True).copy_(x, non_blocking=True)
    if dtype == "bfloat16":
        return x.view(torch.int16).cpu().numpy().view(np.uint16)
    return x.cpu().numpy().astype(STORAGE_DTYPES[dtype], copy=False)


def count_nonfinite(
    stored: torch.Tensor, overflowed: torch.Tensor, layers: Sequence[int]
) -> dict | None:
    """The non-finite values of one stored array of a batch, or None when there are none.

    stored: (rows, layers, units) in the storage dtype; overflowed: (layers, units) count
    of stored infinities whose value before the cast to the storage dtype was finite (a
    float16 overflow). The result is one array's entry of the manifest's `nonfinite` field
    (store/manifest.py)."""
    bad = ~torch.isfinite(stored)
    if not bool(bad.any()):
        return None
    per_layer = {
        "nan": torch.isnan(stored).sum((0, 2)),
        "posinf": (stored == float("inf")).sum((0, 2)),
        "neginf": (stored == float("-inf")).sum((0, 2)),
        "overflow": overflowed.sum(1),
    }
    per_layer = {k: v.cpu().tolist() for k, v in per_layer.items()}
    out: dict = {"layers": {}, "neurons": {}, "truncated": False}
    for i, layer in enumerate(layers):
        counts = {k: int(v[i]) for k, v in per_layer.items()}
        if any(counts.values()):
            out["layers"][str(layer)] = counts
    per_neuron = bad.sum(0).cpu().numpy()
    over = overflowed.cpu().numpy()
    for i, unit in zip(*np.nonzero(per_neuron), strict=True):
        if len(out["neurons"]) == MAX_LISTED_NEURONS:
            out["truncated"] = True
            break
        out["neurons"][f"{layers[i]}:{unit}"] = [int(per_neuron[i, unit]), int(over[i, unit])]
    return out


class _AllCaptured(Exception):
    """Raised by the last hook of a forward pass: nothing after it is stored."""


class Capturer:
    """Runs batches through a model's backbone and returns the rows to store.

    The forward pass stops once every captured site has been seen: what the model computes
    after the last one (the rest of that layer, any later layers, the final norm) is never
    stored, so it is not computed (with `--layers 0-11` of a 30-layer model, ingest runs 12).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        pad_id: int,
        spec: CaptureSpec,
        wait: bool = True,
        group_bytes: int | None = None,
        shared_prefix: bool = False,
    ) -> None:
        """wait=False (ingest): on a GPU, `run` returns as soon as the batch's work is queued,
        and its arrays may be read only after `self.ready.synchronize()` (the writer thread
        waits on it), so the next batch's forward is queued while this one's rows copy.

        group_bytes: a site's tensors of consecutive layers are held until they reach this
        many bytes and then stored and pooled together, a few kernels for the group instead
        of a few per layer. On a GPU (default 256 MiB) each kernel costs a launch from Python
        while the forward pass is itself launch-bound for small models; on a CPU (default 0,
        each layer at once) stacking them would be one more pass over memory.

        shared_prefix: run each distinct token prefix of a batch once, its prefix tree packed
        into one sequence (ingest/prefix.py); the values equal one plain forward's within
        float rounding, not bit for bit."""
        self.model = model
        self.shared_prefix = shared_prefix
        self.backbone = model.base_model  # no LM head: ingest never needs logits
        self.pad_id = pad_id
        self.spec = spec
        self.wait = wait
        self.ready: torch.cuda.Event | None = None  # the last run's copies, where not waited
        # The last run's check: each stored array's minimum and maximum, all finite when
        # every stored value was. On a GPU, read it after `ready`.
        self.check: np.ndarray | None = None
        self.device = next(model.parameters()).device
        self.units = {site: units(model.config, site) for site in spec.sites}
        if group_bytes is None:
            group_bytes = 256 << 20 if self.device.type == "cuda" else 0
        self.group_bytes = group_bytes

    @torch.inference_mode()
    def run(
        self, ids: Sequence[Sequence[int]], counts: dict | None = None
    ) -> dict[str, np.ndarray]:
        """Keys "activations/<site>" -> (tokens, layers, units) in prompt order, and
        "responses/<site>/<pooling>" -> (prompts, layers, units).

        A batch holds prompts of one length: ingest never pads (docs/design.md), so no pad
        token enters a stored value or a pool. With `shared_prefix` a batch whose prompts
        share leading tokens runs each distinct prefix once, packed (ingest/prefix.py), and
        each prompt's rows are gathered from the packed sequence in its token order. Every
        run takes each stored array's minimum and maximum (one reduction, kept in
        `self.check`). With a `counts` dict the run also counts its non-finite values
        exactly, into array key -> `count_nonfinite`'s result: several more passes, so ingest
        runs a batch again this way only when its check is not finite."""
        width = len(ids[0])
        if any(len(x) != width for x in ids):
            raise ValueError("a captured batch holds prompts of one length (ingest never pads)")
        passes = packs(ids) if self._packable(width) else None
        counting = counts is not None
        if passes is not None:
            out, overflow = self._run_packed(passes, len(ids), width, counting)
        else:
            # Positions and mask as for any batch: the same inputs the model gets in ingest.
            input_ids, mask, positions = pad_batch(ids, self.pad_id, "right", self.device)
            batch = _Batch(self, len(ids), width, counting)
            self._forward(batch, input_ids=input_ids, attention_mask=mask, position_ids=positions)
            out, overflow = batch.out, batch.overflow
        return self._finish(out, overflow, counts)

    def _packable(self, width: int) -> bool:
        """Shared prefixes are on and the packed mask is every layer's: a model with a
        sliding window shorter than the prompts masks its windowed layers otherwise."""
        return self.shared_prefix and within_window(self.model.config, width)

    def _forward(self, batch: _Batch, **inputs: object) -> None:
        """One backbone forward pass whose hooks fill `batch`, stopped after its last site."""
        inputs.setdefault("use_cache", False)
        with hook_sites(self.model, self.spec.sites, batch.grab), prepacked(self.model):
            try:
                self.backbone(**inputs)
            except _AllCaptured:
                pass
        if batch.pending:  # a site the forward never reached would be stored as garbage
            raise SiteError(f"the forward pass never reached (site, layer) {sorted(batch.pending)}")

    def _run_packed(
        self, passes: list[Pack], n: int, width: int, counting: bool
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A batch of `n` prompts as packed passes (ingest/prefix.py), usually one: each
        pass's hooks gather its prompts' rows into their place in the batch's output."""
        whole = _allocate(self.spec, self.units, n, width, self.device, self.spec.pooling)
        overflow = None
        for pack in passes:
            inputs, rows = pack.inputs(self.model.dtype, self.device)
            batch = _Batch(self, len(rows), width, counting, whole, pack.start, rows)
            self._forward(batch, **inputs)
            if overflow is None:
                overflow = batch.overflow
            else:
                overflow = {s: overflow[s] + batch.overflow[s] for s in overflow}
        return whole, overflow

    def _finish(
        self, out: dict[str, torch.Tensor], overflow: dict[str, torch.Tensor], counts: dict | None
    ) -> dict[str, np.ndarray]:
        """The batch's arrays in the storage dtype on the host, their bounds in `check`."""
        rows, bounds = {}, []
        for k, v in out.items():
            source = v.flatten(0, 1) if k.startswith("activations/") else v.transpose(0, 1)
            stored = _stored(source, self.spec.dtype)
            # The stored minimum and maximum: both finite only if every value is (a NaN
            # propagates, an overflow is already an infinity). One pass, no temporaries.
            bounds.extend(torch.aminmax(stored))
            if counts is not None:
                self._count(k, stored, source, overflow, counts)
            rows[k] = _to_host(stored, self.spec.dtype)
        self.check = _to_host(torch.stack(bounds).float(), "float32")
        self.ready = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            if self.wait:
                event.synchronize()
            else:
                self.ready = event
        return rows

    def _count(
        self,
        key: str,
        stored: torch.Tensor,
        source: torch.Tensor,
        overflow: dict[str, torch.Tensor],
        counts: dict,
    ) -> None:
        site = key.split("/")[1]
        if key.startswith("activations/"):
            lost = overflow[site]
        else:  # pooled in float32: cast here
            lost = (torch.isinf(stored) & torch.isfinite(source)).sum(0)
        found = count_nonfinite(stored, lost, list(self.spec.sites[site]))
        if found is not None:
            counts[key] = found


class _Batch:
    """One forward pass's hooks: the output tensors they fill and what they still wait for.

    Plain, it allocates its own outputs. Packed (ingest/prefix.py), it writes prompts
    `start`.. of `into` (the whole batch's outputs), and `gather` (prompts, tokens) names
    the packed sequence's row of each of its prompts' tokens."""

    def __init__(
        self,
        cap: Capturer,
        n_prompts: int,
        width: int,
        counting: bool,
        into: dict[str, torch.Tensor] | None = None,
        start: int = 0,
        gather: torch.Tensor | None = None,
    ) -> None:
        spec, device = cap.spec, cap.device
        self.spec, self.counting = spec, counting
        self.gather = None if gather is None else gather.flatten()
        self.shape = (n_prompts, width)
        self.layer_index = {s: {ly: i for i, ly in enumerate(ls)} for s, ls in spec.sites.items()}
        if into is None:
            self.out = _allocate(spec, cap.units, n_prompts, width, device, spec.pooling)
        else:
            prompts = slice(start, start + n_prompts)
            self.out = {
                k: v[prompts] if k.startswith("activations/") else v[:, prompts]
                for k, v in into.items()
            }
        self.pending = {(site, layer) for site, ls in spec.sites.items() for layer in ls}
        # Layers of a site in a group must arrive in their stored order (hooks fire in layer
        # order): a site listed out of order is stored layer by layer.
        per_layer = {s: n_prompts * width * cap.units[s] * 4 for s in spec.sites}
        self.group = {
            s: max(1, cap.group_bytes // per_layer[s]) if list(ls) == sorted(ls) else 1
            for s, ls in spec.sites.items()
        }
        self.held: dict[str, list[torch.Tensor]] = {s: [] for s in spec.sites}
        # Counting only: per site, (layers, units) per-token values that overflowed the cast.
        self.overflow = {
            s: torch.zeros((len(ls), cap.units[s]), dtype=torch.long, device=device)
            for s, ls in spec.sites.items()
        }
        self.last_layer = {s: max(ls) for s, ls in spec.sites.items()}  # its hook fires last

    def grab(self, site: str, layer: int, t: torch.Tensor) -> None:
        # Held, not copied: the model must not change the tensor in place after the hook
        # (no supported family does: the next op reads it into a new tensor).
        held = self.held[site]
        held.append(t)
        if len(held) == self.group[site] or layer == self.last_layer[site]:
            i0 = self.layer_index[site][layer] + 1 - len(held)
            self.store(site, i0, held[0][None] if len(held) == 1 else torch.stack(held))
            held.clear()
        self.pending.discard((site, layer))
        if not self.pending:
            raise _AllCaptured

    def store(self, site: str, i0: int, x: torch.Tensor) -> None:
        """x: (layers, batch, seq, units), the site's stored layers i0, i0 + 1, ..."""
        rows = slice(i0, i0 + len(x))
        if self.gather is not None:  # a packed sequence: each prompt's rows in token order
            x = x[:, 0].index_select(1, self.gather).unflatten(1, self.shape)
        if self.spec.tokens:  # (batch, seq, layers, units): prompt by prompt, token by token
            src = x.permute(1, 2, 0, 3)
            dst = self.out[f"activations/{site}"]
            dst[:, :, rows] = src
            if self.counting:
                lost = torch.isinf(dst[:, :, rows]) & torch.isfinite(src)
                self.overflow[site][rows] += lost.sum((0, 1))
        # Pool in float32 whatever the model dtype. Every prompt has the batch's width: a
        # scalar divisor and the last column's view, no mask, broadcast or gather.
        x32 = x.float()
        for pool in self.spec.pooling:
            dst = self.out[f"responses/{site}/{pool}"][rows]  # (layers, batch, units)
            # Reductions write into dst (out=): no temporaries, no extra copy.
            if pool == "mean":
                torch.sum(x32, 2, out=dst)
                dst.div_(x32.shape[2])
            elif pool == "max":
                torch.amax(x32, 2, out=dst)
            else:  # last
                dst.copy_(x32[:, :, -1])


def _allocate(
    spec: CaptureSpec,
    n_units: dict[str, int],
    n_prompts: int,
    width: int,
    device: torch.device,
    pooling: Sequence[str],
) -> dict[str, torch.Tensor]:
    """A batch's output tensors on the device, by array key: per-token activations (when
    the spec keeps them) and the responses of `pooling`."""
    out: dict[str, torch.Tensor] = {}
    for site, layers in spec.sites.items():
        if spec.tokens:
            out[f"activations/{site}"] = torch.empty(
                (n_prompts, width, len(layers), n_units[site]),
                dtype=_TORCH_STORAGE[spec.dtype],
                device=device,
            )
        for pool in pooling:
            # (layers, batch, units): each hook reduces straight into a contiguous slab.
            out[f"responses/{site}/{pool}"] = torch.empty(
                (len(layers), n_prompts, n_units[site]), dtype=torch.float32, device=device
            )
    return out
