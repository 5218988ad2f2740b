"""Ablation and eval: zeroing equals plain PyTorch hooks at every site, prompt and generated
tokens alike; hooks never leak; the baseline is cached and reproduced by an empty selection;
controls have the target's shape; scoring modes; and every refusal names its reason."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from warehouse.analysis.ablation import ablate, ablate_rows, control_ids, neuron_indices
from warehouse.analysis.evaluate import (
    EvalConfig,
    format_summary,
    request_key,
    run_eval,
    run_evals,
    summarize,
)
from warehouse.analysis.selections import read_selection
from warehouse.ingest.generation import eos_token_ids, greedy
from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.ingest.scoring import MATCHES, RULES, normalize_answer, rule_name, score
from warehouse.ingest.sites import SITES
from warehouse.store.errors import WarehouseError
from warehouse.store.fingerprint import fingerprint
from warehouse.store.format import EVAL_SCHEMA
from warehouse.store.manifest import Manifest

SUBJECTS = ["France", "Japan", "Germany", "Peru", "Chile", "Kenya", "Nepal", "Oman", "Fiji"]
TEMPLATES = {
    ("country_capital", "en"): "The capital city of {subject} is",
    ("country_capital", "de"): "Die Hauptstadt von {subject} ist",
    ("person_mother", "en"): "The mother of {subject} is",
}
PROMPTS = ["The capital city of France is", "Die Hauptstadt von Japan ist", "The mother of Ada is"]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model_dir(strong_llama_dir) -> Path:
    return strong_llama_dir


@pytest.fixture(scope="module")
def loaded(model_dir, module_cache):
    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, model_dir, loaded) -> Path:
    """A warehouse whose facts' objects are, for every other fact, what the tiny model itself
    answers, so the baseline gets some right and ablation has answers to break."""
    tok = loaded.tokenizer
    facts = []
    for (relation, language), template in TEMPLATES.items():
        for i, subject in enumerate(SUBJECTS):
            text = template.replace("{subject}", subject)
            ids = tok(text, return_tensors="pt")
            with torch.no_grad():
                out = loaded.model.generate(**ids, max_new_tokens=2, do_sample=False)
            said = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            own = i % 2 == 0 and normalize_answer(said)
            fact = {
                "relation": relation,
                "language": language,
                "subject": subject,
                "object": said.strip() if own else "Zzyzx",
                "templates": [template],
            }
            if i == 1:
                fact["aliases"] = ["Qqq"]
            facts.append(fact)
    data = tmp_path_factory.mktemp("data") / "facts.jsonl"
    data.write_text("".join(json.dumps(f) + "\n" for f in facts))
    out = tmp_path_factory.mktemp("w") / "w"
    ingest(
        IngestConfig(
            out=out,
            model=str(model_dir),
            dataset=str(data),
            capture="pooled",
            pooling=["mean"],
            batch_size=4,
        ),
        show_progress=False,
        loaded=loaded,
    )
    return out


@pytest.fixture
def wh(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: tests add selections and evals."""
    return Path(shutil.copytree(pristine, tmp_path / "w"))


def manifest(w: Path) -> dict:
    return json.loads((w / "manifest.json").read_text())


def write_selection(w: Path, name: str, ids, site: str = "ffn.act", **side) -> None:
    """A selection file as `warehouse select` writes it, by hand (rank 1 = first id)."""
    m = manifest(w)
    n_units = side.pop("units", 48 if site != "ffn.down" else 32)
    ids = np.asarray(ids, dtype=np.int64)
    (w / "selections").mkdir(exist_ok=True)
    pl.DataFrame(
        {
            "neuron_id": ids,
            "site": [side.pop("row_site", site)] * len(ids),
            "layer": (ids // n_units).astype(np.int32),
            "neuron": (ids % n_units).astype(np.int32),
            "rank": np.arange(1, len(ids) + 1, dtype=np.int64),
            "score": np.linspace(1, 0.5, len(ids)),
        },
        schema_overrides={"neuron_id": pl.Int64},
    ).write_parquet(w / "selections" / f"{name}.parquet")
    sidecar = {
        "name": name,
        "relation": "country_capital",
        "language": None,
        "site": site,
        "pooling": "mean",
        "sql": "select ...",
        "weights_hash": m["model"]["weights_hash"],
        "units": n_units,
        "n_layers": m["model"]["n_layers"],
        "kind": "target",
        "of": None,
        "seed": None,
        "size": len(ids),
    }
    sidecar.update(side)
    (w / "selections" / f"{name}.json").write_text(json.dumps(sidecar))


def read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


# ------------------------------------------------------------------------------ scoring


# (continuation, object, aliases) -> correct under prefix, paper-prefix, starts-with, contains
SCORES = [
    ((" Paris.", "Paris", ()), (True, True, True, True)),
    ((" Par", "Paris", ()), (True, True, False, False)),
    ((" Pa", "Paris", ()), (False, True, False, False)),
    ((" Parisian", "Paris", ()), (False, True, True, True)),
    ((" PARIS is", "Paris", ()), (True, True, True, True)),
    ((" the Paris", "Paris", ()), (False, False, False, True)),
    ((" 1", "1879", ()), (False, True, False, False)),
    ((' "T', "Tokyo", ()), (False, True, False, False)),
    ((" H", "H", ()), (True, True, True, True)),
    ((" He", "H", ()), (False, True, True, True)),
    ((" Fe", "Fe", ()), (True, True, True, True)),
    ((" USA", "United States", ("USA",)), (True, True, True, True)),
    ((" Buenos", "Buenos Aires", ()), (True, True, False, False)),
    (("東京", "東京都", ()), (False, True, False, False)),
    (("東京都です", "東京都", ()), (True, True, True, True)),
    (("", "Paris", ()), (False, False, False, False)),
    ((" Pa", "", ()), (False, False, False, False)),
]


@pytest.mark.parametrize("case, want", SCORES)
def test_score_modes(case, want):
    assert tuple(score(*case, match=m) for m in MATCHES) == want


def test_every_mode_names_its_rule():
    assert RULES == {
        "prefix": "answer-prefix-3",
        "paper-prefix": "paper-prefix",
        "starts-with": "starts-with",
        "contains": "contains",
    }
    assert rule_name("prefix") == "answer-prefix-3"
    with pytest.raises(WarehouseError, match="unknown match mode 'exact'; choose from prefix, "):
        rule_name("exact")


def test_score_starts_with_and_contains():
    assert not score(" Par", "Paris", match="starts-with")
    assert score(" Paris, France", "Paris", match="starts-with")
    assert score(" usa!", "United States", ["U.S.A."], match="starts-with")
    assert not score(" the Paris", "Paris", match="starts-with")
    assert score(" the Paris", "Paris", match="contains")
    assert not score(" Par", "Paris", match="contains")
    assert not score("", "Paris", match="contains")
    assert score("首都は東京都です", "東京都", match="contains")
    assert not score("東京", "東京都", match="starts-with")
    assert score("東京都です", "東京都", match="starts-with")
    with pytest.raises(WarehouseError, match="unknown match mode 'exact'"):
        score("x", "x", match="exact")


# ------------------------------------------------------------------------------ neuron ids


def test_neuron_indices_group_by_layer(loaded):
    idx = neuron_indices(loaded.model, "ffn.act", [50, 3, 95, 7, 48])
    assert {k: v.tolist() for k, v in idx.items()} == {0: [3, 7], 1: [0, 2, 47]}
    assert all(v.dtype == torch.long for v in idx.values())
    down = neuron_indices(loaded.model, "ffn.down", [31, 32])
    assert {k: v.tolist() for k, v in down.items()} == {0: [31], 1: [0]}
    assert neuron_indices(loaded.model, "ffn.up", []) == {}


def test_neuron_indices_refusals(loaded):
    model = loaded.model
    with pytest.raises(WarehouseError, match=r"negative neuron id\(s\) \[-1\]"):
        neuron_indices(model, "ffn.act", [3, -1])
    with pytest.raises(WarehouseError, match=r"\[96\] out of range: .* 2 layers x 48 units"):
        neuron_indices(model, "ffn.act", [96])
    with pytest.raises(WarehouseError, match=r"\[64\] out of range: .* 2 layers x 32 units"):
        neuron_indices(model, "ffn.down", [64])
    with pytest.raises(WarehouseError, match="counted with 48 units .* ffn.down .* has 32"):
        neuron_indices(model, "ffn.down", [1], expected_units=48)
    with pytest.raises(WarehouseError, match="unknown site 'ffn.nope'"):
        neuron_indices(model, "ffn.nope", [1])
    with pytest.raises(WarehouseError, match="`paper` is a set of sites"):
        neuron_indices(model, "paper", [1])
    with pytest.raises(WarehouseError, match="1-D list of integers"):
        neuron_indices(model, "ffn.act", [1.5])
    with pytest.raises(WarehouseError, match=r"ffn.act layer 0: unit index 48 out of range"):
        with ablate(model, {"ffn.act": {0: torch.tensor([48])}}):
            pass
    with pytest.raises(WarehouseError, match=r"layer 2 out of range"):
        with ablate(model, {"ffn.act": {2: torch.tensor([1])}}):
            pass


# ------------------------------------------------------------------------------ exactness


def _plain_hooks(model, site: str, by_layer: dict[int, list[int]]):
    """Independent reference: clone-and-zero hooks registered with plain PyTorch."""
    handles = []
    for layer, units in by_layer.items():
        mlp = model.model.layers[layer].mlp

        def pre(module, args, units=units):
            x = args[0].clone()
            x[..., units] = 0.0
            return (x, *args[1:])

        def post(module, args, out, units=units):
            out = out.clone()
            out[..., units] = 0.0
            return out

        if site == "ffn.act":
            handles.append(mlp.down_proj.register_forward_pre_hook(pre))
        else:
            module = {"ffn.gate": mlp.gate_proj, "ffn.up": mlp.up_proj, "ffn.down": mlp.down_proj}
            handles.append(module[site].register_forward_hook(post))
    return handles


def _logits(model, tok, texts=PROMPTS):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits


def _no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("site", SITES)
def test_ablation_equals_a_plain_hook_at_every_site(loaded, site):
    model, tok = loaded.model, loaded.tokenizer
    by_layer = {0: [1, 5, 17], 1: [0, 30]}
    ids = [
        layer * (32 if site == "ffn.down" else 48) + u for layer, us in by_layer.items() for u in us
    ]
    before = _logits(model, tok)
    with ablate(model, {site: neuron_indices(model, site, ids)}):
        ours = _logits(model, tok)
    after = _logits(model, tok)
    handles = _plain_hooks(model, site, by_layer)
    try:
        reference = _logits(model, tok)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(ours, reference)
    assert not torch.allclose(ours, before)
    assert torch.equal(after, before)  # nothing leaks into the next condition
    assert _no_hooks(model)


@pytest.mark.parametrize("site", ["ffn.act", "ffn.up"])
def test_ablate_rows_gives_each_block_its_own_ablation(loaded, site):
    """Three ablations over one batch repeated three times: each block of rows gets the
    logits of its ablation alone (the middle one none), bit for bit."""
    model, tok = loaded.model, loaded.tokenizer
    groups = [
        {site: neuron_indices(model, site, [1, 5, 60])},
        {},
        {site: neuron_indices(model, site, [2, 50, 51, 90])},
    ]
    alone = []
    for neurons in groups:
        with ablate(model, neurons):
            alone.append(_logits(model, tok))
    with ablate_rows(model, groups):
        stacked = _logits(model, tok, PROMPTS * 3)
    assert torch.equal(stacked, torch.cat(alone))
    assert not torch.equal(alone[0], alone[1]) and not torch.equal(alone[2], alone[1])
    assert _no_hooks(model)
    with pytest.raises(WarehouseError, match="not 3 equal blocks"):
        with ablate_rows(model, groups):
            _logits(model, tok, PROMPTS + PROMPTS[:1])
    assert _no_hooks(model)


def test_hooks_are_removed_after_an_exception(loaded):
    model, tok = loaded.model, loaded.tokenizer
    before = _logits(model, tok)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(model, {"ffn.act": neuron_indices(model, "ffn.act", [2, 60])}):
            assert not _no_hooks(model)
            raise RuntimeError("boom")
    assert _no_hooks(model)
    assert torch.equal(_logits(model, tok), before)


def test_empty_ablation_registers_nothing(loaded):
    with ablate(loaded.model, {"ffn.act": {0: torch.zeros(0, dtype=torch.long)}}):
        assert _no_hooks(loaded.model)


def test_ablation_edits_in_place(loaded):
    """The hook zeroes the activation tensor itself (no copy): the object down_proj receives
    is the one the hook saw."""
    model = loaded.model
    seen: list[torch.Tensor] = []
    probe = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
        lambda m, a: seen.append(a[0])
    )
    try:
        with ablate(model, {"ffn.act": {0: torch.tensor([4, 9])}}):
            _logits(model, loaded.tokenizer)
    finally:
        probe.remove()
    # The probe was registered first, so it runs first and holds the very tensor later zeroed.
    assert torch.all(seen[0][..., [4, 9]] == 0)


def test_generated_tokens_are_ablated(loaded):
    """A cached decoding step under `ablate` gives the logits of a full recompute with a plain
    hook on every position; ablating the prompt alone gives other logits."""
    model, tok = loaded.model, loaded.tokenizer
    ids = neuron_indices(model, "ffn.act", list(range(0, 96, 3)))
    prompt = torch.tensor([tok(PROMPTS[0])["input_ids"]])
    with torch.no_grad(), ablate(model, {"ffn.act": ids}):
        first = model(input_ids=prompt, use_cache=True)
        t1 = first.logits[:, -1].argmax(-1, keepdim=True)
        second = model(input_ids=t1, cache=first.cache, use_cache=True).logits[:, -1]
    by_layer = {k: v.tolist() for k, v in ids.items()}
    handles = _plain_hooks(model, "ffn.act", by_layer)
    try:
        with torch.no_grad():
            full = model(input_ids=torch.cat([prompt, t1], 1)).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(second, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the new token's position not ablated: other logits
        handles = _plain_hooks(model, "ffn.act", by_layer)
        prefix = model(input_ids=prompt, use_cache=True)
        for h in handles:
            h.remove()
        unablated = model(input_ids=t1, cache=prefix.cache, use_cache=True).logits[:, -1]
    assert (unablated - full).abs().max() > 1e-3


def _manual_greedy(model, ids: list[int], n: int, eos: list[int]) -> list[int]:
    """Greedy decoding by full recompute, one prompt at a time (no cache, no padding)."""
    seq = list(ids)
    for _ in range(n):
        with torch.no_grad():
            t = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        if t in eos:
            break
        seq.append(t)
    return seq[len(ids) :]


def _check_against_plain_hooks(model, handles, batch, eos, pad_id, ours) -> list[list[int]]:
    """`ours` (greedy under ablation) equals a full-recompute loop with the plain `handles`
    on (removed after), and differs from unablated greedy, which is returned."""
    try:
        reference = [_manual_greedy(model, x, 3, eos) for x in batch]
    finally:
        for h in handles:
            h.remove()
    assert ours == reference
    plain = greedy(model, batch, pad_id, eos, 3)
    assert plain != ours  # the ablation changed some continuation
    return plain


def test_greedy_under_ablation_equals_a_manual_loop(loaded):
    model, tok = loaded.model, loaded.tokenizer
    texts = [*PROMPTS, "Tokyo is", "La capitale de la France est"]
    batch = [tok(t)["input_ids"] for t in texts]
    eos = eos_token_ids(loaded)
    ids = neuron_indices(model, "ffn.up", list(range(1, 96, 2)))
    with ablate(model, {"ffn.up": ids}):
        ours = greedy(model, batch, tok.pad_token_id, eos, 3)
    handles = _plain_hooks(model, "ffn.up", {k: v.tolist() for k, v in ids.items()})
    _check_against_plain_hooks(model, handles, batch, eos, tok.pad_token_id, ours)


def test_greedy_equals_generate(loaded):
    model, tok = loaded.model, loaded.tokenizer
    texts = [*PROMPTS, "Tokyo is"]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=1)
    expected = [
        tok.decode(r, skip_special_tokens=True) for r in out[:, enc["input_ids"].shape[1] :]
    ]
    new = greedy(model, [tok(t)["input_ids"] for t in texts], 1, eos_token_ids(loaded), 2)
    assert [tok.decode(r) for r in new] == expected


# ------------------------------------------------------------------------------ controls


def test_controls_shape_disjointness_and_determinism():
    target = np.array([0, 5, 6, 48 + 1, 48 + 2, 48 + 3, 48 + 40, 2 * 48 + 7])
    sets = [control_ids(target, 48, 3, seed) for seed in range(10)]
    for ids in sets:
        assert len(ids) == len(target)
        assert np.bincount(ids // 48, minlength=3).tolist() == [3, 4, 1]
        assert not set(ids) & set(target)
        assert len(set(ids)) == len(ids)
    assert np.array_equal(control_ids(target, 48, 3, 4), sets[4])
    assert len({tuple(s) for s in sets}) == 10
    assert control_ids([], 48, 3, 0).tolist() == []
    with pytest.raises(WarehouseError, match="cannot draw a control for layer 0"):
        control_ids(np.arange(30), 48, 3, 0)


# ------------------------------------------------------------------------------ run_eval


def test_baseline_covers_every_prompt_and_is_cached(wh, loaded):
    path = run_eval(wh, EvalConfig(baseline=True), show_progress=False, loaded=loaded)
    assert path == wh / "evals" / "baseline.parquet"
    assert pq.read_schema(path).equals(EVAL_SCHEMA)
    base = read(path)
    prompts = pl.read_parquet(wh / "prompts.parquet")
    assert sorted(base["prompt_id"]) == sorted(prompts["prompt_id"])
    assert set(base["split"]) == {"identify", "test"}
    assert set(base["selection"]) == {"baseline"}
    assert base["count"].null_count() == base.height
    assert base["correct"].to_list() == base["baseline_correct"].to_list()
    # The answers are model.generate's, one prompt at a time.
    tok = loaded.tokenizer
    joined = base.join(prompts, on="prompt_id")
    for text, said, obj, aliases, ok in joined.select(
        "text", "generated", "object", "aliases", "correct"
    ).iter_rows():
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = loaded.model.generate(**enc, max_new_tokens=2, do_sample=False)
        assert said == tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert ok == score(said, obj, aliases)
    assert 0 < base["correct"].sum() < base.height
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == {
        "parent": manifest(wh)["fingerprint"],
        "step": "baseline",
        "options": {"model_dtype": "float32", "max_new_tokens": 2, "rule": "answer-prefix-3"},
    }
    assert side["fingerprint"] == fingerprint(side["key"])
    assert side["match"] == "prefix" and side["rows"] == base.height

    # Reused: no model is loaded (this one does not exist).
    stamp = path.stat().st_mtime_ns
    again = run_eval(wh, EvalConfig(baseline=True, model="/nonexistent"), show_progress=False)
    assert again == path and path.stat().st_mtime_ns == stamp
    # Another match mode rescores the stored answers without generating.
    run_eval(wh, EvalConfig(baseline=True, match="contains", model="/nonexistent"), False)
    rescored = read(path)
    assert rescored["generated"].to_list() == base["generated"].to_list()
    assert json.loads(path.with_suffix(".json").read_text())["match"] == "contains"
    made = side
    run_eval(wh, EvalConfig(baseline=True, match="paper-prefix", model="/nonexistent"), False)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == {
        **made["key"],
        "options": {**made["key"]["options"], "rule": "paper-prefix"},
    }
    # A sidecar written before cache keys (a flat key, the rule beside it) is stale: the
    # answers are generated anew, with the manifest's model, not rescored.
    old = {"max_new_tokens": 2, "model_dtype": "float32", "prompts": base.height}
    side = {"kind": "baseline", "key": old, "match": "prefix", "rule": "answer-prefix-3"}
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(WarehouseError, match="/nonexistent"):
        run_eval(wh, EvalConfig(baseline=True, model="/nonexistent"), show_progress=False)
    run_eval(wh, EvalConfig(baseline=True), show_progress=False)
    assert read(path).equals(base)
    assert json.loads(path.with_suffix(".json").read_text())["fingerprint"] == made["fingerprint"]
    # Another max_new_tokens generates anew, with the manifest's model.
    run_eval(wh, EvalConfig(baseline=True, max_new_tokens=1), show_progress=False)
    one = read(path)
    assert all(b.startswith(a) for a, b in zip(one["generated"], base["generated"], strict=True))


def test_baseline_answers_only_the_scored_prompts(wh, loaded, tmp_path):
    """A request answers the baseline of its own prompts only, later requests add theirs, and
    every answer equals the one a whole `--baseline` run gives; stats refuse to count
    prompts the baseline has not answered."""
    from warehouse.analysis.stats import run_stats

    full = Path(shutil.copytree(wh, tmp_path / "full"))
    run_eval(full, EvalConfig(baseline=True), show_progress=False, loaded=loaded)
    everything = read(full / "evals" / "baseline.parquet")
    prompts = pl.read_parquet(wh / "prompts.parquet")

    write_selection(wh, "some", [1, 2, 50])
    first = EvalConfig(selection="some", split="test", sample=2, relations=["country_capital"])
    path = run_eval(wh, first, show_progress=False, loaded=loaded)
    base_path = wh / "evals" / "baseline.parquet"
    base = read(base_path)
    assert sorted(base["prompt_id"]) == sorted(set(read(path)["prompt_id"]))
    assert 0 < base.height < prompts.height
    side = json.loads(base_path.with_suffix(".json").read_text())
    assert side["timing"]["prompts"] == base.height
    with pytest.raises(WarehouseError) as err:
        run_stats(wh, filter_correct=True, show_progress=False)
    n_identify = (prompts["split"] == "identify").sum()
    assert str(err.value) == (
        f"evals/baseline.parquet answers 0 of the {n_identify} 'identify' prompts counted "
        "here; run `warehouse eval W --baseline` to answer every prompt"
    )

    # A second request adds only the prompts it lacks; the first ones' answers stay.
    run_eval(wh, replace(first, split="all", sample=None), show_progress=False, loaded=loaded)
    grown = read(base_path)
    assert set(base["prompt_id"]) < set(grown["prompt_id"])
    assert json.loads(base_path.with_suffix(".json").read_text())["timing"]["prompts"] == (
        grown.height - base.height
    )
    # --baseline completes it, without recomputing what is there.
    run_eval(wh, EvalConfig(baseline=True), show_progress=False, loaded=loaded)
    done = read(base_path)
    assert done.height == prompts.height
    assert done["prompt_id"].to_list() == everything["prompt_id"].to_list()  # warehouse order
    assert done["generated"].to_list() == everything["generated"].to_list()
    assert done["correct"].to_list() == everything["correct"].to_list()
    assert run_stats(wh, filter_correct=True, show_progress=False)


@pytest.mark.parametrize("split", ["test", "all"])
def test_empty_selection_reproduces_the_baseline(wh, loaded, split):
    write_selection(wh, "empty", [])
    write_selection(wh, "some", [1, 2, 50])
    for name, counts in (("empty", None), ("some", [0])):
        cfg = EvalConfig(selection=name, top_counts=counts, split=split, controls=3, batch_size=3)
        path = run_eval(wh, cfg, show_progress=False, loaded=loaded)
        got = read(path)
        base = read(wh / "evals" / "baseline.parquet")
        n_split = pl.read_parquet(wh / "prompts.parquet").filter(
            pl.lit(split == "all") | (pl.col("split") == split)
        )
        assert got.height == n_split.height
        assert got["count"].to_list() == [0] * got.height
        assert got["control_seed"].null_count() == got.height  # no control of nothing
        joined = got.join(base, on="prompt_id", suffix="_b")
        assert joined["generated"].to_list() == joined["generated_b"].to_list()
        assert joined["correct"].to_list() == joined["baseline_correct"].to_list()


def test_sweep_with_controls(wh, loaded):
    ids = [5, 17, 60, 3, 90, 44, 70, 2]
    write_selection(wh, "sel", ids)
    cfg = EvalConfig(selection="sel", top_counts=[6, 2], controls=3, seed=7, split="all")
    path = run_eval(wh, cfg, show_progress=False, loaded=loaded)
    assert path.parent == wh / "evals" and path.name.startswith("sel__")
    assert pq.read_schema(path).equals(EVAL_SCHEMA)
    got = read(path)
    n = pl.read_parquet(wh / "prompts.parquet").height
    assert got.height == n * 2 * 4
    conds = got.select("count", "control_seed").unique().sort("count", "control_seed")
    assert conds.rows() == [(c, s) for c in (2, 6) for s in (None, 7, 8, 9)]
    assert got["fraction"].null_count() == got.height
    assert set(got["selection"]) == {"sel"}
    base = read(wh / "evals" / "baseline.parquet")
    # One schema for all of evals/: DuckDB reads them as one view.
    total = duckdb.sql(f"select count(*) from '{wh}/evals/*.parquet'").fetchall()[0][0]
    assert total == got.height + base.height
    from warehouse.api import Warehouse

    view = Warehouse.open(wh).sql(
        "select selection, count(*) as n from evals group by selection order by selection"
    )
    assert view.rows() == [("baseline", base.height), ("sel", got.height)]

    summary = summarize(path)
    assert summary["selection"] == "sel"
    assert [c["count"] for c in summary["conditions"]] == [2, 6]
    row = summary["conditions"][1]["results"][0]
    rel, lang = row["relation"], row["language"]
    part = got.filter(count=6, relation=rel, language=lang)
    target = part.filter(pl.col("control_seed").is_null())
    accs = [part.filter(control_seed=s)["correct"].mean() for s in (7, 8, 9)]
    assert row["prompts"] == target.height
    assert row["target"] == pytest.approx(target["correct"].mean())
    assert row["baseline"] == pytest.approx(target["baseline_correct"].mean())
    assert row["controls"] == 3
    assert row["control_mean"] == pytest.approx(np.mean(accs))
    assert row["control_std"] == pytest.approx(np.std(accs, ddof=1))
    assert "sel" in format_summary(summary)
    json.dumps(summary)  # plain JSON, no NaN
    assert run_eval(wh, cfg, show_progress=False, as_json=True, loaded=loaded) == summary

    # Cached: the same request returns the same file without generating.
    stamp = path.stat().st_mtime_ns
    assert run_eval(wh, cfg, show_progress=False, loaded=loaded) == path
    assert path.stat().st_mtime_ns == stamp
    # The name: the request's sha256 as before cache keys; the sidecar: its key, derived
    # from the baseline's.
    request = request_key(read_selection(wh, "sel"), Manifest.load(wh), cfg)
    blob = json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
    assert path.name == f"sel__{hashlib.sha256(blob).hexdigest()[:12]}.parquet"
    side = json.loads(path.with_suffix(".json").read_text())
    base_side = json.loads((wh / "evals" / "baseline.json").read_text())
    assert side["key"] == {"parent": base_side["fingerprint"], "step": "eval", "options": request}
    assert side["fingerprint"] == fingerprint(side["key"]) and side["rows"] == got.height
    # A sidecar made before cache keys is stale: the request is evaluated anew.
    path.with_suffix(".json").write_text(json.dumps({"kind": "ablation", "key": request}))
    assert run_eval(wh, cfg, show_progress=False, loaded=loaded) == path
    assert path.stat().st_mtime_ns != stamp and read(path).equals(got)

    # The scoring rule is part of the request: another rule is another file, scored by it.
    sel = read_selection(wh, "sel")
    assert request_key(sel, Manifest.load(wh), cfg)["options"]["rule"] == "answer-prefix-3"
    paper = replace(cfg, match="paper-prefix")
    assert request_key(sel, Manifest.load(wh), paper)["options"]["rule"] == "paper-prefix"
    other = run_eval(wh, paper, show_progress=False, loaded=loaded)
    assert other != path and other.name.startswith("sel__")
    lenient = read(other)
    assert lenient["generated"].to_list() == got["generated"].to_list()
    prompts = pl.read_parquet(wh / "prompts.parquet")
    objects = got.join(prompts, on="prompt_id", how="left", maintain_order="left")
    assert lenient["correct"].to_list() == [
        score(g, o, a or (), "paper-prefix")
        for g, o, a in objects.select("generated", "object", "aliases").iter_rows()
    ]


@pytest.mark.parametrize("stack_rows", [7, 10_000])
def test_stacked_neuron_sets_answer_as_one_set_per_pass(wh, loaded, stack_rows):
    """Neuron sets stacked in one forward (groups of 2 sets of a 3-prompt batch, or all 8)
    give every answer of one set per forward, in the same file: the option is not part of
    the request."""
    write_selection(wh, "sel", [5, 17, 60, 3, 90, 44, 70, 2])
    one = EvalConfig(selection="sel", top_counts=[6, 2], controls=3, split="all", batch_size=3)
    path = run_eval(wh, replace(one, stack_rows=1), show_progress=False, loaded=loaded)
    alone = read(path)
    again = run_eval(wh, replace(one, stack_rows=stack_rows, force=True), False, loaded=loaded)
    assert again == path
    assert read(path).equals(alone)
    assert alone["generated"].n_unique() > 1


def test_requests_run_together_answer_as_run_apart(wh, loaded):
    """Requests on shared prompt batches (a sweep with controls over both splits, another
    selection on the test split, a relation filter) run in one `run_evals` in fewer forward
    passes, and every file equals the one its request writes alone with one set per pass; a
    request of another decoding is refused."""
    write_selection(wh, "sel", [5, 17, 60, 3, 90, 44, 70, 2])
    write_selection(wh, "rng", [44, 70, 2])
    cfgs = [
        EvalConfig(selection="sel", top_counts=[6, 2], controls=2, split="all", batch_size=3),
        EvalConfig(selection="rng", controls=1, split="test", batch_size=3),
        EvalConfig(selection="sel", controls=0, relations=["country_capital"], batch_size=3),
    ]
    passes = []
    counter = loaded.model.base_model.register_forward_hook(lambda *a: passes.append(1))
    try:
        together = run_evals(wh, cfgs, show_progress=False, loaded=loaded)
        n_together = len(passes)
        files = [read(p) for p in together]
        passes.clear()
        apart = [
            run_eval(wh, replace(c, stack_rows=1, force=True), False, loaded=loaded) for c in cfgs
        ]
    finally:
        counter.remove()
    assert apart == together and len(set(together)) == 3
    assert [read(p).equals(f) for p, f in zip(apart, files, strict=True)] == [True] * 3
    assert n_together < len(passes)
    with pytest.raises(WarehouseError, match="equal"):
        run_evals(wh, [cfgs[0], replace(cfgs[1], max_new_tokens=3)], False, loaded=loaded)


def test_ablating_everything_breaks_answers(wh, loaded):
    write_selection(wh, "all", list(range(96)))
    path = run_eval(wh, EvalConfig(selection="all", controls=0, split="all"), False, loaded=loaded)
    got = read(path)
    base = read(wh / "evals" / "baseline.parquet")
    joined = got.join(base, on="prompt_id", suffix="_b")
    assert got["count"].unique().to_list() == [96]
    assert (joined["generated"] != joined["generated_b"]).any()
    assert got["correct"].sum() < base["correct"].sum()
    # And the run agrees with ablate() + greedy on the same prompts.
    tok = loaded.tokenizer
    prompts = pl.read_parquet(wh / "prompts.parquet").join(got, on="prompt_id")
    with ablate(loaded.model, {"ffn.act": neuron_indices(loaded.model, "ffn.act", range(96))}):
        for text, said in prompts.select("text", "generated").head(4).iter_rows():
            new = greedy(loaded.model, [tok(text)["input_ids"]], 1, eos_token_ids(loaded), 2)
            assert tok.decode(new[0], skip_special_tokens=True) == said


def test_fractions_filters_and_other_sites(wh, loaded):
    write_selection(wh, "down", [0, 40, 7, 33, 63, 1], site="ffn.down")
    cfg = EvalConfig(
        selection="down", fractions=[0.05, 1 / 64], controls=2, relations=["country_capital"]
    )
    got = read(run_eval(wh, cfg, show_progress=False, loaded=loaded))
    assert sorted(got.select("count", "fraction").unique().rows()) == [(1, 1 / 64), (3, 0.05)]
    assert set(got["relation"]) == {"country_capital"} and set(got["split"]) == {"test"}
    cfg = EvalConfig(selection="down", languages=["de"], controls=0)
    got = read(run_eval(wh, cfg, show_progress=False, loaded=loaded))
    assert set(got["language"]) == {"de"} and got["count"].unique().to_list() == [6]


def test_eval_refusals(wh, loaded, tiny_llama_dir):
    def fails(match: str, **kw):
        with pytest.raises(WarehouseError, match=match):
            run_eval(wh, EvalConfig(**kw), show_progress=False, loaded=loaded)

    write_selection(wh, "sel", [1, 2, 3])
    fails("nothing to evaluate")
    fails(r"no selection named 'nope' .*available: sel", selection="nope")
    fails(
        r"unknown relation\(s\) nope; this warehouse has: country_capital, person_mother",
        selection="sel",
        relations=["nope"],
    )
    fails(
        r"unknown language\(s\) xx; this warehouse has: de, en", selection="sel", languages=["xx"]
    )
    fails("unknown split", selection="sel", split="dev")
    fails(r"top 5 asked for, but selection 'sel' holds only 3", selection="sel", top_counts=[5])
    fails("not both", selection="sel", top_counts=[1], fractions=[0.1])
    fails("reserved", selection="baseline")

    write_selection(wh, "other_model", [1], weights_hash="sha256:" + "0" * 64)
    fails(r"selection 'other_model' was made for another model", selection="other_model")
    write_selection(wh, "mixed", [1, 2], row_site="ffn.up")
    fails(r"is of site ffn.act but holds neurons of ffn.up", selection="mixed")
    write_selection(wh, "wide", [1], units=64)
    fails(r"counts 64 units per layer for ffn.act; the model's ffn.act has 48", selection="wide")
    write_selection(wh, "far", [200], units=48)
    fails(r"\[200\] out of range", selection="far")

    # A model with other weights (the unscaled tiny Llama) is refused, the warehouse untouched.
    with pytest.raises(WarehouseError, match=r"model .* has weights sha256:.*, but .* made from"):
        run_eval(wh, EvalConfig(baseline=True, model=str(tiny_llama_dir)), False)
    assert not (wh / "evals").exists()


@pytest.mark.parametrize("site", ["ffn.act", "ffn.up", "ffn.down"])
def test_gpt2_greedy_under_ablation_equals_plain_hooks_and_generate(site):
    """The evaluator's decoding and ablation on GPT-2 (Conv1D MLP, learned positions): equal
    to a plain-hook full-recompute loop, and with no ablation to `model.generate`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # strong MLPs, so zeroing a few units changes answers
        for block in model.transformer.h:
            block.mlp.c_proj.weight.mul_(8.0)
    rng = np.random.default_rng(0)
    batch = [rng.integers(1, 64, size=n).tolist() for n in (3, 5, 7, 4)]
    eos = [0]
    units = 16 if site == "ffn.down" else 64
    ids = neuron_indices(model, site, [u for u in range(0, 3 * units, 5)])
    by_layer = {k: v.tolist() for k, v in ids.items()}
    with ablate(model, {site: ids}):
        ours = greedy(model, batch, 0, eos, 3)

    def pre(module, args, idx):
        x = args[0].clone()
        x[..., idx] = 0.0
        return (x, *args[1:])

    def post(module, args, out, idx):
        out = out.clone()
        out[..., idx] = 0.0
        return out

    handles = []
    for layer, idx in by_layer.items():
        mlp = model.transformer.h[layer].mlp
        if site == "ffn.act":
            handles.append(mlp.c_proj.register_forward_pre_hook(lambda m, a, i=idx: pre(m, a, i)))
        else:
            target = mlp.c_fc if site == "ffn.up" else mlp.c_proj
            handles.append(target.register_forward_hook(lambda m, a, o, i=idx: post(m, a, o, i)))
    plain = _check_against_plain_hooks(model, handles, batch, eos, 0, ours)
    for row, x in zip(plain, batch, strict=True):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([x]),
                max_new_tokens=3,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=0,
            )
        new = out[0, len(x) :].tolist()
        assert row == (new[: new.index(0)] if 0 in new else new)


@pytest.mark.parametrize("site", ["ffn.act", "ffn.gate", "ffn.down"])
def test_gemma3_greedy_under_ablation_equals_plain_hooks_and_generate(site, tiny_gemma3_dir):
    """The evaluator's decoding and ablation on Gemma 3 (a sliding window shorter than the
    prompts, scaled and tied embeddings): equal to a plain-hook full-recompute loop, and with
    no ablation to `model.generate`."""
    from transformers import Gemma3ForCausalLM

    model = Gemma3ForCausalLM.from_pretrained(tiny_gemma3_dir, attn_implementation="eager")
    model.eval()
    rng = np.random.default_rng(0)
    batch = [rng.integers(2, 320, size=n).tolist() for n in (3, 6, 9, 5)]
    eos = [1]
    units = 32 if site == "ffn.down" else 48
    ids = neuron_indices(model, site, list(range(0, 2 * units, 3)))
    with ablate(model, {site: ids}):
        ours = greedy(model, batch, 1, eos, 3)
    handles = _plain_hooks(model, site, {k: v.tolist() for k, v in ids.items()})
    plain = _check_against_plain_hooks(model, handles, batch, eos, 1, ours)
    for row, x in zip(plain, batch, strict=True):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([x]), max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=1
            )
        new = out[0, len(x) :].tolist()
        assert row == (new[: new.index(1)] if 1 in new else new)


def _logits_to_keep_greedy(model, batch, pad_id, eos, n) -> list[list[int]]:
    """The decoding the evaluator used before it ran the LM head itself: the whole causal LM
    with `logits_to_keep=1`, the same left padding, positions and cache."""
    from warehouse.ingest.capture import pad_batch

    x, mask, pos = pad_batch(batch, pad_id, "left", torch.device("cpu"))
    rows: list[list[int]] = [[] for _ in batch]
    done = [False] * len(batch)
    cache = None
    with torch.no_grad():
        for _ in range(n):
            out = model(
                input_ids=x,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            token = out.logits[:, -1].argmax(-1)
            for i, t in enumerate(token.tolist()):
                if not done[i]:
                    done[i] = t in eos
                    if not done[i]:
                        rows[i].append(t)
            cache, x = out.cache, token[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
    return rows


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_greedy_head_equals_the_logits_to_keep_path(arch, strong_llama_dir, tiny_gemma3_dir):
    """The backbone plus the LM head on the last position gives the same tokens as the whole
    model's forward with `logits_to_keep=1`, with and without an ablation."""
    folder = strong_llama_dir if arch == "llama" else tiny_gemma3_dir
    loaded = load_model(str(folder))
    model, tok = loaded.model, loaded.tokenizer
    eos = eos_token_ids(loaded)
    texts = [*PROMPTS, "Tokyo is", "La capitale de la France est", "Die"]
    batch = [tok(t)["input_ids"] for t in texts]
    plain = greedy(model, batch, tok.pad_token_id, eos, 4)
    assert plain == _logits_to_keep_greedy(model, batch, tok.pad_token_id, eos, 4)
    ids = neuron_indices(model, "ffn.act", list(range(0, 96, 2)))
    with ablate(model, {"ffn.act": ids}):
        ours = greedy(model, batch, tok.pad_token_id, eos, 4)
        assert ours == _logits_to_keep_greedy(model, batch, tok.pad_token_id, eos, 4)
    assert ours != plain
