"""Shared prefixes (ingest/prefix.py): the plan's rule, the packed layout, fewer tokens
really run, and values that equal one prompt run alone under plain PyTorch hooks, for every
supported family.

Tolerance: rtol 1e-5, atol 1e-6 on float32-stored values of order 1. The shared path is the
same arithmetic as a prompt run alone, in other matrix shapes (a packed sequence, a cached
prefix), so
values differ only in float32 rounding (~1e-7 relative, a few steps through two or three
layers): 10-100x headroom, while any wrong row, position or mask changes values by ~1e-1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_gemma3_config, tiny_llama_config

from warehouse.analysis.ablation import ablate, ablate_rows, neuron_indices
from warehouse.ingest import capture, generation, prefix
from warehouse.ingest.capture import POOLINGS, Capturer, CaptureSpec
from warehouse.ingest.generation import greedy
from warehouse.ingest.prefix import (
    PACK_ROWS,
    Pack,
    PrefixPlan,
    packs,
    plan_prefix,
    tokens_run,
)

# Batches of one width: a 4-token prefix shared by three prompts, one sharing only two
# tokens with them, one sharing nothing, one repeated prompt.
IDS = [
    [5, 9, 13, 40, 41, 7, 8],
    [5, 9, 13, 40, 3, 2, 1],
    [7, 7, 7, 7, 7, 7, 7],
    [5, 9, 13, 40, 4, 5, 6],
    [5, 9, 1, 2, 3, 4, 5],
    [5, 9, 13, 40, 3, 2, 1],
]


def test_the_plan_takes_the_cheapest_prefix_length():
    plan = plan_prefix(IDS)
    # p=4: prefixes (5,9,13,40), (7,7,7,7), (5,9,1,2) -> 3*4 + 6*3 = 30 tokens (of 42);
    # p=2: 2*2 + 6*5 = 34; p=5: 5*5 + 6*2 = 37.
    assert plan == PrefixPlan(4, [[5, 9, 13, 40], [7, 7, 7, 7], [5, 9, 1, 2]], [0, 0, 1, 0, 2, 0])
    assert tokens_run(plan, 6, 7) == 30
    # A prefix never covers a whole prompt: identical prompts still keep one token of tail.
    assert plan_prefix([[1, 2, 3], [1, 2, 3]]) == PrefixPlan(2, [[1, 2]], [0, 0])
    # Nothing shared over two tokens, one prompt, prompts too short, or a plan that would run
    # more than 3/4 of the tokens (p=2 here: 3*2 + 4*2 = 14 of 16): one plain forward.
    little = [[1, 2, 3, 4], [1, 2, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]
    for ids in ([[1, 2, 3], [1, 4, 3], [2, 2, 3]], [[1, 2, 3, 4]], [[1, 2], [1, 2]], little):
        assert plan_prefix(ids) == PrefixPlan(0, [], []), ids
        assert tokens_run(plan_prefix(ids), len(ids), len(ids[0])) == len(ids) * len(ids[0])


def test_the_plan_of_prompts_of_several_lengths_pads_their_tails():
    """Eval's left-padded batches: p stops one token short of the shortest prompt, and each
    tail counts as padded to the longest (p=4: 2*4 + 6*5 = 38 of 54; p=3: 2*3 + 6*6 = 42)."""
    ids = [[5, 9, 13, 40, 1], [5, 9, 13, 40, 2, 3, 4, 5, 6], [5, 9, 13, 40, 7, 8], [6] * 5]
    ids += [[5, 9, 13, 40, 3, 3, 3], [5, 9, 13, 40, 4, 4, 4, 4]]
    assert plan_prefix(ids) == PrefixPlan(4, [[5, 9, 13, 40], [6] * 4], [0, 0, 0, 1, 0, 0])
    assert tokens_run(plan_prefix(ids), 6, 9) == 38
    # Only a 2-token prompt shares little (p=2 would leave 9 - 2 = 7 tokens of tail each).
    assert plan_prefix([[5, 9], *ids[1:]]) == PrefixPlan(0, [], [])


def test_a_batch_packs_its_prefix_tree(monkeypatch):
    """Each distinct token prefix once (25 rows for 42 tokens; one prefix length ran 30):
    prompt 1 adds its last three tokens, prompt 4 all but (5, 9), prompt 5 (a repeat of
    prompt 1) nothing."""
    whole = packs(IDS)
    tokens = [5, 9, 13, 40, 41, 7, 8, 3, 2, 1, 7, 7, 7, 7, 7, 7, 7, 4, 5, 6, 1, 2, 3, 4, 5]
    positions = [*range(7), 4, 5, 6, *range(7), 4, 5, 6, *range(2, 7)]
    rows = [list(range(7)), [0, 1, 2, 3, 7, 8, 9], list(range(10, 17)), [0, 1, 2, 3, 17, 18, 19]]
    rows += [[0, 1, 20, 21, 22, 23, 24], [0, 1, 2, 3, 7, 8, 9]]
    assert whole == [Pack(0, 6, tokens, positions, rows)]
    # At most 14 rows a pass: prompts 0-1 take 10 rows (17 with prompt 2), 2-3 take 14 (19
    # with prompt 4), 4-5 take 12; each pass holds the tree of its own prompts. The three
    # passes run 36 of 42 tokens, over the 3/4 a packing may run: the share is lifted here.
    monkeypatch.setattr(prefix, "MAX_SHARE", 1.0)
    cut = packs(IDS, limit=14)
    assert [(k.start, k.stop, len(k.tokens)) for k in cut] == [(0, 2, 10), (2, 4, 14), (4, 6, 12)]
    assert cut[1].rows == [list(range(7)), list(range(7, 14))]
    inputs, rows = cut[0].inputs(torch.float32, torch.device("cpu"))
    assert rows.tolist() == cut[0].rows
    mask = inputs["attention_mask"][0, 0] == 0
    seen = [list(range(k + 1)) for k in range(7)]
    seen += [[0, 1, 2, 3, 7], [0, 1, 2, 3, 7, 8], [0, 1, 2, 3, 7, 8, 9]]
    assert [torch.nonzero(r).flatten().tolist() for r in mask] == seen


def test_the_evaluators_tree_packs_prompts_of_several_lengths():
    """Eval's left-padded batches as one pack: 21 rows for 36 tokens (42 padded). A shorter
    prompt's rows are padded with its last row, which sees its own path only, so the mask is
    as if unpadded. Over 20 rows, or over 3/4 of the padded tokens, or one prompt: None."""
    batch = [x[: 7 - i % 3] for i, x in enumerate(IDS)]  # 7, 6, 5, 7, 6, 5 tokens
    pack = prefix.tree(batch)
    assert pack.tokens == [5, 9, 13, 40, 41, 7, 8, 3, 2, 7, 7, 7, 7, 7, 4, 5, 6, 1, 2, 3, 4]
    assert pack.positions == [*range(7), 4, 5, *range(5), 4, 5, 6, *range(2, 6)]
    assert pack.rows == [
        [*range(7)], [0, 1, 2, 3, 7, 8], [*range(9, 14)], [0, 1, 2, 3, 14, 15, 16],
        [0, 1, 17, 18, 19, 20], [0, 1, 2, 3, 7],
    ]  # fmt: skip
    inputs, rows = pack.inputs(torch.float32, torch.device("cpu"))
    assert rows[:, -1].tolist() == [6, 8, 13, 16, 20, 7]
    mask = inputs["attention_mask"][0, 0] == 0
    assert torch.nonzero(mask[8]).flatten().tolist() == [0, 1, 2, 3, 7, 8]
    assert torch.nonzero(mask[13]).flatten().tolist() == [*range(9, 14)]
    assert prefix.tree(batch, limit=20) is None
    assert prefix.tree([[1, 2, 3], [1, 4], [2, 2, 3]]) is None  # 7 rows of 9
    assert prefix.tree([[1, 2, 3]]) is None


def test_a_packing_that_saves_little_is_not_taken():
    """More than 3/4 of the tokens (14 of 16, 8 of 9, 9 of 9) or a single prompt: None, one
    plain forward. Two repeated 2-token prompts run 2 rows of 4."""
    little = [[1, 2, 3, 4], [1, 2, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]
    for ids in (little, [[1, 2, 3], [1, 4, 3], [2, 2, 3]], [[5, 9, 13], [7, 8, 2], [100, 3, 4]]):
        assert packs(ids) is None, ids
    assert packs([[1, 2, 3, 4]]) is None
    assert packs([[1, 2], [1, 2]]) == [Pack(0, 2, [1, 2], [0, 1], [[0, 1], [0, 1]])]


def _models() -> dict[str, tuple[torch.nn.Module, dict[str, str]]]:
    """Tiny random models of each family, and each site's module path and side."""
    from transformers import Gemma3ForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

    gated = {
        "ffn.act": "model.layers.{}.mlp.down_proj:input",
        "ffn.gate": "model.layers.{}.mlp.gate_proj:output",
        "ffn.up": "model.layers.{}.mlp.up_proj:output",
        "ffn.down": "model.layers.{}.mlp.down_proj:output",
    }
    gpt2 = {
        "ffn.act": "transformer.h.{}.mlp.act:output",
        "ffn.up": "transformer.h.{}.mlp.c_fc:output",
        "ffn.down": "transformer.h.{}.mlp.c_proj:output",
    }
    torch.manual_seed(0)
    return {
        "llama": (LlamaForCausalLM(tiny_llama_config(128)).eval(), gated),
        # Gemma 3: a sliding-window layer (window 4, shorter than the prompts) and a global one.
        "gemma3": (Gemma3ForCausalLM(tiny_gemma3_config(128)).eval(), gated),
        "gpt2": (
            GPT2LMHeadModel(
                GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32)
            ).eval(),
            gpt2,
        ),
    }


MODELS = _models()


def _alone(model: torch.nn.Module, paths: dict[str, str], ids: list[int]) -> dict:
    """Independent reference: one prompt alone, no cache, plain PyTorch hooks on the modules;
    site -> (tokens, layers, units)."""
    got: dict[str, list[torch.Tensor]] = {s: [] for s in paths}
    handles = []
    for site, where in paths.items():
        path, side = where.split(":")
        for layer in range(model.config.num_hidden_layers):
            module = model.get_submodule(path.format(layer))
            if side == "input":
                hook = module.register_forward_pre_hook(
                    lambda m, a, s=site: got[s].append(a[0][0].clone())
                )
            else:
                hook = module.register_forward_hook(
                    lambda m, a, o, s=site: got[s].append(o[0].clone())
                )
            handles.append(hook)
    with torch.no_grad():
        model(torch.tensor([ids]), use_cache=False)
    for h in handles:
        h.remove()
    return {s: torch.stack(v, 1).numpy() for s, v in got.items()}


def _tokens_seen(model: torch.nn.Module) -> tuple[list[int], object]:
    """Token positions each backbone forward embeds (a pre-hook on the input embedding)."""
    seen: list[int] = []
    handle = model.get_input_embeddings().register_forward_pre_hook(
        lambda m, a: seen.append(a[0].numel())
    )
    return seen, handle


@pytest.mark.parametrize("family", [*MODELS, "gemma3-wide"])
@pytest.mark.parametrize("limit", [PACK_ROWS, 14])
def test_shared_values_equal_each_prompt_alone_under_plain_hooks(family, limit, monkeypatch):
    """One packed pass (the prefix tree: 25 rows for 42 tokens), or three of at most 14 rows.
    The tiny Gemma 3's window (4) is shorter than the prompts: it runs plain."""
    if family == "gemma3-wide":
        model, paths = _wide_gemma3(), MODELS["gemma3"][1]
    else:
        model, paths = MODELS[family]
    monkeypatch.setattr(capture, "packs", lambda ids: packs(ids, limit))
    monkeypatch.setattr(prefix, "MAX_SHARE", 1.0)  # three passes of 14 rows run 36 of 42
    layers = list(range(model.config.num_hidden_layers))
    spec = CaptureSpec({s: layers for s in paths}, True, POOLINGS, "float32")
    seen, handle = _tokens_seen(model)
    got = Capturer(model, 1, spec, shared_prefix=True).run(IDS)
    handle.remove()
    if family == "gemma3":
        assert seen == [6 * 7]
    else:
        assert seen == ([25] if limit == PACK_ROWS else [10, 14, 12])
    for i, ids in enumerate(IDS):
        for site, want in _alone(model, paths, ids).items():
            rows = got[f"activations/{site}"][i * 7 : (i + 1) * 7]
            np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-6, err_msg=site)
            for pool, ref in (("mean", want.mean(0)), ("max", want.max(0)), ("last", want[-1])):
                value = got[f"responses/{site}/{pool}"][i]
                np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-6, err_msg=pool)


@pytest.mark.parametrize("family", list(MODELS))
def test_pooled_values_equal_pooling_the_stored_rows(family):
    """The pools combined from prefix and tail parts equal pooling each prompt's per-token
    rows as stored, and a pooled-only capture stores the same pools."""
    model, paths = MODELS[family]
    spec = CaptureSpec({s: [0, 1] for s in paths}, True, POOLINGS, "float32")
    got = Capturer(model, 1, spec, shared_prefix=True).run(IDS)
    pooled_spec = CaptureSpec(spec.sites, False, POOLINGS, "float32")
    pooled = Capturer(model, 1, pooled_spec, shared_prefix=True).run(IDS)
    assert set(pooled) == {k for k in got if k.startswith("responses/")}
    for site in paths:
        rows = got[f"activations/{site}"].reshape(len(IDS), 7, 2, -1)
        for pool, ref in (("mean", rows.mean(1)), ("max", rows.max(1)), ("last", rows[:, -1])):
            key = f"responses/{site}/{pool}"
            np.testing.assert_allclose(got[key], ref, rtol=1e-6, atol=1e-7, err_msg=key)
            np.testing.assert_array_equal(pooled[key], got[key], err_msg=key)


@pytest.mark.parametrize("family", list(MODELS))
def test_a_packed_pass_stops_after_the_last_captured_site(family):
    """With only layer 0's ffn.act captured, the packed pass stops inside layer 0, and the
    values equal a plain forward's; the per-token rows under float16 storage too."""
    model, _ = MODELS[family]
    ran: list[str] = []
    layer1 = model.get_submodule(
        "transformer.h.1" if family == "gpt2" else "model.layers.1"
    ).register_forward_pre_hook(lambda m, a: ran.append("layer 1"))
    for dtype, tol in (("float32", 1e-6), ("float16", 2e-3)):
        spec = CaptureSpec({"ffn.act": [0]}, True, POOLINGS, dtype)
        shared = Capturer(model, 1, spec, shared_prefix=True).run(IDS)
        assert ran == []
        layer1.remove()
        plain = Capturer(model, 1, spec).run(IDS)
        for key, value in shared.items():
            np.testing.assert_allclose(
                value.astype(np.float32), plain[key].astype(np.float32), rtol=tol, atol=tol
            )
        layer1 = model.get_submodule(
            "transformer.h.1" if family == "gpt2" else "model.layers.1"
        ).register_forward_pre_hook(lambda m, a: ran.append("layer 1"))
    layer1.remove()


def test_a_batch_without_a_shared_prefix_runs_one_plain_forward():
    model, _ = MODELS["llama"]
    ids = [[5, 9, 13], [7, 8, 2], [100, 3, 4]]
    spec = CaptureSpec({"ffn.act": [0, 1]}, True, POOLINGS, "float16")
    seen, handle = _tokens_seen(model)
    shared = Capturer(model, 1, spec, shared_prefix=True).run(ids)
    handle.remove()
    assert seen == [9]
    plain = Capturer(model, 1, spec).run(ids)
    assert shared.keys() == plain.keys()
    for key, value in shared.items():
        np.testing.assert_array_equal(value, plain[key], err_msg=key)


@pytest.mark.parametrize("limit", [PACK_ROWS, 14])
def test_overflows_of_a_shared_prefix_count_once_per_prompt(limit, monkeypatch):
    """A float16 overflow in a prefix token is stored once per prompt that has the prefix:
    the exact count (run with `counts`) is the plain path's, in one packed pass or three."""
    monkeypatch.setattr(capture, "packs", lambda ids: packs(ids, limit))
    monkeypatch.setattr(prefix, "MAX_SHARE", 1.0)  # three passes of 14 rows run 36 of 42
    model, _ = MODELS["llama"]
    up = model.model.layers[0].mlp.up_proj.weight
    saved = up[7].clone()
    with torch.no_grad():
        up[7] *= 1e9  # unit 7 of layer 0's ffn.act beyond float16 at most tokens
    try:
        spec = CaptureSpec({"ffn.act": [0]}, True, POOLINGS, "float16")
        shared, plain = {}, {}
        rows = Capturer(model, 1, spec, shared_prefix=True).run(IDS, shared)
        want = Capturer(model, 1, spec).run(IDS, plain)
    finally:
        with torch.no_grad():
            up[7] = saved
    assert shared == plain and shared["activations/ffn.act"]["neurons"]["0:7"][1] > 10
    np.testing.assert_array_equal(
        np.isinf(rows["activations/ffn.act"]), np.isinf(want["activations/ffn.act"])
    )


def _strong(model: torch.nn.Module, factor: float) -> None:
    """Scale the MLPs' output weights, so that zeroing units changes a tiny model's answers."""
    with torch.no_grad():
        for name, w in model.named_parameters():
            if ".mlp." in name and name.endswith(("down_proj.weight", "c_proj.weight")):
                w.mul_(factor)


def _wide_gemma3(window: int = 10) -> torch.nn.Module:
    """Gemma 3 with a sliding window (10) that the padded prompts (7) and two new tokens fit
    in, or one (24) that the evaluator's prefix tree of `IDS` (21 rows) fits in too."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    config = tiny_gemma3_config(128)
    config.sliding_window = window
    return Gemma3ForCausalLM(config).eval()


# Token positions of the greedy test's first two forward passes, two blocks of its batch:
# the prefix tree (21 rows) per block, then 12 new tokens; or, when the tree does not fit the
# pack limit or the window, the plan: p=4, 3 prefixes x 4 tokens per block, then 12 tails
# padded to 3; or (the tiny Gemma 3's window of 4) one plain forward of 12 x 7.
TREE, PLAN, PLAIN = [2 * 21, 12], [2 * 3 * 4, 12 * 3], [12 * 7, 12]
GREEDY_SEEN = {"gemma3": PLAIN, "gemma3-wide": PLAN, "gemma3-wider": TREE}


@pytest.mark.parametrize("family", [*MODELS, "gemma3-wide", "gemma3-wider"])
@pytest.mark.parametrize("limit", [PACK_ROWS, 20])
def test_greedy_with_shared_prefixes_answers_as_each_block_alone(family, limit, monkeypatch):
    """The evaluator's decoding with `shared_prefix`: two blocks of one left-padded batch of
    several lengths (no ablation, then one) give each block's plain greedy answers, the
    distinct prefixes run once per block, and the ablation changes some answer. A tree of
    more rows than the pack limit (20) runs as the plan."""
    wide = {"gemma3-wide": 10, "gemma3-wider": 24}
    model = _wide_gemma3(wide[family]) if family in wide else MODELS[family][0]
    monkeypatch.setattr(generation, "tree", lambda ids: prefix.tree(ids, limit))
    batch = [x[: 7 - i % 3] for i, x in enumerate(IDS)]  # 7, 6, 5, 7, 6, 5 tokens
    units = 16 if family == "gpt2" else 32
    off = {"ffn.act": neuron_indices(model, "ffn.act", list(range(0, units * 2, 3)))}
    _strong(model, 8.0)
    try:
        alone = greedy(model, batch, 0, [0], 3)
        with ablate(model, off):
            ablated = greedy(model, batch, 0, [0], 3)
        seen, handle = _tokens_seen(model)
        with ablate_rows(model, [{}, off]):
            both = greedy(model, batch * 2, 0, [0], 3, blocks=2, shared_prefix=True)
        handle.remove()
    finally:
        _strong(model, 1 / 8.0)
    assert both == alone + ablated and alone != ablated
    want = GREEDY_SEEN.get(family, TREE)
    assert seen[:2] == (PLAN if want == TREE and limit < 21 else want)
