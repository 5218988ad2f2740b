"""`warehouse study`: every stage runs on a tiny model, a second run reuses every stage, the
findings equal numbers recomputed by hand from the evals tables, and perplexity equals a
plain PyTorch computation."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import shutil
from pathlib import Path

import conftest
import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats as sps

from warehouse.analysis.evaluate import sample_prompts
from warehouse.analysis.findings import compute
from warehouse.analysis.perplexity import perplexities, perplexity, read_sentences
from warehouse.ingest.models import load_model
from warehouse.ingest.scoring import normalize_answer
from warehouse.store.errors import DatasetError, WarehouseError
from warehouse.store.fingerprint import entry, fingerprint
from warehouse.study import (
    StudyConfig,
    _shortfall,
    plan_counts,
    ranges,
    run_study,
    scaled,
    selections_key,
)

SUBJECTS = [
    "France", "Japan", "Germany", "Peru", "Chile", "Kenya", "Nepal", "Oman", "Fiji", "Laos",
    "Cuba", "Mali",
]  # fmt: skip
TEMPLATES = {
    ("country_capital", "en"): "The capital city of {subject} is",
    ("country_capital", "de"): "Die Hauptstadt von {subject} ist",
    ("country_currency", "en"): "The currency of {subject} is the",
    ("country_currency", "de"): "Die Währung von {subject} ist der",
    ("country_language", "en"): "People in {subject} speak",
    ("country_language", "de"): "In {subject} spricht man",
}
# The held-out-template study: English only, country_capital with a second template.
TWO_TEMPLATES = {
    ("country_capital", "en"): [
        TEMPLATES[("country_capital", "en")],
        "The capital of {subject} is",
    ],
    ("country_language", "en"): [TEMPLATES[("country_language", "en")]],
}


@pytest.fixture(scope="module")
def model_dir(strong_llama_dir) -> Path:
    return strong_llama_dir


def write_facts(model_dir: Path, templates: dict, path: Path) -> Path:
    """Facts whose object is, for 2 of 3 subjects, what the tiny model answers itself (to
    each of the fact's templates: the answers to later templates are aliases)."""
    loaded = load_model(str(model_dir))
    tok = loaded.tokenizer
    facts = []
    for (relation, language), listed in templates.items():
        listed = listed if isinstance(listed, list) else [listed]
        for i, subject in enumerate(SUBJECTS):
            said = []
            for template in listed:
                ids = tok(template.replace("{subject}", subject), return_tensors="pt")
                with torch.no_grad():
                    out = loaded.model.generate(**ids, max_new_tokens=2, do_sample=False)
                answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
                said.append(answer.strip())
            own = i % 3 != 2 and all(normalize_answer(a) for a in said)
            fact = {
                "relation": relation,
                "language": language,
                "subject": subject,
                "object": said[0] if own else "Zzyzx",
                "templates": listed,
            }
            aliases = sorted(set(said[1:]) - {said[0]}) if own else []
            facts.append({**fact, "aliases": aliases} if aliases else fact)
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    return path


@pytest.fixture(scope="module")
def dataset(model_dir, module_cache, tmp_path_factory) -> Path:
    return write_facts(model_dir, TEMPLATES, tmp_path_factory.mktemp("data") / "facts.jsonl")


def config(out: Path, model_dir: Path, dataset: Path, **kw) -> StudyConfig:
    base = dict(
        out=out,
        model=str(model_dir),
        dataset=str(dataset),
        top_k=6,
        sweep=[2, 6, 20],
        controls=3,
        sample=4,
        others_sample=2,
        batch_size=4,
        min_correct=3,  # the fixture has 8 identification subjects per relation
        min_subjects=3,
        show_progress=False,
    )
    return StudyConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def studied(model_dir, dataset, module_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "w"
    run_study(config(out, model_dir, dataset))
    return out


@pytest.fixture(scope="module")
def templated(model_dir, module_cache, tmp_path_factory) -> Path:
    """A study of TWO_TEMPLATES: country_capital's neurons are checked on a held-out one."""
    data = write_facts(model_dir, TWO_TEMPLATES, tmp_path_factory.mktemp("data2") / "f.jsonl")
    out = tmp_path_factory.mktemp("study2") / "w"
    run_study(config(out, model_dir, data))
    return out


def files_state(root: Path) -> dict[str, float]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name != "study.json"
    }


def evals(root: Path, rel: str) -> pl.DataFrame:
    return pl.read_parquet(root / rel)


# ------------------------------------------------------------------------------ the plan


def test_counts_scale_the_papers_to_the_site():
    assert scaled(3000, 835_584) == 3000
    assert scaled(3000, 46_080) == 165  # SmolLM2-135M's ffn.act: 0.36 %
    cfg = StudyConfig(out=Path("x"))
    top_k, sweep = plan_counts(cfg, 46_080)
    assert top_k == 165
    assert sweep == [1, 3, 11, 28, 55, 165, 551, 1103, 2757]
    assert (cfg.min_correct, cfg.min_subjects) == (20, 10)
    assert ranges([2, 6, 20]) == [(2, 6), (6, 20)]
    with pytest.raises(WarehouseError, match="--top-k"):
        plan_counts(StudyConfig(out=Path("x"), top_k=0), 100)
    with pytest.raises(WarehouseError, match="--sweep"):
        plan_counts(StudyConfig(out=Path("x"), sweep=[5, 200]), 100)


def test_sample_is_fixed_per_prompt_and_capped_per_cell():
    frame = pl.DataFrame(
        {
            "prompt_id": list(range(40)),
            "relation": ["a", "b"] * 20,
            "language": ["en"] * 40,
            "split": ["test"] * 20 + ["identify"] * 20,
        }
    )
    chosen = sample_prompts(frame, 3)
    assert chosen.group_by("relation", "split").len()["len"].to_list() == [3, 3, 3, 3]
    # The same prompts are chosen from any superset: a prompt's place depends on it alone.
    part = frame.filter(pl.col("relation") == "a")
    assert set(sample_prompts(part, 3)["prompt_id"]) == set(
        chosen.filter(pl.col("relation") == "a")["prompt_id"]
    )
    assert sample_prompts(frame, 100).height == 40


# ------------------------------------------------------------------------------ the run


def test_study_records_every_part(studied: Path):
    st = json.loads((studied / "study" / "study.json").read_text())
    assert st["top_k"] == 6 and st["sweep"] == [2, 6, 20]
    assert st["relations"] == ["country_capital", "country_currency", "country_language"]
    assert st["languages"] == ["de", "en"]
    for part in ("intra", "sweep_own", "sweep_others", "cross_relation", "cross_lingual"):
        assert sorted(st["evals"][part]) == st["relations"], part
        for rel in st["relations"]:
            assert (studied / st["evals"][part][rel]).is_file()
    for rel in st["relations"]:
        top = pl.read_parquet(studied / "selections" / f"study-{rel}.parquet")
        big = pl.read_parquet(studied / "selections" / f"study-{rel}-sweep.parquet")
        assert top.height == 6 and big.height == 20
        assert top["neuron_id"].to_list() == big["neuron_id"].to_list()[:6]
        # The ranges a+1..b are exactly the sweep selection's ranks a+1..b.
        for a, b in ranges([2, 6, 20]):
            rng = pl.read_parquet(studied / "selections" / f"study-{rel}-ranks-{a}-{b}.parquet")
            assert set(rng["neuron_id"]) == set(big["neuron_id"].to_list()[a:b])
    for stage in ("ingest", "baseline", "stats", "select", "eval", "templates", "perplexity"):
        assert st["seconds"][stage] >= 0
    # The plan's cache key derives from the stats file's; perplexity's from the warehouse's.
    stats_file = studied / st["stats_file"]
    plan = selections_key(
        stats_file, st["site"], st["negatives"], st["identify_language"], 6, [2, 6, 20]
    )
    assert st["plan"] == entry(plan)
    assert plan.parent == json.loads(stats_file.with_suffix(".json").read_text())["fingerprint"]
    ppl = json.loads((studied / st["perplexity"]).with_suffix(".json").read_text())
    wh_fingerprint = json.loads((studied / "manifest.json").read_text())["fingerprint"]
    assert (ppl["key"]["parent"], ppl["key"]["step"]) == (wh_fingerprint, "perplexity")
    assert ppl["fingerprint"] == fingerprint(ppl["key"])


def test_second_run_reuses_every_stage(studied: Path, model_dir, dataset, tmp_path):
    w = Path(shutil.copytree(studied, tmp_path / "w"))
    before = files_state(w)
    run_study(config(w, model_dir, dataset))
    assert files_state(w) == before  # nothing rewritten: every stage reused


def test_other_controls_rerun_only_the_controlled_evals(studied, model_dir, dataset, tmp_path):
    w = Path(shutil.copytree(studied, tmp_path / "w"))
    old = json.loads((w / "study" / "study.json").read_text())
    run_study(config(w, model_dir, dataset, controls=2))
    new = json.loads((w / "study" / "study.json").read_text())
    assert new["evals"]["sweep_own"] == old["evals"]["sweep_own"]
    assert new["evals"]["cross_relation"] == old["evals"]["cross_relation"]
    assert new["evals"]["intra"] != old["evals"]["intra"]
    frame = evals(w, new["evals"]["intra"]["country_capital"])
    assert sorted(frame["control_seed"].drop_nulls().unique().to_list()) == [0, 1]


def test_refuses_an_unknown_identify_language(studied, model_dir, dataset):
    with pytest.raises(WarehouseError, match="identify-language 'fr'"):
        run_study(config(studied, model_dir, dataset, identify_language="fr"))


def test_relations_the_model_hardly_knows_are_left_out(studied, model_dir, dataset, tmp_path):
    st = json.loads((studied / "study" / "study.json").read_text())
    correct = st["identify_correct"]
    assert st["skipped"] == {} and set(correct) == set(st["relations"])
    with pytest.raises(WarehouseError, match="no relation has 1000 or more correctly"):
        run_study(config(studied, model_dir, dataset, min_correct=1000))
    # Leave out the relation the model knows least: it is named, and studied no further.
    least = min(correct, key=lambda r: (correct[r], r))
    w = Path(shutil.copytree(studied, tmp_path / "w"))
    run_study(config(w, model_dir, dataset, min_correct=correct[least] + 1))
    new = json.loads((w / "study" / "study.json").read_text())
    assert least in new["skipped"] and least not in new["relations"]
    why = new["skipped"][least]  # findings read {rel: why} and {rel: {..., "why"}} alike
    assert compute(w)["study"]["skipped"][least]["why"] == (why["why"] if "why" in why else why)


def test_skipped_relations_are_named_with_their_counts(
    studied, model_dir, dataset, tmp_path, capsys
):
    st = json.loads((studied / "study" / "study.json").read_text())
    correct, subjects = st["identify_correct"], st["identify_subjects"]
    assert st["skipped"] == {} and set(correct) == set(subjects) == set(st["relations"])
    assert (st["config"]["min_correct"], st["config"]["min_subjects"]) == (3, 3)
    # counted from the tables: correct English identification prompts and their subjects
    prompts = pl.read_parquet(studied / "prompts.parquet")
    base = pl.read_parquet(studied / "evals" / "baseline.parquet").select("prompt_id", "correct")
    ok = prompts.join(base, on="prompt_id").filter(
        pl.col("correct"), split="identify", language="en"
    )
    by_rel = ok.group_by("relation").agg(pl.len(), pl.col("subject_id").n_unique())
    assert dict(by_rel.select("relation", "len").iter_rows()) == correct
    assert dict(by_rel.select("relation", "subject_id").iter_rows()) == subjects
    assert correct == subjects  # one English template per relation here
    with pytest.raises(WarehouseError, match="from 99 or more subjects in 'en'"):
        run_study(config(studied, model_dir, dataset, min_subjects=99))
    # Leave out the relation the model knows least: it is named with its counts.
    least = min(correct, key=lambda r: (correct[r], r))
    w = Path(shutil.copytree(studied, tmp_path / "w"))
    capsys.readouterr()
    run_study(config(w, model_dir, dataset, min_correct=correct[least] + 1))
    said = " ".join(capsys.readouterr().err.split())  # said without --quiet's progress too
    new = json.loads((w / "study" / "study.json").read_text())
    for rel, row in new["skipped"].items():
        assert f"skipping {rel}: {row['why']}" in said
    assert new["skipped"] == {
        r: {
            "prompts": correct[r],
            "subjects": subjects[r],
            "why": f"{correct[r]} correctly answered identification prompts "
            f"(< {correct[least] + 1})",
        }
        for r in correct
        if correct[r] <= correct[least]
    }
    # the subjects rule alone (every relation of the fixture has about as many subjects)
    cfg = StudyConfig(out=Path("x"), min_correct=3, min_subjects=10)
    assert _shortfall(cfg, {"prompts": 12, "subjects": 6}) == {
        "prompts": 12,
        "subjects": 6,
        "why": "6 distinct subjects among them (< 10)",
    }
    assert _shortfall(cfg, {"prompts": 2, "subjects": 10})["why"] == (
        "2 correctly answered identification prompts (< 3)"
    )
    assert _shortfall(cfg, {"prompts": 3, "subjects": 10}) is None


def test_held_out_templates(templated: Path, studied: Path):
    """country_capital has two English templates: its neurons are found on one (stats over
    every English template but the held-out one) and evaluated on the other's test prompts.
    Relations of one template are not part of it."""
    plain = json.loads((studied / "study" / "study.json").read_text())
    assert plain["template_split"] == {} and plain["evals"]["templates"] == {}
    studied = templated
    st = json.loads((studied / "study" / "study.json").read_text())
    assert st["relations"] == ["country_capital", "country_language"]
    both = TWO_TEMPLATES[("country_capital", "en")]
    digest = hashlib.sha256(b"country_capital").digest()
    first = np.random.default_rng([0, int.from_bytes(digest[:8], "little")]).permutation(2)
    test_t, select_t = both[first[0]], both[first[1]]
    prompts = pl.read_parquet(studied / "prompts.parquet")
    base = pl.read_parquet(studied / "evals" / "baseline.parquet").select("prompt_id", "correct")
    ok = prompts.join(base, on="prompt_id").filter(
        pl.col("correct"), split="identify", language="en", template=select_t
    )
    assert st["template_split"] == {
        "country_capital": {
            "select": [select_t],
            "test": [test_t],
            "prompts": ok.height,
            "subjects": ok["subject_id"].n_unique(),
        }
    }
    assert sorted(st["evals"]["templates"]) == ["country_capital"]
    # the stats: every English template except the held-out one, in a file of their own
    kept = sorted(t for t in prompts.filter(language="en")["template"].unique() if t != test_t)
    side = json.loads((studied / st["template_stats_file"]).with_suffix(".json").read_text())
    assert side["key"]["options"]["templates"] == kept
    assert st["template_stats_file"] != st["stats_file"]
    stats = pl.read_parquet(studied / st["template_stats_file"])
    cc = stats.filter(relation="country_capital", language="en").sort("rank")
    assert cc["n_pos"][0] == ok.height
    top = pl.read_parquet(studied / "selections" / "study-country_capital-templates.parquet")
    assert top["neuron_id"].to_list() == cc["neuron_id"].head(6).to_list()
    # the eval: test prompts of the held-out template, own set and 3 controls
    frame = evals(studied, st["evals"]["templates"]["country_capital"])
    held = prompts.filter(relation="country_capital", language="en", split="test", template=test_t)
    want = set(sample_prompts(held, 4)["prompt_id"])
    assert set(frame["split"]) == {"test"} and set(frame["prompt_id"]) == want
    assert sorted(frame["control_seed"].drop_nulls().unique().to_list()) == [0, 1, 2]
    assert frame.filter(pl.col("control_seed").is_null()).height == len(want)
    assert set(frame["selection"]) == {"study-country_capital-templates"}


# ------------------------------------------------------------------------------ findings


def test_findings_equal_numbers_recomputed_from_the_tables(studied: Path):
    s = compute(studied)
    st = json.loads((studied / "study" / "study.json").read_text())
    rels = st["relations"]

    # intra: target rows' accuracy; the prediction interval of one control set.
    for row in s["intra"]:
        frame = evals(studied, st["evals"]["intra"][row["relation"]])
        frame = frame.filter(pl.col("split") == row["split"])
        target = frame.filter(pl.col("control_seed").is_null())
        assert row["n"] == target.height <= 4
        assert row["target"] == pytest.approx(target["correct"].mean())
        assert row["baseline"] == pytest.approx(target["baseline_correct"].mean())
        accs = [
            frame.filter(pl.col("control_seed") == seed)["correct"].mean() for seed in (0, 1, 2)
        ]
        mean = np.mean(accs)
        half = sps.t.ppf(0.975, 2) * np.std(accs, ddof=1) * math.sqrt(1 + 1 / 3)
        assert row["control_mean"] == pytest.approx(mean)
        assert row["control_pi_lo"] == pytest.approx(max(0.0, mean - half))
        assert row["control_pi_hi"] == pytest.approx(min(1.0, mean + half))
        # 4 prompts of 4 subjects: too few for a verdict.
        assert row["n_subjects"] == 4 and row["verdict"] == "underpowered"

    # cross-relation: relative drop of ri's accuracy with rj's neurons off.
    for cell in s["cross_relation"]:
        frame = evals(studied, st["evals"]["cross_relation"][cell["ablated"]])
        part = frame.filter(pl.col("relation") == cell["target"])
        b, a = part["baseline_correct"].mean(), part["correct"].mean()
        assert (cell["baseline"], cell["accuracy"]) == (pytest.approx(b), pytest.approx(a))
        assert cell["relative_drop"] == (None if b == 0 else pytest.approx((b - a) / b))

    # overlap: Jaccard of the selections' neuron sets.
    sets = {
        r: set(pl.read_parquet(studied / "selections" / f"study-{r}.parquet")["neuron_id"])
        for r in rels
    }
    for row in s["overlap"]:
        a, b = sets[row["a"]], sets[row["b"]]
        assert row["shared"] == len(a & b)
        assert row["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    assert sum(r["count"] for r in s["layers"]) == 6 * len(rels)

    # cumulativity by hand from the sweep and range files.
    for row in s["cumulativity"]:
        own = evals(studied, st["evals"]["sweep_own"][row["relation"]])
        rng = evals(studied, st["evals"]["ranges"][row["relation"]][f"{row['a']}-{row['b']}"])
        ok_a = set(own.filter((pl.col("count") == row["a"]) & pl.col("correct"))["prompt_id"])
        bad_b = set(own.filter((pl.col("count") == row["b"]) & ~pl.col("correct"))["prompt_id"])
        total = ok_a & bad_b
        affected = total & set(rng.filter(~pl.col("correct"))["prompt_id"])
        assert (row["total"], row["affected"]) == (len(total), len(affected))
        assert row["score"] == (1 - len(affected) / len(total) if total else None)

    # sweep count 0 is the baseline of the same prompts.
    for row in s["sweep"]:
        if row["count"] == 0:
            own = evals(studied, st["evals"]["sweep_own"][row["relation"]])
            first = own.filter(pl.col("count") == 2)
            assert row["own"] == pytest.approx(first["baseline_correct"].mean())

    # cross-lingual: English-found neurons on German test prompts.
    langs = {(r["relation"], r["language"]) for r in s["cross_lingual"]}
    assert langs == {(r, lang) for r in rels for lang in ("de", "en")}

    # interference needs a target that is not underpowered: none is, at 4 prompts each.
    assert s["study"]["underpowered"] == rels
    assert s["interference"] == [] and s["headline"]["relations"] == 0

    # specificity: the random sets' perplexity beside the own set's.
    for row in s["specificity"]:
        assert row["ppl_controls_n"] == 3
        assert row["ppl_controls_lo"] <= row["ppl_controls"] <= row["ppl_controls_hi"]
    json.dumps(s, allow_nan=False)  # the summary is plain JSON


def test_perplexity_of_random_sets_equals_a_direct_computation(studied: Path, model_dir):
    """The control rows of study/perplexity.parquet are the intra evals' random sets."""
    from warehouse.analysis.ablation import control_ids, neuron_indices
    from warehouse.analysis.selections import read_selection

    loaded = load_model(str(model_dir))
    ppl = pl.read_parquet(studied / "study" / "perplexity.parquet")
    assert ppl["control_seed"].to_list() == [None, 0, 1, 2] * 3
    sel = read_selection(studied, "study-country_capital")
    ids = control_ids(sel.frame["neuron_id"].to_numpy(), sel.meta["units"], sel.meta["n_layers"], 1)
    neurons = {"ffn.act": neuron_indices(loaded.model, "ffn.act", ids)}
    row = ppl.filter((pl.col("relation") == "country_capital") & (pl.col("control_seed") == 1))
    assert row["ppl_ablated"].item() == pytest.approx(perplexity(loaded, read_sentences(), neurons))
    assert row["size"].item() == 6


# ------------------------------------------------------------------------------ perplexity


def test_perplexity_equals_a_plain_computation(model_dir, module_cache):
    loaded = load_model(str(model_dir))
    sentences = read_sentences()[:3]
    tok, model = loaded.tokenizer, loaded.model

    def plain(zero: dict[int, list[int]]) -> float:
        hooks = [
            model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
                lambda m, args, idx=idx: (args[0].index_fill(-1, torch.tensor(idx), 0.0),)
            )
            for layer, idx in zero.items()
        ]
        nll, n = 0.0, 0
        try:
            for text in sentences:
                ids = tok(text, return_tensors="pt")["input_ids"]
                with torch.no_grad():
                    loss = model(input_ids=ids, labels=ids).loss.item()
                nll += loss * (ids.shape[1] - 1)
                n += ids.shape[1] - 1
        finally:
            for h in hooks:
                h.remove()
        return math.exp(nll / n)

    assert perplexity(loaded, sentences) == pytest.approx(plain({}), rel=1e-5)
    zero = {0: [1, 5], 1: [3]}
    neurons = {"ffn.act": {k: torch.tensor(v) for k, v in zero.items()}}
    got = perplexity(loaded, sentences, neurons)
    assert got == pytest.approx(plain(zero), rel=1e-5)
    assert got != pytest.approx(plain({}), rel=1e-6)


def test_stacked_perplexities_equal_each_run_alone(model_dir, module_cache):
    """Neuron sets stacked on each batch of sentences (two per forward, a budget that fits
    two blocks' logits) give each set's own perplexity, float for float."""
    loaded = load_model(str(model_dir))
    sentences = read_sentences()[:5]
    sets = [{}, {"ffn.act": {0: torch.tensor([1, 5])}}, {"ffn.act": {1: torch.tensor([3, 40])}}]
    alone = [perplexity(loaded, sentences, n, batch_size=2) for n in sets]
    widest = max(len(loaded.tokenizer(t)["input_ids"]) for t in sentences)
    budget = 2 * 2 * widest * loaded.model.config.vocab_size * 4
    assert perplexities(loaded, sentences, sets, batch_size=2, logits_bytes=budget) == alone
    assert len(set(alone)) == 3


def test_sentences_file_errors(tmp_path):
    empty = tmp_path / "s.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(DatasetError, match="no sentences"):
        read_sentences(empty)
    with pytest.raises(DatasetError, match="cannot read"):
        read_sentences(tmp_path / "missing.txt")
    assert len(read_sentences()) == 40


# ------------------------------------------------------------------------------ the CLI


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    return conftest.run_cli(capsys, *args)


def test_report_command_draws_the_study(studied: Path, tmp_path, capsys):
    code, out, err = _cli(capsys, "report", str(studied), "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "own relation (test, en)" in out
    html = (tmp_path / "r" / "index.html").read_text()
    assert "country_currency" in html
    assert 'id="languages"' in html and "not testable" in html  # every 4-prompt cell
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["intra"] == json.loads(json.dumps(compute(studied)["intra"]))


def test_report_refuses_a_warehouse_without_a_study(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    code, _, err = _cli(capsys, "report", str(tmp_path / "w"), "--out", str(tmp_path / "r"))
    assert code != 0
    assert "no finished study" in err and "warehouse study" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_report_reads_an_exported_zip(studied: Path, tmp_path):
    """A study shared as one zip file (`warehouse export --zip --pooled-only`) gives the same
    findings, read in place and read-only."""
    from warehouse.store.checksums import verify
    from warehouse.store.export import ExportOptions, export

    share = tmp_path / "share.zip"
    export(studied, share, ExportOptions(pooled_only=True, zip=True), show_progress=False)
    assert verify(share).ok
    local, shared = compute(studied), compute(share)
    assert shared["study"].pop("warehouse") != local["study"].pop("warehouse")
    assert shared == local


# ------------------------------------------------------------------ per-language neuron sets


def _subjects(root: Path) -> pl.DataFrame:
    prompts = pl.read_parquet(root / "prompts.parquet")
    key = "subject_id" if "subject_id" in prompts.columns else "subject"
    return prompts.select("prompt_id", pl.col(key).cast(pl.Utf8).alias("subject"))


def test_per_language_sets_are_each_languages_top_k(studied: Path):
    st = json.loads((studied / "study" / "study.json").read_text())
    rels = st["relations"]
    # Each relation's correct German identification prompts, counted from the tables alone.
    prompts = pl.read_parquet(studied / "prompts.parquet")
    right = pl.read_parquet(studied / "evals" / "baseline.parquet").filter(pl.col("correct"))
    de = prompts.filter(
        (pl.col("language") == "de")
        & (pl.col("split") == "identify")
        & pl.col("prompt_id").is_in(right["prompt_id"].to_list())
    )
    for rel in rels:
        of_rel = de.filter(pl.col("relation") == rel)
        want = {"prompts": of_rel.height, "subjects": of_rel["subject_id"].n_unique()}
        assert st["language_counts"]["de"][rel] == want
        assert want["prompts"] >= 3 and want["subjects"] >= 3  # the fixture's minimums
    assert st["language_sets"] == {r: {"de": f"study-{r}-lang-de"} for r in rels}
    assert st["language_skipped"] == {}
    stats = pl.read_parquet(studied / st["stats_file"])
    for rel in rels:
        top = stats.filter(
            (pl.col("relation") == rel) & (pl.col("language") == "de") & (pl.col("rank") <= 6)
        )
        sel = pl.read_parquet(studied / "selections" / f"study-{rel}-lang-de.parquet")
        assert sorted(sel["neuron_id"].to_list()) == sorted(top["neuron_id"].to_list())
        assert sel.height == 6
    # One eval per per-language set, over every language, with the study's controls.
    assert sorted(st["evals"]["language_ablation"]) == rels
    for rel in rels:
        frame = evals(studied, st["evals"]["language_ablation"][rel]["de"])
        assert sorted(frame["language"].unique().to_list()) == ["de", "en"]
        assert sorted(frame["control_seed"].drop_nulls().unique().to_list()) == [0, 1, 2]
        assert set(frame["split"].to_list()) == {"test"}
    assert st["seconds"]["language_sets"] >= 0 and st["seconds"]["language_ablation"] >= 0


def test_language_overlap_is_a_hypergeometric_test(studied: Path):
    s = compute(studied)
    st = json.loads((studied / "study" / "study.json").read_text())
    n_units = st["units_total"]
    rows = s["language_overlap"]
    assert [(r["relation"], r["language"]) for r in rows] == [(r, "de") for r in st["relations"]]
    ps = []
    for r in rows:
        en = set(
            pl.read_parquet(studied / "selections" / f"study-{r['relation']}.parquet")["neuron_id"]
        )
        de = set(pl.read_parquet(studied / "selections" / f"{r['selection']}.parquet")["neuron_id"])
        shared = len(en & de)
        assert (r["shared"], r["size_a"], r["size_b"], r["population"]) == (shared, 6, 6, n_units)
        assert r["expected"] == pytest.approx(36 / n_units)
        p = sps.hypergeom.sf(shared - 1, n_units, 6, 6)
        assert r["p"] == pytest.approx(p, rel=1e-9)
        ps.append(p)
        counts = st["language_counts"]["de"][r["relation"]]
        assert (r["n"], r["n_subjects"]) == (counts["prompts"], counts["subjects"])
    # Holm by hand over the 3 rows: sorted p times 3, 2, 1, kept non-decreasing, capped at 1.
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    running, want = 0.0, [0.0] * len(ps)
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - k) * ps[i]))
        want[i] = running
    assert [r["p_holm"] for r in rows] == pytest.approx(want)
    assert [r["verdict"] for r in rows] == [
        "beyond chance" if p < 0.05 else "not beyond chance" for p in want
    ]


def _holm_by_hand(ps: list[float | None]) -> list[float | None]:
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - k) * ps[i]))
        out[i] = running
    return out


def test_language_ablation_reanalysed_from_the_evals_tables(studied: Path):
    """Every cell of the per-language ablation matrix, re-derived from evals/ and
    prompts.parquet with polars and a brute-force sign-flip enumeration; rules loose enough
    (2 discordant prompts, 1 subject) that the 4-prompt cells get verdicts."""
    from warehouse.analysis.claims import Rules

    st = json.loads((studied / "study" / "study.json").read_text())
    rules = Rules(min_discordant=2, min_test_subjects=1)
    rows = compute(studied, rules)["language_ablation"]
    subjects = _subjects(studied)
    rels = st["relations"]
    keys = [(r["relation"], r["set_language"], r["language"]) for r in rows]
    assert sorted(keys) == sorted(
        (r, s, m) for r in rels for s in ("de", "en") for m in ("de", "en")
    )
    want: dict[tuple, dict] = {}
    for rel, set_lang, lang in keys:
        if set_lang == "en":
            path = st["evals"]["intra" if lang == "en" else "cross_lingual"][rel]
        else:
            path = st["evals"]["language_ablation"][rel][set_lang]
        frame = evals(studied, path).filter(
            (pl.col("split") == "test") & (pl.col("language") == lang)
        )
        frame = frame.join(subjects, on="prompt_id")
        own = frame.filter(pl.col("control_seed").is_null()).sort("prompt_id")
        ctrl = frame.filter(pl.col("control_seed").is_not_null())
        c = (
            ctrl.group_by("prompt_id")
            .agg(pl.col("correct").cast(pl.Float64).mean())
            .sort("prompt_id")
        )
        d = c["correct"].to_numpy() - own["correct"].cast(pl.Float64).to_numpy()
        sums = {}
        for subj, v in zip(own["subject"].to_list(), d, strict=True):
            sums[subj] = sums.get(subj, 0.0) + v
        s = np.array([v for v in sums.values() if v != 0])
        flips = [np.dot(signs, s) for signs in itertools.product((1, -1), repeat=len(s))]
        p = float(np.mean([t >= s.sum() - 1e-9 for t in flips])) if len(s) else 1.0
        lost = int((own["baseline_correct"] & ~own["correct"]).sum())
        gained = int((~own["baseline_correct"] & own["correct"]).sum())
        base_ok = int(own["baseline_correct"].sum())
        want[(rel, set_lang, lang)] = {
            "n": own.height,
            "n_subjects": own["subject"].n_unique(),
            "baseline": own["baseline_correct"].mean(),
            "accuracy": own["correct"].mean() if base_ok >= 2 else None,
            "p_controls": p if base_ok >= 2 else None,
            "discordant": lost + gained,
        }
    for family in {(s, m) for _, s, m in keys}:
        members = [k for k in keys if k[1:] == family]
        for k, ph in zip(
            members, _holm_by_hand([want[k]["p_controls"] for k in members]), strict=True
        ):
            w = want[k]
            w["p_controls_holm"] = ph
            w["verdict"] = (
                "not testable"
                if ph is None
                else "beyond controls"
                if ph < 0.05 and w["discordant"] >= 2
                else "not beyond controls"
            )
    fields = ("n", "n_subjects", "baseline", "accuracy", "p_controls", "p_controls_holm")
    for r, k in zip(rows, keys, strict=True):
        w = {f: None if want[k][f] is None else pytest.approx(want[k][f]) for f in fields}
        assert {f: r[f] for f in fields} == w, k
        assert r["verdict"] == want[k]["verdict"], k
    # Both kinds of cell occur at these rules; at the defaults (5 discordant prompts), no
    # 4-prompt cell leaves enough to lose: every one is "not testable", with no number.
    assert {r["verdict"] for r in rows} >= {"not testable", "not beyond controls"}
    default = compute(studied)["language_ablation"]
    assert {r["verdict"] for r in default} == {"not testable"}
    assert {r["accuracy"] for r in default} == {None} == {r["relative_drop"] for r in default}
    assert [r["baseline"] for r in default] == pytest.approx([want[k]["baseline"] for k in keys])


def test_reanalyse_languages_agrees_with_the_findings(studied: Path):
    """bench/reanalyse.py --languages re-derives both per-language findings from the
    selections/ and evals/ tables and finds every cell equal; a changed finding differs."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "reanalyse.py"
    args = [sys.executable, str(script), str(studied), "--languages"]
    loose = subprocess.run(
        [*args, "--min-discordant", "2", "--min-subjects", "1"], capture_output=True, text=True
    )
    assert loose.returncode == 0, loose.stdout + loose.stderr
    lines = loose.stdout.splitlines()
    # 3 relations x de overlap, 3 relations x 2 sets x 2 languages of ablation cells
    assert lines[-1] == "15 of 15 cells agree" and "DIFFERS" not in loose.stdout
    # at these rules the 12 ablation cells: 4 not testable, 8 tested (none beyond controls)
    assert loose.stdout.count("  not testable | not testable\n") == 4
    assert loose.stdout.count("  not beyond controls | not beyond controls\n") == 8
    assert loose.stdout.count("  not beyond chance | not beyond chance\n") == 3
    default = subprocess.run(args, capture_output=True, text=True)
    assert default.returncode == 0 and default.stdout.splitlines()[-1] == "15 of 15 cells agree"
    assert default.stdout.count("not testable | not testable") == 12

    spec = importlib.util.spec_from_file_location("reanalyse", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    st = json.loads((studied / "study" / "study.json").read_text())
    mine = module.overlap_cells(studied, st, 0.05)
    told = compute(studied)["language_overlap"]
    assert module._print_overlap(mine, told) == 0
    told[0] = {**told[0], "shared": told[0]["shared"] + 1}
    assert module._print_overlap(mine, told) == 1


def test_one_language_study_has_no_language_stage(templated: Path):
    st = json.loads((templated / "study" / "study.json").read_text())
    assert st["languages"] == ["en"]
    assert (st["language_sets"], st["language_counts"], st["language_skipped"]) == ({}, {}, {})
    assert st["evals"]["language_ablation"] == {}
    assert "language_sets" not in st["seconds"] and "language_ablation" not in st["seconds"]
    assert not list((templated / "selections").glob("*-lang-*"))
    s = compute(templated)
    assert (s["language_overlap"], s["language_ablation"]) == ([], [])
