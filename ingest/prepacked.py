"""Linear layers on weights packed once for oneDNN, while ingest and eval run a model.

On a CPU most of a small model's forward pass is its linear layers, and PyTorch's default
path (`F.linear`) packs each weight matrix into the kernel's blocked layout again on every
call. `prepacked(model)` makes every `nn.Linear` of a float32 CPU model run oneDNN's linear
on a copy of its weight packed once (`torch.ops.mkldnn`, what `torch.compile`'s CPU freezing
uses), for the length of a `with` block; outside it the model is as loaded, so a bare forward,
`generate` or a hand-written hook sees Hugging Face's own kernels. Measured side by side on the
2-core VM (`bench/ingest.py`, bare forward rows): SmolLM2-135M's backbone over 32 to 256 token
rows ran 1.24-1.70x faster.

The values are the same mathematics summed in another order: float32 results differ from
`F.linear`'s in the last bits, ~1e-6 relative after 30 layers (4e-5 at most seen), so a stored
float16 value may differ by one step and a greedy argmax that is a near-tie may fall the
other way. They are deterministic: the same batch gives the same bits on the same machine.

Packed copies are kept per weight and made again when the weight changes (its version
counter, bumped by every in-place edit). The model's output embeddings stay on `F.linear`
(a large vocabulary would double its memory for one row per prompt), and a model whose
linear weights exceed `MAX_BYTES` is not packed (the copies double their memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

ENABLED = True  # False: every linear layer on `F.linear`, as before packing (benches)
MAX_BYTES = 4 << 30
BATCH_HINT = 128  # rows oneDNN lays the packed weight out for; any row count runs on it
_ON = "_warehouse_prepacked"  # set on a model while its linears run packed

# Kept on each linear module: (its weight's version and address when packed, the copy). A
# plain attribute, not a buffer, so never in a state dict.
_COPY = "_warehouse_packed_weight"


def available(model: nn.Module) -> bool:
    """Packing is on, oneDNN's packed linear exists here and `model` is a float32 model on
    the CPU."""
    ops = getattr(torch.ops, "mkldnn", None)
    needed = ("_linear_pointwise", "_reorder_linear_weight")
    if not (ENABLED and torch.backends.mkldnn.is_available()):
        return False
    if not all(hasattr(ops, name) for name in needed):  # both since torch 2.0
        return False
    weight = next(model.parameters())
    return weight.device.type == "cpu" and weight.dtype == torch.float32


@contextmanager
def prepacked(model: nn.Module) -> Iterator[None]:
    """Within the block, `model`'s linear layers run on packed weights (module docstring).
    Nested blocks, and models where `available` is false, change nothing."""
    linears = _linears(model) if available(model) and not getattr(model, _ON, False) else []
    saved: list[tuple[nn.Linear, object]] = []
    try:
        for m in linears:
            packed = _packed(m)
            saved.append((m, m.__dict__.get("forward")))
            m.forward = partial(_packed_forward, packed, m.bias)
        if saved:
            setattr(model, _ON, True)
        yield
    finally:
        for m, forward in saved:
            if forward is None:
                del m.forward
            else:
                m.forward = forward
        if saved:
            delattr(model, _ON)


def _linears(model: nn.Module) -> list[nn.Linear]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = [m for m in model.modules() if type(m) is nn.Linear and m is not head]
    total = sum(m.weight.numel() * m.weight.element_size() for m in found)
    return found if total <= MAX_BYTES else []


def _packed(m: nn.Linear) -> torch.Tensor:
    """`m`'s packed weight, packed again if the weight changed since."""
    stamp = (m.weight._version, m.weight.data_ptr())
    held = m.__dict__.get(_COPY)
    if held is None or held[0] != stamp:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), BATCH_HINT)
        held = stamp, packed
        object.__setattr__(m, _COPY, held)
    return held[1]


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
