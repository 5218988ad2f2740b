"""Where FFN neurons live: one table of activation sites per architecture family.

A *site* is a named place in every decoder layer whose tensor holds one value per neuron and
token. Every stage uses the same names (docs/design.md):

| site       | gated MLP (Llama, Qwen, Gemma 1-3, ...) | GPT-2 MLP                         |
| ---------- | --------------------------------------- | --------------------------------- |
| `ffn.act`  | input of `mlp.down_proj` = act(gate)*up | output of `mlp.act`               |
| `ffn.gate` | output of `mlp.gate_proj`               | -- (not gated)                    |
| `ffn.up`   | output of `mlp.up_proj`                 | output of `mlp.c_fc` (pre-act)    |
| `ffn.down` | output of `mlp.down_proj` (d_model)     | output of `mlp.c_proj` (d_model)  |

The set name `paper` expands to the units the paper counts: gate + up + down (up + down for
GPT-2). Layers and modules are found by attribute paths from the table, never by pattern
matching on module names, so an unexpected model fails loudly instead of hooking the wrong
thing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from warehouse.store.errors import SiteError

if TYPE_CHECKING:
    import torch
    from torch import nn

SITES: tuple[str, ...] = ("ffn.act", "ffn.gate", "ffn.up", "ffn.down")
PAPER = "paper"

# fn(site, layer, tensor) -> replacement or None; the tensor is (batch, seq, units).
SiteFn = Callable[[str, int, "torch.Tensor"], "torch.Tensor | None"]


@dataclass(frozen=True)
class Site:
    """One site inside a decoder layer."""

    module: str  # attribute path from the decoder layer, e.g. "mlp.down_proj"
    io: Literal["input", "output"]  # which side of the module carries the units
    width: Literal["ffn", "model"]  # FFN inner width or residual-stream width
    # TransformerLens's hook of the same values inside `blocks.{layer}.` (None: it has none).
    hook: str | None = None


@dataclass(frozen=True)
class Family:
    """How one family of architectures lays out its decoder layers and FFN sites."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values that share this layout
    layers: str  # attribute path from the *ForCausalLM model to its decoder layer list
    sites: Mapping[str, Site]  # in SITES order
    paper: tuple[str, ...]  # what the set name `paper` expands to
    ffn_width: Callable[[Any], int]  # units of a `width="ffn"` site, from the config

    def n_layers(self, config: Any) -> int:
        # Every supported config maps `num_hidden_layers` (GPT-2 through attribute_map).
        return int(config.num_hidden_layers)

    def width(self, config: Any, site: Site) -> int:
        return self.ffn_width(config) if site.width == "ffn" else int(config.hidden_size)


_GATED_SITES = {
    "ffn.act": Site("mlp.down_proj", "input", "ffn", "mlp.hook_post"),
    "ffn.gate": Site("mlp.gate_proj", "output", "ffn", "mlp.hook_pre"),
    "ffn.up": Site("mlp.up_proj", "output", "ffn", "mlp.hook_pre_linear"),
    "ffn.down": Site("mlp.down_proj", "output", "model", "hook_mlp_out"),
}

_GPT2_SITES = {
    "ffn.act": Site("mlp.act", "output", "ffn", "mlp.hook_post"),
    "ffn.up": Site("mlp.c_fc", "output", "ffn", "mlp.hook_pre"),
    "ffn.down": Site("mlp.c_proj", "output", "model", "hook_mlp_out"),
}

FAMILIES: tuple[Family, ...] = (
    Family(
        name="gated",
        # Same `model.layers[i].mlp.{gate,up,down}_proj` layout; Gemma is in the paper's appendix.
        # `gemma3_text` is Gemma 3's text-only *ForCausalLM (the embedded gemma3-270m).
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"),
        layers="model.layers",
        sites=_GATED_SITES,
        paper=("ffn.gate", "ffn.up", "ffn.down"),
        ffn_width=lambda config: int(config.intermediate_size),
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        sites=_GPT2_SITES,
        paper=("ffn.up", "ffn.down"),
        # GPT-2 leaves n_inner unset for the classic 4x MLP.
        ffn_width=lambda config: int(config.n_inner or 4 * config.n_embd),
    ),
)

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(
    sorted(model_type for fam in FAMILIES for model_type in fam.model_types)
)


def family(config: Any) -> Family:
    """The family of a model config; SiteError for an architecture without a site table."""
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise SiteError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def site_description(architecture: str | None, site: str) -> dict[str, Any]:
    """What a site of this architecture is, for a stored array's attributes: the Hugging Face
    module path of each layer's module (`{layer}` stands for the layer number), which side of
    it holds the values, and TransformerLens's hook name. Empty for an architecture or site
    without a site table."""
    fam = next((f for f in FAMILIES if architecture in f.model_types), None)
    s = fam.sites.get(site) if fam is not None else None
    if s is None:
        return {}
    out = {"module": f"{fam.layers}.{{layer}}.{s.module}", "io": s.io}
    if s.hook is not None:
        out["transformer_lens_hook"] = f"blocks.{{layer}}.{s.hook}"
    return out


def resolve_sites(config: Any, spec: str | Sequence[str]) -> list[str]:
    """Site names from "ffn.act", "paper", "ffn.act,ffn.up" or a list, in order, without repeats."""
    fam = family(config)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    supported = [*fam.sites, PAPER]
    out: list[str] = []
    for raw in names:
        name = str(raw).strip()
        expanded = fam.paper if name == PAPER else (name,)
        for site in expanded:
            if site not in fam.sites:
                raise SiteError(
                    f"unknown site {name!r} for architecture {config.model_type!r}; "
                    f"supported: {', '.join(supported)}"
                )
            if site not in out:
                out.append(site)
    if not out:
        raise SiteError(f"no site given; supported: {', '.join(supported)}")
    return out


def resolve_layers(config: Any, spec: str | Sequence[int] | None) -> list[int]:
    """Sorted layer indices from None/"all", "0,3,5-7" (inclusive ranges) or a list of ints."""
    n = family(config).n_layers(config)
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(range(n))
    layers: set[int] = set()
    if isinstance(spec, str):
        for part in spec.split(","):
            layers.update(_parse_layer_part(part.strip(), spec))
    else:
        for item in spec:
            # bool is an int subclass; True as "layer 1" is surely a bug upstream.
            if isinstance(item, bool) or not isinstance(item, int):
                raise SiteError(f"layer {item!r} is not an integer")
            layers.add(int(item))
    if not layers:
        raise SiteError(f"no layer given in {spec!r}; the model has layers 0-{n - 1}")
    bad = sorted(layer for layer in layers if not 0 <= layer < n)
    if bad:
        raise SiteError(f"layer(s) {bad} out of range; the model has layers 0-{n - 1}")
    return sorted(layers)


_LAYER_PART = re.compile(r"(-?\d+)(?:-(-?\d+))?")


def _parse_layer_part(part: str, spec: str) -> range:
    match = _LAYER_PART.fullmatch(part)
    if match is None:
        raise SiteError(f"cannot read layers {spec!r}: expected e.g. 'all' or '0,3,5-7'")
    start = int(match.group(1))
    stop = int(match.group(2)) if match.group(2) is not None else start
    if start > stop:
        raise SiteError(f"layer range {part!r} runs backwards")
    return range(start, stop + 1)


def units(config: Any, site: str) -> int:
    """Units per layer of a site: the FFN inner width, or d_model for `ffn.down`."""
    fam = family(config)
    return fam.width(config, fam.sites[_single_site(config, site)])


def _single_site(config: Any, site: str) -> str:
    if site.strip() == PAPER:
        raise SiteError("`paper` is a set of sites; expand it with resolve_sites() first")
    return resolve_sites(config, [site])[0]


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The decoder layer list of a *ForCausalLM model, found by the family's attribute path."""
    fam = family(model.config)
    try:
        return _get_path(model, fam.layers)
    except AttributeError:
        raise SiteError(
            f"{type(model).__name__} has no `{fam.layers}`; expected a *ForCausalLM model "
            f"of the {fam.name!r} family"
        ) from None


def _get_path(obj: Any, path: str) -> Any:
    for attr in path.split("."):
        obj = getattr(obj, attr)
    return obj


@contextmanager
def hook_sites(
    model: nn.Module, sites_layers: Mapping[str, Sequence[int]], fn: SiteFn
) -> Iterator[None]:
    """Call fn(site, layer, tensor) at each (site, layer) during forward passes in the block.

    An output site gets a forward hook, an input site a forward pre-hook on its module, so
    `ffn.act` (input of down_proj) and `ffn.down` (its output) can share a module. fn may read
    the (batch, seq, units) tensor, edit it in place, or return a replacement. The hooks are
    removed on exit, also when the block raises.
    """
    fam = family(model.config)
    layers = decoder_layers(model)
    # Resolve everything before registering, so a bad request leaves the model untouched.
    plan: list[tuple[str, int, Site, nn.Module]] = []
    for site_name, site_layers in sites_layers.items():
        name = _single_site(model.config, site_name)
        site = fam.sites[name]
        for layer in resolve_layers(model.config, site_layers):
            plan.append((name, layer, site, _get_path(layers[layer], site.module)))

    handles = []
    try:
        for name, layer, site, module in plan:
            if site.io == "output":
                handles.append(module.register_forward_hook(_output_hook(fn, name, layer)))
            else:
                handles.append(module.register_forward_pre_hook(_input_hook(fn, name, layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _output_hook(fn: SiteFn, site: str, layer: int) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> Any:
        return fn(site, layer, output)  # None keeps the (possibly edited) output

    return hook


def _input_hook(fn: SiteFn, site: str, layer: int) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        if not args:
            raise SiteError(f"{site} at layer {layer}: module was called without positional input")
        replacement = fn(site, layer, args[0])
        return None if replacement is None else (replacement, *args[1:])

    return hook
