"""Deactivate neurons: zero chosen units of a site at every position while a block runs.

    idx = neuron_indices(model, "ffn.act", neuron_ids)      # {layer: LongTensor of units}
    with ablate(model, {"ffn.act": idx}):
        model.generate(...)                                 # prompt and new tokens alike

The hooks come from `ingest.sites.hook_sites`, so sites mean exactly what they mean at ingest:
`ffn.act` zeroes inputs of `down_proj` (a forward pre-hook), `ffn.gate`/`ffn.up`/`ffn.down`
zero outputs of their module (a forward hook). Every forward pass runs them, so the tokens a
cached decoding step feeds in are ablated like the prompt's. They edit the activation in place
(`index_fill_`), so an ablation costs no copy of the activation, and they are removed when the
block ends, also by an exception, so nothing leaks into the next condition.

Neuron ids are `layer * units + neuron` within one site (docs/format.md); `control_ids` draws
random sets of the same shape for the paper's control condition. `ablate_rows` gives each
block of a batch's rows its own ablation, so the evaluator runs several conditions of one prompt
batch in one forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NoReturn

import numpy as np
import torch
from torch import nn

from warehouse.ingest.sites import family, hook_sites, resolve_sites, units
from warehouse.store.errors import SiteError, WarehouseError

# site -> model layer -> unit indices (1-D int64 tensors on the model's device)
Neurons = Mapping[str, Mapping[int, torch.Tensor]]


def split_ids(neuron_ids: Sequence[int] | np.ndarray, n_units: int, n_layers: int) -> np.ndarray:
    """neuron_ids as an int64 array, checked to lie in [0, n_layers * n_units)."""
    ids = np.asarray(neuron_ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise WarehouseError(
            f"neuron ids must be a 1-D list of integers, got {ids.dtype} {ids.shape}"
        )
    ids = ids.astype(np.int64)
    total = n_layers * n_units
    negative = ids[ids < 0]
    if negative.size:
        raise WarehouseError(f"negative neuron id(s) {negative[:5].tolist()}; ids start at 0")
    high = ids[ids >= total]
    if high.size:
        raise WarehouseError(
            f"neuron id(s) {high[:5].tolist()} out of range: the site has {n_layers} layers x "
            f"{n_units} units = ids 0-{total - 1}"
        )
    return ids


def neuron_indices(
    model: nn.Module,
    site: str,
    neuron_ids: Sequence[int] | np.ndarray,
    *,
    expected_units: int | None = None,
) -> dict[int, torch.Tensor]:
    """Per-layer unit indices of neuron ids of `site`, on the model's device.

    `expected_units` is the units per layer the ids were counted with (a selection's sidecar
    says so); a different width means the ids belong to another site or another model.
    """
    config = model.config
    if site == "paper":
        _no_paper()
    site = resolve_sites(config, [site])[0]
    n_units = units(config, site)
    n_layers = family(config).n_layers(config)
    if expected_units is not None and expected_units != n_units:
        raise SiteError(
            f"the neuron ids were counted with {expected_units} units per layer, but {site} of "
            f"this model has {n_units}: they belong to another site or another model"
        )
    ids = split_ids(neuron_ids, n_units, n_layers)
    device = next(model.parameters()).device
    out: dict[int, torch.Tensor] = {}
    layers, neurons = np.divmod(ids, n_units)
    for layer in np.unique(layers).tolist():
        # Sorted and unique: index_fill_ does not need it, but it makes the sets comparable.
        idx = np.unique(neurons[layers == layer])
        out[int(layer)] = torch.as_tensor(idx, dtype=torch.long, device=device)
    return out


def _no_paper() -> NoReturn:
    raise SiteError("`paper` is a set of sites; neuron ids belong to exactly one site")


@contextmanager
def ablate(model: nn.Module, neurons: Neurons) -> Iterator[None]:
    """Zero `neurons[site][layer]` units at their site, every position, while the block runs.

    Empty index tensors and sites without layers are skipped; with nothing to zero the model
    runs untouched (no hooks). The hooks are removed on exit, also when the block raises.
    """
    with ablate_rows(model, [neurons]):
        yield


@contextmanager
def ablate_rows(model: nn.Module, groups: Sequence[Neurons]) -> Iterator[None]:
    """Like `ablate`, with a different ablation per block of batch rows: a forward's batch is
    `len(groups)` equal blocks of rows, and block k gets `groups[k]` (an empty mapping: none).

    So several conditions of one prompt batch run in one forward pass over the batch repeated,
    each row computed as it is alone: the hooks zero units of their own rows only.
    """
    plans = [_checked_plan(model, neurons) for neurons in groups]
    merged: dict[str, dict[int, list[tuple[int, torch.Tensor]]]] = {}
    for k, plan in enumerate(plans):
        for site, by_layer in plan.items():
            for layer, idx in by_layer.items():
                merged.setdefault(site, {}).setdefault(layer, []).append((k, idx))
    if not merged:
        yield
        return
    n_groups = len(plans)

    def zero(site: str, layer: int, t: torch.Tensor) -> None:
        # In place: (batch, seq, units) keeps its storage; the unit axis is the last one.
        rows, rest = divmod(t.shape[0], n_groups)
        if rest:
            raise WarehouseError(f"a batch of {t.shape[0]} rows is not {n_groups} equal blocks")
        for k, idx in merged[site][layer]:
            t[k * rows : (k + 1) * rows].index_fill_(-1, idx, 0)

    with hook_sites(model, {site: sorted(layers) for site, layers in merged.items()}, zero):
        yield


def _checked_plan(model: nn.Module, neurons: Neurons) -> dict[str, dict[int, torch.Tensor]]:
    config = model.config
    n_layers = family(config).n_layers(config)
    device = next(model.parameters()).device
    plan: dict[str, dict[int, torch.Tensor]] = {}
    for site, by_layer in neurons.items():
        if site == "paper":
            _no_paper()
        name = resolve_sites(config, [site])[0]
        n_units = units(config, name)
        for layer, idx in by_layer.items():
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
                raise SiteError(
                    f"layer {layer!r} out of range; the model has layers 0-{n_layers - 1}"
                )
            idx = torch.as_tensor(idx)
            if idx.numel() == 0:
                continue
            if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
                raise WarehouseError(f"{name} layer {layer}: unit indices must be a 1-D int tensor")
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= n_units:
                raise WarehouseError(
                    f"{name} layer {layer}: unit index {lo if lo < 0 else hi} out of range "
                    f"0-{n_units - 1}"
                )
            plan.setdefault(name, {})[layer] = idx.to(device=device, dtype=torch.long)
    return plan


def control_ids(
    target_ids: Sequence[int] | np.ndarray, n_units: int, n_layers: int, seed: int
) -> np.ndarray:
    """A random neuron set shaped like `target_ids`: as many units in each layer, none of them
    in the target. Deterministic in `seed`; sorted neuron ids."""
    ids = split_ids(target_ids, n_units, n_layers)
    rng = np.random.default_rng(seed)
    layers, neurons = np.divmod(np.unique(ids), n_units)
    out: list[np.ndarray] = []
    for layer in np.unique(layers).tolist():  # ascending, so a seed draws the same sets
        taken = neurons[layers == layer]
        free = np.setdiff1d(np.arange(n_units, dtype=np.int64), taken, assume_unique=True)
        if len(free) < len(taken):
            raise WarehouseError(
                f"cannot draw a control for layer {layer}: the target holds {len(taken)} of its "
                f"{n_units} units, leaving only {len(free)} others"
            )
        out.append(layer * n_units + np.sort(rng.choice(free, size=len(taken), replace=False)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
