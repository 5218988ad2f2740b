"""Linear layers on packed weights (ingest/prepacked.py): the same values as `F.linear`
within float32 rounding, hooks still firing, an edited weight packed again, and the model as
loaded outside the block, also after an error inside it.

Tolerance: rtol 1e-5, atol 1e-6 on hidden states of order 1 from two layers: the packed
kernel sums in another order (~1e-7 relative per product sum), while a wrong weight, a
missing bias or a stale copy changes values by ~1e-1."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama_config

from warehouse.ingest import prepacked as prepacked_mod
from warehouse.ingest.prepacked import available, prepacked

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build"
)
IDS = torch.tensor([[5, 9, 13, 40, 41, 7, 8], [5, 9, 13, 40, 3, 2, 1]])


def _model(bias: bool = False) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config(64)
    config.attention_bias = bias
    return LlamaForCausalLM(config).eval()


def _hidden(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model.base_model(input_ids=IDS, use_cache=False).last_hidden_state


def _swapped(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if "forward" in m.__dict__]


@pytest.mark.parametrize("bias", [False, True])
def test_packed_values_equal_f_linear_and_the_model_is_restored(bias):
    model = _model(bias)
    want = _hidden(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with prepacked(model):
        got = _hidden(model)
        # every linear layer but the LM head runs packed
        assert _swapped(model) == [n for n in linears if n != "lm_head"]
    assert _swapped(model) == []
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(_hidden(model), want)  # as loaded again, bit for bit


def test_hooks_fire_and_an_edited_weight_is_packed_again():
    model = _model()
    seen: list[torch.Tensor] = []
    down = model.model.layers[0].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    with prepacked(model):
        _hidden(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(3.0)
    want = _hidden(model)
    with prepacked(model):
        got = _hidden(model)
    handle.remove()
    assert len(seen) == 3
    torch.testing.assert_close(seen[2], seen[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(seen[0], seen[1], rtol=1e-2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_nested_off_and_other_dtypes_change_nothing(monkeypatch):
    model = _model()
    with prepacked(model):
        inner = dict(model.model.layers[0].mlp.up_proj.__dict__)["forward"]
        with prepacked(model):
            assert model.model.layers[0].mlp.up_proj.__dict__["forward"] is inner
        assert model.model.layers[0].mlp.up_proj.__dict__["forward"] is inner
    assert _swapped(model) == []
    assert not available(model.to(torch.bfloat16))
    with prepacked(model):
        assert _swapped(model) == []
    monkeypatch.setattr(prepacked_mod, "ENABLED", False)
    assert not available(model.float())


def test_an_error_inside_the_block_restores_the_model():
    model = _model()
    with pytest.raises(KeyError), prepacked(model):
        raise KeyError("inside")
    assert _swapped(model) == [] and not hasattr(model, prepacked_mod._ON)
