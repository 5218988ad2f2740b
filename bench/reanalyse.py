"""Re-analyse a finished study from its `evals/` tables alone, independently of
`analysis/claims.py` and `analysis/findings.py`, and compare the verdicts.

    python bench/reanalyse.py W [--alpha 0.05] [--min-discordant 5] [--min-subjects 20]
    python bench/reanalyse.py W --languages [same options]

For every relation's own-set condition on the test split: the per-prompt difference
d = (mean over random sets of correct) - (own set correct), summed per subject, tested with
scipy's `permutation_test` (sign flips of whole subjects, one-sided, exact up to 2^16
flips, else 10^5 random ones), Holm-corrected over the relations by a plain loop. A
relation is "beyond controls" when its Holm p < alpha, it has at least `min_discordant`
prompts where own-off and baseline differ, and at least `min_subjects` subjects. The
script prints both verdicts side by side and exits 1 on any disagreement.

With `--languages`, the per-language sets instead (`language_overlap`, `language_ablation`):
each set's neurons shared with the identification set, from the `selections/` tables, and
`scipy.stats.hypergeom.sf` over the site's neurons, Holm by hand over every cell; each
set's test prompts per language, from the `evals/` per-prompt rows, with the sign-flip test
above, a cell with fewer than `min_discordant` baseline-correct prompts "not testable"
(no p, out of Holm), Holm per (set language, language of the prompts) over the relations,
"underpowered" below `min_subjects` subjects in the cell or in the relation's own test
prompts. Two cells agree when their verdicts, n and subjects are equal and their p-values
match: to 1e-6 relative for the hypergeometric ones and the sign flips of at most 16
non-zero subjects (both exact), to 0.02 for more subjects (both drawn at random: scipy
100,000 flips here, the project's 10,000).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def sign_flip_p(subject_sums: np.ndarray) -> float:
    moved = subject_sums[subject_sums != 0]  # flipping a zero changes nothing
    if not len(moved):
        return 1.0
    if len(moved) == 1:  # scipy needs two: the one flip gives -s, so P(T* >= s) is 1/2 or 1
        return 0.5 if moved[0] > 0 else 1.0
    res = stats.permutation_test(
        (moved,),
        np.sum,
        permutation_type="samples",
        alternative="greater",
        n_resamples=100_000,
        random_state=1,
    )
    return float(res.pvalue)


def relation_rows(root: Path) -> list[dict]:
    study = json.loads((root / "study/study.json").read_text())
    prompts = pl.read_parquet(root / "prompts.parquet")
    subject = "subject_id" if "subject_id" in prompts.columns else "subject"
    rows = []
    for rel, path in sorted(study["evals"]["intra"].items()):
        ev = pl.read_parquet(root / path).filter(pl.col("split") == "test")
        own = ev.filter(pl.col("control_seed").is_null()).select(
            "prompt_id", pl.col("correct").cast(pl.Float64).alias("own"), "baseline_correct"
        )
        ctl = (
            ev.filter(pl.col("control_seed").is_not_null())
            .group_by("prompt_id")
            .agg(pl.col("correct").cast(pl.Float64).mean().alias("ctl"))
        )
        t = own.join(ctl, on="prompt_id").join(
            prompts.select("prompt_id", pl.col(subject).alias("subj")), on="prompt_id"
        )
        t = t.with_columns(d=pl.col("ctl") - pl.col("own"))
        sums = t.group_by("subj").agg(pl.col("d").sum())["d"].to_numpy()
        moved = int((t["own"].cast(pl.Boolean) != t["baseline_correct"]).sum())
        rows.append(
            {
                "relation": rel,
                "n": t.height,
                "subjects": len(sums),
                "discordant": moved,
                "p": sign_flip_p(sums),
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--min-discordant", type=int, default=5)
    ap.add_argument("--min-subjects", type=int, default=20)
    ap.add_argument("--languages", action="store_true", help="the per-language sets instead")
    a = ap.parse_args()
    if a.languages:
        return languages(a.warehouse, a.alpha, a.min_discordant, a.min_subjects)
    rows = relation_rows(a.warehouse)
    for r, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = p
    summary = a.warehouse / "report/summary.json"
    tool = json.loads(summary.read_text()) if summary.is_file() else None
    if tool is None:
        from warehouse.analysis.findings import compute

        tool = compute(a.warehouse)
    told = {r["relation"]: r for r in tool["intra"] if r["split"] == "test"}
    bad = 0
    print(f"{'relation':24} {'n':>4} {'subj':>4} {'disc':>4} {'p_holm':>8} {'tool':>8}  verdicts")
    for r in rows:
        if r["subjects"] < a.min_subjects:
            mine = "underpowered"
        elif r["p_holm"] < a.alpha and r["discordant"] >= a.min_discordant:
            mine = "beyond controls"
        else:
            mine = "not beyond controls"
        theirs = told[r["relation"]]
        same = mine == theirs["verdict"]
        bad += not same
        print(
            f"{r['relation']:24} {r['n']:>4} {r['subjects']:>4} {r['discordant']:>4} "
            f"{r['p_holm']:>8.4f} {theirs['p_controls_holm']:>8.4f}  {mine} | "
            f"{theirs['verdict']}{'' if same else '   <-- DIFFERS'}"
        )
    print(f"{len(rows) - bad} of {len(rows)} verdicts agree")
    return 1 if bad else 0


# ------------------------------------------------------------------- per-language sets


def _subjects(root: Path) -> pl.DataFrame:
    prompts = pl.read_parquet(root / "prompts.parquet")
    subject = "subject_id" if "subject_id" in prompts.columns else "subject"
    return prompts.select("prompt_id", pl.col(subject).cast(pl.Utf8).alias("subj"))


def _neurons(root: Path, name: str) -> set[int]:
    return set(pl.read_parquet(root / "selections" / f"{name}.parquet")["neuron_id"].to_list())


def overlap_cells(root: Path, study: dict, alpha: float) -> list[dict]:
    """Each relation x language set: neurons shared with the identification set, the
    hypergeometric tail P(X >= shared), Holm over every cell."""
    population = study["units_total"]
    rows = []
    for rel, sets in sorted((study.get("language_sets") or {}).items()):
        ref = _neurons(root, study["selections"][rel]["top"])
        for lang, name in sorted(sets.items()):
            other = _neurons(root, name)
            shared = len(ref & other)
            p = float(stats.hypergeom.sf(shared - 1, population, len(ref), len(other)))
            rows.append({"relation": rel, "language": lang, "shared": shared, "p": p})
            rows[-1] |= {"a": len(ref), "b": len(other), "population": population}
    for r, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = p
        r["verdict"] = "beyond chance" if p < alpha else "not beyond chance"
    return rows


def _set_frames(root: Path, study: dict, rel: str) -> dict[str, list[pl.DataFrame]]:
    """{language of the set: its eval rows on test prompts}: the identification set's intra
    and cross-lingual evals, every other language's set's language_ablation eval."""
    ev = study["evals"]
    own = [ev["intra"][rel]] + ([ev["cross_lingual"][rel]] if rel in ev["cross_lingual"] else [])
    paths = {study["identify_language"]: own}
    paths |= {lang: [p] for lang, p in ev.get("language_ablation", {}).get(rel, {}).items()}
    return {
        lang: [pl.read_parquet(root / p).filter(pl.col("split") == "test") for p in ps]
        for lang, ps in paths.items()
    }


def _cell(frame: pl.DataFrame, subjects: pl.DataFrame) -> dict:
    """n, subjects, baseline-correct and discordant prompts, sign-flip p of one cell."""
    own = frame.filter(pl.col("control_seed").is_null()).join(subjects, on="prompt_id")
    ctl = (
        frame.filter(pl.col("control_seed").is_not_null())
        .group_by("prompt_id")
        .agg(pl.col("correct").cast(pl.Float64).mean().alias("ctl"))
    )
    t = own.join(ctl, on="prompt_id").with_columns(
        d=pl.col("ctl") - pl.col("correct").cast(pl.Float64)
    )
    sums = t.group_by("subj").agg(pl.col("d").sum())["d"].to_numpy()
    return {
        "n": own.height,
        "subjects": own["subj"].n_unique(),
        "base_ok": int(own["baseline_correct"].sum()),
        "discordant": int((own["correct"] != own["baseline_correct"]).sum()),
        "nonzero": int((sums != 0).sum()),
        "p": sign_flip_p(sums) if t.height else None,
    }


def ablation_cells(root: Path, study: dict, rules: dict) -> list[dict]:
    """Each relation's sets off on its test prompts per language: the cells of
    `language_ablation`, with Holm per (set language, language) over the relations."""
    subjects = _subjects(root)
    rows = []
    for rel in sorted(study["evals"].get("language_ablation") or {}):
        if not study["evals"]["language_ablation"][rel]:
            continue
        intra = pl.read_parquet(root / study["evals"]["intra"][rel])
        intra = intra.filter((pl.col("split") == "test") & pl.col("control_seed").is_null())
        own_subjects = intra.join(subjects, on="prompt_id")["subj"].n_unique()
        for set_lang, frames in _set_frames(root, study, rel).items():
            for frame in frames:
                for (lang,), part in sorted(frame.group_by("language")):
                    c = _cell(part, subjects)
                    if c["base_ok"] < rules["min_discordant"]:
                        c["p"] = None
                    low = min(c["subjects"], own_subjects) < rules["min_subjects"]
                    rows.append({"relation": rel, "set": set_lang, "language": lang, **c})
                    rows[-1]["low"] = low
    for family in sorted({(r["set"], r["language"]) for r in rows}):
        _judge([r for r in rows if (r["set"], r["language"]) == family], rules)
    return rows


def _judge(family: list[dict], rules: dict) -> None:
    """Holm over the family's testable cells, then each cell's verdict; in place."""
    tested = [r for r in family if r["p"] is not None]
    for r, p in zip(tested, holm([r["p"] for r in tested]), strict=True):
        r["p_holm"] = p
    for r in family:
        if r["p"] is None:
            r["p_holm"], r["verdict"] = None, "not testable"
        elif r["low"]:
            r["verdict"] = "underpowered"
        elif r["p_holm"] < rules["alpha"] and r["discordant"] >= rules["min_discordant"]:
            r["verdict"] = "beyond controls"
        else:
            r["verdict"] = "not beyond controls"


def _close(mine: float | None, theirs: float | None, exact: bool) -> bool:
    if mine is None or theirs is None:
        return mine is None and theirs is None
    return bool(np.isclose(mine, theirs, rtol=1e-6, atol=0.0 if exact else 0.02))


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _tool(root: Path, alpha: float, min_discordant: int, min_subjects: int) -> dict:
    """The project's findings at the same rules (the side compared against)."""
    from warehouse.analysis.claims import Rules
    from warehouse.analysis.findings import compute

    rules = Rules(alpha=alpha, min_discordant=min_discordant, min_test_subjects=min_subjects)
    return compute(root, rules)


def _print_overlap(mine: list[dict], told: list[dict]) -> int:
    theirs = {(r["relation"], r["language"]): r for r in told}
    print("language_overlap (shared neurons with the identification set; hypergeometric, Holm)")
    print(
        f"{'relation':20} {'lang':>4} {'a':>5} {'b':>5} {'N':>7} {'shared':>10} {'p':>19} "
        f"{'p Holm':>19}  verdict (here | findings)"
    )
    bad = len({(r["relation"], r["language"]) for r in mine} ^ set(theirs))
    for r in mine:
        t = theirs.get((r["relation"], r["language"]), {})
        same = t.get("shared") == r["shared"] and t.get("verdict") == r["verdict"]
        same = (
            same and _close(r["p"], t.get("p"), True) and _close(r["p_holm"], t.get("p_holm"), True)
        )
        bad += not same
        print(
            f"{r['relation']:20} {r['language']:>4} {r['a']:>5} {r['b']:>5} {r['population']:>7} "
            f"{r['shared']:>4} | {t.get('shared', '-'):>3} {_p(r['p']):>9} | {_p(t.get('p')):>7} "
            f"{_p(r['p_holm']):>9} | {_p(t.get('p_holm')):>7}  {r['verdict']} | "
            f"{t.get('verdict', '-')}{'' if same else '   <-- DIFFERS'}"
        )
    return bad


def _print_ablation(mine: list[dict], told: list[dict]) -> int:
    theirs = {(r["relation"], r["set_language"], r["language"]): r for r in told}
    print("language_ablation (set off on test prompts per language; sign flips, Holm)")
    print(
        f"{'relation':20} {'set':>4} {'lang':>4} {'n':>4} {'subj':>4} {'ok':>3} {'disc':>4} "
        f"{'p Holm':>19}  verdict (here | findings)"
    )
    keys = {(r["relation"], r["set"], r["language"]) for r in mine}
    bad = len(keys ^ set(theirs))
    for r in mine:
        t = theirs.get((r["relation"], r["set"], r["language"]), {})
        exact = r["nonzero"] <= 16
        same = (t.get("n"), t.get("n_subjects"), t.get("verdict")) == (
            r["n"],
            r["subjects"],
            r["verdict"],
        ) and _close(r["p_holm"], t.get("p_controls_holm"), exact)
        bad += not same
        print(
            f"{r['relation']:20} {r['set']:>4} {r['language']:>4} {r['n']:>4} "
            f"{r['subjects']:>4} {r['base_ok']:>3} {r['discordant']:>4} {_p(r['p_holm']):>9} | "
            f"{_p(t.get('p_controls_holm')):>7}  {r['verdict']} | "
            f"{t.get('verdict', '-')}{'' if same else '   <-- DIFFERS'}"
        )
    return bad


def languages(root: Path, alpha: float, min_discordant: int, min_subjects: int) -> int:
    """Both per-language findings re-derived and printed beside the project's; 1 on any
    disagreement (a cell on one side only counts as one)."""
    study = json.loads((root / "study/study.json").read_text())
    rules = {"alpha": alpha, "min_discordant": min_discordant, "min_subjects": min_subjects}
    overlap = overlap_cells(root, study, alpha)
    ablation = ablation_cells(root, study, rules)
    tool = _tool(root, alpha, min_discordant, min_subjects)
    bad = _print_overlap(overlap, tool["language_overlap"])
    print()
    bad += _print_ablation(ablation, tool["language_ablation"])
    cells = len(overlap) + len(ablation)
    print(f"{cells - bad} of {cells} cells agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
