"""analysis/findings.py on a hand-made warehouse of eval tables whose verdicts are known:

- `strong`: 24 subjects x 2 templates; its own set loses 6 prompts of 6 subjects, the random
  sets lose none: beyond controls (sign flip p = 1/64, Holm x 3 = 3/64 < 0.05, 6 discordant).
- `flat`: 24 subjects; its own set loses ONE prompt, the random sets agree exactly (a
  zero-wide spread): the old "below the controls' interval" rule called that a finding; it is
  not beyond controls (p = 1/2, 1 discordant prompt).
- `tiny`: 7 subjects; loses 6 of 6 correct prompts: underpowered (< 20 test subjects).

Cross-relation: `flat` gains 8 prompts under `strong`'s set (interference, p = 1/256, Holm
x 6), `tiny` gains 8 too but is underpowered, `flat` gains 1 under `tiny`'s (nothing).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import conftest
import numpy as np
import polars as pl
import pytest

from warehouse.analysis.claims import cluster_bootstrap
from warehouse.analysis.findings import HEADLINE_KEYS, compute, format_headline, headline
from warehouse.analysis.report import headline_sentences
from warehouse.store.derived import checksum_field

RELATIONS = ("flat", "strong", "tiny")
SUBJECTS = {"strong": 24, "flat": 24, "tiny": 7}
SEEDS = (0, 1, 2)
UNITS = 10
NEURONS = {"strong": [1, 2, 13, 14], "flat": [1, 11, 12, 13], "tiny": [5, 6, 7, 15]}


def prompts() -> pl.DataFrame:
    rows = []
    for r, rel in enumerate(RELATIONS):
        for s in range(SUBJECTS[rel]):
            for t in range(2):
                rows.append(
                    {
                        "prompt_id": 1000 * r + 2 * s + t,
                        "relation": rel,
                        "language": "en",
                        "split": "test",
                        "subject": f"{rel}-s{s}",
                        "subject_id": f"{rel}-s{s}",
                        "template": f"T{t + 1}",
                    }
                )
    return pl.DataFrame(rows)


def baseline_correct(p: dict) -> bool:
    """strong: all right; flat: wrong on subjects 0-3 (8 prompts); tiny: right on 0-2."""
    s = int(p["subject"].rsplit("s", 1)[1])
    return {"strong": True, "flat": s >= 4, "tiny": s <= 2}[p["relation"]]


def own_correct(p: dict) -> bool:
    """Own set off: strong loses template 1 of subjects 0-5, flat loses prompt (s4, T1), tiny
    loses all 6 of its right prompts."""
    s, first = int(p["subject"].rsplit("s", 1)[1]), p["template"] == "T1"
    base = baseline_correct(p)
    if p["relation"] == "strong":
        return not (first and s < 6)
    if p["relation"] == "flat":
        return base and not (first and s == 4)
    return False


def cross_correct(p: dict, ablated: str) -> bool:
    """strong's set off: flat and tiny gain every wrong prompt (8 each); tiny's set off: flat
    gains (s0, T1); everything else as at baseline (the diagonal is the own set)."""
    if p["relation"] == ablated:
        return own_correct(p)
    if ablated == "strong" and p["relation"] in ("flat", "tiny"):
        return True
    if ablated == "tiny" and p["relation"] == "flat" and p["subject"] == "flat-s0":
        return p["template"] == "T1" or baseline_correct(p)
    return baseline_correct(p)


def eval_rows(ps: list[dict], selection: str, correct, seed=None, count=4) -> list[dict]:
    return [
        {
            "selection": selection,
            "count": count,
            "fraction": None,
            "control_seed": seed,
            "relation": p["relation"],
            "language": p["language"],
            "split": p["split"],
            "prompt_id": p["prompt_id"],
            "generated": " Yes" if correct(p) else " zz!",
            "correct": correct(p),
            "baseline_correct": baseline_correct(p),
        }
        for p in ps
    ]


def write(root: Path, rel: str, rows: list[dict]) -> str:
    schema = {"count": pl.Int64, "fraction": pl.Float64, "control_seed": pl.Int64}
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema_overrides=schema).write_parquet(root / rel)
    write_checksum_sidecar(root / rel)
    return rel


def write_checksum_sidecar(table: Path) -> None:
    """A derived table is read only beside its sidecar, which holds its crc32c."""
    table.with_suffix(".json").write_text(json.dumps(checksum_field(table)))


def intra_rows(ps: list[dict], rel: str) -> list[dict]:
    """Own set plus 3 random sets that answer exactly as the baseline (zero spread)."""
    rows = eval_rows(ps, f"study-{rel}", own_correct)
    for seed in SEEDS:
        rows += eval_rows(ps, f"study-{rel}", baseline_correct, seed)
    return rows


def study_record(evals: dict) -> dict:
    return {
        "model": "hand-made",
        "weights_hash": "0" * 64,
        "site": "ffn.act",
        "units_total": 2 * UNITS,
        "top_k": 4,
        "sweep": [2, 4],
        "ranges": [[2, 4]],
        "config": {"controls": 3, "sample": None, "others_sample": 2},
        "identify_language": "en",
        "languages": ["en"],
        "relations": list(RELATIONS),
        "skipped": {"gone": {"prompts": 3, "subjects": 2, "why": "3 correct prompts (< 20)"}},
        "identify_correct": {r: 30 for r in RELATIONS},
        "identify_subjects": {r: 15 for r in RELATIONS},
        "negatives": "ratio:4",
        "selections": {r: {"top": f"study-{r}"} for r in RELATIONS},
        "evals": evals,
        "template_split": {"strong": {"select": ["T1"], "test": ["T2"]}},
        "perplexity": "study/perplexity.parquet",
    }


def write_selection(root: Path, rel: str) -> None:
    ids = NEURONS[rel]
    layers = [i // UNITS for i in ids]
    pl.DataFrame({"neuron_id": ids, "layer": layers}).write_parquet(
        root / "selections" / f"study-{rel}.parquet"
    )
    per_layer = {str(layer): layers.count(layer) for layer in range(2)}
    side = {"units": UNITS, "per_layer": per_layer, "size": len(ids)}
    (root / "selections" / f"study-{rel}.json").write_text(json.dumps(side))


def write_perplexity(root: Path) -> None:
    rows = {"relation": [], "control_seed": [], "ppl_baseline": [], "ppl_ablated": []}
    for rel in RELATIONS:
        for seed, ppl in ((None, 12.0), (0, 10.5), (1, 10.0), (2, 11.5)):
            for k, v in zip(rows, (rel, seed, 10.0, ppl), strict=True):
                rows[k].append(v)
    pl.DataFrame(rows, schema_overrides={"control_seed": pl.Int64}).write_parquet(
        root / "study" / "perplexity.parquet"
    )
    write_checksum_sidecar(root / "study" / "perplexity.parquet")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("findings") / "w"
    for folder in ("study", "evals", "selections"):
        (root / folder).mkdir(parents=True)
    table = prompts()
    table.write_parquet(root / "prompts.parquet")
    every = table.to_dicts()
    write(root, "evals/baseline.parquet", eval_rows(every, "baseline", baseline_correct))
    by_rel = {rel: [p for p in every if p["relation"] == rel] for rel in RELATIONS}
    evals: dict = {k: {} for k in ("intra", "sweep_own", "sweep_others", "cross_relation")}
    evals |= {"cross_lingual": {}, "ranges": {}}
    for rel, ps in by_rel.items():
        evals["intra"][rel] = write(root, f"evals/intra-{rel}.parquet", intra_rows(ps, rel))
        sweep = eval_rows(ps, f"s-{rel}", baseline_correct, count=2)
        sweep += eval_rows(ps, f"s-{rel}", own_correct, count=4)
        evals["sweep_own"][rel] = write(root, f"evals/sweep-{rel}.parquet", sweep)
        evals["cross_relation"][rel] = write(
            root,
            f"evals/cross-{rel}.parquet",
            eval_rows(every, f"study-{rel}", lambda p, rel=rel: cross_correct(p, rel)),
        )
    held_out = [p for p in by_rel["strong"] if p["template"] == "T2"]
    rows = eval_rows(held_out, "study-strong", lambda p: int(p["subject"][8:]) >= 6)
    for seed in SEEDS:
        rows += eval_rows(held_out, "study-strong", baseline_correct, seed)
    evals["templates"] = {"strong": write(root, "evals/templates-strong.parquet", rows)}
    for rel in RELATIONS:
        write_selection(root, rel)
    write_perplexity(root)
    (root / "study" / "study.json").write_text(json.dumps(study_record(evals)))
    return root


@pytest.fixture(scope="module")
def summary(warehouse: Path) -> dict:
    return compute(warehouse)


def by(rows: list[dict], **key) -> dict:
    (row,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return row


# ------------------------------------------------------------------------------ verdicts


def test_verdicts_are_the_known_ones(summary: dict):
    assert {r["relation"]: r["verdict"] for r in summary["intra"]} == {
        "strong": "beyond controls",
        "flat": "not beyond controls",
        "tiny": "underpowered",
    }
    assert summary["study"]["underpowered"] == ["tiny"]


def test_one_prompt_below_zero_wide_controls_is_not_a_finding(summary: dict):
    flat = by(summary["intra"], relation="flat")
    # The controls agree exactly: their spread is zero wide and the own set is below it ...
    assert flat["control_pi_lo"] == flat["control_pi_hi"] == flat["control_mean"] == 40 / 48
    assert flat["target"] == 39 / 48 < flat["control_pi_lo"]
    # ... by one prompt of one subject, which no test can call beyond chance.
    assert (flat["lost"], flat["gained"], flat["effect"]) == (1, 0, 1 / 48)
    assert flat["p_controls"] == 0.5 and flat["p_mcnemar"] == 0.5
    assert "control_lo" not in flat and "control_hi" not in flat


def test_strong_relation_whole_values(summary: dict):
    row = by(summary["intra"], relation="strong")
    assert {k: row[k] for k in row if k not in ("effect_lo", "effect_hi")} == {
        "relation": "strong",
        "split": "test",
        "n": 48,
        "n_subjects": 24,
        "baseline": 1.0,
        "target": 42 / 48,
        "control_mean": 1.0,
        "control_pi_lo": 1.0,
        "control_pi_hi": 1.0,
        "control_n": 3,
        "effect": 6 / 48,
        "p_controls": 1 / 64,  # 6 subjects with d > 0: exact, only the identity reaches T
        "p_controls_holm": 3 / 64,  # Holm over the 3 relations, the smallest p
        "lost": 6,
        "gained": 0,
        "p_mcnemar": 1 / 64,
        "p_mcnemar_holm": 3 / 64,
        "retention_own": 42 / 48,
        "retention_controls": 1.0,
        "retention_n": 48,
        "verdict": "beyond controls",
    }
    d = [1.0 if s < 6 and t == 0 else 0.0 for s in range(24) for t in range(2)]
    subjects = [f"strong-s{s}" for s in range(24) for _ in range(2)]
    assert (row["effect_lo"], row["effect_hi"]) == cluster_bootstrap(d, subjects)
    assert 0 < row["effect_lo"] < row["effect"] < row["effect_hi"]


def test_held_out_templates_are_judged_alike(summary: dict):
    (row,) = summary["templates"]
    assert (row["relation"], row["n"], row["n_subjects"], row["lost"]) == ("strong", 24, 24, 6)
    assert row["p_controls"] == row["p_controls_holm"] == 1 / 64  # a family of one
    assert row["verdict"] == "beyond controls"
    assert (row["select_templates"], row["test_templates"]) == (["T1"], ["T2"])


def test_interference_needs_holm_discordant_gains_and_power(summary: dict):
    cell = by(summary["cross_relation"], target="flat", ablated="strong")
    assert (cell["lost"], cell["gained"], cell["n"], cell["n_subjects"]) == (0, 8, 48, 24)
    assert cell["p_gain"] == 1 / 256 and cell["p_gain_holm"] == 6 / 256
    assert cell["p_loss"] == 1.0 and cell["gain"] == pytest.approx(8 / 48)
    tiny = by(summary["cross_relation"], target="tiny", ablated="strong")
    assert tiny["gained"] == 8 and tiny["p_gain_holm"] == 6 / 256
    assert tiny["interference"] is False  # an underpowered target
    one = by(summary["cross_relation"], target="flat", ablated="tiny")
    assert (one["gained"], one["p_gain"], one["interference"]) == (1, 0.5, False)
    assert [(c["target"], c["ablated"]) for c in summary["interference"]] == [("flat", "strong")]
    diagonal = by(summary["cross_relation"], target="strong", ablated="strong")
    assert (diagonal["p_gain_holm"], diagonal["interference"]) == (None, False)


def test_headline_counts_come_from_the_tests(summary: dict):
    h = summary["headline"]
    assert set(h) == HEADLINE_KEYS and h["split"] == "test"
    assert (h["beyond_controls"], h["relations"], h["evaluated"]) == (1, 2, 3)
    # strong: McNemar Holm p = 3/64 with 6 lost; flat: 1 lost (p = 1/2)
    assert (h["own_losses"], h["interference_cells"], h["cross_cells"]) == (1, 1, 4)
    assert (h["templates_beyond"], h["templates_relations"], h["languages"]) == (1, 1, {})
    assert h["underpowered"] == ["tiny"] and h["alpha"] == 0.05 and h["min_discordant"] == 5
    assert "sign-flip" in h["test"] and "McNemar" in h["interference_test"]


def _k_of_n(text: str) -> list[tuple[int, int]]:
    """Every "k of n relations / cells / relation pairs" of a text, in order."""
    return [(int(k), int(n)) for k, n in re.findall(r"(\d+) of (\d+) (?:relation|cell)", text)]


def test_console_json_and_page_state_the_same_counts(summary, warehouse, tmp_path, capsys):
    text = format_headline(summary)
    assert "beyond controls: 1 of 2 relations (one-sided sign-flip" in text
    assert "alpha 0.05, >= 5 discordant prompts" in text
    assert "lose answers: 1 of 2 relations (exact one-sided McNemar" in text
    assert "alpha 0.05, >= 5 prompts lost" in text
    assert "held-out templates, beyond controls: 1 of 1 relations" in text
    assert "interference: 1 of 4 cells" in text
    assert "underpowered (< 20 test subjects, no verdict): tiny" in text
    changed = {**summary, "headline": {**summary["headline"], "beyond_controls": 7}}
    assert "beyond controls: 7 of 2 relations" in format_headline(changed)
    code, out, err = conftest.run_cli(capsys, "report", str(warehouse), "--out", str(tmp_path))
    assert code == 0, err
    assert out.startswith(text + "\n")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["headline"] == json.loads(json.dumps(summary["headline"]))
    assert headline(saved) == saved["headline"]  # recomputed from summary.json alike
    # own vs random, own vs baseline, held-out templates, interference: the same everywhere
    counts = [(1, 2), (1, 2), (1, 1), (1, 4)]
    page = (tmp_path / "index.html").read_text().split('<div class="headline">')[1]
    assert _k_of_n(page.split("</div>")[0]) == counts
    assert _k_of_n(text) == counts


# ------------------------------------------------------------------------------ n and chance


def test_every_row_with_n_has_n_subjects(summary: dict):
    for section, rows in summary.items():
        if isinstance(rows, list):
            for r in rows:
                if "n" in r:
                    assert "n_subjects" in r, section
    assert by(summary["baseline"], relation="tiny") == {
        "relation": "tiny",
        "language": "en",
        "split": "test",
        "n": 14,
        "n_subjects": 7,
        "accuracy": 6 / 14,
    }


def test_sweep_rows_have_subjects_and_bootstrap_intervals(summary: dict):
    row = by(summary["sweep"], relation="strong", count=4)
    assert (row["own"], row["own_n"], row["own_subjects"]) == (42 / 48, 48, 24)
    subjects = [f"strong-s{s}" for s in range(24) for _ in range(2)]
    values = [0.0 if s < 6 and t == 0 else 1.0 for s in range(24) for t in range(2)]
    assert (row["own_lo"], row["own_hi"]) == cluster_bootstrap(values, subjects)
    assert (row["others"], row["others_n"], row["others_lo"]) == (None, 0, None)
    zero = by(summary["sweep"], relation="strong", count=0)
    assert (zero["own"], zero["own_lo"], zero["own_hi"]) == (1.0, 1.0, 1.0)


def test_chance_levels(summary: dict):
    assert summary["study"]["units"] == UNITS
    cell = by(summary["overlap"], a="strong", b="flat")
    # strong has 2 + 2 neurons in layers 0, 1; flat 1 + 3: (2 * 1 + 2 * 3) / 10
    assert (cell["shared"], cell["expected"]) == (2, pytest.approx(0.8))
    assert by(summary["overlap"], a="tiny", b="tiny")["expected"] == pytest.approx(1.0)
    assert {r["uniform"] for r in summary["layers"]} == {2.0}  # 4 neurons over 2 layers
    spec = by(summary["specificity"], relation="strong")
    assert spec["ppl_controls"] == pytest.approx(32 / 3)
    assert (spec["ppl_controls_lo"], spec["ppl_controls_hi"], spec["ppl_controls_n"]) == (
        10.0,
        11.5,
        3,
    )
    assert spec["ratio"] == 1.2


def test_error_analysis_counts_answers_per_condition(summary: dict):
    rows = [r for r in summary["errors"] if r["relation"] == "strong"]
    assert [(r["condition"], r["answer"], r["count"], r["share"]) for r in rows] == [
        ("baseline", "yes", 48, 1.0),
        ("own", "yes", 42, 42 / 48),
        ("own", "zz", 6, 6 / 48),
        ("controls", "yes", 144, 1.0),
    ]


def test_study_section_names_the_rules(summary: dict):
    s = summary["study"]
    assert {k: s[k] for k in ("alpha", "min_discordant", "min_test_subjects")} == {
        "alpha": 0.05,
        "min_discordant": 5,
        "min_test_subjects": 20,
    }
    assert (s["permutations"], s["bootstrap"]) == (10_000, 2_000)
    assert set(s["tests"]) >= {"controls", "effect", "mcnemar", "holm", "prediction"}
    assert s["skipped"] == {
        "gone": {"prompts": 3, "subjects": 2, "why": "3 correct prompts (< 20)"}
    }
    assert s["identify_subjects"] == {r: 15 for r in RELATIONS}
    json.dumps(summary, allow_nan=False)


def test_an_older_study_still_reads(warehouse: Path, tmp_path):
    """skipped as {relation: why}, no templates, perplexity without control rows."""
    import shutil

    old = Path(shutil.copytree(warehouse, tmp_path / "old"))
    st = json.loads((old / "study" / "study.json").read_text())
    st["skipped"] = {"gone": "3 correctly answered identification prompts (< 20)"}
    for key in ("identify_subjects", "template_split"):
        st.pop(key)
    st["evals"].pop("templates")
    (old / "study" / "study.json").write_text(json.dumps(st))
    ppl = pl.read_parquet(old / "study" / "perplexity.parquet")
    ppl.filter(pl.col("control_seed").is_null()).drop("control_seed").write_parquet(
        old / "study" / "perplexity.parquet"
    )
    (old / "study" / "perplexity.json").write_text("{}")  # an old sidecar: no checksum
    s = compute(old)
    assert s["study"]["skipped"] == {
        "gone": {
            "prompts": None,
            "subjects": None,
            "why": "3 correctly answered identification prompts (< 20)",
        }
    }
    assert s["templates"] == [] and s["study"]["identify_subjects"] == {}
    assert {r["ppl_controls"] for r in s["specificity"]} == {None}
    assert s["intra"] == compute(warehouse)["intra"]


def test_permutations_are_seeded(warehouse: Path, summary: dict):
    again = compute(warehouse)
    assert again["intra"] == summary["intra"] and again["sweep"] == summary["sweep"]
    assert np.isfinite(summary["intra"][0]["effect_lo"])


# ------------------------------------------------------------------- language-specific counts


def _cell(rel: str, lang: str, verdict: str, n: int, subjects: int) -> dict:
    return {"relation": rel, "language": lang, "verdict": verdict, "n": n, "n_subjects": subjects}


def language_summary() -> dict:
    """A summary with only language rows: de tested, zh not testable, `tiny` underpowered."""
    b, nb, nt, up = "beyond controls", "not beyond controls", "not testable", "underpowered"
    study = {"alpha": 0.05, "min_discordant": 5, "min_test_subjects": 20, "underpowered": ["tiny"]}
    study |= {"identify_language": "en", "languages": ["en", "de", "zh"], "model": "m"}
    study |= {"site": "ffn.act", "top_k": 4, "units_total": 8, "relations": ["a", "b", "tiny"]}
    lingual = [_cell("a", "en", b, 24, 24), _cell("a", "de", b, 24, 12)]
    lingual += [_cell("b", "de", nb, 20, 20), _cell("tiny", "de", up, 8, 4)]
    lingual += [_cell("a", "zh", nt, 24, 12), _cell("b", "zh", nt, 20, 20)]
    ablation = [{**r, "set_language": "de"} for r in lingual if r["language"] != "en"]
    ablation += [{**_cell("a", "en", b, 24, 24), "set_language": "de"}]
    ablation += [{**_cell("a", "de", nt, 24, 12), "set_language": "zh"}]
    chance, none = "beyond chance", "not beyond chance"
    overlap = [_cell("a", "de", chance, 30, 15), _cell("b", "de", none, 9, 9)]
    overlap += [_cell("a", "zh", chance, 7, 7)]
    return {
        "study": study | {"controls": 3},
        "cross_lingual": lingual,
        "language_overlap": overlap,
        "language_ablation": ablation,
    }


def test_language_counts_come_from_the_tested_cells():
    h = headline(language_summary())
    tally = {"beyond_controls": 1, "relations": 2, "not_testable": 0, "n": 44, "n_subjects": 32}
    untested = {"beyond_controls": 0, "relations": 0, "not_testable": 2, "n": 0, "n_subjects": 0}
    assert h["languages"] == {"de": tally, "zh": untested}
    assert h["language_overlap"] == {
        "de": {"beyond_chance": 1, "cells": 2, "n": 39, "n_subjects": 24},
        "zh": {"beyond_chance": 1, "cells": 1, "n": 7, "n_subjects": 7},
    }
    one = {"beyond_controls": 1, "relations": 1, "not_testable": 0, "n": 24, "n_subjects": 24}
    gone = {"beyond_controls": 0, "relations": 0, "not_testable": 1, "n": 0, "n_subjects": 0}
    assert h["language_ablation"] == {
        "de": {"en": one, "de": tally, "zh": untested},
        "zh": {"de": gone},
    }


def test_language_counts_in_the_console_and_on_the_page():
    summary = language_summary()
    summary["headline"] = headline(summary)
    text = format_headline(summary).splitlines()
    rule = "same test; alpha 0.05, >= 5 discordant prompts"
    assert text[4:12] == [
        f"in de, beyond controls: 1 of 2 relations, n = 44 prompts, 32 subjects ({rule})",
        "in zh, not testable (< 5 baseline-correct prompts, no verdict): 2 relations",
        "de set shares more neurons with the identification set than chance: 1 of 2 "
        "relations, n = 39 prompts, 24 subjects (exact one-sided hypergeometric test against "
        "random sets of the site's neurons, Holm over every cell; alpha 0.05)",
        "zh set shares more neurons with the identification set than chance: 1 of 1 "
        "relations, n = 7 prompts, 7 subjects (exact one-sided hypergeometric test against "
        "random sets of the site's neurons, Holm over every cell; alpha 0.05)",
        f"de set off, en prompts, beyond controls: 1 of 1 relations, n = 24 prompts, 24 "
        f"subjects ({rule})",
        f"de set off, de prompts, beyond controls: 1 of 2 relations, n = 44 prompts, 32 "
        f"subjects ({rule})",
        "de set off, zh prompts, not testable (< 5 baseline-correct prompts, no verdict): 2 "
        "relations",
        "zh set off, de prompts, not testable (< 5 baseline-correct prompts, no verdict): 1 "
        "relation",
    ]
    sentences = headline_sentences(summary["headline"])
    assert _k_of_n(" ".join(sentences)) == [(1, 2), (1, 2), (1, 1), (1, 1), (1, 2)]
    assert sentences[1] == (
        "In zh, 2 relations are not testable (fewer than 5 baseline-correct prompts) and "
        "counted neither way."
    )
    assert sentences[2] == (
        "The de set of 1 of 2 relations shares more neurons with the identification "
        "language's set than random sets of the site's neurons would (exact one-sided "
        "hypergeometric test, Holm over every cell, α = 0.05); n = 39 prompts, 24 subjects "
        "found it."
    )
