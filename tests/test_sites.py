"""Activation sites: names, layers and unit counts per architecture, and hook_sites values
checked against an independent computation from each layer's plain MLP input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from warehouse.ingest.sites import (
    FAMILIES,
    SITES,
    decoder_layers,
    family,
    hook_sites,
    resolve_layers,
    resolve_sites,
    units,
)
from warehouse.store.errors import SiteError
from warehouse.store.format import RESIDUAL_SITES, unit_dim

GATED_SHAPE = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    max_position_embeddings=32,
)
GATED_CONFIGS = {
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "gemma": GemmaConfig,
    "gemma2": Gemma2Config,
    "gemma3_text": Gemma3TextConfig,
}
ARCHS = [*GATED_CONFIGS, "gpt2"]


def tiny_config(arch: str):
    if arch == "gpt2":
        return GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32)
    return GATED_CONFIGS[arch](**GATED_SHAPE)


def tiny_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


def input_ids(batch: int = 2, seq: int = 5) -> torch.Tensor:
    return torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(1))


def count_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def reference_sites(
    model: torch.nn.Module, ids: torch.Tensor
) -> dict[tuple[str, int], torch.Tensor]:
    """Every site of every layer, recomputed from the MLP input caught by a plain hook."""
    gpt2 = model.config.model_type == "gpt2"
    blocks = model.transformer.h if gpt2 else model.model.layers
    mlp_in: dict[int, torch.Tensor] = {}
    handles = [
        block.mlp.register_forward_hook(lambda m, args, out, i=i: mlp_in.__setitem__(i, args[0]))
        for i, block in enumerate(blocks)
    ]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()

    out = {}
    for i, block in enumerate(blocks):
        x, mlp = mlp_in[i], block.mlp
        if gpt2:  # Conv1D stores weights as (in, out)
            up = x @ mlp.c_fc.weight + mlp.c_fc.bias
            act = F.gelu(up, approximate="tanh")  # gelu_new
            down = act @ mlp.c_proj.weight + mlp.c_proj.bias
        else:
            gate = F.linear(x, mlp.gate_proj.weight)
            up = F.linear(x, mlp.up_proj.weight)
            act = mlp.act_fn(gate) * up
            down = F.linear(act, mlp.down_proj.weight)
            out["ffn.gate", i] = gate
        out["ffn.up", i], out["ffn.act", i], out["ffn.down", i] = up, act, down
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_hooked_values_equal_independent_computation(arch: str):
    model = tiny_model(arch)
    ids = input_ids()
    expected = reference_sites(model, ids)
    sites = resolve_sites(model.config, SITES if arch != "gpt2" else "ffn.act,ffn.up,ffn.down")
    got: dict[tuple[str, int], torch.Tensor] = {}

    def grab(site: str, layer: int, tensor: torch.Tensor) -> None:
        assert (site, layer) not in got  # each (site, layer) fires once per forward
        got[site, layer] = tensor.detach().clone()

    # All sites at once: ffn.act and ffn.down share the down-projection module.
    with torch.no_grad(), hook_sites(model, {s: [0, 1, 2] for s in sites}, grab):
        model(ids)

    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == (2, 5, units(model.config, key[0]))
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    assert count_hooks(model) == 0


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_in_place_edit_matches_an_independent_hook(arch: str):
    model = tiny_model(arch)
    ids = input_ids()
    plain = _logits(model, ids)
    zeroed = [0, 5, 7]

    def zero_units(site: str, layer: int, tensor: torch.Tensor) -> None:
        tensor[..., zeroed] = 0  # in place; nothing returned

    with hook_sites(model, {"ffn.act": [1]}, zero_units):
        edited = _logits(model, ids)

    # The same edit by hand: input of down_proj (gated) / output of mlp.act (GPT-2), layer 1.
    if arch == "gpt2":
        module = model.transformer.h[1].mlp.act

        def by_hand(m, args, out):
            out = out.clone()
            out[..., zeroed] = 0
            return out

        handle = module.register_forward_hook(by_hand)
    else:
        module = model.model.layers[1].mlp.down_proj

        def by_hand(m, args):
            x = args[0].clone()
            x[..., zeroed] = 0
            return (x,)

        handle = module.register_forward_pre_hook(by_hand)
    reference = _logits(model, ids)
    handle.remove()

    assert not torch.allclose(edited, plain)
    torch.testing.assert_close(edited, reference, rtol=0, atol=0)


def test_returned_replacement_is_used_for_output_and_input_sites():
    model = tiny_model("llama")
    ids = input_ids()
    mlp = model.model.layers[0].mlp

    def halve_down(site: str, layer: int, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * 0.5

    with hook_sites(model, {"ffn.down": [0]}, halve_down):
        edited = _logits(model, ids)
    handle = mlp.down_proj.register_forward_hook(lambda m, a, out: out * 0.5)
    reference = _logits(model, ids)
    handle.remove()
    torch.testing.assert_close(edited, reference, rtol=0, atol=0)

    def double_act(site: str, layer: int, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * 2.0

    with hook_sites(model, {"ffn.act": [0]}, double_act):
        edited = _logits(model, ids)
    handle = mlp.down_proj.register_forward_pre_hook(lambda m, args: (args[0] * 2.0,))
    reference = _logits(model, ids)
    handle.remove()
    torch.testing.assert_close(edited, reference, rtol=0, atol=0)
    assert not torch.allclose(edited, _logits(model, ids))


def test_hooks_removed_after_an_exception():
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="boom"):
        with hook_sites(model, {"ffn.act": [0, 1, 2], "ffn.down": [2]}, lambda s, i, t: None):
            assert count_hooks(model) == 4
            raise RuntimeError("boom")
    assert count_hooks(model) == 0

    def explode(site: str, layer: int, tensor: torch.Tensor) -> None:
        raise ValueError("inside the hook")

    with pytest.raises(ValueError, match="inside the hook"):
        with hook_sites(model, {"ffn.gate": [1]}, explode):
            _logits(model, input_ids())
    assert count_hooks(model) == 0


def test_bad_request_registers_nothing():
    model = tiny_model("llama")
    with pytest.raises(SiteError, match="out of range"):
        with hook_sites(model, {"ffn.act": [0], "ffn.up": [3]}, lambda s, i, t: None):
            pass
    with pytest.raises(SiteError, match="expand it with resolve_sites"):
        with hook_sites(model, {"paper": [0]}, lambda s, i, t: None):
            pass
    assert count_hooks(model) == 0


def test_paper_expands_per_family():
    llama, gpt2 = tiny_config("llama"), tiny_config("gpt2")
    assert resolve_sites(llama, "paper") == ["ffn.gate", "ffn.up", "ffn.down"]
    assert resolve_sites(gpt2, "paper") == ["ffn.up", "ffn.down"]
    assert resolve_sites(llama, "ffn.act, paper") == ["ffn.act", "ffn.gate", "ffn.up", "ffn.down"]
    assert resolve_sites(llama, ["ffn.up", "ffn.up", "ffn.act"]) == ["ffn.up", "ffn.act"]
    assert resolve_sites(llama, "ffn.act") == ["ffn.act"]


def test_unit_counts():
    llama, gpt2 = tiny_config("llama"), tiny_config("gpt2")
    assert [units(llama, s) for s in SITES] == [24, 24, 24, 16]
    assert [units(gpt2, s) for s in ("ffn.act", "ffn.up", "ffn.down")] == [64, 64, 16]
    assert units(GPT2Config(n_embd=16, n_inner=40), "ffn.act") == 40
    # The paper's counts for Llama-2-7B (LlamaConfig's defaults are its shape).
    llama7b = LlamaConfig()
    n = len(resolve_layers(llama7b, None))
    assert n * sum(units(llama7b, s) for s in resolve_sites(llama7b, "paper")) == 835_584
    assert n * units(llama7b, "ffn.act") == 352_256
    with pytest.raises(SiteError, match="paper"):
        units(llama, "paper")


def test_the_format_names_the_residual_width_sites_of_the_table():
    """store/format.py names the unit axis of stored arrays without importing the site
    table: its residual-width sites are the table's `width="model"` sites, in every family."""
    residual = {name for f in FAMILIES for name, s in f.sites.items() if s.width == "model"}
    ffn = {name for f in FAMILIES for name, s in f.sites.items() if s.width == "ffn"}
    assert residual == RESIDUAL_SITES == {"ffn.down"}
    assert not residual & ffn
    assert [unit_dim(s) for s in SITES] == ["neuron", "neuron", "neuron", "d_model"]


def test_unknown_site_lists_the_supported_ones():
    with pytest.raises(SiteError) as err:
        resolve_sites(tiny_config("llama"), "ffn.act,ffn.mid")
    assert str(err.value) == (
        "unknown site 'ffn.mid' for architecture 'llama'; "
        "supported: ffn.act, ffn.gate, ffn.up, ffn.down, paper"
    )
    with pytest.raises(SiteError) as err:
        resolve_sites(tiny_config("gpt2"), ["ffn.gate"])
    assert str(err.value) == (
        "unknown site 'ffn.gate' for architecture 'gpt2'; "
        "supported: ffn.act, ffn.up, ffn.down, paper"
    )
    with pytest.raises(SiteError, match="no site given"):
        resolve_sites(tiny_config("llama"), [])


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(SiteError) as err:
        family(BertConfig())
    assert str(err.value) == (
        "unsupported architecture 'bert'; supported: "
        "gemma, gemma2, gemma3_text, gpt2, llama, mistral, qwen2, qwen3"
    )
    with pytest.raises(SiteError, match="unsupported architecture 'bert'"):
        resolve_sites(BertConfig(), "ffn.act")


def test_layers():
    config = tiny_config("llama")  # 3 layers
    assert resolve_layers(config, None) == [0, 1, 2]
    assert resolve_layers(config, "all") == [0, 1, 2]
    assert resolve_layers(config, "2,0") == [0, 2]
    assert resolve_layers(config, "0-1, 2") == [0, 1, 2]
    assert resolve_layers(config, [2, 0, 2]) == [0, 2]
    assert resolve_layers(GPT2Config(n_layer=30), "0,3,5-7") == [0, 3, 5, 6, 7]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("-1", r"layer\(s\) \[-1\] out of range; the model has layers 0-2"),
        ([3], r"layer\(s\) \[3\] out of range; the model has layers 0-2"),
        ("1-5", r"layer\(s\) \[3, 4, 5\] out of range"),
        ("2-1", "runs backwards"),
        ("one", "expected e.g. 'all' or '0,3,5-7'"),
        ("0,,1", "expected e.g."),
        ([True], "not an integer"),
        ([], "no layer given"),
    ],
)
def test_bad_layers(spec, message: str):
    with pytest.raises(SiteError, match=message):
        resolve_layers(tiny_config("llama"), spec)


def test_decoder_layers_follow_the_table():
    llama = tiny_model("llama")
    assert list(decoder_layers(llama)) == list(llama.model.layers)
    gpt2 = tiny_model("gpt2")
    assert isinstance(gpt2, GPT2LMHeadModel)
    assert list(decoder_layers(gpt2)) == list(gpt2.transformer.h)
    with pytest.raises(SiteError, match="LlamaModel has no `model.layers`"):
        decoder_layers(llama.model)  # the bare decoder, not the *ForCausalLM wrapper
    assert isinstance(llama, LlamaForCausalLM)
