"""The study report renderer: files, PNGs, JSON round trip, verdict-count headline, captions,
tolerance of older and partial summaries, escaping, skipped sections."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warehouse.analysis.findings import format_headline
from warehouse.analysis.report import (
    FIGURES,
    _context,
    clean_summary,
    fig_cross_relation,
    fig_intra,
    fig_layers,
    fig_overlap,
    fig_specificity,
    fig_sweep,
    fmt_p,
    headline_of,
    headline_sentences,
    n_span,
    render,
    skipped_relations,
)
from warehouse.store.errors import FormatError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parent.parent
NASTY = "a<b>&\"c'"  # a relation name full of HTML-special characters (and underpowered)
RELS = ["country_capital", "person_mother", "person_father", "antonym", NASTY]
SWEEP = [10, 100, 166, 1000]
B, N, U = "beyond controls", "not beyond controls", "underpowered"

# Per relation, test split: n, subjects, baseline, own off, controls mean, PI, effect [CI],
# p_controls (Holm), lost, gained, p_mcnemar (Holm), verdict. The antonym relation had one
# random set only (no prediction interval) and loses against baseline without beating the
# random sets; the hostile-named one is underpowered (4 subjects).
INTRA_TEST = {
    "country_capital": (
        50,
        50,
        0.62,
        0.18,
        0.60,
        (0.52, 0.68),
        (0.42, 0.30, 0.54),
        (1e-4, 4e-4),
        22,
        0,
        (2.4e-7, 9.6e-7),
        B,
    ),
    "person_mother": (
        48,
        24,
        0.50,
        0.44,
        0.49,
        (0.41, 0.57),
        (0.05, -0.04, 0.14),
        (0.18, 0.36),
        5,
        2,
        (0.23, 0.46),
        N,
    ),
    "person_father": (
        48,
        24,
        0.54,
        0.30,
        0.53,
        (0.45, 0.61),
        (0.23, 0.12, 0.35),
        (0.002, 0.006),
        12,
        1,
        (0.0017, 0.0051),
        B,
    ),
    "antonym": (
        60,
        30,
        0.40,
        0.25,
        0.28,
        (None, None),
        (0.03, -0.05, 0.11),
        (0.31, 0.36),
        10,
        1,
        (0.0059, 0.018),
        N,
    ),
    NASTY: (
        12,
        4,
        0.58,
        0.50,
        0.55,
        (0.40, 0.70),
        (0.05, -0.2, 0.3),
        (None, None),
        2,
        1,
        (None, None),
        U,
    ),
}


def _effect_row(rel: str, spec: tuple, **extra) -> dict:
    n, subj, base, own, ctl, pi, eff, pc, lost, gained, pm, verdict = spec
    return {
        "relation": rel,
        "n": n,
        "n_subjects": subj,
        "baseline": base,
        "target": own,
        "control_mean": ctl,
        "control_n": 1 if rel == "antonym" else 10,
        "control_pi_lo": pi[0],
        "control_pi_hi": pi[1],
        "effect": eff[0],
        "effect_lo": eff[1],
        "effect_hi": eff[2],
        "p_controls": pc[0],
        "p_controls_holm": pc[1],
        "lost": lost,
        "gained": gained,
        "p_mcnemar": pm[0],
        "p_mcnemar_holm": pm[1],
        "verdict": verdict,
        **extra,
    }


def _study() -> dict:
    return {
        "model": "smollm2-135m",
        "weights_hash": "sha256:" + "ab" * 32,
        "site": "ffn.act",
        "units_total": 46080,
        "units": [1536] * 30,
        "top_k": 166,
        "sweep": SWEEP,
        "ranges": [[0, 10], [10, 100], [100, 1000]],
        "controls": 10,
        "sample": None,
        "identify_language": "en",
        "languages": ["en", "de"],
        "relations": RELS,
        "warehouse": "W",
        "seconds": {"ingest": 12.5, "baseline": 3.25},
        "alpha": 0.05,
        "min_discordant": 5,
        "permutations": 10000,
        "bootstrap": 2000,
        "tests": {"controls": "one-sided sign-flip permutation test over subjects of mean d"},
        "underpowered": [NASTY],
        "min_test_subjects": 10,
        "identify_subjects": {r: 30 for r in RELS},
        "skipped": {
            "company_ceo": {
                "prompts": 12,
                "subjects": 6,
                "why": "fewer than 20 correct identification prompts from 10 subjects",
            },
        },
        "extra_key_ignored": True,
    }


def _intra() -> list[dict]:
    rows = []
    for rel, spec in INTRA_TEST.items():
        ident = list(spec)
        ident[0], ident[1] = 3 * spec[0], spec[1]  # more prompts, same subjects per relation
        retention = {
            "retention_own": spec[3] / spec[2],
            "retention_controls": spec[4] / spec[2],
            "retention_n": round(spec[0] * spec[2]),
        }
        rows.append(_effect_row(rel, tuple(ident), split="identify"))
        rows.append(_effect_row(rel, spec, split="test", **retention))
    return rows


def _cross_relation() -> list[dict]:
    """Interference by the test where person_mother is the target of country_capital's and
    person_father's neurons; the underpowered target gains as much but is never flagged."""
    rows = []
    for i, t in enumerate(RELS):
        for j, a in enumerate(RELS):
            gain = (t == "person_mother" and a in ("country_capital", "person_father")) or (
                t == NASTY and a == "antonym"
            )
            acc = 0.2 if i == j else (0.62 if gain else 0.5 - 0.02 * j)
            base = 0.0 if (t, a) == ("antonym", "country_capital") else 0.5
            rows.append(
                {
                    "target": t,
                    "ablated": a,
                    "n": 48,
                    "n_subjects": 24,
                    "baseline": base,
                    "accuracy": acc,
                    "relative_drop": None if base == 0 else 1 - acc / base,
                    "lost": 1 if gain else 6,
                    "gained": 9 if gain else 2,
                    "p_loss": 1.0 if gain else 0.14,
                    "p_gain": 0.0107 if gain else 0.96,
                    "p_gain_holm": 0.03 if gain else 1.0,
                    "interference": bool(gain and t != NASTY),
                }
            )
    return rows


def _lingual() -> list[dict]:
    de = {"country_capital": B, "person_mother": N, "person_father": N, "antonym": N, NASTY: U}
    rows = []
    for rel, spec in INTRA_TEST.items():
        for lang, verdict, drop in (("en", spec[-1], 0.5), ("de", de.get(rel, N), 0.25)):
            row = _effect_row(rel, spec[:-1] + (verdict,), language=lang)
            row["relative_drop"] = drop
            rows.append(row)
    return rows


def _language_ablation() -> list[dict]:
    """Two relations with a de set: country_capital's de set off in de is beyond controls,
    person_mother's de set in en is not testable (its baseline leaves nothing to lose)."""
    rows = []
    for rel in ("country_capital", "person_mother"):
        for found in ("en", "de"):
            for lang in ("en", "de"):
                verdict = B if (rel, found, lang) == ("country_capital", "de", "de") else N
                row = _effect_row(rel, INTRA_TEST[rel][:-1] + (verdict,), language=lang)
                row |= {"set_language": found, "relative_drop": 0.4 if verdict == B else 0.1}
                if (rel, found, lang) == ("person_mother", "de", "en"):
                    keep = ("relation", "n", "n_subjects", "baseline", "control_n")
                    row = {k: (v if k in keep else None) for k, v in row.items()}
                    row |= {"set_language": "de", "language": "en", "verdict": "not testable"}
                rows.append(row)
    return rows


def _language_overlap() -> list[dict]:
    return [
        {
            "relation": rel,
            "language": "de",
            "n": 30,
            "n_subjects": 15,
            "size_a": 166,
            "size_b": 166,
            "population": 46_080,
            "shared": shared,
            "expected": 166 * 166 / 46_080,
            "expected_layers": 0.9,
            "p": p,
            "p_holm": holm,
            "verdict": verdict,
        }
        for rel, shared, p, holm, verdict in (
            ("country_capital", 12, 1e-9, 2e-9, "beyond chance"),
            ("person_mother", 1, 0.45, 0.45, "not beyond chance"),
        )
    ]


def _templates() -> list[dict]:
    out = []
    for rel, verdict, p in (
        ("country_capital", B, (1e-4, 2e-4)),
        ("person_father", N, (0.08, 0.08)),
    ):
        spec = INTRA_TEST[rel][:7] + (p,) + INTRA_TEST[rel][8:-1] + (verdict,)
        out.append(
            _effect_row(
                rel,
                spec,
                split="test",
                select_templates=["The capital of {} is"],
                test_templates=[f"{rel}: {{}} held out"],
            )
        )
    return out


def _sweep() -> list[dict]:
    rows = []
    for i, r in enumerate(RELS):
        for c in [0, *SWEEP]:
            own, oth = 0.6 - 0.0004 * c - 0.01 * i, 0.55 - 0.0001 * c
            rows.append(
                {
                    "relation": r,
                    "count": c,
                    "own": own,
                    "others": oth,
                    "own_lo": own - 0.07,
                    "own_hi": own + 0.07,
                    "others_lo": oth - 0.03,
                    "others_hi": oth + 0.03,
                    "own_n": 48,
                    "own_subjects": 24,
                    "others_n": 192,
                    "others_subjects": 96,
                }
            )
    return rows


def _overlap() -> list[dict]:
    rows = []
    for i, a in enumerate(RELS):
        for j, b in enumerate(RELS):
            shared = (
                166
                if i == j
                else (60 if {a, b} == {"person_mother", "person_father"} else (3 * (i + j)) % 20)
            )
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "size_a": 166,
                    "size_b": 166,
                    "shared": shared,
                    "jaccard": shared / (332 - shared),
                    "expected": 166 * 166 / 46080,
                }
            )
    return rows


def _errors() -> list[dict]:
    answers = {
        "baseline": [("paris", 20), ("london", 5)],
        "own": [("the", 18), ("", 7)],
        "controls": [("paris", 19), ("a", 4)],
    }
    return [
        {"relation": r, "condition": c, "answer": ans, "count": k, "share": k / 48}
        for r in RELS[:2]
        for c, pairs in answers.items()
        for ans, k in pairs
    ]


def contract_summary() -> dict:
    """A summary as analysis.findings writes it (docs/report.md): 5 relations (one with a
    hostile name, underpowered), 2 languages, held-out templates for 2 relations, perplexity
    of random sets for all but one relation, nulls and NaN in places."""
    cross = _cross_relation()
    s = {
        "study": _study(),
        "baseline": [
            {
                "relation": r,
                "language": lang,
                "split": split,
                "n": 40 + i,
                "n_subjects": 20 + i,
                "accuracy": 0.5 + 0.1 * i,
            }
            for i, r in enumerate(RELS)
            for lang in ("en", "de")
            for split in ("identify", "test")
        ],
        "intra": _intra(),
        "templates": _templates(),
        "sweep": _sweep(),
        "cumulativity": [
            {
                "relation": r,
                "a": a,
                "b": b,
                "total": 0 if (i, a) == (1, 0) else 20,
                "affected": 0 if (i, a) == (1, 0) else 5 + i,
                "score": None if (i, a) == (1, 0) else 1 - (5 + i) / 20,
            }
            for i, r in enumerate(RELS)
            for a, b in ((0, 10), (10, 100), (100, 1000))
        ],
        "overlap": _overlap(),
        "cross_relation": cross,
        "interference": [r for r in cross if r["interference"]],
        "cross_lingual": _lingual(),
        "language_overlap": _language_overlap(),
        "language_ablation": _language_ablation(),
        "specificity": [
            {
                "relation": r,
                "ppl_baseline": 12.0,
                "ppl_ablated": 12.0 + 0.3 * i,
                "ratio": (12.0 + 0.3 * i) / 12,
                **(
                    {}
                    if i == 3
                    else {"ppl_controls": 12.1, "ppl_controls_lo": 11.9, "ppl_controls_hi": 12.4}
                ),
            }
            for i, r in enumerate(RELS)
        ],
        "layers": [
            {"relation": r, "layer": layer, "count": 5 + layer % 7, "uniform": 166 / 30}
            for i, r in enumerate(RELS)
            for layer in range(30)
            if (layer + i) % 3 == 0
        ],
        "errors": _errors(),
    }
    s["specificity"][1]["ratio"] = float("nan")
    s["overlap"][1]["jaccard"] = np.float64("nan")
    return s


# ---------------------------------------------------------------------------------------------
# Helpers that read the page and the PNGs back.


def _pngs_of(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _section(html: str, key: str) -> str:
    m = re.search(rf'<section id="{re.escape(key)}">(.*?)</section>', html, re.S)
    assert m, key
    return m.group(1)


def _tables(fragment: str) -> list[list[list[str]]]:
    """Every table of an HTML fragment as rows of unescaped cell texts (header row first)."""
    import html as h

    return [
        [
            [h.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
        ]
        for table in re.findall(r"<table>(.*?)</table>", fragment, re.S)
    ]


def _headline(html: str) -> list[str]:
    import html as h

    block = re.search(r'<div class="headline">(.*?)</div>', html, re.S)
    assert block
    return [h.unescape(p) for p in re.findall(r"<p>(.*?)</p>", block.group(1))]


def _check_png(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))  # a real plot, not an empty canvas
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert img.shape[0] > 200 and img.shape[1] > 300, (path, img.shape)
    assert _colours(img) > 20  # not blank: a real plot has many distinct colours
    return img.shape


def _grey_pixels(path: Path) -> int:
    from matplotlib.image import imread

    rgb = np.round(imread(path)[..., :3] * 255).astype(int)
    return int((np.abs(rgb - 0xD9).max(axis=-1) <= 1).sum())


def _colours(img: np.ndarray) -> int:
    """Distinct RGB colours of an image read by imread (floats in [0, 1] for PNGs)."""
    rgb = np.round(img[..., :3] * 255).astype(np.uint32)
    return len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """One render of the contract summary, shared (plotting is the slow part)."""
    out = tmp_path_factory.mktemp("report") / "rep"
    summary = contract_summary()
    index = render(summary, out)
    assert index == out / "index.html"
    return summary, out, index.read_text()


# ---------------------------------------------------------------------------------------------
# The full report.


def test_files_and_figures(full_report: tuple[dict, Path, str]) -> None:
    summary, out, html = full_report
    pngs = _pngs_of(html)
    assert sorted(pngs) == sorted(FIGURES)  # every figure drawn for a full summary
    shapes = {name: _check_png(out / name) for name in pngs}
    # Missing cells are grey (#d9d9d9), never coloured as a value: the cumulativity cell with
    # total 0, the cross-relation cell with a null drop (baseline 0).
    for name in ("cumulativity.png", "cross_relation.png"):
        assert _grey_pixels(out / name) > 3_000, name
    for name in ("cross_lingual.png", "overlap.png"):  # every cell has a value
        assert _grey_pixels(out / name) < 500, name
    assert shapes["intra.png"][0] > shapes["templates.png"][0]  # two panels (splits) vs one
    assert "Skipped" not in html
    # summary.json round-trips: NaN -> null, numpy scalars -> floats, everything else equal.
    back = json.loads((out / "summary.json").read_text())
    expected = copy.deepcopy(summary)
    expected["headline"] = headline_of(summary)  # the counts the page states
    expected["specificity"][1]["ratio"] = None
    expected["overlap"][1]["jaccard"] = None
    assert back == expected
    # Hostile relation name: escaped everywhere, never raw. Offline: no script, no URL.
    assert NASTY not in html and "a&lt;b&gt;&amp;&quot;c&#x27;" in html and "<b>" not in html
    assert "<script" not in html and "http" not in html


DE_N = {"not_testable": 0, "n": 206, "n_subjects": 128}  # the de rows' prompts and subjects


def test_headline_counts_verdicts(full_report: tuple[dict, Path, str]) -> None:
    """A summary without a headline (older) gets the one findings.headline counts."""
    summary, out, html = full_report
    assert "headline" not in summary
    off = [r["relative_drop"] for r in summary["cross_relation"] if r["target"] != r["ablated"]]
    off = [d for d in off if d is not None]
    assert headline_of(summary) == {
        "own_baseline": pytest.approx(0.528),
        "own_ablated": pytest.approx(0.334),
        "own_controls": pytest.approx(0.49),
        "own_relative_drop": pytest.approx(0.6),
        "others_ablated_drop": pytest.approx(sum(off) / len(off)),
        "split": "test",
        "evaluated": 5,
        "relations": 4,
        "underpowered": [NASTY],
        "beyond_controls": 2,  # country_capital, person_father; the underpowered one left out
        "own_losses": 3,  # + antonym: loses against baseline, not against random sets
        "templates_beyond": 1,
        "templates_relations": 2,
        "languages": {"de": {"beyond_controls": 1, "relations": 4} | DE_N},
        # country_capital's de set shares 12 neurons (beyond chance), person_mother's 1
        "language_overlap": {"de": {"beyond_chance": 1, "cells": 2, "n": 60, "n_subjects": 30}},
        "language_ablation": {
            "de": {  # person_mother's de set on en prompts: not testable, in no count
                "en": {"beyond_controls": 0, "relations": 1, "not_testable": 1, "n": 50}
                | {"n_subjects": 50},
                "de": {"beyond_controls": 1, "relations": 2, "not_testable": 0, "n": 98}
                | {"n_subjects": 74},
            }
        },
        "overlap_test": "exact one-sided hypergeometric test against random sets of the "
        "site's neurons, Holm over every cell",
        "interference_cells": 2,  # the underpowered target's gain not counted
        "cross_cells": 16,  # 4 targets x 4 others
        "test": "one-sided sign-flip permutation test over subjects, own set vs random sets, "
        "Holm over relations",
        "loss_test": "exact one-sided McNemar test, own set off vs baseline, Holm over relations",
        "interference_test": "exact one-sided McNemar test of gains, Holm over the "
        "off-diagonal cells",
        "alpha": 0.05,
        "min_discordant": 5,
        "min_test_subjects": 10,
    }
    assert _headline(html) == [
        "On the test split, 2 of 4 relations (not underpowered) lose more under their own "
        "top-166 neurons than under random sets of the same per-layer counts (sign-flip test "
        "over subjects, Holm, α = 0.05).",
        "On the test split, 3 of 4 relations (not underpowered) lose more prompts than they "
        "gain with their own top-166 neurons off (exact one-sided McNemar test, Holm, "
        "α = 0.05, at least 5 lost prompts).",
        "On prompts of templates held out of selection, 1 of 2 relations (not underpowered) "
        "lose more under their own neurons than under random sets (sign-flip test over "
        "subjects, Holm, α = 0.05).",
        "In de, 1 of 4 relations (not underpowered) lose more under their own neurons than "
        "under random sets (sign-flip test over subjects, Holm, α = 0.05); n = 206 prompts, "
        "128 subjects over the tested relations.",
        "The de set of 1 of 2 relations shares more neurons with the identification "
        "language's set than random sets of the site's neurons would (exact one-sided "
        "hypergeometric test, Holm over every cell, α = 0.05); n = 60 prompts, 30 subjects "
        "found it.",
        "With the de set off, on en prompts, 0 of 1 relation (not underpowered) lose more "
        "under their own neurons than under random sets (sign-flip test over subjects, Holm, "
        "α = 0.05); n = 50 prompts, 50 subjects over the tested relations.",
        "With the de set off, on en prompts, 1 relation is not testable (fewer than 5 "
        "baseline-correct prompts) and counted neither way.",
        "With the de set off, on de prompts, 1 of 2 relations (not underpowered) lose more "
        "under their own neurons than under random sets (sign-flip test over subjects, Holm, "
        "α = 0.05); n = 98 prompts, 74 subjects over the tested relations.",
        "2 of 16 relation pairs (target not underpowered) show interference: the target gains "
        "more prompts than it loses when the other relation's neurons are off (exact one-sided "
        "McNemar test, Holm over all off-diagonal cells, α = 0.05, at least 5 gained prompts).",
        f"1 relation is underpowered (fewer than 10 test subjects) and left out of every "
        f"count: {NASTY}.",
    ]
    # The study header states the same exclusion.
    assert "<td>relations (5, 1 underpowered)</td>" in html


def _k_of_n(text: str) -> list[tuple[int, int]]:
    """Every "k of n relations / cells / relation pairs" of a text, in order."""
    return [(int(k), int(n)) for k, n in re.findall(r"(\d+) of (\d+) (?:relation|cell)", text)]


def test_console_json_and_page_state_the_same_counts(full_report: tuple[dict, Path, str]):
    _, out, html = full_report
    saved = json.loads((out / "summary.json").read_text())
    # own, McNemar, templates, de, de overlap, de set on en and de, pairs
    counts = [(2, 4), (3, 4), (1, 2), (1, 4), (1, 2), (0, 1), (1, 2), (2, 16)]
    h = saved["headline"]
    ablation = h["language_ablation"]["de"]
    assert [
        (h["beyond_controls"], h["relations"]),
        (h["own_losses"], h["relations"]),
        (h["templates_beyond"], h["templates_relations"]),
        (h["languages"]["de"]["beyond_controls"], h["languages"]["de"]["relations"]),
        (h["language_overlap"]["de"]["beyond_chance"], h["language_overlap"]["de"]["cells"]),
        *[(ablation[x]["beyond_controls"], ablation[x]["relations"]) for x in ("en", "de")],
        (h["interference_cells"], h["cross_cells"]),
    ] == counts
    assert _k_of_n(" ".join(_headline(html))) == counts
    assert _k_of_n(format_headline(saved)) == counts
    # A summary that states its own headline is rendered from it, not recounted.
    changed = copy.deepcopy(saved)
    changed["headline"]["beyond_controls"] = 3
    changed["intra"] = [r | {"verdict": N} for r in changed["intra"]]
    assert _k_of_n(" ".join(_headline(_render_html(changed, out.parent / "changed")))) == [
        (3, 4),
        *counts[1:],
    ]


def _render_html(summary: dict, out: Path) -> str:
    return render(summary, out).read_text()


def test_intra_table_and_caption(full_report: tuple[dict, Path, str]) -> None:
    _, _, html = full_report
    sec = _section(html, "intra")
    (table,) = _tables(sec)
    assert table[0] == [
        "relation",
        "split",
        "n (subjects)",
        "baseline",
        "own top-k off",
        "random sets: mean",
        "one random set: 95 % PI",
        "effect [95 % CI]",
        "p own vs random",
        "lost / gained",
        "p McNemar",
        "verdict",
    ]
    rows = {(r[0], r[1]): r for r in table[1:]}
    assert len(rows) == 10
    assert rows[("country_capital", "test")] == [
        "country_capital",
        "test",
        "50 (50)",
        "62.0 %",
        "18.0 %",
        "60.0 %",
        "[52.0 %, 68.0 %]",
        "+42.0 pt [+30.0 pt, +54.0 pt]",
        "1.0e-04 (Holm 4.0e-04)",
        "22 / 0",
        "2.4e-07 (Holm 9.6e-07)",
        "beyond controls",
    ]
    assert rows[("antonym", "test")][5:7] == ["28.0 %", "—"]  # one random set: no interval
    assert rows[("antonym", "test")][-1] == "not beyond controls"
    assert rows[(f"{NASTY} (underpowered)", "test")] == [
        f"{NASTY} (underpowered)",
        "test",
        "12 (4)",
        "58.0 %",
        "50.0 %",
        "55.0 %",
        "[40.0 %, 70.0 %]",
        "+5.0 pt [-20.0 pt, +30.0 pt]",
        "—",
        "2 / 1",
        "—",
        "underpowered",
    ]
    caption = re.search(r"<figcaption>(.*?)</figcaption>", sec, re.S).group(1)
    assert "95 % prediction interval for the accuracy of ONE random set" in caption
    assert "not a confidence interval of their mean" in caption
    # The test as the summary names it, with its permutations, correction and alpha.
    assert (
        "one-sided sign-flip permutation test over subjects of mean d (10,000 permutations), "
        "Holm-corrected over the study&#x27;s relations, α = 0.05, with at least 5 discordant"
    ) in caption
    assert "subject-cluster bootstrap interval (2,000 resamples)" in caption
    assert "control_lo" not in html and "CI of" not in html


def test_interference_lists_only_tested_cells(full_report: tuple[dict, Path, str]) -> None:
    _, _, html = full_report
    assert _tables(_section(html, "cross_relation")) == [
        [
            [
                "evaluated relation",
                "neurons of",
                "n (subjects)",
                "baseline",
                "accuracy",
                "lost / gained",
                "p gain (McNemar)",
            ],
            [
                "person_mother",
                "country_capital",
                "48 (24)",
                "50.0 %",
                "62.0 %",
                "1 / 9",
                "0.011 (Holm 0.030)",
            ],
            [
                "person_mother",
                "person_father",
                "48 (24)",
                "50.0 %",
                "62.0 %",
                "1 / 9",
                "0.011 (Holm 0.030)",
            ],
        ]
    ]


def test_other_sections(full_report: tuple[dict, Path, str]) -> None:
    _, _, html = full_report
    assert _tables(_section(html, "skipped")) == [
        [
            ["relation", "correct identification prompts", "their subjects", "why"],
            [
                "company_ceo",
                "12",
                "6",
                "fewer than 20 correct identification prompts from 10 subjects",
            ],
        ]
    ]
    errors = _tables(_section(html, "errors"))[0]
    assert errors[0] == [
        "relation",
        "test n (subjects)",
        "baseline",
        "own top-k off",
        "random sets",
    ]
    assert errors[1] == [
        "country_capital",
        "50 (50)",
        "“paris” 20 (42 %); “london” 5 (10 %)",
        "“the” 18 (38 %); (empty) 7 (15 %)",
        "“paris” 19 (40 %); “a” 4 (8 %)",
    ]
    retention = _tables(_section(html, "retention"))[0]
    assert retention[1] == ["country_capital", "test", "31", "29.0 %", "96.8 %", "+67.7 pt"]
    templates = _tables(_section(html, "templates"))
    assert [r[-1] for r in templates[0][1:]] == ["beyond controls", "not beyond controls"]
    assert templates[1][1] == ["country_capital", "1", "country_capital: {} held out"]
    lingual = _tables(_section(html, "cross_lingual"))[0]
    assert [(r[0], r[1], r[2], r[-1]) for r in lingual[1:] if r[1] == "de"] == [
        ("country_capital", "de", "50 (50)", "beyond controls"),
        ("person_mother", "de", "48 (24)", "not beyond controls"),
        ("person_father", "de", "48 (24)", "not beyond controls"),
        ("antonym", "de", "60 (30)", "not beyond controls"),
        (f"{NASTY} (underpowered)", "de", "12 (4)", "underpowered"),
    ]
    overlap = _tables(_section(html, "overlap"))[0]
    assert overlap[1] == [
        "person_father",
        "person_mother",
        "166",
        "166",
        "60",
        "0.6",
        "×100.3",
        "0.221",
    ]
    spec = _tables(_section(html, "specificity"))[0]
    assert spec[1] == ["country_capital", "12.00", "12.00", "1.000", "12.10", "[11.90, 12.40]"]
    assert spec[4] == ["antonym", "12.00", "12.90", "1.075", "—", "—"]
    sweep = _tables(_section(html, "sweep"))[0]
    assert sweep[0] == [
        "relation (own / others)",
        "n (subjects)",
        "baseline",
        "10",
        "100",
        "166 (top-k)",
        "1,000",
    ]
    assert sweep[1] == [
        "country_capital",
        "48 (24) / 192 (96)",
        "60.0 % / 55.0 %",
        "59.6 % / 54.9 %",
        "56.0 % / 54.0 %",
        "53.4 % / 53.3 %",
        "20.0 % / 45.0 %",
    ]
    base = _tables(_section(html, "baseline"))[0]
    assert base[1][1] == "50.0 % (n=40 · 20 subj)"


# ---------------------------------------------------------------------------------------------
# Figures: scales and marks, read from the matplotlib objects.


def _ctx(summary: dict):
    return _context(summary)[1]


def test_overlap_scale_leaves_out_the_diagonal() -> None:
    fig = fig_overlap(_ctx(contract_summary()))
    ax = fig.axes[0]
    img = ax.images[0]
    assert (img.norm.vmin, img.norm.vmax) == (0, 60)  # the largest off-diagonal overlap
    texts = [t.get_text() for t in ax.texts]
    assert texts[:2] == ["size\n166", "3\n(0.6)"]  # diagonal: the set size; then shared (chance)
    assert fig.axes[1].get_ylabel() == "shared neurons (off-diagonal cells)"


def test_cross_relation_colours_in_percent_and_boxes_tests() -> None:
    s = contract_summary()
    fig = fig_cross_relation(_ctx(s))
    ax = fig.axes[0]
    data = ax.images[0].get_array()
    assert data[1, 0] == pytest.approx(100 * (1 - 0.62 / 0.5))  # person_mother under capital
    assert np.ma.is_masked(data[3, 0])  # baseline 0: no value
    assert ax.images[0].norm.vmax == pytest.approx(60.0)
    assert "−24" not in [t.get_text() for t in ax.texts] and "-24" in [
        t.get_text() for t in ax.texts
    ]
    assert fig.axes[1].get_ylabel() == "relative drop (%): red fell, blue rose"
    boxes = [p for p in ax.patches if not p.get_fill()]
    assert sorted((p.get_x() + 0.45, p.get_y() + 0.45) for p in boxes) == [(0.0, 1.0), (2.0, 1.0)]


def test_underpowered_bars_are_pale() -> None:
    fig = fig_intra(_ctx(contract_summary()))
    test = fig.axes[1]  # identify, test
    assert test.get_title() == "test split"
    bars = [c for c in test.containers if hasattr(c, "patches")]
    assert [[p.get_alpha() for p in c.patches] for c in bars] == [[None] * 4 + [0.35]] * 3
    assert [t.get_text() for t in test.texts if t.get_text()] == [
        "★\np=4.0e-04",
        "n.s.\np=0.360",
        "★\np=0.006",
        "n.s.\np=0.360",
        "u.p.",
    ]


def test_layers_centre_on_uniform() -> None:
    fig = fig_layers(_ctx(contract_summary()))
    norm = fig.axes[0].images[0].norm
    assert norm.vcenter == pytest.approx(166 / 30)
    assert "uniform 5.5" in [t.get_text() for t in fig.axes[1].get_yticklabels()]


def test_sweep_marks_top_k_with_intervals() -> None:
    fig = fig_sweep(_ctx(contract_summary()))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5
    for ax in panels:
        vlines = [ln for ln in ax.lines if list(ln.get_xdata()) == [166, 166]]
        assert len(vlines) == 1
        assert len(ax.collections) == 2  # own and others bootstrap bands
    assert panels[0].get_title() == "country_capital\nown: n=48 · 24 subj\nothers: n=192 · 96 subj"
    assert panels[4].get_title().startswith(f"{NASTY} (underpowered)\n")


def test_specificity_shows_random_sets_when_present() -> None:
    s = contract_summary()
    fig = fig_specificity(_ctx(s))
    assert [c.get_label() for c in fig.axes[0].containers if hasattr(c, "patches")] == [
        "baseline",
        "own top-k off",
        "random sets: mean; bar = range over sets",
    ]
    for r in s["specificity"]:
        r.pop("ppl_controls", None)
    fig = fig_specificity(_ctx(s))
    assert len([c for c in fig.axes[0].containers if hasattr(c, "patches")]) == 2


# ---------------------------------------------------------------------------------------------
# Tolerance: older summaries, partial ones, empty ones.


def old_summary() -> dict:
    """A summary of the previous format: no tests, controls as a CI of the mean, interference
    by threshold (no flag), skipped as {relation: reason}, one language."""
    s = contract_summary()
    s["study"] = {
        k: v
        for k, v in s["study"].items()
        if k
        not in (
            "alpha",
            "min_discordant",
            "tests",
            "underpowered",
            "min_test_subjects",
            "permutations",
            "bootstrap",
        )
    }
    s["study"]["skipped"] = {"company_ceo": "only 12 correct identification prompts"}
    s["study"]["languages"] = ["en"]
    keep = ("relation", "split", "n", "baseline", "target", "control_mean", "control_n")
    s["intra"] = [
        {k: r[k] for k in keep} | {"control_lo": 0.5, "control_hi": 0.6} for r in s["intra"]
    ]
    s["cross_relation"] = [
        {
            k: v
            for k, v in r.items()
            if k
            not in (
                "interference",
                "lost",
                "gained",
                "p_gain",
                "p_gain_holm",
                "p_loss",
                "n_subjects",
            )
        }
        for r in s["cross_relation"]
    ]
    s["interference"] = [
        {
            "target": "person_mother",
            "ablated": "person_father",
            "baseline": 0.5,
            "accuracy": 0.62,
            "control_hi": 0.55,
            "gain": 0.12,
        }
    ]
    s["cross_lingual"] = [r for r in s["cross_lingual"] if r["language"] == "en"]
    for key in ("templates", "errors", "specificity"):
        del s[key]
    return s


def test_language_section(full_report: tuple[dict, Path, str]) -> None:
    _, out, html = full_report
    section = _section(html, "languages")
    assert "languages.png" in section and "not testable" in section
    assert _grey_pixels(out / "languages.png") > 500  # the not-testable cell: no value
    overlap, ablation = _tables(section)
    assert overlap[1:] == [
        ["country_capital", "de", "30 (15)", "166", "166", "46,080", "12", "0.60"]
        + ["0.90", "1.0e-09 (Holm 2.0e-09)", "beyond chance"],
        ["person_mother", "de", "30 (15)", "166", "166", "46,080", "1", "0.60"]
        + ["0.90", "0.450 (Holm 0.450)", "not beyond chance"],
    ]
    cells = [(r[0], r[1], r[2], r[-1]) for r in ablation[1:]]
    assert cells == [
        ("country_capital", "en", "en", N),
        ("country_capital", "en", "de", N),
        ("country_capital", "de", "en", N),
        ("country_capital", "de", "de", B),
        ("person_mother", "en", "en", N),
        ("person_mother", "en", "de", N),
        ("person_mother", "de", "en", "not testable"),
        ("person_mother", "de", "de", N),
    ]
    # A not-testable cell shows no number: only n, the baseline and the verdict.
    assert ablation[7][4:] == ["50.0 %"] + ["—"] * 7 + ["not testable"]


def test_old_summary_states_no_untested_claim(tmp_path: Path) -> None:
    html = render(old_summary(), tmp_path).read_text()
    assert _headline(html) == []
    assert (
        "No headline: the summary holds no test verdicts (regenerate it with this "
        "version's findings module)."
    ) in html
    # Interference by threshold was not a test: no cell listed.
    assert "No cell shows interference by the test." in _section(html, "cross_relation")
    assert _tables(_section(html, "skipped"))[0][1] == [
        "company_ceo",
        "—",
        "—",
        "only 12 correct identification prompts",
    ]
    # Only the identification language: no cross-lingual section at all.
    assert 'id="cross_lingual"' not in html and "cross_lingual.png" not in html
    assert sorted(_pngs_of(html)) == sorted(
        set(FIGURES) - {"templates.png", "retention.png", "cross_lingual.png", "specificity.png"}
    )
    assert "Skipped: No relation had 2 or more templates to hold one out." in html
    assert "Skipped: The summary holds no retention numbers." in html
    row = _tables(_section(html, "intra"))[0][1]
    assert row[6:] == ["—"] * 6  # no prediction interval, effect, tests or verdict


def test_empty_sections_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    for name in FIGURES:  # figures of an earlier render: the skipped ones must not linger
        (out / name).write_bytes(b"old")
    s = contract_summary()
    for key in (
        "cross_lingual",
        "specificity",
        "layers",
        "interference",
        "cumulativity",
        "templates",
        "errors",
        "language_overlap",
        "language_ablation",
    ):
        s[key] = []
    del s["overlap"]  # a missing optional section is an empty one
    s["study"]["skipped"] = {}
    s["sweep"] = [r for r in s["sweep"] if r["count"] == 0]  # only the baseline point
    html = render(s, out).read_text()
    pngs = _pngs_of(html)
    assert sorted(pngs) == ["cross_relation.png", "intra.png", "retention.png"]
    for name in pngs:
        _check_png(out / name)
    for name in set(FIGURES) - set(pngs):
        assert not (out / name).exists(), name
    assert "no sweep with a positive number of neurons" in html
    assert "Skipped: No relation was left out." in html
    # templates, errors, sweep, cumulativity, overlap, layers, specificity, skipped
    assert html.count("Skipped:") == 8
    assert 'id="cross_lingual"' not in html and 'id="languages"' not in html


def test_minimal_summary(tmp_path: Path) -> None:
    """Only the study block: every section skipped, a page all the same, no figure."""
    s = {"study": {"model": "m", "relations": ["r"]}}
    html = render(s, tmp_path).read_text()
    assert _pngs_of(html) == []
    assert "No headline" in html
    assert json.loads((tmp_path / "summary.json").read_text()) == s


def test_all_null_controls_and_drops(tmp_path: Path) -> None:
    """No controls anywhere and every cross-relation cell null: figures still draw (grey)."""
    full = contract_summary()
    s = {"study": full["study"], "intra": full["intra"], "cross_relation": full["cross_relation"]}
    for r in s["intra"]:
        r.update(control_mean=None, control_pi_lo=None, control_pi_hi=None, control_n=0)
    for r in s["cross_relation"]:
        r.update(baseline=0.0, relative_drop=None)
    render(s, tmp_path)
    _check_png(tmp_path / "cross_relation.png")
    _check_png(tmp_path / "intra.png")
    assert _grey_pixels(tmp_path / "cross_relation.png") > 20_000


def test_many_relations_use_mean_sweep_and_no_labels(tmp_path: Path) -> None:
    rels = [f"rel_{i:02d}" for i in range(20)]
    s = {
        "study": {"model": "m", "relations": rels, "top_k": 10},
        "sweep": [
            {
                "relation": r,
                "count": c,
                "own": 0.5 - c / 1000,
                "others": 0.5,
                "own_n": 1,
                "others_n": 1,
            }
            for r in rels
            for c in (0, 10, 100)
        ],
        "overlap": [
            {
                "a": a,
                "b": b,
                "size_a": 10,
                "size_b": 10,
                "shared": 10 if a == b else 1,
                "jaccard": 1.0 if a == b else 1 / 19,
            }
            for a in rels
            for b in rels
        ],
    }
    html = render(s, tmp_path).read_text()
    assert sorted(_pngs_of(html)) == ["overlap.png", "sweep.png"]
    _check_png(tmp_path / "sweep.png")
    _check_png(tmp_path / "overlap.png")
    assert "The 20 most-overlapping of 190 pairs." in html


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ([], "a study summary is a dict"),
        ({}, "summary['study'] is missing"),
        ({"study": {}, "intra": "x"}, "summary['intra'] must be a list of records"),
        ({"study": {}, "intra": [1]}, "summary['intra'][0] must be a record"),
        ({"study": {}, "sweep": [{"relation": "r"}]}, "summary['sweep'][0] lacks count"),
        (
            {"study": {}, "errors": [{"relation": "r"}]},
            "summary['errors'][0] lacks condition, answer, count, share",
        ),
        ({"study": {"x": {1, 2}}}, "summary['study']['x'] is a set"),
    ],
)
def test_bad_summary_is_refused(tmp_path: Path, summary, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)):
        render(summary, tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_out_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("keep me")
    with pytest.raises(Exception, match="is a file"):
        render({"study": {}}, f)
    assert f.read_text() == "keep me"


def test_small_helpers() -> None:
    assert clean_summary({"a": (1, np.int64(2), float("inf"), np.float32(0.5)), "b": None}) == {
        "a": [1, 2, None, 0.5],
        "b": None,
    }
    assert clean_summary(float("nan")) is None
    assert [fmt_p(p) for p in (None, 0.0, 0.00042, 0.0123, 1.0)] == [
        "—",
        "0.000",
        "4.2e-04",
        "0.012",
        "1.000",
    ]
    rows = [{"n": 40, "n_subjects": 18}, {"n": 50, "n_subjects": 18}, {"n": None}]
    assert n_span(rows) == "n = 40–50 prompts, 18 subjects per cell"
    assert n_span([{"x": 1}]) == ""
    assert skipped_relations(
        {"skipped": {"a": "why", "b": {"prompts": 3, "subjects": 2, "why": "few"}}}
    ) == {
        "a": {"prompts": None, "subjects": None, "why": "why"},
        "b": {"prompts": 3, "subjects": 2, "why": "few"},
    }
    rules = {"alpha": 0.05, "min_discordant": 5, "min_test_subjects": 20, "underpowered": []}
    nothing = headline_of({"study": rules | {"identify_language": "en"}})
    assert nothing is not None and (nothing["split"], nothing["relations"]) == (None, 0)
    assert headline_sentences(nothing) == []  # nothing tested, nothing said
    assert headline_of({"study": rules}) is None  # no identify_language: no counts


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no chromium on PATH",
)
def test_screenshot_script(full_report: tuple[dict, Path, str], tmp_path: Path) -> None:
    """The page renders offline in a real browser, figures included (not broken images)."""
    _, out, _ = full_report
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "report_screenshot.py"),
            str(out),
            "--out",
            str(shot),
            "--height",
            "3000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (3000, 1280)
    # The figures drew: the intra figure's red and blue bars are on the first 3,000 px.
    rgb = np.round(img[..., :3] * 255).astype(int)
    red = (
        (abs(rgb[..., 0] - 0xD6) < 8)
        & (abs(rgb[..., 1] - 0x27) < 8)
        & (abs(rgb[..., 2] - 0x28) < 8)
    )
    blue = (
        (abs(rgb[..., 0] - 0x1F) < 8)
        & (abs(rgb[..., 1] - 0x77) < 8)
        & (abs(rgb[..., 2] - 0xB4) < 8)
    )
    assert red.sum() > 2_000 and blue.sum() > 2_000, (red.sum(), blue.sum())


def test_screenshot_script_without_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "report_screenshot.py"),
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "shot.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # 2: no browser here; 1: a browser, but no index.html to load.
    assert proc.returncode in (1, 2) and not (tmp_path / "shot.png").exists()
    assert ("does not exist" in proc.stderr) or ("no browser" in proc.stderr)


def test_template_rows_may_name_accuracy_and_omit_split(tmp_path: Path) -> None:
    s = contract_summary()
    for r in s["templates"]:
        r["accuracy"] = r.pop("target")
        del r["split"]
    html = render(s, tmp_path).read_text()
    row = _tables(_section(html, "templates"))[0][1]
    assert row[:5] == ["country_capital", "test", "50 (50)", "62.0 %", "18.0 %"]
    # summary.json keeps the summary as given: the renderer's defaults stay out of it.
    assert "target" not in json.loads((tmp_path / "summary.json").read_text())["templates"][0]
