"""The numbers of a study, computed from warehouse tables alone (no model is run).

`compute(root)` reads `study/study.json` (written by `warehouse study`), the `evals/` files it
names, the selections and `study/perplexity.parquet`, and returns the *summary*: one JSON-able
dict that `analysis.report.render` draws and `warehouse report` saves as summary.json. Every
accuracy is a share in [0, 1] over the prompts named (`n`); averages over relations are plain
means of the per-relation numbers (each relation counts once).

Controls: a condition's random sets give one accuracy each; their interval is the 95 %
Student-t interval of the mean over the sets (null with fewer than two sets).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats as sps

from warehouse.errors import FormatError
from warehouse.store.location import Location

STUDY_FILE = "study/study.json"


def _read(root: Location, rel: str) -> pl.DataFrame:
    """A table of the warehouse, local or remote (read-only, e.g. a shared zip or URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not root.isfile(rel):
        raise FormatError(f"{root}: {rel} is missing: re-run `warehouse study` to recompute it")
    try:
        with root.open(rel) as f:
            frame = pl.from_arrow(pq.read_table(f))
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{root}: {rel} is not a readable Parquet file ({e})") from None
    assert isinstance(frame, pl.DataFrame)
    return frame


def _mean(values: pl.Series) -> float | None:
    return None if values.len() == 0 else float(values.cast(pl.Float64).mean())  # type: ignore[arg-type]


def interval(accuracies: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the 95 % t interval of the mean of per-control accuracies,
    clipped to [0, 1]."""
    if not accuracies:
        return None, None, None
    mean = float(np.mean(accuracies))
    if len(accuracies) < 2:
        return mean, None, None
    half = float(sps.t.ppf(0.975, len(accuracies) - 1) * np.std(accuracies, ddof=1))
    half /= math.sqrt(len(accuracies))
    # Accuracies are shares: the interval is clipped to [0, 1].
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _drop(baseline: float | None, accuracy: float | None) -> float | None:
    if baseline is None or accuracy is None or baseline == 0:
        return None
    return (baseline - accuracy) / baseline


def _targets(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("control_seed").is_null())


def _controls(frame: pl.DataFrame) -> list[float]:
    per_seed = (
        frame.filter(pl.col("control_seed").is_not_null())
        .group_by("control_seed")
        .agg(pl.col("correct").cast(pl.Float64).mean())
    )
    return per_seed["correct"].to_list()


def _cell(frame: pl.DataFrame) -> dict[str, Any]:
    """n, baseline, accuracy (the target rows) and the controls' mean and interval."""
    target = _targets(frame)
    mean, lo, hi = interval(_controls(frame))
    return {
        "n": target.height,
        "baseline": _mean(target["baseline_correct"]),
        "accuracy": _mean(target["correct"]),
        "control_mean": mean,
        "control_lo": lo,
        "control_hi": hi,
        "control_n": frame.filter(pl.col("control_seed").is_not_null())["control_seed"].n_unique(),
    }


def compute(where: str | Path | Location) -> dict[str, Any]:
    """The summary of the study stored in a warehouse: a folder, a .zip file or an fsspec
    URL, read-only (module docstring)."""
    root = Location.of(where)
    if not root.isfile(STUDY_FILE):
        raise FormatError(f"{root} holds no finished study ({STUDY_FILE}): run `warehouse study`")
    st = root.read_json(STUDY_FILE)
    if "evals" not in st:
        raise FormatError(f"{root / STUDY_FILE}: the study has not finished; re-run it")
    relations: list[str] = st["relations"]
    ev = st["evals"]

    base = _read(root, "evals/baseline.parquet")
    baseline = (
        base.group_by("relation", "language", "split")
        .agg(n=pl.len(), accuracy=pl.col("correct").cast(pl.Float64).mean())
        .sort("relation", "language", "split")
    )

    intra = []
    for rel in relations:
        frame = _read(root, ev["intra"][rel])
        for split in ("identify", "test"):
            part = frame.filter(pl.col("split") == split)
            if part.height:
                c = _cell(part)
                intra.append({"relation": rel, "split": split, **c, "target": c.pop("accuracy")})

    sweep, cumulativity = [], []
    for rel in relations:
        own = _read(root, ev["sweep_own"][rel])
        others = _read(root, ev["sweep_others"][rel]) if rel in ev["sweep_others"] else None
        counts = [0, *st["sweep"]]
        for count in counts:
            row: dict[str, Any] = {"relation": rel, "count": count}
            for label, frame in (("own", own), ("others", others)):
                if frame is None:
                    row[label], row[f"{label}_n"] = None, 0
                    continue
                if count == 0:  # the baseline answers of the same prompts
                    part = frame.filter(pl.col("count") == st["sweep"][0])["baseline_correct"]
                else:
                    part = frame.filter(pl.col("count") == count)["correct"]
                row[label], row[f"{label}_n"] = _mean(part), part.len()
            sweep.append(row)
        cumulativity += _cumulativity(root, rel, own, ev["ranges"].get(rel, {}))

    overlap, layers = _overlap_layers(root, st)

    cross = []
    for rj in relations:
        frame = _targets(_read(root, ev["cross_relation"][rj]))
        for ri in relations:
            part = frame.filter(pl.col("relation") == ri)
            b, a = _mean(part["baseline_correct"]), _mean(part["correct"])
            cross.append(
                {
                    "target": ri,
                    "ablated": rj,
                    "n": part.height,
                    "baseline": b,
                    "accuracy": a,
                    "relative_drop": _drop(b, a),
                }
            )

    lingual = []
    for rel in relations:
        parts = [("intra", _read(root, ev["intra"][rel]).filter(pl.col("split") == "test"))]
        if rel in ev["cross_lingual"]:
            parts.append(("lingual", _read(root, ev["cross_lingual"][rel])))
        for _, frame in parts:
            for (lang,), part in sorted(frame.group_by("language")):
                c = _cell(part)
                c.pop("control_n")
                lingual.append(
                    {
                        "relation": rel,
                        "language": lang,
                        **c,
                        "relative_drop": _drop(c["baseline"], c["accuracy"]),
                    }
                )

    control_hi = {
        r["relation"]: r["control_hi"]
        for r in intra
        if r["split"] == "test" and r["control_hi"] is not None
    }
    interference = [
        {
            "target": c["target"],
            "ablated": c["ablated"],
            "baseline": c["baseline"],
            "accuracy": c["accuracy"],
            "control_hi": control_hi[c["target"]],
            "gain": c["accuracy"] - c["baseline"],
        }
        for c in cross
        if c["target"] != c["ablated"]
        and c["target"] in control_hi
        and c["accuracy"] is not None
        and c["baseline"] is not None
        and c["accuracy"] > c["baseline"]
        and c["accuracy"] > control_hi[c["target"]]
    ]

    specificity = []
    if st.get("perplexity"):
        ppl = _read(root, st["perplexity"])
        for r in ppl.iter_rows(named=True):
            specificity.append(
                {
                    "relation": r["relation"],
                    "ppl_baseline": r["ppl_baseline"],
                    "ppl_ablated": r["ppl_ablated"],
                    "ratio": r["ppl_ablated"] / r["ppl_baseline"],
                }
            )

    summary = {
        "study": {
            "model": st["model"],
            "weights_hash": st["weights_hash"],
            "site": st["site"],
            "units_total": st["units_total"],
            "top_k": st["top_k"],
            "sweep": st["sweep"],
            "ranges": st["ranges"],
            "controls": st["config"]["controls"],
            "sample": st["config"]["sample"],
            "others_sample": st["config"]["others_sample"],
            "identify_language": st["identify_language"],
            "languages": st["languages"],
            "relations": relations,
            "skipped": st.get("skipped", {}),
            "identify_correct": st.get("identify_correct", {}),
            "negatives": st["negatives"],
            "warehouse": str(root),
            "seconds": st.get("seconds", {}),
        },
        "baseline": baseline.to_dicts(),
        "intra": intra,
        "sweep": sweep,
        "cumulativity": cumulativity,
        "overlap": overlap,
        "cross_relation": cross,
        "cross_lingual": lingual,
        "interference": interference,
        "specificity": specificity,
        "layers": layers,
    }
    summary["headline"] = headline(summary)
    return summary


def _cumulativity(
    root: Location, rel: str, own: pl.DataFrame, range_files: dict[str, str]
) -> list[dict[str, Any]]:
    """For each range a-b: total = prompts right with the top-a off and wrong with the top-b
    off; affected = those of them wrong with only ranks a+1..b off; score = 1 - affected/total
    (null when total is 0)."""
    out = []
    right = own.select("prompt_id", "count", "correct")
    base = own.filter(pl.col("count") == own["count"].min()).select(
        "prompt_id", pl.col("baseline_correct").alias("correct")
    )
    by_range = sorted(
        (tuple(int(x) for x in label.split("-")), p) for label, p in range_files.items()
    )
    for (a, b), path in by_range:
        at_a = right.filter(pl.col("count") == a).select("prompt_id", "correct") if a else base
        at_b = right.filter(pl.col("count") == b).select("prompt_id", "correct")
        rng = _targets(_read(root, path)).select("prompt_id", "correct")
        both = (
            at_a.rename({"correct": "a"})
            .join(at_b.rename({"correct": "b"}), on="prompt_id")
            .filter(pl.col("a") & ~pl.col("b"))
            .join(rng.rename({"correct": "r"}), on="prompt_id", how="left")
        )
        total = both.height
        affected = int((~both["r"].fill_null(False)).sum()) if total else 0
        out.append(
            {
                "relation": rel,
                "a": a,
                "b": b,
                "total": total,
                "affected": affected,
                "score": (1 - affected / total) if total else None,
            }
        )
    return out


def _overlap_layers(root: Location, st: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    sets: dict[str, set[int]] = {}
    layers = []
    for rel in st["relations"]:
        frame = _read(root, f"selections/{st['selections'][rel]['top']}.parquet")
        sets[rel] = set(frame["neuron_id"].to_list())
        counts = frame.group_by("layer").len().sort("layer")
        layers += [
            {"relation": rel, "layer": int(layer), "count": int(n)}
            for layer, n in counts.iter_rows()
        ]
    overlap = []
    for a in st["relations"]:
        for b in st["relations"]:
            shared = len(sets[a] & sets[b])
            union = len(sets[a] | sets[b])
            overlap.append(
                {
                    "a": a,
                    "b": b,
                    "size_a": len(sets[a]),
                    "size_b": len(sets[b]),
                    "shared": shared,
                    "jaccard": shared / union if union else None,
                }
            )
    return overlap, layers


def _avg(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Means over relations of the test-split intra numbers, of the off-diagonal relative
    drops, and the count of interference cells."""
    test = [r for r in summary["intra"] if r["split"] == "test"]
    off = [c for c in summary["cross_relation"] if c["target"] != c["ablated"]]
    own = [c for c in summary["cross_relation"] if c["target"] == c["ablated"]]
    return {
        "own_baseline": _avg([r["baseline"] for r in test]),
        "own_ablated": _avg([r["target"] for r in test]),
        "own_controls": _avg([r["control_mean"] for r in test]),
        "own_relative_drop": _avg([c["relative_drop"] for c in own]),
        "others_ablated_drop": _avg([c["relative_drop"] for c in off]),
        "interference_cells": len(summary["interference"]),
        "beyond_controls": sum(
            1
            for r in test
            if r["control_lo"] is not None
            and r["target"] is not None
            and r["target"] < r["control_lo"]
        ),
        "relations": len(test),
    }


def format_headline(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: the study's headline numbers."""
    h, s = summary["headline"], summary["study"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = [
        f"{s['model']} · site {s['site']} · top {s['top_k']} of {s['units_total']} neurons "
        f"per relation · {len(s['relations'])} relations · controls {s['controls']}",
        f"own relation (test, {s['identify_language']}): baseline {pct(h['own_baseline'])}, "
        f"own neurons off {pct(h['own_ablated'])}, random controls {pct(h['own_controls'])}",
        f"relations whose ablated accuracy is below the controls' 95 % interval: "
        f"{h['beyond_controls']} of {h['relations']}",
        f"mean relative drop: own relation {pct(h['own_relative_drop'])}, other relations "
        f"{pct(h['others_ablated_drop'])}; interference cells {h['interference_cells']}",
    ]
    return "\n".join(lines)
