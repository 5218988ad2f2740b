"""The study report renderer: files, PNG validity, JSON round trip, headline, escaping, skips."""

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

from warehouse.analysis.report import FIGURES, clean_summary, render
from warehouse.errors import FormatError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parent.parent
NASTY = "a<b>&\"c'"  # a relation name full of HTML-special characters


def synthetic_summary() -> dict:
    """4 relations (one with a hostile name), 2 languages, a sweep, nulls and NaN in places."""
    rels = ["country_capital", "person_mother", "person_father", NASTY]
    langs = ["en", "de"]
    sweep = [0, 10, 100, 1000]
    rng = np.random.default_rng(0)
    s: dict = {
        "study": {
            "model": "smollm2-135m",
            "weights_hash": "sha256:" + "ab" * 32,
            "site": "ffn.act",
            "units_total": 46080,
            "top_k": 166,
            "sweep": sweep,
            "ranges": [[0, 10], [10, 100], [100, 1000]],
            "controls": 3,
            "sample": None,
            "identify_language": "en",
            "languages": langs,
            "relations": rels,
            "warehouse": "W",
            "seconds": {"ingest": 12.5, "baseline": 3.25},
            "extra_key_ignored": True,
        },
        "baseline": [],
        "intra": [],
        "sweep": [],
        "cumulativity": [],
        "overlap": [],
        "cross_relation": [],
        "cross_lingual": [],
        "interference": [],
        "specificity": [],
        "layers": [],
    }
    for i, r in enumerate(rels):
        for lang in langs:
            for split in ("identify", "test"):
                s["baseline"].append(
                    {
                        "relation": r,
                        "language": lang,
                        "split": split,
                        "n": 40 + i,
                        "accuracy": 0.5 + 0.1 * i,
                    }
                )
        for split in ("identify", "test"):
            no_ctl = i == 2  # one relation evaluated without controls: control_* null
            s["intra"].append(
                {
                    "relation": r,
                    "split": split,
                    "n": 40,
                    "baseline": 0.6 + 0.05 * i,
                    "target": 0.2 + 0.02 * i,
                    "control_mean": None if no_ctl else 0.58,
                    "control_lo": None if no_ctl else 0.55,
                    "control_hi": None if no_ctl else 0.61,
                    "control_n": 0 if no_ctl else 3,
                }
            )
        for c in sweep:
            s["sweep"].append(
                {
                    "relation": r,
                    "count": c,
                    "own": 0.6 - 0.0004 * c,
                    "others": 0.55 - 0.0001 * c,
                    "own_n": 40,
                    "others_n": 120,
                }
            )
        for a, b in s["study"]["ranges"]:
            total = 0 if (i == 1 and a == 0) else 20
            s["cumulativity"].append(
                {
                    "relation": r,
                    "a": a,
                    "b": b,
                    "total": total,
                    "affected": 0 if total == 0 else 5 + i,
                    "score": None if total == 0 else 1 - (5 + i) / 20,
                }
            )
        for j, r2 in enumerate(rels):
            shared = 166 if i == j else int(rng.integers(0, 60))
            s["overlap"].append(
                {
                    "a": r,
                    "b": r2,
                    "size_a": 166,
                    "size_b": 166,
                    "shared": shared,
                    "jaccard": shared / (332 - shared),
                }
            )
            base = 0.0 if (i, j) == (3, 0) else 0.6
            acc = 0.3 if i == j else (0.65 if (i, j) == (1, 2) else 0.55)
            s["cross_relation"].append(
                {
                    "target": r,
                    "ablated": r2,
                    "n": 40,
                    "baseline": base,
                    "accuracy": acc,
                    "relative_drop": None if base == 0 else 1 - acc / base,
                }
            )
        for lang in langs:
            s["cross_lingual"].append(
                {
                    "relation": r,
                    "language": lang,
                    "n": 40,
                    "baseline": 0.6,
                    "accuracy": 0.3 if lang == "en" else 0.45,
                    "relative_drop": 0.5 if lang == "en" else 0.25,
                    "control_mean": 0.59,
                    "control_lo": 0.57,
                    "control_hi": 0.61,
                }
            )
        s["specificity"].append(
            {
                "relation": r,
                "ppl_baseline": 12.0,
                "ppl_ablated": 12.0 + i * 0.3,
                "ratio": (12.0 + i * 0.3) / 12,
            }
        )
        for layer in range(30):
            if (layer + i) % 3 == 0:
                s["layers"].append({"relation": r, "layer": layer, "count": 5 + layer % 7})
    s["interference"].append(
        {
            "target": "person_mother",
            "ablated": "person_father",
            "baseline": 0.6,
            "accuracy": 0.65,
            "control_hi": 0.61,
            "gain": 0.04,
        }
    )
    # NaN in places: a specificity ratio and an overlap Jaccard.
    s["specificity"][1]["ratio"] = float("nan")
    s["overlap"][1]["jaccard"] = np.float64("nan")
    return s


def _pngs_of(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _check_png(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))  # a real plot, not an empty canvas
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert img.shape[0] > 200 and img.shape[1] > 300, (path, img.shape)
    # Not a blank image: a real plot has many distinct colours.
    assert _colours(img) > 20
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
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One render of the full synthetic summary, shared (plotting is the slow part)."""
    out = tmp_path_factory.mktemp("report") / "rep"
    summary = synthetic_summary()
    index = render(summary, out)
    assert index == out / "index.html"
    return summary, out


def test_render_full_summary(full_report: tuple[dict, Path]) -> None:
    summary, out = full_report
    html = (out / "index.html").read_text()

    pngs = _pngs_of(html)
    # Every figure of the contract is drawn for a summary with every section filled.
    assert sorted(pngs) == sorted(FIGURES)
    shapes = {name: _check_png(out / name) for name in pngs}
    # Missing cells are grey (#d9d9d9), never coloured as a value: the cumulativity cell with
    # total 0, the cross-relation cell with a null drop (baseline 0), the NaN overlap cell.
    for name in ("cumulativity.png", "cross_relation.png", "overlap.png"):
        assert _grey_pixels(out / name) > 500, name
    assert _grey_pixels(out / "cross_lingual.png") < 100  # every cell has a value
    # intra has one panel per split (identify, test): taller than wide-ish single panels.
    assert shapes["intra.png"][0] > shapes["specificity.png"][0]
    assert "Skipped" not in html

    # summary.json round-trips: NaN -> null, numpy scalars -> floats, everything else equal.
    back = json.loads((out / "summary.json").read_text())
    expected = copy.deepcopy(summary)
    expected["specificity"][1]["ratio"] = None
    expected["overlap"][1]["jaccard"] = None
    assert back == expected
    assert "NaN" not in (out / "summary.json").read_text()

    # Headline computed from intra (test split): baseline mean 67.5 %, ablated 23.0 %,
    # controls mean over the 3 relations with controls 58.0 %.
    assert "fell from 67.5 % to 23.0 % on average over 4 relations (test split)" in html
    assert "random neurons instead: 58.0 %" in html
    # others: off-diagonal relative drops, the null cell (baseline 0) left out.
    drops = [
        r["relative_drop"]
        for r in summary["cross_relation"]
        if r["target"] != r["ablated"] and r["relative_drop"] is not None
    ]
    assert len(drops) == 11
    assert f"fell by {100 * sum(drops) / len(drops):.1f} % of its baseline" in html
    assert "1 relation pair showed interference" in html

    # Hostile relation name: escaped everywhere, never raw.
    assert NASTY not in html
    assert "a&lt;b&gt;&amp;&quot;c&#x27;" in html
    assert "<b>" not in html

    # Header: model, short weights hash, top-k share, wall times.
    assert "smollm2-135m" in html and "abababababab" in html and "ab" * 32 not in html
    assert "0.36 % of units" in html
    assert "12.5" in html and "15.8" in html  # ingest and total seconds
    # Tables: the interference cell and the cumulativity cell with total 0.
    assert "+4.0 pt" in html
    assert "n/a (total 0)" in html
    # Offline: no scripts, no remote resources.
    assert "<script" not in html and "http" not in html


def test_headline_from_summary_wins(tmp_path: Path) -> None:
    s = {"study": {"model": "m", "top_k": 3}, "intra": synthetic_summary()["intra"][:2]}
    s["headline"] = {
        "own_baseline": 0.712,
        "own_ablated": 0.1,
        "own_controls": 0.705,
        "others_ablated_drop": 0.0333,
        "interference_cells": 5,
    }
    html = render(s, tmp_path, title="Study <T> & co").read_text()
    assert "<title>Study &lt;T&gt; &amp; co</title>" in html
    assert "fell from 71.2 % to 10.0 % on average;" in html
    assert "random neurons instead: 70.5 %" in html
    assert "fell by 3.3 % of its baseline" in html
    assert "5 relation pairs showed interference" in html


def test_empty_sections_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    for name in FIGURES:  # figures of an earlier render: the skipped ones must not linger
        (out / name).write_bytes(b"old")
    s = synthetic_summary()
    for key in ("cross_lingual", "specificity", "layers", "interference", "cumulativity"):
        s[key] = []
    del s["overlap"]  # a missing optional section is an empty one
    s["sweep"] = [r for r in s["sweep"] if r["count"] == 0]  # only the baseline point
    html = render(s, out).read_text()
    pngs = _pngs_of(html)
    assert sorted(pngs) == ["cross_relation.png", "intra.png"]
    for name in pngs:
        _check_png(out / name)
    for name in set(FIGURES) - set(pngs):
        assert not (out / name).exists(), name
    assert "The study evaluated no other language." in html
    assert "no sweep with a positive number of neurons" in html
    assert html.count("Skipped:") == 6  # sweep, cumulativity, overlap, cross-lingual, layers, spec.
    assert "No interference cell." in html
    assert "No relation pair showed interference" in html


def test_minimal_summary(tmp_path: Path) -> None:
    """Only the study block: every section skipped, a page all the same, no figure."""
    s = {"study": {"model": "m", "relations": ["r"]}}
    html = render(s, tmp_path).read_text()
    assert _pngs_of(html) == []
    assert "No headline" in html
    assert json.loads((tmp_path / "summary.json").read_text()) == s


def test_all_null_controls_and_drops(tmp_path: Path) -> None:
    """No controls anywhere and every cross-relation cell null: figures still draw (grey)."""
    full = synthetic_summary()
    s = {"study": full["study"], "intra": full["intra"], "cross_relation": full["cross_relation"]}
    for r in s["intra"]:
        r.update(control_mean=None, control_lo=None, control_hi=None, control_n=0)
    for r in s["cross_relation"]:
        r.update(baseline=0.0, relative_drop=None)
    html = render(s, tmp_path).read_text()
    assert "random neurons instead" not in html
    assert "of its baseline" not in html
    _check_png(tmp_path / "cross_relation.png")
    _check_png(tmp_path / "intra.png")


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


def test_clean_summary() -> None:
    assert clean_summary({"a": (1, np.int64(2), float("inf"), np.float32(0.5)), "b": None}) == {
        "a": [1, 2, None, 0.5],
        "b": None,
    }
    assert clean_summary(float("nan")) is None


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no chromium on PATH",
)
def test_screenshot_script(full_report: tuple[dict, Path], tmp_path: Path) -> None:
    """The page renders offline in a real browser, figures included (not broken images)."""
    _, out = full_report
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
