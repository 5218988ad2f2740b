"""Re-analyse a finished study from its `evals/` tables alone, independently of
`analysis/claims.py` and `analysis/findings.py`, and compare the verdicts.

    python bench/reanalyse.py W [--alpha 0.05] [--min-discordant 5] [--min-subjects 20]

For every relation's own-set condition on the test split: the per-prompt difference
d = (mean over random sets of correct) - (own set correct), summed per subject, tested with
scipy's `permutation_test` (sign flips of whole subjects, one-sided, exact up to 2^16
flips, else 10^5 random ones), Holm-corrected over the relations by a plain loop. A
relation is "beyond controls" when its Holm p < alpha, it has at least `min_discordant`
prompts where own-off and baseline differ, and at least `min_subjects` subjects. The
script prints both verdicts side by side and exits 1 on any disagreement.
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
    a = ap.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
